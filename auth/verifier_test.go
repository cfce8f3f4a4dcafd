package auth

import (
	"crypto"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// rawJWT assembles a token from parts without signing it.
func rawJWT(t testing.TB, header, payload map[string]any, sig string) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(header) + "." + enc(payload) + "." + sig
}

// tamper rewrites the payload of a signed token, keeping its signature.
func tamper(t testing.TB, tok string, edit func(jwt.MapClaims)) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	js, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c jwt.MapClaims
	if err := json.Unmarshal(js, &c); err != nil {
		t.Fatal(err)
	}
	edit(c)
	js, _ = json.Marshal(c)
	parts[1] = base64.RawURLEncoding.EncodeToString(js)
	return strings.Join(parts, ".")
}

type tokenCase struct {
	name  string
	token string
	why   string // substring of the error
}

func badTokens(t testing.TB) []tokenCase {
	k := keys()
	hs := jwt.SigningMethodHS256
	good := sign(t, hs, hmacSecret, "", claims(nil))
	rsaPEM := pemPublic(t, &k.rsa.PublicKey)
	noneTok, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return []tokenCase{
		{"empty string", "", "empty token"},
		{"expired beyond leeway", sign(t, hs, hmacSecret, "", claims(map[string]any{"exp": t0.Add(-31 * time.Second).Unix()})), "expired"},
		{"nbf ahead", sign(t, hs, hmacSecret, "", claims(map[string]any{"nbf": t0.Add(time.Minute).Unix()})), "not valid yet"},
		{"iat in the future", sign(t, hs, hmacSecret, "", claims(map[string]any{"iat": t0.Add(time.Hour).Unix()})), "before issued"},
		{"wrong iss", sign(t, hs, hmacSecret, "", claims(map[string]any{"iss": "https://evil.example"})), "issuer"},
		{"missing iss", sign(t, hs, hmacSecret, "", claims(map[string]any{"iss": nil})), "iss"},
		{"wrong aud", sign(t, hs, hmacSecret, "", claims(map[string]any{"aud": "someone-else"})), "audience"},
		{"missing aud", sign(t, hs, hmacSecret, "", claims(map[string]any{"aud": nil})), "aud"},
		{"alg none", noneTok, "signing method none is invalid"},
		{"alg none hand made", rawJWT(t, map[string]any{"alg": "none", "typ": "JWT"}, claims(nil), ""), "none"},
		{"HS256 keyed with RSA public key, RSA kid", sign(t, hs, rsaPEM, "r1", claims(nil)), `unknown key id "r1"`},
		{"HS256 keyed with RSA public key, no kid", sign(t, hs, rsaPEM, "", claims(nil)), "signature is invalid"},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, k.rsa, "r9", claims(nil)), `unknown key id "r9"`},
		{"unknown hmac kid", sign(t, hs, hmacSecret, "h9", claims(nil)), `unknown key id "h9"`},
		{"kid of another key type", sign(t, jwt.SigningMethodES256, k.ec, "r1", claims(nil)), `key "r1" does not fit ES256`},
		{"kid not a string", func() string {
			tok := jwt.NewWithClaims(hs, claims(nil))
			tok.Header["kid"] = 7
			s, _ := tok.SignedString(hmacSecret)
			return s
		}(), "kid header is not a string"},
		{"tampered payload", tamper(t, good, func(c jwt.MapClaims) { c["sub"] = "admin" }), "signature is invalid"},
		{"tampered plan", tamper(t, good, func(c jwt.MapClaims) { c["plan"] = "unlimited" }), "signature is invalid"},
		{"oversized", sign(t, hs, hmacSecret, "", claims(map[string]any{"pad": strings.Repeat("x", MaxTokenSize)})), "byte limit"},
		{"wrong algorithm HS384", sign(t, jwt.SigningMethodHS384, hmacSecret, "", claims(nil)), "signing method HS384 is invalid"},
		{"wrong algorithm RS512", sign(t, jwt.SigningMethodRS512, k.rsa, "r1", claims(nil)), "signing method RS512 is invalid"},
		{"wrong algorithm PS256", sign(t, jwt.SigningMethodPS256, k.rsa, "r1", claims(nil)), "signing method PS256 is invalid"},
		{"unknown algorithm", rawJWT(t, map[string]any{"alg": "XX999"}, claims(nil), "c2ln"), "unavailable"},
		{"missing alg", rawJWT(t, map[string]any{"typ": "JWT"}, claims(nil), "c2ln"), "unspecified"},
		{"missing exp", sign(t, hs, hmacSecret, "", claims(map[string]any{"exp": nil})), "exp claim is required"},
		{"exp not a number", sign(t, hs, hmacSecret, "", claims(map[string]any{"exp": "tomorrow"})), "exp"},
		{"malformed one segment", "abc", "malformed"},
		{"malformed two segments", "abc.def", "malformed"},
		{"malformed four segments", good + ".x", "malformed"},
		{"malformed dots", "..", "malformed"},
		{"malformed base64", "!!!." + strings.Split(good, ".")[1] + ".sig", "malformed"},
		{"malformed header json", base64.RawURLEncoding.EncodeToString([]byte("{nope")) + ".e30.c2ln", "malformed"},
		{"malformed padded base64", strings.Split(good, ".")[0] + "=." + strings.Split(good, ".")[1] + "." + strings.Split(good, ".")[2], "malformed"},
		{"missing user claim", sign(t, hs, hmacSecret, "", claims(map[string]any{"sub": nil})), `user claim "sub" is missing or empty`},
		{"empty user claim", sign(t, hs, hmacSecret, "", claims(map[string]any{"sub": ""})), `user claim "sub" is missing or empty`},
		{"user claim not a string", sign(t, hs, hmacSecret, "", claims(map[string]any{"sub": 42})), "sub"},
		{"user claim with control characters", sign(t, hs, hmacSecret, "", claims(map[string]any{"sub": "a\nb"})), "invalid characters"},
		{"user claim too long", sign(t, hs, hmacSecret, "", claims(map[string]any{"sub": strings.Repeat("u", MaxUserIDLen+1)})), "longer"},
		{"plan claim not a string", sign(t, hs, hmacSecret, "", claims(map[string]any{"plan": 3})), `claim "plan" is not a string`},
		{"bad signature hmac", sign(t, hs, []byte("another-secret-another-secret-xx"), "", claims(nil)), "signature is invalid"},
		{"bad signature rsa", sign(t, jwt.SigningMethodRS256, k.rsa2, "r1", claims(nil)), "verification error"},
		{"bad signature ecdsa", sign(t, jwt.SigningMethodES256, k.ec2, "e1", claims(nil)), "signature"},
		{"truncated signature", good[:len(good)-4], "signature"},
	}
}

