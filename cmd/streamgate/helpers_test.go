package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/streamgate/streamgate/config"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

// Client addresses: each binds its source address, and the GeoIP database the
// gateway and the emulator read places it.
const (
	ipGB      = "127.0.0.2"
	ipUS      = "127.0.0.3"
	ipDE      = "127.0.0.4"
	ipProxy   = "127.0.0.5" // a reverse proxy in front of the gateway; not in the database
	ipUnknown = "127.0.0.9" // not in the database
	ipLocal   = "127.0.0.1"
)

var countryNets = map[string]string{
	ipGB + "/32": "GB",
	ipUS + "/32": "US",
	ipDE + "/32": "DE",
}

// Small files keep the tests fast under -race.
const (
	testSize     = 256 << 10
	testDuration = 120.0 // seconds: two billable minutes per whole file
	testMinutes  = testDuration / 60
)

const (
	apiToken     = "api-token-for-tests"
	portalSecret = "portal-secret-for-tests-0123456789abcdef"
	grantSecret  = "grant-secret-for-tests-0123456789abcdef"
)

var signingKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func signingKeyPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(signingKey())})
}

// streamEnv is a Stream emulator on httptest, with a signing key and a country
// database on disk for the gateways that use it.
type streamEnv struct {
	emu     *streamtest.Emulator
	url     string
	keyID   string
	keyPath string
	geoPath string
}

