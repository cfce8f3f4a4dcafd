package streamtest

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/streamgate/streamgate/stream"
)

// Loopback addresses the tests connect from, and their countries.
const (
	ipUnknown = "127.0.0.1" // not in the GeoIP database
	ipGB      = "127.0.0.2"
	ipUS      = "127.0.0.3"
	ipDE      = "127.0.0.4"
)

func testCountryDB(t testing.TB) []byte {
	t.Helper()
	db, err := CountryDB(map[string]string{
		ipGB + "/32":    "GB",
		ipUS + "/32":    "US",
		ipDE + "/32":    "DE",
		"2001:db8::/32": "FR",
	})
	if err != nil {
		t.Fatalf("CountryDB: %v", err)
	}
	return db
}

// craft signs claims with any method and key, with the given header fields, so
// tests can build tokens the signer would never mint.
func craft(t testing.TB, m jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
			continue
		}
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("craft token: %v", err)
	}
	return s
}

// rawClaims is a well-formed payload for video uid, valid at t0.
func rawClaims(uid string) jwt.MapClaims {
	return jwt.MapClaims{
		"sub":          uid,
		"kid":          "k1",
		"exp":          t0.Add(time.Hour).Unix(),
		"nbf":          t0.Add(-time.Minute).Unix(),
		"downloadable": true,
	}
}

func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
			continue
		}
		out[k] = kv[i+1]
	}
	return out
}