func TestVerifyRejects(t *testing.T) {
	v := newVerifier(t, baseConfig())
	for _, tc := range badTokens(t) {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(tc.token)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Verify = %+v, %v; want ErrInvalidToken", id, err)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("error %q does not say %q", err, tc.why)
			}
			if id != (Identity{}) {
				t.Errorf("identity = %+v, want zero", id)
			}
			for _, part := range strings.Split(tc.token, ".") {
				if len(part) >= 8 && strings.Contains(err.Error(), part) {
					t.Errorf("error %q repeats part of the token", err)
				}
			}
		})
	}
}

// An HS256 token "signed with the RSA public key" fails even where only RS256
// is allowed, whether or not it names the RSA key's kid.
func TestVerifyRSAKeyAsHMACSecret(t *testing.T) {
	k := keys()
	v := newVerifier(t, VerifierConfig{
		Algorithms: []string{"RS256"},
		PublicKeys: map[string]crypto.PublicKey{"": &k.rsa.PublicKey, "r1": &k.rsa.PublicKey},
		Now:        fixedNow,
	})
	secret := pemPublic(t, &k.rsa.PublicKey)
	for _, kid := range []string{"", "r1"} {
		_, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, kid, claims(nil)))
		if !errors.Is(err, ErrInvalidToken) {
			t.Errorf("kid %q: err = %v, want ErrInvalidToken", kid, err)
		}
	}
	// And the key lookup refuses it even if the algorithm were allowed.
	tok, _, err := jwt.NewParser().ParseUnverified(sign(t, jwt.SigningMethodHS256, secret, "r1", claims(nil)), jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	if key, err := v.key(tok); err == nil {
		t.Errorf("key lookup for HS256 with kid r1 = %T, want an error", key)
	}
}

