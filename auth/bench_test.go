package auth

import (
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func BenchmarkVerify(b *testing.B) {
	k := keys()
	v := newVerifier(b, baseConfig())
	for _, bc := range []struct {
		name  string
		token string
	}{
		{"HS256", sign(b, jwt.SigningMethodHS256, hmacSecret, "", claims(nil))},
		{"RS256", sign(b, jwt.SigningMethodRS256, k.rsa, "r1", claims(nil))},
		{"ES256", sign(b, jwt.SigningMethodES256, k.ec, "e1", claims(nil))},
		{"EdDSA", sign(b, jwt.SigningMethodEdDSA, k.ed, "d1", claims(nil))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(bc.token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkGrants(b *testing.B) {
	g := newGrants(b, fixedNow, grantKeyA)
	tok, err := g.Sign(testGrant())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := g.Sign(testGrant()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := g.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Verifier and Grants are shared by every request; run them side by side under
// the race detector.
func TestConcurrentUse(t *testing.T) {
	k := keys()
	v := newVerifier(t, baseConfig())
	g := newGrants(t, fixedNow, grantKeyA, grantKeyB)
	jwtTok := sign(t, jwt.SigningMethodRS256, k.rsa, "r1", claims(nil))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if _, err := v.Verify(jwtTok); err != nil {
					t.Error(err)
				}
				tok, err := g.Sign(testGrant())
				if err != nil {
					t.Error(err)
					continue
				}
				if _, err := g.Verify(tok); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}
