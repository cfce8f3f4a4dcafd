package proxy

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/streamgate/streamgate/auth"
	"github.com/streamgate/streamgate/policy"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

func limitPtr(burst int) *policy.Limit {
	return &policy.Limit{Rate: rate.Every(time.Hour), Burst: burst, Name: "ip"}
}

func sign(t *testing.T, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
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

// badToken is a portal JWT the verifier must refuse, and why.
type badToken struct {
	tok   string
	cause string // in the logged cause
}

// badTokens are portal JWTs the verifier must refuse, each for one reason.
func badTokens(t *testing.T, e *env) map[string]badToken {
	now := e.clock.Now()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "mallory", "iss": issuer, "aud": audience, "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	hs := func(mod func(jwt.MapClaims)) string {
		return sign(t, jwt.SigningMethodHS256, []byte(hmacSecret), "", claims(mod))
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&portalKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	good := hs(nil)
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(
		`{"sub":"admin","iss":"`+issuer+`","aud":"`+audience+`","exp":`+
			strconv.FormatInt(now.Add(10*time.Minute).Unix(), 10)+`}`)) + "." + parts[2]

	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]badToken{
		"expired":                {hs(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() }), "token is expired"},
		"nbf ahead":              {hs(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() }), "not valid yet"},
		"iat ahead":              {hs(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Hour).Unix() }), "used before issued"},
		"wrong issuer":           {hs(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }), "invalid issuer"},
		"wrong audience":         {hs(func(c jwt.MapClaims) { c["aud"] = "someone-else" }), "invalid audience"},
		"missing exp":            {hs(func(c jwt.MapClaims) { delete(c, "exp") }), "exp claim is required"},
		"missing sub":            {hs(func(c jwt.MapClaims) { delete(c, "sub") }), "user claim"},
		"oversized":              {hs(func(c jwt.MapClaims) { c["pad"] = strings.Repeat("p", 9<<10) }), "byte limit"},
		"alg none":               {none, "signing method none is invalid"},
		"HS256 with RSA pub PEM": {sign(t, jwt.SigningMethodHS256, pubPEM, portalKID, claims(nil)), "unknown key id"},
		"HS256 with PEM no kid":  {sign(t, jwt.SigningMethodHS256, pubPEM, "", claims(nil)), "signature is invalid"},
		"unknown kid":            {sign(t, jwt.SigningMethodRS256, portalKey, "who-is-this", claims(nil)), "unknown key id"},
		"RS256 by another key":   {sign(t, jwt.SigningMethodRS256, streamKey, portalKID, claims(nil)), "verification error"},
		"HS384 not allowed":      {sign(t, jwt.SigningMethodHS384, []byte(hmacSecret+"-and-some-more-bytes-for-384"), "", claims(nil)), "signing method HS384 is invalid"},
		"HS256 wrong secret":     {sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-at-least-32-bytes!!"), "", claims(nil)), "signature is invalid"},
		"tampered payload":       {tampered, "signature is invalid"},
		"malformed":              {"malformed-token-value-Zq9", "malformed"},
		"malformed three parts":  {"bm90.anNvbg.c2ln-malformed-xyz", "malformed"},
		"truncated signature":    {good[:len(good)-6], "malformed"},
		"PS256 not allowed":      {sign(t, jwt.SigningMethodPS256, portalKey, portalKID, claims(nil)), "signing method PS256 is invalid"},
	}
}

func TestBadPortalTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gb := e.client(addrGB)
	toks := badTokens(t, e)
	if len(toks) < 12 {
		t.Fatalf("only %d kinds of bad token", len(toks))
	}
	routes := []struct{ method, path string }{
		{"GET", "/v1/videos/" + uidPublic + "/downloads/default.mp4"},
		{"HEAD", "/v1/videos/" + uidPrivate + "/downloads/audio.m4a"},
		{"POST", "/v1/videos/" + uidPublic + "/links"},
		{"GET", "/v1/videos/" + uidPublic + "/downloads"},
		{"GET", "/v1/me/usage"},
	}
	i := 0
	for name, bt := range toks {
		tok := e.remember(bt.tok)
		route := routes[i%len(routes)]
		i++
		for _, viaCookie := range []bool{false, true} {
			h := bearer(tok)
			if viaCookie {
				h = http.Header{"Cookie": {cookieName + "=" + tok}}
			}
			r := do(t, gb, route.method, e.gw.url+route.path, h, nil)
			if r.status != http.StatusUnauthorized {
				t.Errorf("%s (cookie %v) on %s %s: status %d, want 401", name, viaCookie, route.method, route.path, r.status)
				continue
			}
			if got := r.header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
				t.Errorf("%s: WWW-Authenticate = %q", name, got)
			}
			if cause := e.logged(t, r); !strings.Contains(cause, bt.cause) {
				t.Errorf("%s: refused because %q, want %q", name, cause, bt.cause)
			}
			if route.method == "HEAD" {
				continue
			}
			p := r.problem(t)
			if p["type"] != "urn:streamgate:problem:unauthorized" {
				t.Errorf("%s: problem type %v", name, p["type"])
			}
			if strings.Contains(string(r.body), tok) {
				t.Errorf("%s: the problem body repeats the token", name)
			}
		}
	}
	// The good token works on the same routes, so the refusals were the token's.
	good := e.jwt("alice", "", nil)
	if r := do(t, gb, "HEAD", e.gw.url+routes[0].path, bearer(good), nil); r.status != http.StatusOK {
		t.Errorf("good token: status %d", r.status)
	}
	e.quiet(t)
	if st := e.emu.TotalStats(); st.Requests != 1 {
		t.Errorf("the emulator served %d deliveries, want only the good one", st.Requests)
	}
	e.assertNoSecretsLogged(t)
	// Every refusal logged its cause, and none of them the token.
	var refusals []map[string]any
	eventually(t, "a log line per refusal", func() bool {
		refusals = refusals[:0]
		for _, l := range e.logs.lines(t, "request") {
			if l["problem"] == "unauthorized" {
				refusals = append(refusals, l)
			}
		}
		return len(refusals) >= 2*len(toks)
	})
	if len(refusals) != 2*len(toks) {
		t.Errorf("%d refusal log lines, want %d", len(refusals), 2*len(toks))
	}
	for _, l := range refusals {
		if l["level"] != "warn" || l["cause"] == nil {
			t.Errorf("refusal log line: %v", l)
		}
	}
}