func TestVerifyAccepts(t *testing.T) {
	k := keys()
	v := newVerifier(t, baseConfig())
	tests := []struct {
		name  string
		token string
		want  Identity
	}{
		{"HS256 no kid", sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(nil)), Identity{UserID: "user-1", Plan: "gold", Source: SourceJWT}},
		{"HS256 kid", sign(t, jwt.SigningMethodHS256, hmacSecret, "h1", claims(nil)), Identity{UserID: "user-1", Plan: "gold", Source: SourceJWT}},
		{"RS256", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", claims(nil)), Identity{UserID: "user-1", Plan: "gold", Source: SourceJWT}},
		{"ES256", sign(t, jwt.SigningMethodES256, k.ec, "e1", claims(nil)), Identity{UserID: "user-1", Plan: "gold", Source: SourceJWT}},
		{"EdDSA", sign(t, jwt.SigningMethodEdDSA, k.ed, "d1", claims(nil)), Identity{UserID: "user-1", Plan: "gold", Source: SourceJWT}},
		{"no plan", sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"plan": nil})), Identity{UserID: "user-1", Source: SourceJWT}},
		{"audience list", sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"aud": []string{"other", testAudience}})), Identity{UserID: "user-1", Plan: "gold", Source: SourceJWT}},
		{"expired within leeway", sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"exp": t0.Add(-29 * time.Second).Unix()})), Identity{UserID: "user-1", Plan: "gold", Source: SourceJWT}},
		{"nbf within leeway", sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"nbf": t0.Add(29 * time.Second).Unix()})), Identity{UserID: "user-1", Plan: "gold", Source: SourceJWT}},
		{"iat within leeway", sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"iat": t0.Add(29 * time.Second).Unix()})), Identity{UserID: "user-1", Plan: "gold", Source: SourceJWT}},
		{"no iat", sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"iat": nil})), Identity{UserID: "user-1", Plan: "gold", Source: SourceJWT}},
		{"unicode user", sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"sub": "zoë@example.com"})), Identity{UserID: "zoë@example.com", Plan: "gold", Source: SourceJWT}},
		{"just under size limit", func() string {
			base := sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"pad": ""}))
			pad := (MaxTokenSize - len(base)) * 3 / 4
			return sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"pad": strings.Repeat("x", pad-2)}))
		}(), Identity{UserID: "user-1", Plan: "gold", Source: SourceJWT}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(tc.token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestVerifyLeeway(t *testing.T) {
	cfg := baseConfig()
	cfg.Leeway = 2 * time.Minute
	v := newVerifier(t, cfg)
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"exp": t0.Add(-90 * time.Second).Unix()}))); err != nil {
		t.Errorf("exp 90s ago with 2m leeway: %v", err)
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"exp": t0.Add(-3 * time.Minute).Unix()}))); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("exp 3m ago with 2m leeway: err = %v, want ErrInvalidToken", err)
	}
}

func TestVerifyClock(t *testing.T) {
	now := t0
	cfg := baseConfig()
	cfg.Now = func() time.Time { return now }
	v := newVerifier(t, cfg)
	tok := sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(nil)) // exp t0+5m
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("at t0: %v", err)
	}
	now = t0.Add(5*time.Minute + 31*time.Second)
	if _, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("after exp+leeway: err = %v, want ErrInvalidToken", err)
	}
}

func TestVerifyCustomClaims(t *testing.T) {
	cfg := baseConfig()
	cfg.UserClaim = "uid"
	cfg.PlanClaim = "tier"
	v := newVerifier(t, cfg)
	tok := sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"uid": "u-77", "tier": "pro"}))
	got, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Identity{UserID: "u-77", Plan: "pro", Source: SourceJWT}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// "sub" and "plan" are now ordinary claims: without uid the token is refused.
	_, err = v.Verify(sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(nil)))
	if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), `"uid"`) {
		t.Errorf("token without uid: err = %v, want ErrInvalidToken naming uid", err)
	}
}

