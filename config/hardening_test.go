package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestValidatePortalOriginsAndSlotLease(t *testing.T) {
	tests := []struct {
		name string
		yml  string
		want []string
	}{
		{name: "origins", yml: "auth: {hmac_secrets: [{secret: {env: PORTAL_JWT_SECRET}}], portal_origins: [\"https://portal.example\", \"http://127.0.0.1:3000\", \"https://portal.example/\"]}\n"},
		{name: "origin with a path", yml: "auth: {hmac_secrets: [{secret: {env: PORTAL_JWT_SECRET}}], portal_origins: [\"https://portal.example/app\"]}\n", want: []string{"auth.portal_origins[0]"}},
		{name: "origin without scheme", yml: "auth: {hmac_secrets: [{secret: {env: PORTAL_JWT_SECRET}}], portal_origins: [\"https://ok.example\", \"portal.example\"]}\n", want: []string{"auth.portal_origins[1]"}},
		{name: "origin with a query", yml: "auth: {hmac_secrets: [{secret: {env: PORTAL_JWT_SECRET}}], portal_origins: [\"https://portal.example?x=1\"]}\n", want: []string{"auth.portal_origins[0]"}},
		{name: "null origin", yml: "auth: {hmac_secrets: [{secret: {env: PORTAL_JWT_SECRET}}], portal_origins: [\"null\"]}\n", want: []string{"auth.portal_origins[0]"}},
		{name: "slot lease", yml: "redis: {addr: \"127.0.0.1:6379\", slot_lease: 10s}\n"},
		{name: "slot lease zero", yml: "redis: {addr: \"127.0.0.1:6379\", slot_lease: 0s}\n", want: []string{"redis.slot_lease"}},
		{name: "slot lease too short", yml: "redis: {addr: \"127.0.0.1:6379\", slot_lease: 300ms}\n", want: []string{"redis.slot_lease"}},
		{name: "slot lease unused without redis", yml: "redis: {slot_lease: 0s}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The test's auth block replaces minimalYAML's: drop minimalYAML's.
			base := minimalYAML
			if strings.HasPrefix(tt.yml, "auth:") {
				base = strings.Replace(base, "auth:\n  hmac_secrets: [{secret: {env: PORTAL_JWT_SECRET}}]\n", "", 1)
			}
			_, err := Parse([]byte(base+tt.yml), goodEnv().get)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if got := problemKeys(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("problems at %q, want %q: %v", got, tt.want, err)
			}
		})
	}
}

func TestDefaultSlotLease(t *testing.T) {
	if got := Default().Redis.SlotLease; got != 30*time.Second {
		t.Errorf("redis.slot_lease default = %v, want 30s", got)
	}
}

func TestNotes(t *testing.T) {
	tests := []struct {
		name      string
		yml       string
		want, not []string
	}{
		{name: "no redis", yml: "", want: []string{"max_concurrent is per replica"}, not: []string{"portal_origins", "across replicas"}},
		{name: "redis", yml: "redis: {addr: \"127.0.0.1:6379\"}\n", want: []string{"max_concurrent holds across replicas", "30s", "each replica caps on its own"}, not: []string{"per replica:"}},
		{name: "cookie without origins", yml: "auth: {hmac_secrets: [{secret: {env: PORTAL_JWT_SECRET}}], cookie: sess}\n", want: []string{"auth.portal_origins is empty"}},
		{name: "cookie with origins", yml: "auth: {hmac_secrets: [{secret: {env: PORTAL_JWT_SECRET}}], cookie: sess, portal_origins: [\"https://portal.example\"]}\n", not: []string{"portal_origins"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := minimalYAML
			if strings.HasPrefix(tt.yml, "auth:") {
				base = strings.Replace(base, "auth:\n  hmac_secrets: [{secret: {env: PORTAL_JWT_SECRET}}]\n", "", 1)
			}
			c, err := Parse([]byte(base+tt.yml), goodEnv().get)
			if err != nil {
				t.Fatal(err)
			}
			notes := strings.Join(c.Notes(), "\n")
			for _, w := range tt.want {
				if !strings.Contains(notes, w) {
					t.Errorf("notes lack %q:\n%s", w, notes)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(notes, w) {
					t.Errorf("notes say %q:\n%s", w, notes)
				}
			}
		})
	}
}
