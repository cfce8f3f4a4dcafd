package proxy

import (
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/streamgate/streamgate/policy"
	"github.com/streamgate/streamgate/stream"
)

// countingSigner counts the tokens it mints.
type countingSigner struct {
	TokenSigner
	mints atomic.Int64
}

func (s *countingSigner) Mint(c stream.Claims, now time.Time) (string, error) {
	s.mints.Add(1)
	return s.TokenSigner.Mint(c, now)
}

func countryRules(cc string) []stream.AccessRule {
	return DirectRules(cc, netip.Addr{}, false, policy.CountryRules{})
}

func TestLinkTokensShared(t *testing.T) {
	testKeys(t)
	signer, err := stream.NewSignerFromKey(streamKeyID, streamKey)
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 16 * time.Minute // buckets of one minute
	cs := &countingSigner{TokenSigner: signer}
	c := newLinkTokens(cs, ttl, maxLinkTokens)
	now := time.Date(2025, 3, 12, 10, 0, 10, 0, time.UTC)
	get := func(at time.Time, typ stream.DownloadType, cc string) (string, time.Time) {
		t.Helper()
		tok, exp, err := c.token(uidPublic, typ, countryRules(cc), at.Add(ttl), at)
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		return tok, exp
	}

	// Two users asking within one bucket: one token, one signature.
	alice, exp := get(now, stream.Default, "GB")
	bob, exp2 := get(now.Add(20*time.Second), stream.Default, "GB")
	if alice != bob || exp != exp2 {
		t.Fatalf("two links with the same claims in one bucket got different tokens")
	}
	if n := cs.mints.Load(); n != 1 {
		t.Errorf("%d tokens minted for two links with the same claims, want 1", n)
	}
	if want := time.Date(2025, 3, 12, 10, 17, 0, 0, time.UTC); !exp.Equal(want) {
		t.Errorf("token expires %v, want the end of the bucket, %v", exp, want)
	}
	claims := parseStreamToken(t, alice)
	if nbf := time.Unix(int64(claims["nbf"].(float64)), 0); nbf.After(now) {
		t.Errorf("nbf %v is after the first link was asked for (%v)", nbf, now)
	}

	// Another country: other rules, another token.
	if us, _ := get(now, stream.Default, "US"); us == alice {
		t.Error("links pinned to different countries share a token")
	}
	// Another type: its own entry (Stream's token does not name the type).
	before := cs.mints.Load()
	get(now, stream.Audio, "GB")
	if cs.mints.Load() != before+1 {
		t.Error("a link of another type reused the token of the first")
	}

	// The next bucket: a new token, expiring a bucket later.
	later, laterExp := get(now.Add(time.Minute), stream.Default, "GB")
	if later == alice {
		t.Error("a link asked for in the next bucket got the expired bucket's token")
	}
	if d := laterExp.Sub(exp); d != time.Minute {
		t.Errorf("the next bucket's token expires %v after the first, want 1m", d)
	}
}

func TestLinkTokensBounds(t *testing.T) {
	testKeys(t)
	signer, err := stream.NewSignerFromKey(streamKeyID, streamKey)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 3, 12, 10, 0, 0, 0, time.UTC)

	// A TTL near Stream's 24 hours is never rounded past them.
	c := newLinkTokens(signer, stream.MaxTokenLifetime, 10)
	at := now.Add(time.Second)
	if _, exp, err := c.token(uidPublic, stream.Default, nil, at.Add(stream.MaxTokenLifetime), at); err != nil {
		t.Fatalf("token: %v", err)
	} else if exp.Sub(at) > stream.MaxTokenLifetime || !exp.After(at) {
		t.Errorf("token lives %v, want at most %v", exp.Sub(at), stream.MaxTokenLifetime)
	}

	// The cache holds at most max tokens, dropping past buckets first.
	const ttl = 16 * time.Second
	c = newLinkTokens(signer, ttl, 3)
	for _, cc := range []string{"AA", "AB", "AC", "AD"} {
		if _, _, err := c.token(uidPublic, stream.Default, countryRules(cc), now.Add(ttl), now); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.size(); n != 3 {
		t.Errorf("the cache holds %d tokens, want its 3", n)
	}
	if _, _, err := c.token(uidPublic, stream.Default, nil, now.Add(time.Hour+ttl), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := c.size(); n != 1 {
		t.Errorf("after its buckets passed the cache holds %d tokens, want 1", n)
	}
}

// parseStreamToken reads a Stream token's claims, verified with the test key.
func parseStreamToken(t *testing.T, tok string) jwt.MapClaims {
	t.Helper()
	claims := jwt.MapClaims{}
	keyFunc := func(*jwt.Token) (any, error) { return &streamKey.PublicKey, nil }
	if _, err := jwt.ParseWithClaims(tok, claims, keyFunc, jwt.WithoutClaimsValidation()); err != nil {
		t.Fatalf("parse Stream token: %v", err)
	}
	return claims
}

// TestDirectLinksShareTokens: through the gateway, two users in one country
// get links carrying one token; a user in another country gets another.
func TestDirectLinksShareTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gw := e.gateway(func(c *Config, _ *Deps) { c.LinkMode = "direct" })
	link := func(user, src string) string {
		t.Helper()
		r := do(t, e.client(src), "POST", gw.url+"/v1/videos/"+uidPublic+"/links", bearer(e.jwt(user, "", nil)), nil)
		if r.status != http.StatusCreated {
			t.Fatalf("link for %s: %d %s", user, r.status, r.body)
		}
		u := string(r.body)
		i := strings.Index(u, e.emuSrv.URL+"/")
		if i < 0 {
			t.Fatalf("link is not a delivery URL: %s", r.body)
		}
		tok, _, _ := strings.Cut(u[i+len(e.emuSrv.URL)+1:], "/")
		return e.remember(tok)
	}
	a, b := link("ann", addrGB), link("ben", addrGB)
	if a != b {
		t.Error("two users in one country got different tokens for the same video")
	}
	if c := link("cat", addrUS); c == a {
		t.Error("users in different countries got the same token")
	}
	// The shared token still delivers, to its country only.
	u := e.emuSrv.URL + "/" + a + "/downloads/default.mp4"
	if r := do(t, e.client(addrGB), "HEAD", u, nil, nil); r.status != http.StatusOK {
		t.Errorf("shared token from GB: %d", r.status)
	}
	if r := do(t, e.client(addrUS), "HEAD", u, nil, nil); r.status != http.StatusForbidden {
		t.Errorf("GB token from US: %d, want 403", r.status)
	}
}