func TestVerifyWithoutIssuerAudience(t *testing.T) {
	cfg := baseConfig()
	cfg.Issuer, cfg.Audience = "", ""
	v := newVerifier(t, cfg)
	tok := sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"iss": nil, "aud": nil}))
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestNewVerifierConfigErrors(t *testing.T) {
	k := keys()
	weak := &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 1023), E: 65537}
	tests := []struct {
		name string
		edit func(*VerifierConfig)
		want []string
	}{
		{"no algorithms", func(c *VerifierConfig) { c.Algorithms = nil }, []string{"at least one is required"}},
		{"alg none", func(c *VerifierConfig) { c.Algorithms = []string{"none"} }, []string{`"none" is never allowed`}},
		{"unknown alg", func(c *VerifierConfig) { c.Algorithms = []string{"HS256", "hs256", "RS1"} }, []string{`unknown algorithm "hs256"`, `unknown algorithm "RS1"`}},
		{"hmac alg without secret", func(c *VerifierConfig) { c.HMACSecrets = nil }, []string{"HS256 needs an HMAC secret"}},
		{"rsa alg without key", func(c *VerifierConfig) { delete(c.PublicKeys, "r1") }, []string{"RS256 needs a RSA public key"}},
		{"es384 with a P-256 key", func(c *VerifierConfig) { c.Algorithms = append(c.Algorithms, "ES384") }, []string{"ES384 needs a ECDSA public key"}},
		{"eddsa without key", func(c *VerifierConfig) { delete(c.PublicKeys, "d1") }, []string{"EdDSA needs a Ed25519 public key"}},
		{"short secret", func(c *VerifierConfig) { c.HMACSecrets["short"] = []byte("secret") }, []string{`hmac secret "short": 6 bytes is too short`}},
		{"weak rsa key", func(c *VerifierConfig) { c.PublicKeys["weak"] = weak }, []string{`public key "weak": RSA key of 1024 bits`}},
		{"private key given", func(c *VerifierConfig) { c.PublicKeys["priv"] = k.rsa }, []string{`public key "priv": unsupported key type`}},
		{"nil key", func(c *VerifierConfig) { c.PublicKeys["nil"] = nil }, []string{`public key "nil": nil key`}},
		{"http jwks on a public host", func(c *VerifierConfig) { c.JWKSURL = "http://portal.example/jwks.json" }, []string{"plain http"}},
		{"jwks ftp", func(c *VerifierConfig) { c.JWKSURL = "ftp://portal.example/jwks.json" }, []string{`scheme "ftp"`}},
		{"jwks no host", func(c *VerifierConfig) { c.JWKSURL = "/jwks.json" }, []string{"no host"}},
		{"negative leeway", func(c *VerifierConfig) { c.Leeway = -time.Second }, []string{"leeway"}},
		{"bad cookie name", func(c *VerifierConfig) { c.Cookie = "my cookie" }, []string{"cookie"}},
		{"same claims", func(c *VerifierConfig) { c.UserClaim, c.PlanClaim = "x", "x" }, []string{"both"}},
		{"every problem at once", func(c *VerifierConfig) {
			c.Algorithms = []string{"HS256", "XX"}
			c.HMACSecrets = map[string][]byte{"": []byte("short")}
			c.Leeway = -1
		}, []string{"unknown algorithm", "too short", "leeway"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			tc.edit(&cfg)
			_, err := NewVerifier(t.Context(), cfg)
			if err == nil {
				t.Fatal("NewVerifier succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestNewVerifierHTTPJWKSOnLoopback(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:1/jwks.json", "http://localhost:1/jwks.json", "http://[::1]:1/jwks.json"} {
		cfg := VerifierConfig{Algorithms: []string{"RS256"}, JWKSURL: u, Now: fixedNow, OnJWKSError: func(error) {}}
		if err := cfg.withDefaults().validate(); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	cfg := VerifierConfig{Algorithms: []string{"RS256"}, JWKSURL: "http://portal:8080/jwks", JWKSInsecureHTTP: true}
	if err := cfg.withDefaults().validate(); err != nil {
		t.Errorf("insecure http allowed: %v", err)
	}
}

func TestTokenFromRequest(t *testing.T) {
	hdr := sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"sub": "from-header"}))
	ck := sign(t, jwt.SigningMethodHS256, hmacSecret, "", claims(map[string]any{"sub": "from-cookie"}))
	cfg := baseConfig()
	cfg.Cookie = "portal_session"
	v := newVerifier(t, cfg)
	headerOnly := newVerifier(t, baseConfig())

	tests := []struct {
		name     string
		v        *Verifier
		auth     []string
		cookie   string
		wantUser string
		wantErr  error
	}{
		{"bearer header", v, []string{"Bearer " + hdr}, "", "from-header", nil},
		{"lowercase scheme and spaces", v, []string{"bearer   " + hdr + " "}, "", "from-header", nil},
		{"cookie", v, nil, ck, "from-cookie", nil},
		{"header wins over cookie", v, []string{"Bearer " + hdr}, ck, "from-header", nil},
		{"basic header falls back to cookie", v, []string{"Basic dXNlcjpwYXNz"}, ck, "from-cookie", nil},
		{"nothing", v, nil, "", "", ErrNoCredentials},
		{"basic header only", v, []string{"Basic dXNlcjpwYXNz"}, "", "", ErrNoCredentials},
		{"cookie ignored when not configured", headerOnly, nil, ck, "", ErrNoCredentials},
		{"empty bearer", v, []string{"Bearer "}, ck, "", ErrInvalidToken},
		{"bare bearer", v, []string{"Bearer"}, ck, "", ErrInvalidToken},
		{"two authorization headers", v, []string{"Bearer " + hdr, "Bearer " + hdr}, "", "", ErrInvalidToken},
		{"bad bearer does not fall back", v, []string{"Bearer nope"}, ck, "", ErrInvalidToken},
		{"bad cookie", v, nil, "nope", "", ErrInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v1/videos/x/downloads/default.mp4", nil)
			for _, a := range tc.auth {
				r.Header.Add("Authorization", a)
			}
			if tc.cookie != "" {
				r.AddCookie(&http.Cookie{Name: "portal_session", Value: tc.cookie})
			}
			id, err := tc.v.Authenticate(r)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Authenticate = %+v, %v; want %v", id, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if id.UserID != tc.wantUser || id.Source != SourceJWT {
				t.Errorf("got %+v, want user %q from jwt", id, tc.wantUser)
			}
		})
	}
}

func TestErrNoCredentialsIsNotInvalidToken(t *testing.T) {
	if errors.Is(ErrNoCredentials, ErrInvalidToken) || errors.Is(ErrInvalidToken, ErrNoCredentials) {
		t.Error("the two sentinels must stay distinct")
	}
}
