package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// t0 is the fixed instant every test runs at.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func fixedNow() time.Time { return t0 }

const (
	testIssuer   = "https://portal.example"
	testAudience = "streamgate"
)

var hmacSecret = []byte("0123456789abcdef0123456789abcdef")

type testKeys struct {
	rsa, rsa2 *rsa.PrivateKey
	ec        *ecdsa.PrivateKey
	ec2       *ecdsa.PrivateKey
	ed        ed25519.PrivateKey
}

var keys = sync.OnceValue(func() testKeys {
	var k testKeys
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	if k.ec2, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	return k
})

// pemPublic is the PKIX PEM encoding of pub.
func pemPublic(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// claims returns a valid claim set at t0; overrides are applied on top, and a
// nil value deletes the claim.
func claims(overrides map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub":  "user-1",
		"plan": "gold",
		"iss":  testIssuer,
		"aud":  testAudience,
		"iat":  t0.Add(-time.Minute).Unix(),
		"exp":  t0.Add(5 * time.Minute).Unix(),
	}
	for k, v := range overrides {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// sign makes a JWT; kid "" leaves the header without one.
func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

// baseConfig accepts HS256 (kids "" and "h1"), RS256 ("r1"), ES256 ("e1") and
// EdDSA ("d1") at t0, with issuer and audience checked.
func baseConfig() VerifierConfig {
	k := keys()
	return VerifierConfig{
		Algorithms:  []string{"HS256", "RS256", "ES256", "EdDSA"},
		HMACSecrets: map[string][]byte{"": hmacSecret, "h1": hmacSecret},
		PublicKeys: map[string]crypto.PublicKey{
			"r1": &k.rsa.PublicKey,
			"e1": &k.ec.PublicKey,
			"d1": k.ed.Public(),
		},
		Issuer:   testIssuer,
		Audience: testAudience,
		Now:      fixedNow,
	}
}

func newVerifier(t testing.TB, cfg VerifierConfig) *Verifier {
	t.Helper()
	v, err := NewVerifier(t.Context(), cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}
