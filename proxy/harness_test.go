package proxy

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"github.com/streamgate/streamgate/config"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"

	"github.com/streamgate/streamgate/auth"
	"github.com/streamgate/streamgate/policy"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
	"github.com/streamgate/streamgate/usage"
)

// Videos the emulator holds in every test environment.
const (
	uidPublic   = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a" // public, MP4 and M4A ready
	uidPrivate  = "1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b" // requireSignedURLs, MP4 and M4A ready
	uidPending  = "2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c" // MP4 enabled through the API, still generating
	uidNoStream = "3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d" // not ready to stream
	uidUnknown  = "4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e" // not known to Stream

	sizePublic  = 2<<20 + 123
	sizePrivate = 3<<20 + 77
	durPublic   = 120.0 // seconds: 2 minutes
	durPrivate  = 90.0  // seconds: 1.5 minutes

	// readyAfter is how long the emulator takes to generate a download enabled
	// through its API.
	readyAfter = 10 * time.Minute
)

// Client source addresses and the countries the test GeoIP database gives them.
const (
	addrGB = "127.0.0.2"
	addrUS = "127.0.0.3"
	addrDE = "127.0.0.4"
	addrFR = "127.0.0.5" // blocked by the country policy
)

const (
	issuer      = "https://portal.example"
	audience    = "streamgate"
	cookieName  = "portal_session"
	hmacSecret  = "portal-hmac-secret-of-at-least-32-bytes!"
	portalKID   = "portal-rsa"
	streamKeyID = "9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f"
	grantKeyID  = "g1"
	grantSecret = "grant-secret-of-thirty-two-bytes-or-more"
)

// t0 is the instant every test environment starts at: mid-month, so clock
// advances stay in one quota period.
var t0 = time.Date(2025, 3, 12, 10, 0, 0, 0, time.UTC)

var (
	keysOnce  sync.Once
	streamKey *rsa.PrivateKey // Stream signing key
	portalKey *rsa.PrivateKey // the portal's RS256 key
	countryDB []byte
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var wg sync.WaitGroup
		var err1, err2 error
		wg.Go(func() { streamKey, err1 = rsa.GenerateKey(rand.Reader, 2048) })
		wg.Go(func() { portalKey, err2 = rsa.GenerateKey(rand.Reader, 2048) })
		wg.Wait()
		if err1 != nil || err2 != nil {
			panic("generate RSA keys")
		}
		db, err := streamtest.CountryDB(map[string]string{
			addrGB + "/32": "GB",
			addrUS + "/32": "US",
			addrDE + "/32": "DE",
			addrFR + "/32": "FR",
		})
		if err != nil {
			panic(err)
		}
		countryDB = db
	})
	if streamKey == nil || countryDB == nil {
		t.Fatal("test keys unavailable")
	}
}

// logBuffer collects every JSON log line.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) Sync() error { return nil }

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the decoded log lines whose msg is msg ("" for all).
func (b *logBuffer) lines(t testing.TB, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, l)
		}
		if msg == "" || m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// recorded is one request the emulator received.
type recorded struct {
	Method, Path, Query, Remote string
	Header                      http.Header
}

// recorder wraps the emulator and keeps every request it sees.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
}

func (rec *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.RemoteAddr, r.Header.Clone()})
		rec.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (rec *recorder) all() []recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]recorded(nil), rec.reqs...)
}

// deliveries are the requests to the delivery host (not the API).
func (rec *recorder) deliveries() []recorded {
	var out []recorded
	for _, r := range rec.all() {
		if !strings.HasPrefix(r.Path, "/client/v4/") {
			out = append(out, r)
		}
	}
	return out
}

// streamTokens are the distinct Stream tokens in delivery paths, in order of
// first use.
func (rec *recorder) streamTokens() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rec.deliveries() {
		seg, _, _ := strings.Cut(strings.TrimPrefix(r.Path, "/"), "/")
		if seg == "" || stream.ValidUID(seg) || seen[seg] {
			continue
		}
		seen[seg] = true
		out = append(out, seg)
	}
	return out
}