// setPayloadField rewrites one payload field of a signed token, keeping its
// signature.
func setPayloadField(t testing.TB, token, field string, value any) string {
	t.Helper()
	parts := strings.Split(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m[field] = value
	b, err = json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func TestDeliveryTokens(t *testing.T) {
	clk := newClock()
	e := New(Options{GeoIP: testCountryDB(t), Now: clk.Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPrivate, Duration: 120, Size: 10_000, RequireSignedURLs: true, ReadyToStream: true})
	e.AddVideo(Video{UID: uidPublic, Duration: 60, Size: 5_000, ReadyToStream: true})
	e.AddVideo(Video{UID: uidAudio, Duration: 60, Size: 8_000, RequireSignedURLs: true, ReadyToStream: true})
	e.SetDownloadReady(uidPrivate, stream.Default)
	e.SetDownloadReady(uidPublic, stream.Default)
	e.SetDownloadReady(uidAudio, stream.Default)
	e.SetDownloadReady(uidAudio, stream.Audio)

	key := rsaKey(t)
	s1 := newSigner(t, "k1", key)
	e.AddSigningKey("k1", s1.PublicKey())
	s2 := newSigner(t, "k2", key)
	e.AddSigningKey("k2", s2.PublicKey())
	if status, env := api(t, srv, http.MethodDelete, "/keys/k2", ""); status != http.StatusOK {
		t.Fatalf("revoke k2: status %d, errors %v", status, env.Errors)
	}

	// A key made through the API: its tokens work, and its private key with
	// another key's kid makes a token with a bad signature.
	status, env := api(t, srv, http.MethodPost, "/keys", "")
	if status != http.StatusOK {
		t.Fatalf("create key: status %d, errors %v", status, env.Errors)
	}
	created := decode[keyJSON](t, env.Result)
	apiSigner, err := stream.NewSigner(created.ID, []byte(created.PEM))
	if err != nil {
		t.Fatalf("NewSigner from API key: %v", err)
	}
	otherKey, err := stream.ParsePrivateKey([]byte(created.PEM))
	if err != nil {
		t.Fatal(err)
	}

	mint := func(s *stream.Signer, c stream.Claims, at time.Time) string {
		t.Helper()
		tok, err := s.Mint(c, at)
		if err != nil {
			t.Fatalf("Mint: %v", err)
		}
		return tok
	}
	claims := func(uid string, rules ...stream.AccessRule) stream.Claims {
		return stream.Claims{
			Video:        uid,
			NotBefore:    t0.Add(-time.Minute),
			ExpiresAt:    t0.Add(time.Hour),
			Downloadable: true,
			AccessRules:  rules,
		}
	}
	allowCountry := func(cc ...string) stream.AccessRule {
		return stream.AccessRule{Type: stream.RuleCountry, Action: stream.ActionAllow, Country: cc}
	}
	blockCountry := func(cc ...string) stream.AccessRule {
		return stream.AccessRule{Type: stream.RuleCountry, Action: stream.ActionBlock, Country: cc}
	}
	allowIP := func(ip ...string) stream.AccessRule {
		return stream.AccessRule{Type: stream.RuleIPSrc, Action: stream.ActionAllow, IP: ip}
	}
	blockAny := stream.AccessRule{Type: stream.RuleAny, Action: stream.ActionBlock}

	valid := mint(s1, claims(uidPrivate), t0)
	notDownloadable := claims(uidPrivate)
	notDownloadable.Downloadable = false
	expired := claims(uidPrivate)
	expired.NotBefore, expired.ExpiresAt = t0.Add(-2*time.Hour), t0.Add(-time.Minute)
	future := claims(uidPrivate)
	future.NotBefore, future.ExpiresAt = t0.Add(time.Hour), t0.Add(2*time.Hour)
	justExpired := claims(uidPrivate)
	justExpired.NotBefore, justExpired.ExpiresAt = t0.Add(-time.Hour), t0.Add(-3*time.Second)
	almostValid := claims(uidPrivate)
	almostValid.NotBefore = t0.Add(3 * time.Second)
	publicNoDL := claims(uidPublic)
	publicNoDL.Downloadable = false

	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	k1 := map[string]any{"kid": "k1"}
	sig := strings.Split(valid, ".")
	badSig := []byte(sig[2])
	badSig[10] ^= 'A' ^ 'B'
	if badSig[10] == sig[2][10] {
		t.Fatal("signature unchanged")
	}
	badSigned := sig[0] + "." + sig[1] + "." + string(badSig)
	if badSigned == valid {
		t.Fatal("signature unchanged")
	}
	sixRules := []stream.AccessRule{allowCountry("GB"), allowCountry("US"), allowCountry("DE"), allowCountry("FR"), allowCountry("IT"), blockAny}

	path := func(tokenOrUID string, t stream.DownloadType) string {
		return stream.DeliveryPath(tokenOrUID, t)
	}
	def := stream.Default
	tests := []struct {
		name string
		path string
		ip   string
		want int
	}{
		// Refused.
		{"expired", path(mint(s1, expired, t0.Add(-2*time.Hour)), def), ipUnknown, 401},
		{"nbf in the future", path(mint(s1, future, t0), def), ipUnknown, 401},
		{"unknown kid", path(mint(newSigner(t, "nope", key), claims(uidPrivate), t0), def), ipUnknown, 401},
		{"revoked kid", path(mint(s2, claims(uidPrivate), t0), def), ipUnknown, 401},
		{"sub of an unknown video", path(mint(s1, claims(uidUnknown), t0), def), ipUnknown, 404},
		{"sub not a video uid", path(craft(t, jwt.SigningMethodRS256, key, k1, with(rawClaims(uidPrivate), "sub", "not-a-video")), def), ipUnknown, 401},
		{"sub missing", path(craft(t, jwt.SigningMethodRS256, key, k1, with(rawClaims(uidPrivate), "sub", nil)), def), ipUnknown, 401},
		{"downloadable missing on a private video", path(mint(s1, notDownloadable, t0), def), ipUnknown, 403},
		{"downloadable as a string", path(craft(t, jwt.SigningMethodRS256, key, k1, with(rawClaims(uidPrivate), "downloadable", "true")), def), ipUnknown, 401},
		{"alg none", path(craft(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, k1, rawClaims(uidPrivate)), def), ipUnknown, 401},
		{"HS256 keyed with the public key", path(craft(t, jwt.SigningMethodHS256, pubPEM, k1, rawClaims(uidPrivate)), def), ipUnknown, 401},
		{"HS256 keyed with the public key DER", path(craft(t, jwt.SigningMethodHS256, pubDER, k1, rawClaims(uidPrivate)), def), ipUnknown, 401},
		{"RS512 with the right key", path(craft(t, jwt.SigningMethodRS512, key, k1, rawClaims(uidPrivate)), def), ipUnknown, 401},
		{"PS256 with the right key", path(craft(t, jwt.SigningMethodPS256, key, k1, rawClaims(uidPrivate)), def), ipUnknown, 401},
		{"country blocked", path(mint(s1, claims(uidPrivate, blockCountry("GB")), t0), def), ipGB, 403},
		{"country outside an allow list ending in any block", path(mint(s1, claims(uidPrivate, allowCountry("GB", "US"), blockAny), t0), def), ipDE, 403},
		{"unknown country with an allow list ending in any block", path(mint(s1, claims(uidPrivate, allowCountry("GB"), blockAny), t0), def), ipUnknown, 403},
		{"ip.src mismatch", path(mint(s1, claims(uidPrivate, allowIP(ipUS+"/32"), blockAny), t0), def), ipGB, 403},
		{"ipv6 ip.src never matches ipv4", path(mint(s1, claims(uidPrivate, allowIP("::ffff:7f00:2/128", "2001:db8::/32"), blockAny), t0), def), ipGB, 403},
		{"any block", path(mint(s1, claims(uidPrivate, blockAny), t0), def), ipGB, 403},
		{"tampered payload", path(setPayloadField(t, mint(s1, notDownloadable, t0), "downloadable", true), def), ipUnknown, 401},
		{"tampered sub", path(setPayloadField(t, valid, "sub", uidAudio), def), ipUnknown, 401},
		{"bad signature", path(badSigned, def), ipUnknown, 401},
		{"signed with another key", path(craft(t, jwt.SigningMethodRS256, otherKey, k1, rawClaims(uidPrivate)), def), ipUnknown, 401},
		{"kid header missing", path(craft(t, jwt.SigningMethodRS256, key, map[string]any{"kid": nil}, rawClaims(uidPrivate)), def), ipUnknown, 401},
		{"kid claim differs from header", path(craft(t, jwt.SigningMethodRS256, key, k1, with(rawClaims(uidPrivate), "kid", "k3")), def), ipUnknown, 401},
		{"exp missing", path(craft(t, jwt.SigningMethodRS256, key, k1, with(rawClaims(uidPrivate), "exp", nil)), def), ipUnknown, 401},
		{"exp more than 24h ahead", path(craft(t, jwt.SigningMethodRS256, key, k1, with(rawClaims(uidPrivate), "exp", t0.Add(25*time.Hour).Unix())), def), ipUnknown, 401},
		{"malformed access rule", path(craft(t, jwt.SigningMethodRS256, key, k1, with(rawClaims(uidPrivate), "accessRules", []map[string]any{{"type": "ip.asn", "action": "allow"}})), def), ipUnknown, 401},
		{"more than five access rules", path(craft(t, jwt.SigningMethodRS256, key, k1, with(rawClaims(uidPrivate), "accessRules", sixRules)), def), ipGB, 401},
		{"audio download not created", path(mint(s1, claims(uidPrivate), t0), stream.Audio), ipUnknown, 404},
		{"garbage token", path("abc.def.ghi", def), ipUnknown, 401},
		{"bare uid of a private video", path(uidPrivate, def), ipUnknown, 401},
		{"bare unknown uid", path(uidUnknown, def), ipUnknown, 404},

		// Accepted.
		{"valid private token", path(valid, def), ipUnknown, 200},
		{"allow list matches GB", path(mint(s1, claims(uidPrivate, allowCountry("GB"), blockAny), t0), def), ipGB, 200},
		{"block list does not match DE", path(mint(s1, claims(uidPrivate, blockCountry("GB", "US")), t0), def), ipDE, 200},
		{"ip.src matches", path(mint(s1, claims(uidPrivate, allowIP("10.0.0.0/8", ipUS), blockAny), t0), def), ipUS, 200},
		{"first match decides", path(mint(s1, claims(uidPrivate, allowIP(ipGB), blockCountry("GB")), t0), def), ipGB, 200},
		{"five rules", path(mint(s1, claims(uidPrivate, sixRules[1:]...), t0), def), ipUS, 200},
		{"public video by uid", path(uidPublic, def), ipGB, 200},
		{"public video by token without downloadable", path(mint(s1, publicNoDL, t0), def), ipUS, 200},
		{"exp within leeway", path(mint(s1, justExpired, t0.Add(-time.Hour)), def), ipUnknown, 200},
		{"nbf within leeway", path(mint(s1, almostValid, t0), def), ipUnknown, 200},
		{"audio download ready", path(mint(s1, claims(uidAudio), t0), stream.Audio), ipDE, 200},
		{"key created through the API", path(mint(apiSigner, claims(uidPrivate, allowCountry("DE"), blockAny), t0), def), ipDE, 200},
	}
	refusedBefore := e.TotalStats()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := clientFrom(t, tt.ip)
			r := do(t, c, http.MethodGet, srv.URL+tt.path, nil, "")
			if r.status != tt.want {
				t.Fatalf("status = %d, want %d (body %s)", r.status, tt.want, snippet(r.body))
			}
			if tt.want != http.StatusOK {
				var body map[string]string
				if err := json.Unmarshal(r.body, &body); err != nil || body["error"] == "" {
					t.Errorf("refusal body = %q, want a JSON error", r.body)
				}
			}
		})
	}
	var refused, accepted int64
	for _, tt := range tests {
		switch tt.want {
		case 401, 403:
			refused++
		case 200:
			accepted++
		}
	}
	total := e.TotalStats()
	if got := total.Refused - refusedBefore.Refused; got != refused {
		t.Errorf("Refused = %d, want %d", got, refused)
	}
	if got := total.Requests - refusedBefore.Requests; got != accepted+1 { // +1: the audio download not created
		t.Errorf("Requests = %d, want %d", got, accepted+1)
	}
}

