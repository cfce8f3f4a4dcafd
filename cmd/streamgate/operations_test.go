package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamgate/streamgate/config"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
	"github.com/streamgate/streamgate/usage"
)

// withAdmin adds an admin listener on a free loopback port (and the admin
// token) to the configuration at path.
func withAdmin(t *testing.T, path, listen string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "admin:\n  listen: %q\n  token: {value: %q}\n", listen, testAdminToken); err != nil {
		t.Fatal(err)
	}
}

// adminGateway is a gateway with its admin listener, run in the test process.
type adminGateway struct {
	*testGateway
	admin string // http://ADMIN
	cfg   *config.Config
	stop  func() error
}

func startAdminGateway(t *testing.T, se *streamEnv, o gwOptions) *adminGateway {
	t.Helper()
	ln, err := net.Listen("tcp", ipLocal+":0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := se.writeConfig(t, dir, ln.Addr().String(), o)
	withAdmin(t, path, ipLocal+":0")
	cfg, err := config.Load(path, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log, _ := newLogger("info", "json", logs)
	ctx, cancel := context.WithCancel(context.Background())
	g, err := newGateway(ctx, cfg, log, gatewayOptions{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln) }()
	var adminAddr string
	select {
	case adminAddr = <-g.adminAddr:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		err := <-done
		g.Close()
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	return &adminGateway{
		testGateway: &testGateway{url: "http://" + ln.Addr().String(), cfgPath: path, cfg: cfg, logs: logs},
		admin:       "http://" + adminAddr, cfg: cfg, stop: stop,
	}
}

// curl runs the real curl with args and returns its standard output.
func curl(t *testing.T, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	out, err := exec.Command(path, append([]string{"-sS", "--max-time", "10"}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	return string(out)
}

// metricValue is the value of the series name{labels} in a Prometheus text
// exposition, labels written as Prometheus writes them (sorted, quoted); ok
// is false when the series is absent.
func metricValue(t *testing.T, text, series string) (float64, bool) {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("series %s: value %q: %v", series, v, err)
			}
			return f, true
		}
	}
	return 0, false
}

// TestMetricsAfterDownload downloads a video as the demo does, then scrapes
// the admin listener with curl: the bytes and minutes the metrics show are
// those the ledger billed, and the public listener has no /metrics.
func TestMetricsAfterDownload(t *testing.T) {
	se := newStreamEnv(t)
	const size = 3 << 20
	uid := se.addVideo(testDuration, size)
	gw := startAdminGateway(t, se, gwOptions{})
	c := clientFrom(t, ipGB)
	tok := portalToken(t, "mia", "basic")

	r := do(t, c, http.MethodGet, gw.downloadURL(uid, stream.Default), tok, nil)
	if r.status != http.StatusOK || len(r.body) != size {
		t.Fatalf("download: status %d, %d bytes; want 200 and %d", r.status, len(r.body), size)
	}
	u := settledUsage(t, c, gw.url, tok)
	if !near(u.MinutesUsed, testMinutes, 1e-6) {
		t.Fatalf("ledger billed %.6f minutes, want the whole file's %.6f", u.MinutesUsed, testMinutes)
	}
	// A refusal, so that the refusal counter moves too.
	if r := do(t, c, http.MethodGet, gw.downloadURL(uid, stream.Default), "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("download without a token: status %d, want 401", r.status)
	}

	text := curl(t, gw.admin+"/metrics")
	tests := []struct {
		series string
		want   float64
	}{
		{`streamgate_delivered_bytes_total{type="default"}`, size},
		{`streamgate_stream_bytes_total{type="default"}`, size},
		{`streamgate_billed_minutes_total{type="default"}`, u.MinutesUsed},
		{`streamgate_stream_minutes_total{type="default"}`, u.StreamMinutes},
		{`streamgate_deliveries_total{outcome="complete",type="default"}`, 1},
		{`streamgate_http_requests_total{route="GET /v1/videos/{uid}/downloads/{file}",status="200"}`, 1},
		{`streamgate_http_requests_total{route="GET /v1/videos/{uid}/downloads/{file}",status="401"}`, 1},
		{`streamgate_refusals_total{reason="auth"}`, 1},
		{`streamgate_refusals_total{reason="quota"}`, 0},
		{`streamgate_downloads_in_flight`, 0},
		{`streamgate_stream_token_mints_total`, 1},
		{`streamgate_upstream_latency_seconds_count`, 1},
		{`streamgate_upstream_first_byte_seconds_count`, 1},
	}
	for _, tt := range tests {
		got, ok := metricValue(t, text, tt.series)
		if !ok || !near(got, tt.want, 1e-9) {
			t.Errorf("%s = %v (present %v), want %v", tt.series, got, ok, tt.want)
		}
	}
	for _, series := range []string{
		`streamgate_stream_api_calls_total{operation="video",outcome="ok"}`,
		`streamgate_ledger_call_duration_seconds_count{operation="open"}`,
		`streamgate_ledger_call_duration_seconds_count{operation="settle"}`,
	} {
		if got, _ := metricValue(t, text, series); got < 1 {
			t.Errorf("%s = %v, want at least 1", series, got)
		}
	}

	if code := curl(t, "-o", "/dev/null", "-w", "%{http_code}", gw.url+"/metrics"); code != "404" {
		t.Errorf("public listener GET /metrics: status %s, want 404", code)
	}
	if gw.admin == gw.url {
		t.Error("the admin listener is the public one")
	}
}

// TestRefusalLookup refuses a download for its quota and looks its request
// ID up on the admin API: the rule, the user, the country and the quota's
// figures at that moment. The admin API wants its token; an unknown ID is 404.
func TestRefusalLookup(t *testing.T) {
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			o := gwOptions{Plans: map[string]plan{"basic": {Minutes: 1}}}
			if store == "redis" {
				addr := os.Getenv("STREAMGATE_TEST_REDIS")
				if addr == "" {
					t.Skip("STREAMGATE_TEST_REDIS is not set")
				}
				o.RedisAddr, o.RedisPrefix = addr, "sgtest:"+randomHex(8)+":"
			}
			se := newStreamEnv(t)
			uid := se.addVideo(testDuration, 1<<20)
			gw := startAdminGateway(t, se, o)
			c := clientFrom(t, ipGB)
			tok := portalToken(t, "noor", "basic")

			r := do(t, c, http.MethodGet, gw.downloadURL(uid, stream.Default), tok, nil)
			if r.status != http.StatusForbidden {
				t.Fatalf("download over quota: status %d, want 403: %s", r.status, r.body)
			}
			id := r.json(t)["request_id"].(string)
			if id == "" || r.header.Get("X-Request-ID") != id {
				t.Fatalf("request_id %q, X-Request-ID %q", id, r.header.Get("X-Request-ID"))
			}

			url := gw.admin + "/v1/admin/refusals/" + id
			if a := adminDo(t, http.MethodGet, url, ""); a.status != http.StatusUnauthorized {
				t.Errorf("lookup without the admin token: status %d, want 401", a.status)
			}
			var a adminAnswer
			waitFor(t, 5*time.Second, "the refusal to be kept", func() bool {
				a = adminDo(t, http.MethodGet, url, "Bearer "+testAdminToken)
				return a.status != http.StatusNotFound
			})
			if a.status != http.StatusOK {
				t.Fatalf("lookup: status %d: %s", a.status, a.body)
			}
			var rf struct {
				RequestID                                 string `json:"request_id"`
				Type, Reason, User, Video, Country, Route string
				Status                                    int
				Figures                                   map[string]any
			}
			if err := jsonDecode(strings.NewReader(a.body), &rf); err != nil {
				t.Fatalf("lookup body: %v: %s", err, a.body)
			}
			if rf.RequestID != id || rf.Type != "quota_exceeded" || rf.Reason != "quota" || rf.Status != 403 ||
				rf.User != "noor" || rf.Video != uid || rf.Country != "GB" {
				t.Errorf("refusal %+v, want quota_exceeded of noor for %s from GB", rf, uid)
			}
			fig := func(k string) float64 { f, _ := rf.Figures[k].(float64); return f }
			if fig("minutes_limit") != 1 || fig("minutes_remaining") != 1 || !near(fig("minutes_needed"), testMinutes, 1e-6) {
				t.Errorf("figures %v, want 1 minute remaining of 1 and %.0f needed", rf.Figures, testMinutes)
			}
			for _, secret := range []string{tok, portalSecret, apiToken} {
				if strings.Contains(a.body, secret) {
					t.Errorf("the refusal shows a secret: %s", a.body)
				}
			}

			if a := adminDo(t, http.MethodGet, gw.admin+"/v1/admin/refusals/no-such-request", "Bearer "+testAdminToken); a.status != http.StatusNotFound || a.problem["type"] != "urn:streamgate:problem:refusal_not_found" {
				t.Errorf("unknown request ID: status %d %v, want 404 refusal_not_found", a.status, a.problem)
			}
			// A download that was served is no refusal.
			ok := do(t, c, http.MethodGet, gw.url+"/v1/me/usage", tok, nil)
			if a := adminDo(t, http.MethodGet, gw.admin+"/v1/admin/refusals/"+ok.header.Get("X-Request-ID"), "Bearer "+testAdminToken); a.status != http.StatusNotFound {
				t.Errorf("lookup of an answered request: status %d, want 404", a.status)
			}
		})
	}
}

