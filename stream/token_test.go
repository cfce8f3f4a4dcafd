package stream

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var (
	testKeyOnce sync.Once
	testKey     *rsa.PrivateKey
)

func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	testKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		testKey = k
	})
	return testKey
}

const uid = "0123456789abcdef0123456789abcdef"

func TestParsePrivateKeyForms(t *testing.T) {
	k := rsaKey(t)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	p8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})
	b64 := []byte(base64.StdEncoding.EncodeToString(pkcs1))

	for name, in := range map[string][]byte{"pkcs1": pkcs1, "pkcs8": pkcs8, "stream base64": b64, "base64 with newline": append(b64, '\n')} {
		t.Run(name, func(t *testing.T) {
			got, err := ParsePrivateKey(in)
			if err != nil {
				t.Fatalf("ParsePrivateKey: %v", err)
			}
			if !got.Equal(k) {
				t.Fatal("parsed key differs from the original")
			}
		})
	}
	for name, in := range map[string][]byte{
		"empty":     nil,
		"garbage":   []byte("not a key"),
		"public":    pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2}}),
		"bad der":   pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{1, 2}}),
		"b64 noise": []byte(base64.StdEncoding.EncodeToString([]byte("hello"))),
	} {
		t.Run("refuse "+name, func(t *testing.T) {
			if _, err := ParsePrivateKey(in); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

func TestMint(t *testing.T) {
	k := rsaKey(t)
	s, err := NewSignerFromKey("kid-1", k)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	rules := []AccessRule{
		{Type: RuleCountry, Action: ActionAllow, Country: []string{"GB"}},
		{Type: RuleIPSrc, Action: ActionAllow, IP: []string{"192.0.2.0/24", "2001:db8::1"}},
		{Type: RuleAny, Action: ActionBlock},
	}
	tok, err := s.Mint(Claims{Video: uid, NotBefore: now.Add(-time.Minute), ExpiresAt: now.Add(5 * time.Minute), Downloadable: true, AccessRules: rules}, now)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(func() time.Time { return now })).
		Parse(tok, func(tk *jwt.Token) (any, error) { return &k.PublicKey, nil })
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	if parsed.Header["kid"] != "kid-1" {
		t.Errorf("header kid = %v, want kid-1", parsed.Header["kid"])
	}
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	var got map[string]any
	if err := json.Unmarshal(payload, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"sub": uid, "kid": "kid-1", "exp": float64(now.Add(5 * time.Minute).Unix()), "nbf": float64(now.Add(-time.Minute).Unix()), "downloadable": true}
	for key, v := range want {
		if got[key] != v {
			t.Errorf("claim %s = %v, want %v", key, got[key], v)
		}
	}
	ar, _ := json.Marshal(got["accessRules"])
	var gotRules []AccessRule
	if err := json.Unmarshal(ar, &gotRules); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotRules, rules) {
		t.Errorf("accessRules = %+v, want %+v", gotRules, rules)
	}
}

func TestMintRefuses(t *testing.T) {
	s, err := NewSignerFromKey("kid-1", rsaKey(t))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	ok := Claims{Video: uid, NotBefore: now, ExpiresAt: now.Add(time.Hour), Downloadable: true}
	many := make([]AccessRule, 6)
	for i := range many {
		many[i] = AccessRule{Type: RuleAny, Action: ActionAllow}
	}
	for _, tc := range []struct {
		name   string
		modify func(c *Claims)
	}{
		{"six rules", func(c *Claims) { c.AccessRules = many }},
		{"exp beyond 24h", func(c *Claims) { c.ExpiresAt = now.Add(24*time.Hour + time.Second) }},
		{"exp equals nbf", func(c *Claims) { c.ExpiresAt = c.NotBefore }},
		{"exp before nbf", func(c *Claims) { c.NotBefore = c.ExpiresAt.Add(time.Second) }},
		{"exp in the past", func(c *Claims) { c.NotBefore = now.Add(-2 * time.Hour); c.ExpiresAt = now.Add(-time.Hour) }},
		{"no exp", func(c *Claims) { c.ExpiresAt = time.Time{} }},
		{"lowercase country", func(c *Claims) {
			c.AccessRules = []AccessRule{{Type: RuleCountry, Action: ActionAllow, Country: []string{"gb"}}}
		}},
		{"three letter country", func(c *Claims) {
			c.AccessRules = []AccessRule{{Type: RuleCountry, Action: ActionAllow, Country: []string{"GBR"}}}
		}},
		{"bad cidr", func(c *Claims) {
			c.AccessRules = []AccessRule{{Type: RuleIPSrc, Action: ActionAllow, IP: []string{"10.0.0.0/33"}}}
		}},
		{"unknown type", func(c *Claims) { c.AccessRules = []AccessRule{{Type: "ip.asn", Action: ActionAllow}} }},
		{"unknown action", func(c *Claims) { c.AccessRules = []AccessRule{{Type: RuleAny, Action: "deny"}} }},
		{"country rule without countries", func(c *Claims) { c.AccessRules = []AccessRule{{Type: RuleCountry, Action: ActionBlock}} }},
		{"bad uid", func(c *Claims) { c.Video = "not-a-uid" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.modify(&c)
			if tok, err := s.Mint(c, now); err == nil {
				t.Fatalf("Mint accepted %+v: %s", c, tok)
			}
		})
	}
	if _, err := s.Mint(ok, now); err != nil {
		t.Fatalf("the unmodified claims must mint: %v", err)
	}
	c := ok
	c.ExpiresAt = now.Add(24 * time.Hour)
	if _, err := s.Mint(c, now); err != nil {
		t.Fatalf("exactly 24h must mint: %v", err)
	}
}

func BenchmarkMint(b *testing.B) {
	s, err := NewSignerFromKey("kid-1", rsaKey(b))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	c := Claims{Video: uid, NotBefore: now, ExpiresAt: now.Add(5 * time.Minute), Downloadable: true,
		AccessRules: []AccessRule{{Type: RuleCountry, Action: ActionAllow, Country: []string{"GB"}}, {Type: RuleAny, Action: ActionBlock}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Mint(c, now); err != nil {
			b.Fatal(err)
		}
	}
}
