package main

import (
	"encoding/json"
	"testing"
)

func TestRevokeBody(t *testing.T) {
	tests := []struct {
		name            string
		user, video, id string
		want            map[string]string
		wantErr         bool
	}{
		{"user", "u1", "", "", map[string]string{"user": "u1"}, false},
		{"user and video", "u1", "0123456789abcdef0123456789abcdef", "", map[string]string{"user": "u1", "video": "0123456789abcdef0123456789abcdef"}, false},
		{"id", "", "", "LINKID", map[string]string{"link_id": "LINKID"}, false},
		{"nothing", "", "", "", nil, true},
		{"video alone", "", "0123456789abcdef0123456789abcdef", "", nil, true},
		{"id and user", "u1", "", "LINKID", nil, true},
		{"id and video", "", "0123456789abcdef0123456789abcdef", "LINKID", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := revokeBody(tc.user, tc.video, tc.id)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("revokeBody = %s, want an error", b)
				}
				return
			}
			var got map[string]string
			if err != nil || json.Unmarshal(b, &got) != nil {
				t.Fatalf("revokeBody = %s, %v", b, err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("body %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("body %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestAdminBase(t *testing.T) {
	tests := []struct {
		listen, want string
		wantErr      bool
	}{
		{":9090", "http://127.0.0.1:9090", false},
		{"0.0.0.0:9090", "http://127.0.0.1:9090", false},
		{"[::]:9090", "http://[::1]:9090", false},
		{"10.0.0.7:9090", "http://10.0.0.7:9090", false},
		{"", "", true},
		{"nope", "", true},
	}
	for _, tc := range tests {
		got, err := adminBase(tc.listen)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("adminBase(%q) = %q, %v; want %q (error %v)", tc.listen, got, err, tc.want, tc.wantErr)
		}
	}
}