// TestDrainFinishesDownload runs the binary, starts a slow download and sends
// SIGTERM: /readyz turns 503 at once, a new request is refused with 503 and
// Connection: close, the download still completes with all its bytes and is
// billed whole, and the process exits 0.
func TestDrainFinishesDownload(t *testing.T) {
	bin := buildBinary(t)
	se := newStreamEnv(t)
	const size = 1 << 20
	uid := se.addVideo(testDuration, size)
	se.emu.SetFault(uid, streamtest.Fault{BytesPerSecond: 512 << 10}) // about 2s
	dir := t.TempDir()
	listen := freePort(t)
	path := se.writeConfig(t, dir, listen, gwOptions{ShutdownGrace: 30 * time.Second})
	withAdmin(t, path, freePort(t))
	base := "http://" + listen
	p := startProcess(t, bin, path, base)

	c := clientFrom(t, ipGB)
	tok := portalToken(t, "ada", "basic")
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/videos/"+uid+"/downloads/default.mp4", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("download: status %d", resp.StatusCode)
	}
	first := make([]byte, 32<<10)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(resp.Body)
		rest <- b
	}()

	// A fresh connection each, as a load balancer's probe and a new client.
	probe := clientFrom(t, ipLocal)
	probe.Transport.(*http.Transport).DisableKeepAlives = true
	var ready response
	waitFor(t, 2*time.Second, "/readyz to turn 503", func() bool {
		ready = do(t, probe, http.MethodGet, base+"/readyz", "", nil)
		return ready.status == http.StatusServiceUnavailable
	})
	// curl shows the headers as sent: Go's client takes Connection out.
	head := curl(t, "-i", "-H", "Authorization: Bearer "+tok, base+"/v1/me/usage")
	if !strings.HasPrefix(head, "HTTP/1.1 503") || !strings.Contains(head, "urn:streamgate:problem:shutting_down") ||
		!strings.Contains(strings.ToLower(head), "\r\nconnection: close\r\n") || !strings.Contains(head, "\r\nRetry-After: 1\r\n") {
		t.Errorf("a new request while draining:\n%s\nwant a 503 shutting_down problem with Connection: close and Retry-After", head)
	}
	if h := do(t, probe, http.MethodGet, base+"/healthz", "", nil); h.status != http.StatusOK {
		t.Errorf("/healthz while draining: status %d, want 200 (the process is alive)", h.status)
	}

	var body []byte
	select {
	case b := <-rest:
		body = append(first, b...)
	case <-time.After(20 * time.Second):
		t.Fatal("the download did not finish during the drain")
	}
	if len(body) != size {
		t.Fatalf("download across SIGTERM: %d bytes, want %d", len(body), size)
	}
	checkContent(t, body, uid, stream.Default, 0)

	select {
	case err := <-p.exited:
		p.done = true
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the process did not exit once the download had finished")
	}
	rows := ledgerRows(t, filepath.Join(dir, "ledger.db"), "ada")
	if len(rows) != 1 || rows[0].status != usage.Complete.String() || rows[0].acked != size || !near(rows[0].minutes, testMinutes, 1e-6) {
		t.Errorf("ledger rows %+v, want one complete delivery of %d bytes billed %.0f minutes", rows, size, testMinutes)
	}
}

