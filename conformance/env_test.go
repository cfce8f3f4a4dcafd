package conformance

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
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

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

const (
	apiToken     = "conformance-api-token"
	portalSecret = "conformance-portal-secret-0123456789abcdef"
	grantSecret  = "conformance-grant-secret-0123456789abcdef"
	portalCookie = "portal_session"
	planName     = "basic"
	// Far more than any scenario needs: the quota never refuses here.
	planMinutes = 1_000_000
)

// binaryPath is the streamgate binary TestMain built.
var binaryPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "streamgate-conformance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
	binaryPath = filepath.Join(dir, "streamgate")
	goTool := "go"
	if _, err := exec.LookPath(goTool); err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(goTool, "build", "-o", binaryPath, "github.com/streamgate/streamgate/cmd/streamgate")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "conformance: go build of cmd/streamgate: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var signingKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func randomHex(n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// streamEnv is a Stream emulator on a loopback socket, behind a recorder that
// logs every delivery request, with the files a gateway needs to reach it.
type streamEnv struct {
	emu     *streamtest.Emulator
	rec     *recorder
	url     string
	keyID   string
	keyPath string
	geoPath string
}

func newStreamEnv(t *testing.T) *streamEnv {
	t.Helper()
	dir := t.TempDir()
	// Every loopback client is in GB: the gateway locates clients as it would
	// in production, and no country rule refuses them.
	geo, err := streamtest.CountryDB(map[string]string{"127.0.0.0/8": "GB"})
	if err != nil {
		t.Fatal(err)
	}
	se := &streamEnv{
		keyID:   randomHex(32),
		keyPath: filepath.Join(dir, "stream-key.pem"),
		geoPath: filepath.Join(dir, "countries.mmdb"),
	}
	if err := os.WriteFile(se.geoPath, geo, 0o600); err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(signingKey())})
	if err := os.WriteFile(se.keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	se.emu = streamtest.New(streamtest.Options{AccountID: "acct", APIToken: apiToken, GeoIP: geo})
	se.rec = newRecorder(se.emu.Handler())
	srv := streamtest.NewServer(se.rec)
	t.Cleanup(srv.Close)
	se.url = srv.URL
	se.emu.SetDeliveryBase(srv.URL)
	se.emu.AddSigningKey(se.keyID, &signingKey().PublicKey)
	return se
}

// videoSpec is the file a scenario downloads.
type videoSpec struct {
	Duration  float64 // seconds
	Size      int64   // bytes of default.mp4
	MoovAtEnd bool    // the MP4's index after its media data
}

func (v videoSpec) minutes() float64 { return v.Duration / 60 }

var (
	// tenMinutes is the reference file: 10 minutes, 24 MiB.
	tenMinutes = videoSpec{Duration: 600, Size: 24 << 20}
	// tenMinutesMoovAtEnd is the same with the index at the end, as ffmpeg and
	// browsers meet it.
	tenMinutesMoovAtEnd = videoSpec{Duration: 600, Size: 24 << 20, MoovAtEnd: true}
	// thirtyMinutes is large enough for aria2c's default 20 MiB split size.
	thirtyMinutes = videoSpec{Duration: 1800, Size: 48 << 20}
)

// addVideo adds a private video of spec with its default download ready: a
// real MP4 (moov first, or last with spec.MoovAtEnd) of spec.Duration seconds.
// It returns the UID and the file the emulator serves, whose size may exceed
// spec.Size when the media needs more.
func (se *streamEnv) addVideo(t *testing.T, spec videoSpec) (string, *streamtest.File) {
	t.Helper()
	layout := streamtest.FastStart
	if spec.MoovAtEnd {
		layout = streamtest.MoovAtEnd
	}
	v := streamtest.Video{UID: randomHex(32), Duration: spec.Duration, Size: spec.Size, Layout: layout,
		RequireSignedURLs: true, ReadyToStream: true}
	f, err := streamtest.OpenFile(v, stream.Default)
	if err != nil {
		t.Fatalf("streamtest.OpenFile(%+v): %v", spec, err)
	}
	se.emu.AddVideo(v)
	se.emu.SetDownloadReady(v.UID, stream.Default)
	return v.UID, f
}

