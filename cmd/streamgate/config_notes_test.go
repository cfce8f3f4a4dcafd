package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCheckSaysWhereTheCapHolds: `config check` tells an operator that
// max_concurrent is per replica without Redis, and shared with it.
func TestConfigCheckSaysWhereTheCapHolds(t *testing.T) {
	env := map[string]string{
		"STREAM_API_TOKEN":     "an-api-token",
		"STREAM_SIGNING_KEY":   string(signingKeyPEM()),
		"PORTAL_JWT_SECRET":    "a-portal-secret-of-at-least-32-bytes",
		"STREAMGATE_GRANT_KEY": strings.Repeat("g", 32),
	}
	example, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	withRedis := strings.Replace(string(example), "\n  addr: \"\"\n", "\n  addr: \"127.0.0.1:6379\"\n", 1)
	if withRedis == string(example) {
		t.Fatal("config.example.yaml has no redis addr line to set")
	}
	for _, tt := range []struct {
		name, yml, want string
	}{
		{"without redis", string(example), "note: max_concurrent is per replica"},
		{"with redis", withRedis, "note: max_concurrent holds across replicas through Redis"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte(tt.yml), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"config", "check", "--config", path}, func(k string) string { return env[k] }, &stdout, &stderr); err != nil {
				t.Fatalf("config check: %v", err)
			}
			if !strings.Contains(stdout.String(), tt.want) {
				t.Errorf("stdout = %q, want it to contain %q", stdout.String(), tt.want)
			}
		})
	}
}
