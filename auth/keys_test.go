package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func selfSigned(t *testing.T, priv crypto.Signer) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "portal signing key"},
		NotBefore:    t0.Add(-time.Hour),
		NotAfter:     t0.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestLoadPublicKeys(t *testing.T) {
	k := keys()
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)})
	var bundle bytes.Buffer
	bundle.WriteString("# portal keys, rotated 2030-01\n")
	bundle.Write(pemPublic(t, k.rsa.Public()))
	bundle.Write(pemPublic(t, k.ec.Public()))
	bundle.Write(pemPublic(t, k.ed.Public()))
	bundle.Write(pkcs1)
	bundle.Write(selfSigned(t, k.ec))

	got, err := LoadPublicKeys(bundle.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := []crypto.PublicKey{k.rsa.Public(), k.ec.Public(), k.ed.Public(), k.rsa.Public(), k.ec.Public()}
	if len(got) != len(want) {
		t.Fatalf("got %d keys, want %d", len(got), len(want))
	}
	for i := range want {
		eq, ok := want[i].(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !eq.Equal(got[i]) {
			t.Errorf("key %d: got %T, want %T equal to the source key", i, got[i], want[i])
		}
	}

	// A loaded key verifies tokens.
	v := newVerifier(t, VerifierConfig{
		Algorithms: []string{"ES256"},
		PublicKeys: map[string]crypto.PublicKey{"": got[4]},
		Now:        fixedNow,
	})
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, k.ec, "", claims(nil))); err != nil {
		t.Errorf("Verify with a key from a certificate: %v", err)
	}
}

func TestLoadPublicKeysErrors(t *testing.T) {
	k := keys()
	privDER, err := x509.MarshalPKCS8PrivateKey(k.rsa)
	if err != nil {
		t.Fatal(err)
	}
	ecPrivDER, err := x509.MarshalECPrivateKey(k.ec)
	if err != nil {
		t.Fatal(err)
	}
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "no PEM block"},
		{"not PEM", []byte("hello"), "no PEM block"},
		{"private key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), "private key"},
		{"ec private key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecPrivDER}), "private key"},
		{"unknown block", pem.EncodeToMemory(&pem.Block{Type: "OPENSSH PUBLIC KEY", Bytes: []byte{1}}), "unsupported block type"},
		{"garbage public key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}), "pem block 1"},
		{"garbage certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}), "pem block 1"},
		{"weak rsa in second block", append(pemPublic(t, k.ec.Public()), pemPublic(t, weak.Public())...), "pem block 2 (PUBLIC KEY): RSA key of 1024 bits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := LoadPublicKeys(tc.in)
			if err == nil {
				t.Fatalf("got %d keys, want an error", len(keys))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestKeyFits(t *testing.T) {
	k := keys()
	tests := []struct {
		alg  string
		key  any
		want bool
	}{
		{"RS256", k.rsa.Public(), true},
		{"PS512", k.rsa.Public(), true},
		{"RS256", k.ec.Public(), false},
		{"HS256", k.rsa.Public(), false},
		{"HS256", hmacSecret, false},
		{"ES256", k.ec.Public(), true},
		{"ES384", k.ec.Public(), false},
		{"ES256", k.rsa.Public(), false},
		{"EdDSA", k.ed.Public(), true},
		{"EdDSA", k.ed, false},
		{"RS256", k.rsa, false},
		{"ES256", (*ecdsa.PublicKey)(nil), false},
		{"RS256", (*rsa.PublicKey)(nil), false},
		{"RS256", nil, false},
	}
	for _, tc := range tests {
		if got := keyFits(tc.alg, tc.key); got != tc.want {
			t.Errorf("keyFits(%s, %T) = %v, want %v", tc.alg, tc.key, got, tc.want)
		}
	}
}
