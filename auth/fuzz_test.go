package auth

import (
	"errors"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func FuzzGrantsVerify(f *testing.F) {
	g := newGrants(f, fixedNow, grantKeyA, grantKeyB)
	good, err := g.Sign(testGrant())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add(good[:len(good)/2])
	f.Add("")
	f.Add("..")
	f.Add("a.k2030a.b")
	f.Add("e30.k2030a." + strings.Repeat("A", 43))
	f.Fuzz(func(t *testing.T, token string) {
		gr, err := g.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %v does not wrap ErrInvalidToken", err)
			}
			return
		}
		if gr.User == "" || gr.Session == "" || !gr.ExpiresAt.After(t0) {
			t.Fatalf("accepted an invalid grant %+v", gr)
		}
	})
}

func FuzzVerifierVerify(f *testing.F) {
	v := newVerifier(f, baseConfig())
	for _, tc := range badTokens(f) {
		f.Add(tc.token)
	}
	k := keys()
	f.Add(sign(f, jwt.SigningMethodHS256, hmacSecret, "", claims(nil)))
	f.Add(sign(f, jwt.SigningMethodRS256, k.rsa, "r1", claims(nil)))
	f.Add(sign(f, jwt.SigningMethodES256, k.ec, "e1", claims(nil)))
	f.Add(sign(f, jwt.SigningMethodEdDSA, k.ed, "d1", claims(nil)))
	f.Fuzz(func(t *testing.T, token string) {
		id, err := v.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %v does not wrap ErrInvalidToken", err)
			}
			if len(token) >= 16 && strings.Contains(err.Error(), token) {
				t.Fatalf("error %q repeats the token", err)
			}
			return
		}
		if id.UserID == "" || id.Source != SourceJWT {
			t.Fatalf("accepted with identity %+v", id)
		}
	})
}