// gwOptions shape a gateway's configuration.
type gwOptions struct {
	Metering  string // proportional | per-download
	LedgerDSN string // PostgreSQL; "" is SQLite in the gateway's directory
	PublicURL string // the base of link URLs; "" is the gateway's own address
}

// gateway is `streamgate serve --config FILE` running as a child process.
type gateway struct {
	base    string
	cfgPath string
	logs    *syncBuffer
	cmd     *exec.Cmd
	exited  chan error
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func (se *streamEnv) writeConfig(t *testing.T, dir, listen string, o gwOptions) string {
	t.Helper()
	ledger := fmt.Sprintf("ledger:\n  path: %q\n", filepath.Join(dir, "ledger.db"))
	if o.LedgerDSN != "" {
		ledger = fmt.Sprintf("ledger:\n  driver: postgres\n  dsn: {value: %q}\n", o.LedgerDSN)
	}
	public := o.PublicURL
	if public == "" {
		public = "http://" + listen
	}
	yaml := fmt.Sprintf(`listen: %q
public_url: %q
shutdown_grace: 5s
stream:
  account_id: acct
  api_token: {value: %q}
  api_url: %q
  delivery_url: %q
  signing_key_id: %q
  signing_key: {file: %q}
auth:
  algorithms: [HS256]
  hmac_secrets:
    - kid: ""
      secret: {value: %q}
  cookie: %s
links:
  mode: proxy
  ttl: 1h
  grant_keys:
    - id: k1
      secret: {value: %q}
policy:
  geoip_db: %q
  unknown_country: allow
  ip_limit: {per_minute: 100000, burst: 10000}
default_plan: %s
plans:
  %s:
    minutes_per_month: %d
    max_concurrent: 0
    downloads: {per_minute: 100000, burst: 10000}
    links: {per_minute: 100000, burst: 10000}
metering:
  mode: %s
  checkpoint_every: 1s
%slog:
  level: info
  format: json
`, listen, public, apiToken, se.url+"/client/v4/", se.url, se.keyID, se.keyPath, portalSecret,
		portalCookie, grantSecret, se.geoPath, planName, planName, planMinutes, o.Metering, ledger)
	path := filepath.Join(dir, "streamgate.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startGateway runs a gateway in front of se and waits until it is healthy. It
// is stopped when t ends; its log is printed if t failed.
func startGateway(t *testing.T, se *streamEnv, o gwOptions) *gateway {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr(t)
	g := &gateway{base: "http://" + addr, cfgPath: se.writeConfig(t, dir, addr, o), logs: &syncBuffer{}, exited: make(chan error, 1)}
	g.cmd = exec.Command(binaryPath, "serve", "--config", g.cfgPath)
	g.cmd.Env = childEnv(dir)
	g.cmd.Stderr = g.logs
	g.cmd.Stdout = g.logs
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.exited <- g.cmd.Wait() }()
	t.Cleanup(func() {
		_ = g.cmd.Process.Signal(os.Interrupt)
		select {
		case <-g.exited:
		case <-time.After(15 * time.Second):
			_ = g.cmd.Process.Kill()
			<-g.exited
		}
		if t.Failed() {
			t.Logf("log of the gateway at %s (last 6000 bytes):\n%s", g.base, tail(g.logs.String(), 6000))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(g.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g
			}
		}
		select {
		case err := <-g.exited:
			t.Fatalf("streamgate serve exited before it was healthy: %v\n%s", err, g.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("streamgate serve at %s not healthy after 30s:\n%s", g.base, g.logs.String())
		}
	}
}

// childEnv is the environment of a child process: the test's own, without
// variables that would override a configuration file, with HOME and TMPDIR in
// dir so that nothing is written outside the test's directories.
func childEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "STREAMGATE_"), name == "HOME", name == "TMPDIR",
			strings.HasPrefix(name, "XDG_"), name == "http_proxy", name == "https_proxy",
			name == "HTTP_PROXY", name == "HTTPS_PROXY", name == "all_proxy", name == "ALL_PROXY":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+dir, "TMPDIR="+dir, "XDG_CONFIG_HOME="+dir, "XDG_CACHE_HOME="+dir, "XDG_DATA_HOME="+dir,
		"no_proxy=*", "NO_PROXY=*")
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// portalToken signs a portal JWT for user, as the customer's portal would.
func portalToken(t *testing.T, user string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "plan": planName, "exp": time.Now().Add(2 * time.Hour).Unix(),
	}).SignedString([]byte(portalSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

var apiClient = &http.Client{Timeout: 30 * time.Second}

// createLink asks the gateway for a link URL to uid's default.mp4.
func (g *gateway) createLink(t *testing.T, token, uid string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, g.base+"/v1/videos/"+uid+"/links", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := apiClient.Do(req)
	if err != nil {
		t.Fatalf("POST links: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var link struct {
		URL string `json:"url"`
	}
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &link) != nil || link.URL == "" {
		t.Fatalf("POST /v1/videos/%s/links: status %d: %s", uid, resp.StatusCode, body)
	}
	return link.URL
}

func (g *gateway) downloadURL(uid string) string {
	return g.base + "/v1/videos/" + uid + "/downloads/default.mp4"
}

// usageFigures is the body of GET /v1/me/usage.
type usageFigures struct {
	MinutesUsed     float64 `json:"minutes_used"`
	MinutesReserved float64 `json:"minutes_reserved"`
	DeliveriesOpen  int64   `json:"deliveries_open"`
}

func (g *gateway) usage(token string) (usageFigures, error) {
	req, err := http.NewRequest(http.MethodGet, g.base+"/v1/me/usage", nil)
	if err != nil {
		return usageFigures{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := apiClient.Do(req)
	if err != nil {
		return usageFigures{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return usageFigures{}, fmt.Errorf("GET /v1/me/usage: status %d: %s", resp.StatusCode, body)
	}
	var u usageFigures
	if err := json.Unmarshal(body, &u); err != nil {
		return usageFigures{}, fmt.Errorf("GET /v1/me/usage: %v: %s", err, body)
	}
	return u, nil
}

// settledUsage waits until the emulator serves nothing more of uid and the
// user's reservations are all settled, and returns the user's usage then.
func (g *gateway) settledUsage(t *testing.T, rec *recorder, uid, token string) usageFigures {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var (
		u   usageFigures
		err error
	)
	for {
		if rec.inFlight(uid) == 0 {
			u, err = g.usage(token)
			if err == nil && u.MinutesReserved == 0 && u.DeliveriesOpen == 0 {
				return u
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s: emulator still serving %d requests of %s, usage %+v (err %v): reservations not settled",
				rec.inFlight(uid), uid, u, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reportUser is one user's row of `streamgate usage report --format json`.
// StreamMinutes and StreamBytes are nil when the report does not have them.
type reportUser struct {
	User          string   `json:"user"`
	Minutes       float64  `json:"minutes"`
	Bytes         int64    `json:"bytes"`
	StreamMinutes *float64 `json:"stream_minutes"`
	StreamBytes   *int64   `json:"stream_bytes"`
}

// report runs `streamgate usage report` on g's configuration for this month.
func (g *gateway) report(t *testing.T) map[string]reportUser {
	t.Helper()
	period := time.Now().UTC().Format("2006-01")
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binaryPath, "usage", "report", "--config", g.cfgPath, "--period", period, "--format", "json")
	cmd.Env = childEnv(filepath.Dir(g.cfgPath))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("streamgate usage report: %v: %s", err, stderr.String())
	}
	var r struct {
		Users []reportUser `json:"users"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("streamgate usage report --format json: %v: %s", err, stdout.String())
	}
	out := map[string]reportUser{}
	for _, u := range r.Users {
		out[u.User] = u
	}
	return out
}

// logLines returns the JSON lines of logs with the given msg.
func logLines(logs, msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(logs, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// syncBuffer is a bytes.Buffer that a child process and the test can share.
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

// waitUntil polls cond every 20 ms until it holds, done is closed, or the
// deadline passes; it reports whether cond held.
func waitUntil(ctx context.Context, timeout time.Duration, done <-chan struct{}, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-done:
			return cond()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}
