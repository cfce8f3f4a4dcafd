package config

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/streamgate/streamgate/stream"
)

func TestSecretResolve(t *testing.T) {
	file := writeFile(t, "s", []byte("from-file\r\n"))
	empty := writeFile(t, "empty", []byte("\n"))
	tests := []struct {
		name    string
		s       Secret
		want    string
		wantErr string
	}{
		{name: "value", s: Secret{Value: "lit"}, want: "lit"},
		{name: "env", s: Secret{Env: "SECRET_X"}, want: "from-env"},
		{name: "file drops trailing line breaks", s: Secret{File: file}, want: "from-file"},
		{name: "none", s: Secret{}, wantErr: "no value, env or file given"},
		{name: "value and env", s: Secret{Value: "a", Env: "SECRET_X"}, wantErr: "give only one of value, env or file"},
		{name: "env and file", s: Secret{Env: "SECRET_X", File: file}, wantErr: "give only one of value, env or file"},
		{name: "unset env", s: Secret{Env: "NOT_SET"}, wantErr: "NOT_SET is empty or unset"},
		{name: "missing file", s: Secret{File: file + ".gone"}, wantErr: "no such file"},
		{name: "empty file", s: Secret{File: empty}, wantErr: "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.s
			err := s.resolve(env{"SECRET_X": "from-env"}.get)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := string(s.Bytes()); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSecretsInValidateNameTheirKeys(t *testing.T) {
	yml := strings.Replace(minimalYAML, "stream:\n", "stream:\n  api_token: {value: a, env: B}\n", 1)
	yml = strings.Replace(yml, "{env: STREAMGATE_GRANT_KEY}", "{value: short}", 1)
	_, err := Parse([]byte(yml), goodEnv().get)
	for _, want := range []string{
		"stream.api_token: give only one of value, env or file",
		"links.grant_keys[0].secret: 5 bytes, want at least 32",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}

func TestSecretIsSet(t *testing.T) {
	if (Secret{}).IsSet() {
		t.Error("zero Secret is set")
	}
	for i, s := range []Secret{{Value: "v"}, {Env: "E"}, {File: "f"}} {
		if !s.IsSet() {
			t.Errorf("secret %d: IsSet() = false, want true", i)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	const value = "hunter2-very-secret"
	s := Secret{Value: value, Env: value, File: value, resolved: []byte(value)}
	c := Default()
	c.Stream.APIToken = s
	c.Auth.HMACSecrets = []HMACSecret{{KID: "k", Secret: s}}
	c.Links.GrantKeys = []GrantKey{{ID: "g", Secret: s}}

	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%T %[1]v"} {
		out = append(out, fmt.Sprintf(verb, s), fmt.Sprintf(verb, &s), fmt.Sprintf(verb, c), fmt.Sprintf(verb, &c))
	}
	out = append(out, fmt.Sprint(s), fmt.Sprintln(c))
	for _, v := range []any{s, &s, c} {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		y, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(j), string(y))
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "secret", s, "config", c)
	out = append(out, logged.String())

	for _, o := range out {
		if strings.Contains(o, value) || strings.Contains(o, fmt.Sprintf("%x", value)) {
			t.Errorf("secret leaked: %s", o)
		}
	}
	if got := fmt.Sprintf("%v|%+v|%#v", s, s, s); got != "[redacted]|[redacted]|[redacted]" {
		t.Errorf("got %q", got)
	}
	if j, _ := json.Marshal(s); string(j) != `"[redacted]"` {
		t.Errorf("json: got %s", j)
	}
}

// TestLoadSecretSigner loads a Stream signing key every way a secret can be given.
func TestLoadSecretSigner(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	file := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(file, pkcs1, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KEY": base64.StdEncoding.EncodeToString(pkcs1)}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		name             string
		value, env, file string
		wantErr          bool
	}{
		{name: "value", value: string(pkcs1)},
		{name: "env", env: "KEY"},
		{name: "file", file: file},
		{name: "none", wantErr: true},
		{name: "two", value: string(pkcs1), env: "KEY", wantErr: true},
		{name: "unset env", env: "MISSING", wantErr: true},
		{name: "missing file", file: file + ".nope", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := loadSigner("kid1", tc.value, tc.env, tc.file, getenv)
			if tc.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.KeyID() != "kid1" || !s.PublicKey().Equal(&k.PublicKey) {
				t.Fatal("signer does not carry the key")
			}
		})
	}
}

// loadSigner reads a signing key as a Secret does and builds its signer.
func loadSigner(keyID, value, env, file string, getenv func(string) string) (*stream.Signer, error) {
	b, err := LoadSecret(value, env, file, getenv)
	if err != nil {
		return nil, err
	}
	return stream.NewSigner(keyID, b)
}
