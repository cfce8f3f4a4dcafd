package proxy

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestRefusalReason(t *testing.T) {
	tests := []struct {
		name, problem, want string
	}{
		{name: "quota", problem: "quota_exceeded", want: "quota"},
		{name: "rate limit", problem: "rate_limited", want: "rate"},
		{name: "concurrency cap", problem: "too_many_downloads", want: "concurrency"},
		{name: "country", problem: "country_denied", want: "country"},
		{name: "no or bad credential", problem: "unauthorized", want: "auth"},
		{name: "cookie from another site", problem: "cross_site", want: "auth"},
		{name: "link bound to another address", problem: "link_address", want: "auth"},
		{name: "revoked link", problem: "link_revoked", want: "auth"},
		{name: "bad input is no policy", problem: "bad_filename", want: ""},
		{name: "not ready is no policy", problem: "download_not_ready", want: ""},
		{name: "a failure is no refusal", problem: "upstream_failed", want: ""},
		{name: "client gone", problem: "client_gone", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := refusalReason(tt.problem); got != tt.want {
				t.Errorf("refusalReason(%q) = %q, want %q", tt.problem, got, tt.want)
			}
		})
	}
}

func TestRefusalFigures(t *testing.T) {
	jwt := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
	tests := []struct {
		name  string
		extra map[string]any
		h     http.Header
		want  map[string]any
	}{
		{name: "nothing", want: nil},
		{name: "quota", extra: map[string]any{"minutes_remaining": 1.5, "minutes_needed": 4.0, "plan": "basic"},
			want: map[string]any{"minutes_remaining": 1.5, "minutes_needed": 4.0, "plan": "basic"}},
		{name: "rate headers", h: http.Header{"Retry-After": {"7"}, "Ratelimit": {"downloads;r=0;t=7"}, "Ratelimit-Policy": {"downloads;q=10;w=60"}},
			want: map[string]any{"retry_after_seconds": 7, "rate_limit": "downloads;r=0;t=7", "rate_limit_policy": "downloads;q=10;w=60"}},
		{name: "a token-like text is redacted, a long text and a structure dropped",
			extra: map[string]any{"token": jwt[:60], "long": fmt.Sprint(make([]byte, 40)), "nested": map[string]any{"a": 1}},
			want:  map[string]any{"token": "[redacted]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.h
			if h == nil {
				h = http.Header{}
			}
			if got := refusalFigures(tt.extra, h); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("refusalFigures = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMemoryRefusals(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	m := NewMemoryRefusals(3, time.Hour, clock)
	ctx := context.Background()
	for i := range 4 {
		m.Put(Refusal{RequestID: fmt.Sprint("r", i), Type: "rate_limited"})
	}
	if _, ok, _ := m.Get(ctx, "r0"); ok {
		t.Error("r0 is still kept after three newer refusals in a store of three")
	}
	for _, id := range []string{"r1", "r2", "r3"} {
		if r, ok, err := m.Get(ctx, id); !ok || err != nil || r.RequestID != id {
			t.Errorf("Get(%s) = %+v, %v, %v; want it kept", id, r, ok, err)
		}
	}
	// The same request ID again: the later refusal replaces the earlier, and the
	// earlier's slot falling out of the ring does not forget the later.
	m.Put(Refusal{RequestID: "r1", Type: "quota_exceeded"})
	m.Put(Refusal{RequestID: "r4"})
	m.Put(Refusal{RequestID: "r5"})
	if r, ok, _ := m.Get(ctx, "r1"); !ok || r.Type != "quota_exceeded" {
		t.Errorf("Get(r1) = %+v, %v; want the later refusal", r, ok)
	}
	now = now.Add(time.Hour)
	if _, ok, _ := m.Get(ctx, "r5"); ok {
		t.Error("r5 is still kept after its hour")
	}
}
