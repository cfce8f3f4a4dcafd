package auth

import (
	"context"
	"testing"
)

func TestContext(t *testing.T) {
	if id, ok := FromContext(context.Background()); ok {
		t.Errorf("FromContext on an empty context = %+v, true", id)
	}
	gr := testGrant()
	want := gr.Identity()
	got, ok := FromContext(NewContext(context.Background(), want))
	if !ok || got != want {
		t.Errorf("FromContext = %+v, %v; want %+v, true", got, ok, want)
	}
}