// The token's video is its sub: a token for one video cannot fetch another.
func TestTokenNamesItsVideo(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPrivate, Duration: 60, Size: 1000, RequireSignedURLs: true, ReadyToStream: true})
	e.AddVideo(Video{UID: uidAudio, Duration: 60, Size: 3000, RequireSignedURLs: true, ReadyToStream: true})
	e.SetDownloadReady(uidPrivate, stream.Default)
	e.SetDownloadReady(uidAudio, stream.Default)
	s := newSigner(t, "k1", rsaKey(t))
	e.AddSigningKey("k1", s.PublicKey())
	tok, err := s.Mint(stream.Claims{Video: uidPrivate, ExpiresAt: t0.Add(time.Hour), Downloadable: true}, t0)
	if err != nil {
		t.Fatal(err)
	}
	r := do(t, srv.Client(), http.MethodGet, srv.URL+stream.DeliveryPath(tok, stream.Default), nil, "")
	if r.status != 200 || len(r.body) != 1000 {
		t.Fatalf("status %d, %d bytes; want 200 and the 1000 bytes of %s", r.status, len(r.body), uidPrivate)
	}
	if st := e.Stats(uidAudio, stream.Default); st.Requests != 0 {
		t.Errorf("other video counted %d requests", st.Requests)
	}
}