func TestBadGrants(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gb := e.client(addrGB)
	tok := e.jwt("granted", "", nil)
	mp4 := e.createLink(t, e.gw, gb, tok, uidPublic, `{"type":"default"}`)
	m4a := e.createLink(t, e.gw, gb, tok, uidPublic, `{"type":"audio"}`)
	grantOf := func(link string) string {
		u, _ := url.Parse(link)
		return strings.Split(u.Path, "/")[2]
	}
	g := grantOf(mp4.URL)

	other, err := auth.NewGrants([]auth.GrantKey{{ID: "g2", Secret: []byte("other-grant-secret-of-32-bytes-or-more")}}, e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	sameKID, err := auth.NewGrants([]auth.GrantKey{{ID: grantKeyID, Secret: []byte("forged-grant-secret-of-32-bytes-or-more")}}, e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	forge := func(is *auth.Grants) string {
		s, err := is.Sign(auth.Grant{User: "granted", Video: uidPublic, Type: stream.Default, ExpiresAt: e.clock.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return e.remember(s)
	}
	payload, rest, _ := strings.Cut(g, ".")
	flip := "A"
	if payload[5] == 'A' {
		flip = "B"
	}
	tests := []struct {
		name  string
		path  string
		cause string
	}{
		{"tampered payload", "/dl/" + payload[:5] + flip + payload[6:] + "." + rest + "/default.mp4", "bad grant signature"},
		{"tampered signature", "/dl/" + g[:len(g)-2] + "xx/default.mp4", "grant signature"},
		{"audio grant on mp4", "/dl/" + grantOf(m4a.URL) + "/default.mp4", "another download type"},
		{"unknown key", "/dl/" + forge(other) + "/default.mp4", "unknown grant key"},
		{"known key id, other secret", "/dl/" + forge(sameKID) + "/default.mp4", "bad grant signature"},
		{"garbage", "/dl/not-a-grant/default.mp4", "malformed grant"},
		{"oversized", "/dl/" + strings.Repeat("a", 3000) + ".g1.sig/default.mp4", "byte limit"},
	}
	for _, tt := range tests {
		r := do(t, gb, "GET", e.gw.url+tt.path, nil, nil)
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", tt.name, r.status)
			continue
		}
		if got := r.header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
			t.Errorf("%s: WWW-Authenticate = %q", tt.name, got)
		}
		r.problem(t)
		if cause := e.logged(t, r); !strings.Contains(cause, tt.cause) {
			t.Errorf("%s: refused because %q, want %q", tt.name, cause, tt.cause)
		}
	}

	// The genuine links work until they expire.
	if r := do(t, gb, "HEAD", mp4.URL, nil, nil); r.status != http.StatusOK {
		t.Fatalf("genuine link: status %d", r.status)
	}
	e.clock.Advance(15*time.Minute + time.Second)
	for _, link := range []string{mp4.URL, m4a.URL} {
		r := do(t, gb, "GET", link, nil, nil)
		if r.status != http.StatusUnauthorized {
			t.Errorf("expired link: status %d, want 401", r.status)
			continue
		}
		r.problem(t)
		if cause := e.logged(t, r); !strings.Contains(cause, "grant expired") {
			t.Errorf("expired link refused because %q", cause)
		}
	}
	e.quiet(t)
	if st := e.emu.TotalStats(); st.Requests != 1 {
		t.Errorf("the emulator served %d deliveries, want 1", st.Requests)
	}
	e.assertNoSecretsLogged(t)
}

// TestSecretsStayInside runs every kind of credential through the gateway, then
// checks what the emulator saw and what was logged.
func TestSecretsStayInside(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gb := e.client(addrGB)
	tok := e.jwt("secretive", "", nil)
	dl := e.gw.url + "/v1/videos/" + uidPrivate + "/downloads/default.mp4"

	hdr := bearer(tok)
	hdr.Set("Cookie", cookieName+"="+tok+"; other=1")
	hdr.Set("X-Forwarded-For", "198.51.100.7")
	hdr.Set("Referer", "https://portal.example/videos?session="+tok)
	if r := do(t, gb, "GET", dl+"?filename=secret-file", withRange(hdr, "bytes=100-"), nil); r.status != http.StatusPartialContent {
		t.Fatalf("bearer + cookie: status %d", r.status)
	}
	if r := do(t, gb, "GET", dl, http.Header{"Cookie": {cookieName + "=" + tok}}, nil); r.status != http.StatusOK {
		t.Fatalf("cookie: status %d", r.status)
	}
	lb := e.createLink(t, e.gw, gb, tok, uidPrivate, `{"type":"audio","filename":"x"}`)
	if r := do(t, gb, "GET", lb.URL, nil, nil); r.status != http.StatusOK {
		t.Fatalf("link: status %d", r.status)
	}
	// A failing download: its cause carries the upstream URL with the token.
	e.emu.SetFault(uidPublic, streamtest.Fault{Status: http.StatusInternalServerError})
	if r := do(t, gb, "GET", e.gw.url+"/v1/videos/"+uidPublic+"/downloads/default.mp4", bearer(tok), nil); r.status != http.StatusBadGateway {
		t.Fatalf("fault: status %d", r.status)
	}
	down := e.gateway(func(c *Config, _ *Deps) { c.DeliveryURL = closedURL(t) })
	if r := do(t, gb, "GET", down.url+"/v1/videos/"+uidPrivate+"/downloads/audio.m4a", bearer(tok), nil); r.status != http.StatusBadGateway {
		t.Fatalf("down: status %d", r.status)
	}
	e.quiet(t)

	dels := e.rec.deliveries()
	if len(dels) < 4 {
		t.Fatalf("the emulator saw %d deliveries, want at least 4", len(dels))
	}
	for _, d := range dels {
		for _, h := range []string{"Authorization", "Cookie", "X-Forwarded-For", "Referer", "X-Request-Id"} {
			if v := d.Header.Values(h); len(v) > 0 {
				t.Errorf("delivery %s carried %s", d.Method, h)
			}
		}
	}
	for _, r := range e.rec.all() {
		for k, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, tok) || strings.Contains(v, cookieName) {
					t.Errorf("emulator request %s carried the portal credential in %s", r.Path, k)
				}
			}
		}
		if strings.Contains(r.Path+r.Query, tok) {
			t.Errorf("emulator request path carries the portal JWT")
		}
	}
	if len(e.rec.streamTokens()) == 0 {
		t.Fatal("no Stream token seen by the emulator")
	}
	e.assertNoSecretsLogged(t)
}

