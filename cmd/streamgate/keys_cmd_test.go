package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

var createdKey = regexp.MustCompile(`(?m)^created signing key ([0-9a-f]{32})`)

// TestKeysCommands creates a signing key before any is configured, adds the
// printed snippet to the configuration, mints a URL with the key that Stream
// then serves, lists the key as in use and revokes it, after which the URL no
// longer works.
func TestKeysCommands(t *testing.T) {
	ctx := context.Background()
	ae := newAPIEnv(t, 0, "")
	uid := randomHex(16)
	ae.emu.AddVideo(streamtest.Video{UID: uid, Duration: testDuration, Size: testSize, RequireSignedURLs: true, ReadyToStream: true})
	ae.emu.SetDownloadReady(uid, stream.Default)
	keys := func(args ...string) (string, string, error) {
		return cli(ctx, noEnv, append([]string{"keys", "--config", ae.cfgPath}, args...)...)
	}
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "signing-key.pem")

	out, _, err := keys("create", "--out", keyPath)
	if err != nil {
		t.Fatalf("keys create: %v", err)
	}
	m := createdKey.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("keys create printed no key id:\n%s", out)
	}
	id := m[1]
	if strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("keys create printed the private key:\n%s", out)
	}
	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	pemBytes, _ := os.ReadFile(keyPath)
	if _, err := stream.NewSigner(id, pemBytes); err != nil {
		t.Errorf("the key file does not hold a usable key: %v", err)
	}

	// The snippet's lines go under stream: as printed.
	snippet := out[strings.Index(out, "stream:\n")+len("stream:\n"):]
	if !strings.Contains(snippet, fmt.Sprintf("signing_key_id: %q", id)) || !strings.Contains(snippet, fmt.Sprintf("signing_key: {file: %q}", keyPath)) {
		t.Errorf("snippet does not configure the key:\n%s", snippet)
	}
	f, err := os.OpenFile(ae.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "  delivery_url: %q\n%s", ae.url, snippet)
	f.Close()

	url, _, err := cli(ctx, noEnv, "token", "mint", uid, "--config", ae.cfgPath)
	if err != nil {
		t.Fatalf("token mint with the new key: %v", err)
	}
	c := clientFrom(t, ipLocal)
	if r := do(t, c, http.MethodGet, strings.TrimSpace(url), "", nil); r.status != http.StatusOK || len(r.body) != testSize {
		t.Fatalf("GET the minted URL: status %d, %d bytes", r.status, len(r.body))
	}

	out, _, err = keys("list")
	if err != nil || !strings.Contains(out, id+"  ") || !strings.Contains(out, "in use") {
		t.Errorf("keys list = %q, %v; want %s in use", out, err, id)
	}

	t.Run("create never overwrites", func(t *testing.T) {
		_, _, err := keys("create", "--out", keyPath)
		if err == nil || !strings.Contains(err.Error(), "--out") {
			t.Errorf("create over an existing file: %v", err)
		}
		after, _ := os.ReadFile(keyPath)
		if string(after) != string(pemBytes) {
			t.Error("the existing key file changed")
		}
		out, _, _ := keys("list")
		if n := strings.Count(out, "\n"); n != 1 {
			t.Errorf("a key was created although it could not be kept:\n%s", out)
		}
	})

	t.Run("create to stdout", func(t *testing.T) {
		out, errOut, err := keys("create", "--out", "-")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out, "-----BEGIN RSA PRIVATE KEY-----") || strings.Contains(out, "signing_key_id") {
			t.Errorf("stdout holds more or less than the PEM:\n%s", out)
		}
		m := createdKey.FindStringSubmatch(errOut)
		if m == nil || !strings.Contains(errOut, "signing_key: {env: STREAM_SIGNING_KEY}") {
			t.Fatalf("stderr lacks the snippet:\n%s", errOut)
		}
		if _, err := stream.NewSigner(m[1], []byte(out)); err != nil {
			t.Errorf("stdout is not a usable key: %v", err)
		}
		if out, _, err := keys("revoke", m[1]); err != nil || out != "revoked signing key "+m[1]+"\n" {
			t.Errorf("revoke: %q, %v", out, err)
		}
	})

	t.Run("revoke the key in use", func(t *testing.T) {
		_, _, err := keys("revoke", id)
		if err == nil || !strings.Contains(err.Error(), "--force") {
			t.Fatalf("revoking the configured key without --force: %v", err)
		}
		if r := do(t, c, http.MethodGet, strings.TrimSpace(url), "", nil); r.status != http.StatusOK {
			t.Fatalf("the refused revocation revoked: status %d", r.status)
		}
		if _, _, err := keys("revoke", id, "--force"); err != nil {
			t.Fatal(err)
		}
		if r := do(t, c, http.MethodGet, strings.TrimSpace(url), "", nil); r.status == http.StatusOK {
			t.Errorf("the URL still works after its key was revoked")
		}
		out, errOut, err := keys("list")
		if err != nil || out != "" || !strings.Contains(errOut, "no signing keys") {
			t.Errorf("list after revoking every key: %q %q %v", out, errOut, err)
		}
	})

	t.Run("revoke unknown", func(t *testing.T) {
		_, _, err := keys("revoke", randomHex(16))
		if err == nil || !strings.Contains(err.Error(), "revoke signing key") || !strings.Contains(err.Error(), "code 10006") ||
			!strings.Contains(err.Error(), "keys list") {
			t.Errorf("revoke of an unknown key: %v", err)
		}
		if _, _, err := keys("revoke", "../stream"); err == nil || !strings.Contains(err.Error(), "invalid key id") {
			t.Errorf("revoke of a malformed id: %v", err)
		}
	})

	t.Run("wrong token", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		yaml := fmt.Sprintf("stream:\n  account_id: acct\n  api_token: {value: nope}\n  api_url: %q\n", ae.url+"/client/v4/")
		if err := os.WriteFile(bad, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "k.pem")
		_, _, err := cli(ctx, noEnv, "keys", "create", "--config", bad, "--out", out)
		if err == nil || !strings.Contains(err.Error(), "create signing key") || !strings.Contains(err.Error(), "code 10000") {
			t.Errorf("create with a wrong token: %v", err)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("a failed create left %s behind: %v", out, err)
		}
	})
}