// env is one emulator, one ledger and the components a gateway is built from.
type env struct {
	t        testing.TB
	clock    *streamtest.Clock
	logs     *logBuffer
	log      *zap.Logger
	emu      *streamtest.Emulator
	emuSrv   *httptest.Server
	rec      *recorder
	api      *stream.Client
	signer   *stream.Signer
	verifier *auth.Verifier
	grants   *auth.Grants
	ledger   *usage.SQLite
	meter    *usage.Meter
	geoip    *policy.GeoIP
	country  *policy.CountryPolicy

	mu      sync.Mutex
	secrets []string // portal JWTs and grants handed out in the test
	clients map[string]*http.Client

	gw *gateway // the default gateway: proxy links, no BindIP
}

// gateway is one proxy.Server on a real socket.
type gateway struct {
	srv *Server
	ts  *httptest.Server
	url string
}

type envOptions struct {
	// ipLimit replaces the failed-auth bucket per client address.
	ipLimit *policy.Limit
	mode    usage.Mode
}

func newEnv(t testing.TB, opts envOptions) *env {
	t.Helper()
	testKeys(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, clock: streamtest.NewClock(t0), logs: &logBuffer{}, rec: &recorder{}}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	e.log = zap.New(zapcore.NewCore(enc, zapcore.Lock(e.logs), zapcore.DebugLevel))

	e.emu = streamtest.New(streamtest.Options{GeoIP: countryDB, Now: e.clock.Now, ReadyAfter: readyAfter})
	e.emu.AddSigningKey(streamKeyID, &streamKey.PublicKey)
	e.emuSrv = streamtest.NewServer(e.rec.wrap(e.emu.Handler()))
	t.Cleanup(e.emuSrv.Close)
	e.emu.SetDeliveryBase(e.emuSrv.URL)

	e.emu.AddVideo(streamtest.Video{UID: uidPublic, Duration: durPublic, Size: sizePublic, ReadyToStream: true})
	e.emu.SetDownloadReady(uidPublic, stream.Default)
	e.emu.SetDownloadReady(uidPublic, stream.Audio)
	e.emu.AddVideo(streamtest.Video{UID: uidPrivate, Duration: durPrivate, Size: sizePrivate, ReadyToStream: true, RequireSignedURLs: true})
	e.emu.SetDownloadReady(uidPrivate, stream.Default)
	e.emu.SetDownloadReady(uidPrivate, stream.Audio)
	e.emu.AddVideo(streamtest.Video{UID: uidPending, Duration: 60, Size: 1 << 20, ReadyToStream: true})
	e.emu.AddVideo(streamtest.Video{UID: uidNoStream, Duration: -1, Size: 1 << 20})

	var err error
	e.api = e.newAPI(e.emuSrv.URL)
	if _, err := e.api.EnableDownload(ctx, uidPending, stream.Default); err != nil {
		t.Fatalf("enable download: %v", err)
	}
	if e.signer, err = stream.NewSignerFromKey(streamKeyID, streamKey); err != nil {
		t.Fatalf("NewSignerFromKey: %v", err)
	}
	e.verifier, err = auth.NewVerifier(ctx, auth.VerifierConfig{
		Algorithms:  []string{"HS256", "RS256"},
		HMACSecrets: map[string][]byte{"": []byte(hmacSecret)},
		PublicKeys:  map[string]crypto.PublicKey{portalKID: &portalKey.PublicKey},
		Issuer:      issuer,
		Audience:    audience,
		Cookie:      cookieName,
		Now:         e.clock.Now,
	})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	if e.grants, err = auth.NewGrants([]auth.GrantKey{{ID: grantKeyID, Secret: []byte(grantSecret)}}, e.clock.Now); err != nil {
		t.Fatalf("NewGrants: %v", err)
	}
	if e.ledger, err = usage.OpenSQLite(ctx, t.TempDir()+"/ledger.db"); err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { _ = e.ledger.Close() })
	e.meter = usage.NewMeter(e.ledger, usage.MeterConfig{Mode: opts.mode, Now: e.clock.Now, Logger: e.log})
	if e.geoip, err = policy.NewGeoIPFromBytes(countryDB); err != nil {
		t.Fatalf("NewGeoIPFromBytes: %v", err)
	}
	if e.country, err = policy.NewCountryPolicy(policy.CountryRules{Block: []string{"FR"}}, nil); err != nil {
		t.Fatalf("NewCountryPolicy: %v", err)
	}
	ipLimit := policy.Limit{Rate: rate.Inf}
	if opts.ipLimit != nil {
		ipLimit = *opts.ipLimit
	}
	e.gw = e.gateway(func(_ *Config, d *Deps) { d.IPLimit = policy.NewLimiter(ipLimit, 0) })
	return e
}