// TestDrainCutsAtGrace: a download slower than the grace period is cut off at
// its end; its ledger row says shutdown and bills what the client received.
func TestDrainCutsAtGrace(t *testing.T) {
	se := newStreamEnv(t)
	const size = 4 << 20
	uid := se.addVideo(testDuration, size)
	se.emu.SetFault(uid, streamtest.Fault{BytesPerSecond: 256 << 10}) // 16s
	gw := startAdminGateway(t, se, gwOptions{ShutdownGrace: 700 * time.Millisecond})
	c := clientFrom(t, ipGB)
	req, _ := http.NewRequest(http.MethodGet, gw.downloadURL(uid, stream.Default), nil)
	req.Header.Set("Authorization", "Bearer "+portalToken(t, "cy", "basic"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, resp.Body)
		got <- n + 0
	}()
	time.Sleep(300 * time.Millisecond)
	if n, _ := metricValue(t, curl(t, gw.admin+"/metrics"), "streamgate_downloads_in_flight"); n != 1 {
		t.Errorf("streamgate_downloads_in_flight = %v during the download, want 1", n)
	}
	start := time.Now()
	if err := gw.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if took := time.Since(start); took < 700*time.Millisecond {
		t.Errorf("shutdown took %s, less than the grace period", took)
	}
	received := <-got
	rows := ledgerRows(t, gw.cfg.Ledger.Path, "cy")
	if len(rows) != 1 {
		t.Fatalf("ledger rows %+v, want one", rows)
	}
	row := rows[0]
	if row.status != usage.Shutdown.String() || row.acked <= 0 || row.acked >= size || row.acked > received {
		t.Errorf("ledger row %+v after the client received %d bytes, want a shutdown delivery of part of %d bytes", row, received, size)
	}
	if want := testMinutes * float64(row.acked) / size; !near(row.minutes, want, 1e-5) {
		t.Errorf("billed %.6f minutes for %d of %d bytes, want %.6f", row.minutes, row.acked, size, want)
	}
}

