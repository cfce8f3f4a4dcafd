package config

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// testKeyPEM is a 2048-bit RSA key in PKCS#1 PEM, generated once per run.
var testKeyPEM = sync.OnceValue(func() []byte {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
})

// env is a fake environment.
type env map[string]string

func (e env) get(name string) string { return e[name] }

// goodEnv gives every secret config.example.yaml reads from the environment.
func goodEnv() env {
	return env{
		"STREAM_API_TOKEN":     "cf-api-token",
		"STREAM_SIGNING_KEY":   string(testKeyPEM()),
		"PORTAL_JWT_SECRET":    "portal-secret-of-at-least-32-bytes!!",
		"STREAMGATE_GRANT_KEY": "0123456789abcdef0123456789abcdef",
	}
}

// minimalYAML is the least a valid configuration needs, with secrets from goodEnv.
const minimalYAML = `
stream:
  account_id: acc
  delivery_url: https://customer-abc.cloudflarestream.com
  signing_key_id: kid1
auth:
  hmac_secrets: [{secret: {env: PORTAL_JWT_SECRET}}]
links:
  grant_keys: [{id: k1, secret: {env: STREAMGATE_GRANT_KEY}}]
`

// writeFile writes data to a new file in a test directory and returns its path.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// problemKeys returns the keys of the problems in err, failing if err is not Errors.
func problemKeys(t *testing.T, err error) []string {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %v (%T) is not config.Errors", err, err)
	}
	return es.Keys()
}