func (e *env) newAPI(base string) *stream.Client {
	e.t.Helper()
	c, err := stream.NewClient(stream.ClientConfig{
		AccountID:  e.emu.AccountID(),
		APIToken:   e.emu.APIToken(),
		BaseURL:    base + "/client/v4/",
		MaxRetries: -1,
	})
	if err != nil {
		e.t.Fatalf("NewClient: %v", err)
	}
	return c
}

// gateway builds and serves a proxy.Server from the environment's components;
// mod may change the configuration and dependencies first.
func (e *env) gateway(mod func(*Config, *Deps)) *gateway {
	e.t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	base := "http://" + ts.Listener.Addr().String()
	dc := config.Default()
	cfg := Config{
		PublicURL:     base,
		DeliveryURL:   e.emuSrv.URL,
		TokenTTL:      dc.Stream.TokenTTL,
		LinkTTL:       dc.Links.TTL,
		VideoCacheTTL: dc.Stream.VideoCacheTTL,
		DefaultPlan:   "basic",
		Plans: map[string]Plan{
			"basic":  {MinutesPerMonth: 1000},
			"tiny":   {MinutesPerMonth: 0.5},
			"single": {MinutesPerMonth: 1000, MaxConcurrent: 1},
			"limited": {
				MinutesPerMonth: 1000,
				Downloads:       policy.NewLimiter(policy.Limit{Rate: rate.Every(time.Hour), Burst: 2, Name: "downloads"}, 0),
				Links:           policy.NewLimiter(policy.Limit{Rate: rate.Every(time.Hour), Burst: 1, Name: "links"}, 0),
			},
		},
	}
	d := Deps{
		Auth:    e.verifier,
		Grants:  e.grants,
		Signer:  e.signer,
		API:     e.api,
		Meter:   e.meter,
		Links:   e.ledger,
		GeoIP:   e.geoip,
		Country: e.country,
		Checks: map[string]Check{
			"stream_api": e.api.Ping,
			"ledger":     e.ledger.Ping,
		},
		Log: e.log,
		Now: e.clock.Now,
	}
	if mod != nil {
		mod(&cfg, &d)
	}
	srv, err := New(cfg, d)
	if err != nil {
		e.t.Fatalf("proxy.New: %v", err)
	}
	ts.Config.Handler = srv
	ts.Start()
	e.t.Cleanup(ts.Close)
	return &gateway{srv: srv, ts: ts, url: base}
}

// remember records a secret that must never reach the logs.
func (e *env) remember(s string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.secrets = append(e.secrets, s)
	return s
}

// jwt signs a portal token (HS256, no kid) for user and plan, valid for ten
// minutes; mod may change the claims first.
func (e *env) jwt(user, plan string, mod func(jwt.MapClaims)) string {
	e.t.Helper()
	now := e.clock.Now()
	c := jwt.MapClaims{
		"sub": user,
		"iss": issuer,
		"aud": audience,
		"iat": now.Unix(),
		"exp": now.Add(10 * time.Minute).Unix(),
	}
	if plan != "" {
		c["plan"] = plan
	}
	if mod != nil {
		mod(c)
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(hmacSecret))
	if err != nil {
		e.t.Fatalf("sign JWT: %v", err)
	}
	return e.remember(tok)
}

