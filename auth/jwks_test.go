package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// jwksServer serves a JWK Set that tests can replace.
type jwksServer struct {
	*httptest.Server
	body atomic.Pointer[[]byte]
	hits atomic.Int32
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

type jwkEntry struct {
	kid string
	alg jwkset.ALG
	key any
}

// set publishes the public halves of keys, plus an HMAC ("oct") key under kid
// "sym" that must never be used.
func (s *jwksServer) set(t *testing.T, entries ...jwkEntry) {
	t.Helper()
	store := jwkset.NewMemoryStorage()
	for _, e := range entries {
		jwk, err := jwkset.NewJWKFromKey(e.key, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: e.kid, ALG: e.alg}})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.KeyWrite(context.Background(), jwk); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := store.JSONPublic(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	doc.Keys = append(doc.Keys, map[string]any{"kty": "oct", "kid": "sym", "k": base64.RawURLEncoding.EncodeToString(hmacSecret)})
	body, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	s.body.Store(&body)
}

func TestVerifyJWKS(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t)
	srv.set(t,
		jwkEntry{"k1", jwkset.AlgRS256, k.rsa.Public()},
		jwkEntry{"e1", jwkset.AlgES256, k.ec.Public()},
		jwkEntry{"d1", jwkset.AlgEdDSA, k.ed.Public()},
	)
	var (
		mu        sync.Mutex
		fetchErrs []error
	)
	v := newVerifier(t, VerifierConfig{
		Algorithms:  []string{"RS256", "ES256", "EdDSA", "HS256"},
		HMACSecrets: map[string][]byte{"": []byte("a-completely-different-hmac-secret")},
		JWKSURL:     srv.URL + "/.well-known/jwks.json",
		Now:         fixedNow,
		OnJWKSError: func(err error) { mu.Lock(); fetchErrs = append(fetchErrs, err); mu.Unlock() },
	})

	good := []struct {
		name  string
		token string
	}{
		{"RS256 by kid", sign(t, jwt.SigningMethodRS256, k.rsa, "k1", claims(nil))},
		{"ES256 by kid", sign(t, jwt.SigningMethodES256, k.ec, "e1", claims(nil))},
		{"EdDSA by kid", sign(t, jwt.SigningMethodEdDSA, k.ed, "d1", claims(nil))},
		{"RS256 without kid tries the fitting keys", sign(t, jwt.SigningMethodRS256, k.rsa, "", claims(nil))},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(tc.token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.UserID != "user-1" || id.Plan != "gold" {
				t.Errorf("got %+v", id)
			}
		})
	}

	bad := []struct {
		name  string
		token string
	}{
		{"kid of another key type", sign(t, jwt.SigningMethodES256, k.ec, "k1", claims(nil))},
		{"HS256 signed with the JWKS oct key", sign(t, jwt.SigningMethodHS256, hmacSecret, "sym", claims(nil))},
		{"HS256 without kid signed with the JWKS oct key", sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(nil))},
		{"RS256 naming the oct key", sign(t, jwt.SigningMethodRS256, k.rsa, "sym", claims(nil))},
		{"HS256 keyed with the RSA public key", sign(t, jwt.SigningMethodHS256, pemPublic(t, k.rsa.Public()), "k1", claims(nil))},
		{"wrong RSA key under a known kid", sign(t, jwt.SigningMethodRS256, k.rsa2, "k1", claims(nil))},
		{"RS256 without kid, unknown key", sign(t, jwt.SigningMethodRS256, k.rsa2, "", claims(nil))},
		{"expired", sign(t, jwt.SigningMethodRS256, k.rsa, "k1", claims(map[string]any{"exp": t0.Add(-time.Hour).Unix()}))},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := v.Verify(tc.token); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("err = %v, want ErrInvalidToken", err)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(fetchErrs) != 0 {
		t.Errorf("fetch errors: %v", fetchErrs)
	}
}

// A new key is picked up by the refresh an unknown kid triggers, and a key the
// JWK Set drops stops working.
func TestVerifyJWKSRotation(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t)
	srv.set(t, jwkEntry{"old", jwkset.AlgRS256, k.rsa.Public()})
	v := newVerifier(t, VerifierConfig{
		Algorithms: []string{"RS256"},
		JWKSURL:    srv.URL,
		Now:        fixedNow,
	})
	oldTok := sign(t, jwt.SigningMethodRS256, k.rsa, "old", claims(nil))
	newTok := sign(t, jwt.SigningMethodRS256, k.rsa2, "new", claims(nil))
	if _, err := v.Verify(oldTok); err != nil {
		t.Fatalf("old key before rotation: %v", err)
	}
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("fetches = %d, want 1", got)
	}

	srv.set(t, jwkEntry{"new", jwkset.AlgRS256, k.rsa2.Public()})
	if _, err := v.Verify(newTok); err != nil {
		t.Fatalf("new key after rotation: %v", err)
	}
	if got := srv.hits.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2", got)
	}
	if _, err := v.Verify(oldTok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("old key after rotation: err = %v, want ErrInvalidToken", err)
	}
	// Unknown kids refresh at most once per interval: the refused old token did
	// not fetch again.
	if got := srv.hits.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2", got)
	}
}

func TestVerifyJWKSUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	var calls atomic.Int32
	v, err := NewVerifier(t.Context(), VerifierConfig{
		Algorithms:  []string{"RS256"},
		JWKSURL:     srv.URL,
		Now:         fixedNow,
		OnJWKSError: func(error) { calls.Add(1) },
	})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	if calls.Load() == 0 {
		t.Error("OnJWKSError was not called for the failed first fetch")
	}
	_, err = v.Verify(sign(t, jwt.SigningMethodRS256, keys().rsa, "k1", claims(nil)))
	if !errors.Is(err, ErrInvalidToken) {
		t.Errorf("err = %v, want ErrInvalidToken", err)
	}
}