type ledgerRow struct {
	status  string
	acked   int64
	minutes float64
}

// ledgerRows reads a user's deliveries from the SQLite ledger at path.
func ledgerRows(t *testing.T, path, user string) []ledgerRow {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rs, err := db.Query(`SELECT status, acked, minutes_micro FROM deliveries WHERE user_id = ?`, user)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []ledgerRow
	for rs.Next() {
		var r ledgerRow
		var micro int64
		if err := rs.Scan(&r.status, &r.acked, &micro); err != nil {
			t.Fatal(err)
		}
		r.minutes = float64(micro) / 1e6
		out = append(out, r)
	}
	return out
}

// TestRefusalLookupRate: a download refused by the user's rate limit is kept
// with the limit's figures at that moment: when to retry and the bucket's state.
func TestRefusalLookupRate(t *testing.T) {
	se := newStreamEnv(t)
	uid := se.addVideo(testDuration, 64<<10)
	gw := startAdminGateway(t, se, gwOptions{DownloadBurst: 1, DownloadsPerMinute: 1})
	c := clientFrom(t, ipGB)
	tok := portalToken(t, "rui", "basic")
	if r := do(t, c, http.MethodGet, gw.downloadURL(uid, stream.Default), tok, nil); r.status != http.StatusOK {
		t.Fatalf("first download: status %d", r.status)
	}
	r := do(t, c, http.MethodGet, gw.downloadURL(uid, stream.Default), tok, nil)
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("second download: status %d, want 429", r.status)
	}
	a := adminDo(t, http.MethodGet, gw.admin+"/v1/admin/refusals/"+r.header.Get("X-Request-ID"), "Bearer "+testAdminToken)
	if a.status != http.StatusOK {
		t.Fatalf("lookup: status %d: %s", a.status, a.body)
	}
	var rf struct {
		Type, Reason, User string
		Figures            map[string]any
	}
	if err := jsonDecode(strings.NewReader(a.body), &rf); err != nil {
		t.Fatal(err)
	}
	retry, _ := rf.Figures["retry_after_seconds"].(float64)
	if rf.Type != "rate_limited" || rf.Reason != "rate" || rf.User != "rui" ||
		strconv.Itoa(int(retry)) != r.header.Get("Retry-After") || rf.Figures["rate_limit"] != r.header.Get("RateLimit") {
		t.Errorf("refusal %s, want rate_limited of rui with Retry-After %s and RateLimit %q",
			a.body, r.header.Get("Retry-After"), r.header.Get("RateLimit"))
	}
}