// client returns an HTTP client whose connections come from src (127.0.0.x).
func (e *env) client(src string) *http.Client {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.clients[src]; ok {
		return c
	}
	if e.clients == nil {
		e.clients = map[string]*http.Client{}
	}
	c := streamtest.ClientFrom(src)
	e.t.Cleanup(c.Transport.(*http.Transport).CloseIdleConnections)
	e.clients[src] = c
	return c
}

// result is a finished response, its body read.
type result struct {
	status int
	header http.Header
	body   []byte
	err    error // the body read error, if any
}

func (r result) problem(t testing.TB) map[string]any {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json (status %d, body %s)", ct, r.status, r.body)
	}
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("problem body: %v: %s", err, r.body)
	}
	for _, k := range []string{"type", "title", "status", "detail", "request_id"} {
		if _, ok := m[k]; !ok {
			t.Errorf("problem body has no %q: %s", k, r.body)
		}
	}
	if got, _ := m["status"].(float64); int(got) != r.status {
		t.Errorf("problem status = %v, want %d", m["status"], r.status)
	}
	if id := r.header.Get("X-Request-ID"); id == "" || m["request_id"] != id {
		t.Errorf("problem request_id = %v, X-Request-ID = %q", m["request_id"], id)
	}
	return m
}

// do sends a request and reads the whole response.
func do(t testing.TB, c *http.Client, method, url string, hdr http.Header, body io.Reader) result {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func withRange(h http.Header, spec string) http.Header {
	h = h.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Range", spec)
	return h
}

// eventually polls cond until it holds or a few seconds pass: for what settles
// just after the client has read its last byte.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// usageOf reads the user's standing through the gateway.
func (e *env) usageOf(t testing.TB, gw *gateway, tok string) usage.Usage {
	t.Helper()
	r := do(t, e.client(addrGB), "GET", gw.url+"/v1/me/usage", bearer(tok), nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/me/usage: %d %s", r.status, r.body)
	}
	var u usage.Usage
	if err := json.Unmarshal(r.body, &u); err != nil {
		t.Fatalf("usage body: %v", err)
	}
	return u
}

// settled waits until the user holds no reservation, and returns the usage.
func (e *env) settled(t testing.TB, user string) usage.Usage {
	t.Helper()
	var u usage.Usage
	eventually(t, "deliveries of "+user+" to settle", func() bool {
		var err error
		u, err = e.ledger.Usage(context.Background(), user, usage.Period(e.clock.Now()))
		return err == nil && u.MinutesReserved == 0 && u.DeliveriesOpen == 0
	})
	return u
}

// quiet waits until the emulator serves no delivery, so its Stats are final.
// requestLine returns the request log line of the response r, waiting for it: the
// log middleware writes it once the handler returns, which may be just after the
// client has its answer.
func (e *env) requestLine(t testing.TB, r result) map[string]any {
	t.Helper()
	id := r.header.Get("X-Request-ID")
	var line map[string]any
	eventually(t, "the request log line of "+id, func() bool {
		for _, l := range e.logs.lines(t, "request") {
			if l["request_id"] == id {
				line = l
				return true
			}
		}
		return false
	})
	return line
}

func (e *env) quiet(t testing.TB) {
	t.Helper()
	eventually(t, "emulator deliveries to end", func() bool { return e.emu.InFlight() == 0 })
}

// assertNoSecretsLogged checks that no portal JWT, grant or Stream token the test
// used appears in any log line, whole or as its signature.
func (e *env) assertNoSecretsLogged(t testing.TB) {
	t.Helper()
	e.mu.Lock()
	secrets := append([]string(nil), e.secrets...)
	e.mu.Unlock()
	secrets = append(secrets, e.rec.streamTokens()...)
	logs := e.logs.String()
	if logs == "" {
		t.Fatal("no log lines captured")
	}
	for _, s := range secrets {
		parts := []string{s}
		if i := strings.LastIndexByte(s, '.'); i >= 0 && len(s)-i > 16 {
			parts = append(parts, s[i+1:])
		}
		for _, p := range parts {
			if strings.Contains(logs, p) {
				t.Errorf("a log line contains a secret %.20q...", p)
			}
		}
	}
}

// closedURL is an origin nothing listens on.
func closedURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr
}