func newStreamEnv(t *testing.T) *streamEnv {
	t.Helper()
	dir := t.TempDir()
	geo, err := streamtest.CountryDB(countryNets)
	if err != nil {
		t.Fatal(err)
	}
	se := &streamEnv{
		keyID:   randomHex(16),
		keyPath: filepath.Join(dir, "stream-key.pem"),
		geoPath: filepath.Join(dir, "countries.mmdb"),
	}
	if err := os.WriteFile(se.geoPath, geo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(se.keyPath, signingKeyPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	se.emu = streamtest.New(streamtest.Options{AccountID: "acct", APIToken: apiToken, GeoIP: geo})
	srv := streamtest.NewServer(se.emu.Handler())
	t.Cleanup(srv.Close)
	se.url = srv.URL
	se.emu.SetDeliveryBase(srv.URL)
	se.emu.AddSigningKey(se.keyID, &signingKey().PublicKey)
	return se
}

// addVideo adds a private video of the given duration (seconds) and size with both
// downloads ready, and returns its UID.
func (se *streamEnv) addVideo(duration float64, size int64) string {
	uid := randomHex(16)
	se.emu.AddVideo(streamtest.Video{UID: uid, Duration: duration, Size: size, RequireSignedURLs: true, ReadyToStream: true})
	se.emu.SetDownloadReady(uid, stream.Default)
	se.emu.SetDownloadReady(uid, stream.Audio)
	return uid
}

// waitIdle waits until the emulator serves no delivery, so its Stats are final.
func (se *streamEnv) waitIdle(t *testing.T) {
	t.Helper()
	waitFor(t, 10*time.Second, "emulator deliveries to end", func() bool { return se.emu.InFlight() == 0 })
}

// plan is one plan of a test configuration.
type plan struct {
	Minutes       float64
	MaxConcurrent int
	// BytesPerSecond paces the plan's users (0: unpaced).
	BytesPerSecond int64
}

// gwOptions shape a test configuration; zero fields take the values shown.
type gwOptions struct {
	Metering        string          // "proportional"
	LinkMode        string          // "proxy"
	CheckpointEvery time.Duration   // 2s
	Plans           map[string]plan // {"basic": {Minutes: 1000}}, default plan "basic"
	Block           []string
	UnknownCountry  string // "allow"
	TrustedProxies  []string
	ShutdownGrace   time.Duration // 5s
	// DownloadBurst is each plan's burst of download starts per user
	// (1000); it refills at 100,000 a minute unless DownloadsPerMinute is set.
	DownloadBurst      int
	DownloadsPerMinute float64
	// LedgerDSN, when set, puts the ledger on PostgreSQL instead of SQLite;
	// StaleAfter, when set, is its ledger.stale_after.
	LedgerDSN  string
	StaleAfter time.Duration
	// RedisAddr and RedisPrefix, when set, share rate limits through Redis.
	RedisAddr, RedisPrefix string
	// WebhookSecret, when set, turns POST /hooks/stream on; AutoEnable are the
	// download types a video-ready webhook enables.
	WebhookSecret string
	AutoEnable    []string
}

// writeConfig writes a YAML configuration for a gateway listening on listen in
// front of se, with its ledger in dir, and returns its path.
func (se *streamEnv) writeConfig(t *testing.T, dir, listen string, o gwOptions) string {
	t.Helper()
	if o.Metering == "" {
		o.Metering = "proportional"
	}
	if o.LinkMode == "" {
		o.LinkMode = "proxy"
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = 2 * time.Second
	}
	if o.Plans == nil {
		o.Plans = map[string]plan{"basic": {Minutes: 1000}}
	}
	if o.UnknownCountry == "" {
		o.UnknownCountry = "allow"
	}
	if o.ShutdownGrace == 0 {
		o.ShutdownGrace = 5 * time.Second
	}
	list := func(v []string) string {
		if v == nil {
			v = []string{}
		}
		b, _ := json.Marshal(v)
		return string(b)
	}
	if o.DownloadBurst == 0 {
		o.DownloadBurst = 1000
	}
	if o.DownloadsPerMinute == 0 {
		o.DownloadsPerMinute = 100000
	}
	var plans strings.Builder
	for name, p := range o.Plans {
		fmt.Fprintf(&plans, "  %s:\n    minutes_per_month: %g\n    max_concurrent: %d\n    max_bytes_per_second: %d\n"+
			"    downloads: {per_minute: %g, burst: %d}\n    links: {per_minute: 100000, burst: 1000}\n",
			name, p.Minutes, p.MaxConcurrent, p.BytesPerSecond, o.DownloadsPerMinute, o.DownloadBurst)
	}
	ledger := fmt.Sprintf("ledger:\n  path: %q\n", filepath.Join(dir, "ledger.db"))
	if o.LedgerDSN != "" {
		ledger = fmt.Sprintf("ledger:\n  driver: postgres\n  dsn: {value: %q}\n", o.LedgerDSN)
		if o.StaleAfter > 0 {
			ledger += fmt.Sprintf("  stale_after: %s\n", o.StaleAfter)
		}
	}
	if o.RedisAddr != "" {
		ledger += fmt.Sprintf("redis:\n  addr: %q\n  key_prefix: %q\n", o.RedisAddr, o.RedisPrefix)
	}
	if o.WebhookSecret != "" {
		ledger += fmt.Sprintf("downloads:\n  auto_enable: %s\n", list(o.AutoEnable))
	}
	hooks := ""
	if o.WebhookSecret != "" {
		hooks = fmt.Sprintf("  webhook_secrets: [{value: %q}]\n", o.WebhookSecret)
	}
	defaultPlan := "basic"
	if _, ok := o.Plans[defaultPlan]; !ok {
		for name := range o.Plans {
			defaultPlan = name
			break
		}
	}
	yaml := fmt.Sprintf(`listen: %q
public_url: %q
shutdown_grace: %s
stream:
  account_id: acct
  api_token: {value: %q}
  api_url: %q
  delivery_url: %q
  signing_key_id: %q
  signing_key: {file: %q}
%sauth:
  algorithms: [HS256]
  hmac_secrets:
    - kid: ""
      secret: {value: %q}
links:
  mode: %s
  grant_keys:
    - id: k1
      secret: {value: %q}
policy:
  geoip_db: %q
  unknown_country: %s
  trusted_proxies: %s
  countries: {allow: [], block: %s}
  ip_limit: {per_minute: 6000, burst: 1000}
default_plan: %s
plans:
%smetering:
  mode: %s
  checkpoint_every: %s
%slog:
  level: info
  format: json
`, listen, "http://"+listen, o.ShutdownGrace, apiToken, se.url+"/client/v4/", se.url, se.keyID, se.keyPath, hooks, portalSecret,
		o.LinkMode, grantSecret, se.geoPath, o.UnknownCountry, list(o.TrustedProxies), list(o.Block),
		defaultPlan, plans.String(), o.Metering, o.CheckpointEvery, ledger)
	path := filepath.Join(dir, "streamgate.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// testGateway is a gateway built the way serve builds it, on a loopback port.
type testGateway struct {
	url     string
	cfgPath string
	cfg     *config.Config
	logs    *syncBuffer
}

func noEnv(string) string { return "" }

func startGateway(t *testing.T, se *streamEnv, o gwOptions) *testGateway {
	t.Helper()
	ln, err := net.Listen("tcp", ipLocal+":0")
	if err != nil {
		t.Fatal(err)
	}
	ln = streamtest.RealMSS(ln)
	// Listening on 127.0.0.1 accepts clients bound to any 127.0.0.x address.
	dir := t.TempDir()
	path := se.writeConfig(t, dir, ln.Addr().String(), o)
	cfg, err := config.Load(path, noEnv)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log, err := newLogger(cfg.Log.Level, cfg.Log.Format, logs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g, err := newGateway(ctx, cfg, log, gatewayOptions{})
	if err != nil {
		cancel()
		ln.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		g.Close()
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	return &testGateway{url: "http://" + ln.Addr().String(), cfgPath: path, cfg: cfg, logs: logs}
}

func (g *testGateway) downloadURL(uid string, t stream.DownloadType) string {
	return g.url + "/v1/videos/" + uid + "/downloads/" + t.File()
}

// portalToken signs a portal JWT as the customer's portal would.
func portalToken(t *testing.T, user, plan string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "plan": plan, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(portalSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// clientFrom is an HTTP client whose connections leave from the source address
// src, so the gateway (and the emulator) see it as the client's address.
func clientFrom(t *testing.T, src string) *http.Client {
	c := streamtest.ClientFrom(src)
	tr := c.Transport.(*http.Transport)
	tr.MaxIdleConnsPerHost = 256
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response %d is not a JSON object: %v: %q", r.status, err, r.body)
	}
	return m
}

// do sends one request; token, when not empty, goes in the Authorization header,
// and hdr holds further headers as name, value pairs.
func do(t *testing.T, c *http.Client, method, url, token string, body io.Reader, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// usageFigures is the body of GET /v1/me/usage.
type usageFigures struct {
	Period           string  `json:"period"`
	Plan             string  `json:"plan"`
	MinutesLimit     float64 `json:"minutes_limit"`
	MinutesUsed      float64 `json:"minutes_used"`
	MinutesReserved  float64 `json:"minutes_reserved"`
	MinutesRemaining float64 `json:"minutes_remaining"`
	StreamMinutes    float64 `json:"stream_minutes"`
	DeliveriesOpen   int64   `json:"deliveries_open"`
}

func getUsage(t *testing.T, c *http.Client, gwURL, token string) usageFigures {
	t.Helper()
	r := do(t, c, http.MethodGet, gwURL+"/v1/me/usage", token, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/me/usage: status %d: %s", r.status, r.body)
	}
	var u usageFigures
	if err := json.Unmarshal(r.body, &u); err != nil {
		t.Fatalf("usage body: %v: %s", err, r.body)
	}
	return u
}

// settledUsage polls the usage until nothing is reserved any more: every open
// delivery has settled.
func settledUsage(t *testing.T, c *http.Client, gwURL, token string) usageFigures {
	t.Helper()
	var u usageFigures
	waitFor(t, 10*time.Second, "deliveries to settle", func() bool {
		u = getUsage(t, c, gwURL, token)
		return u.MinutesReserved == 0 && u.DeliveriesOpen == 0
	})
	return u
}

// checkContent compares body with the emulator's bytes of uid's file typ from
// offset off on.
func checkContent(t *testing.T, body []byte, uid string, typ stream.DownloadType, off int64) {
	t.Helper()
	want := streamtest.Content(uid, typ, off, int64(len(body)))
	if !bytes.Equal(body, want) {
		i := 0
		for i < len(body) && body[i] == want[i] {
			i++
		}
		t.Errorf("body of %s/%s from %d differs from Stream's bytes at offset %d (len %d)", uid, typ, off, off+int64(i), len(body))
	}
}

// checkStream compares a body of n bytes, read from r, with the emulator's
// bytes, without holding it all in memory.
func checkStream(t *testing.T, r io.Reader, uid string, typ stream.DownloadType, off, n int64) {
	t.Helper()
	want := io.ReadSeeker(streamtest.NewContentReader(uid, typ, off+n))
	for _, v := range demoVideos {
		if v.UID == uid && v.Layout != streamtest.Synthetic {
			f, err := streamtest.OpenFile(v, typ)
			if err != nil {
				t.Fatal(err)
			}
			want = f.NewReader()
		}
	}
	if _, err := want.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got := bufio.NewReaderSize(r, 1<<20)
	a, b := make([]byte, 256<<10), make([]byte, 256<<10)
	var read int64
	for {
		k, err := io.ReadFull(got, a)
		if k > 0 {
			if _, err := io.ReadFull(want, b[:k]); err != nil {
				t.Errorf("body of %s/%s is longer than %d bytes", uid, typ, n)
				return
			}
			if !bytes.Equal(a[:k], b[:k]) {
				t.Errorf("body of %s/%s differs from Stream's bytes between %d and %d", uid, typ, off+read, off+read+int64(k))
				return
			}
			read += int64(k)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Errorf("reading the body of %s/%s: %v", uid, typ, err)
			return
		}
	}
	if read != n {
		t.Errorf("body of %s/%s: got %d bytes, want %d", uid, typ, read, n)
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logLines returns the JSON log lines with the given msg.
func logLines(t *testing.T, logs, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(logs, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("log line is not JSON: %v: %s", err, line)
			continue
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// report runs `usage report` against the configuration at path.
func report(t *testing.T, path, period, format string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"usage", "report", "--config", path, "--period", period, "--format", format},
		noEnv, &stdout, &stderr)
	if err != nil {
		t.Fatalf("usage report: %v (stderr %q)", err, stderr.String())
	}
	return stdout.String()
}

type reportJSON struct {
	Period string `json:"period"`
	Users  []struct {
		User          string  `json:"user"`
		Downloads     int64   `json:"downloads"`
		Deliveries    int64   `json:"deliveries"`
		Minutes       float64 `json:"minutes"`
		StreamMinutes float64 `json:"stream_minutes"`
		Bytes         int64   `json:"bytes"`
		StreamBytes   int64   `json:"stream_bytes"`
	} `json:"users"`
}

func reportRows(t *testing.T, path, period string) reportJSON {
	t.Helper()
	out := report(t, path, period, "json")
	var r reportJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("usage report --format json: %v: %q", err, out)
	}
	return r
}

// binary builds the streamgate command once for the tests that run it as a
// process.
var binary = struct {
	once sync.Once
	dir  string
	path string
	err  error
}{}

func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	binary.once.Do(func() {
		binary.dir, binary.err = os.MkdirTemp("", "streamgate-test-bin-")
		if binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "streamgate")
		goTool := "go"
		if p, err := exec.LookPath("go"); err == nil {
			goTool = p
		} else if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
			goTool = "/usr/local/go/bin/go"
		}
		out, err := exec.Command(goTool, "build", "-o", binary.path, ".").CombinedOutput()
		if err != nil {
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
	os.Exit(code)
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
