package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadKeys: a configuration with problems outside the keys a command reads
// loads, with every environment override applied; one with a problem in them,
// or an unknown key, does not.
func TestLoadKeys(t *testing.T) {
	write := func(t *testing.T, yaml string) string {
		t.Helper()
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := map[string]string{"STREAMGATE_ADMIN_LISTEN": "127.0.0.1:9999", "STREAM_API_TOKEN": "tok"}
	getenv := func(k string) string { return env[k] }
	// No signing key, no portal secret: serve would refuse it.
	path := write(t, "stream:\n  account_id: acct\nadmin:\n  listen: 127.0.0.1:9090\n")
	if _, err := Load(path, getenv); err == nil {
		t.Fatal("Load accepted a configuration without a signing key")
	}
	c, err := LoadKeys(path, getenv, []string{"stream.account_id", "admin.listen"})
	if err != nil {
		t.Fatalf("LoadKeys: %v", err)
	}
	if c.Stream.AccountID != "acct" || c.Admin.Listen != "127.0.0.1:9999" {
		t.Errorf("account %q, admin.listen %q; want acct and the environment's 127.0.0.1:9999", c.Stream.AccountID, c.Admin.Listen)
	}
	if _, err := LoadKeys(path, getenv, []string{"stream.signing_key"}); err == nil || !strings.Contains(err.Error(), "stream.signing_key") {
		t.Errorf("LoadKeys for the signing key: %v, want its problem", err)
	}
	if _, err := LoadKeys(write(t, "stream:\n  acount_id: x\n"), getenv, []string{"stream.account_id"}); err == nil {
		t.Error("LoadKeys accepted an unknown key")
	}
}