// logged returns the cause logged for the request that got r.
func (e *env) logged(t *testing.T, r result) string {
	t.Helper()
	c, _ := e.requestLine(t, r)["cause"].(string)
	return c
}

// TestCrossSiteCookie: another site can make a browser send the portal's cookie
// (an <img>, a form), but not spend the user's quota with it.
func TestCrossSiteCookie(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gb := e.client(addrGB)
	tok := e.jwt("victim", "", nil)
	cookie := func(extra ...string) http.Header {
		h := http.Header{"Cookie": {cookieName + "=" + tok}}
		for i := 0; i+1 < len(extra); i += 2 {
			h.Set(extra[i], extra[i+1])
		}
		return h
	}
	dl := e.gw.url + "/v1/videos/" + uidPublic + "/downloads/default.mp4"
	links := e.gw.url + "/v1/videos/" + uidPublic + "/links"
	tests := []struct {
		name   string
		method string
		url    string
		hdr    http.Header
		body   string
		status int
	}{
		{"embedded download", "GET", dl, cookie("Sec-Fetch-Site", "cross-site"), "", http.StatusForbidden},
		{"cross-site form", "POST", links, cookie("Sec-Fetch-Site", "cross-site", "Content-Type", "application/x-www-form-urlencoded"), "a=1", http.StatusForbidden},
		{"form from a browser without Sec-Fetch-Site", "POST", links, cookie("Content-Type", "application/x-www-form-urlencoded"), "a=1", http.StatusUnsupportedMediaType},
		{"empty form", "POST", links, cookie("Content-Type", "application/x-www-form-urlencoded"), "", http.StatusUnsupportedMediaType},
		{"empty body, no type", "POST", links, cookie(), "", http.StatusUnsupportedMediaType},
		{"same-site download", "GET", dl, cookie("Sec-Fetch-Site", "same-site"), "", http.StatusOK},
		{"same-origin JSON link", "POST", links, cookie("Sec-Fetch-Site", "same-origin", "Content-Type", "application/json"), `{"type":"audio"}`, http.StatusCreated},
		{"bearer from anywhere", "GET", dl, http.Header{"Authorization": {"Bearer " + tok}, "Sec-Fetch-Site": {"cross-site"}}, "", http.StatusOK},
	}
	for _, tt := range tests {
		var body io.Reader
		if tt.body != "" {
			body = strings.NewReader(tt.body)
		}
		if r := do(t, gb, tt.method, tt.url, tt.hdr, body); r.status != tt.status {
			t.Errorf("%s: status %d, want %d: %s", tt.name, r.status, tt.status, r.body)
		}
	}
	// Two requests of the file went through (same-site, bearer), one download
	// of the victim's; nothing else was billed.
	if got := e.settled(t, "victim"); !near(got.MinutesUsed, durPublic/60) {
		t.Errorf("billed %v minutes, want %v", got.MinutesUsed, durPublic/60)
	}
}
