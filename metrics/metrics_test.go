package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
	"github.com/streamgate/streamgate/usage"
)

func TestRequest(t *testing.T) {
	m := New("test")
	m.Request("GET /dl/{grant}/{file}", 200)
	m.Request("GET /dl/{grant}/{file}", 200)
	m.Request("GET /dl/{grant}/{file}", 0)
	m.Request("", 404)
	tests := []struct {
		name          string
		route, status string
		want          float64
	}{
		{"counted per route and status", "GET /dl/{grant}/{file}", "200", 2},
		{"nothing written is 499", "GET /dl/{grant}/{file}", "499", 1},
		{"no route is none", "none", "404", 1},
		{"never seen", "GET /healthz", "200", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testutil.ToFloat64(m.requests.WithLabelValues(tt.route, tt.status)); got != tt.want {
				t.Errorf("requests{route=%q,status=%q} = %v, want %v", tt.route, tt.status, got, tt.want)
			}
		})
	}
}

func TestSettled(t *testing.T) {
	m := New("test")
	m.Settled(usage.Settled{Type: stream.Default, Status: "complete", Acked: 1000, StreamBytes: 1200, Minutes: 1.5, StreamMinutes: 1.8})
	m.Settled(usage.Settled{Type: stream.Default, Status: "client_gone", Acked: 500, StreamBytes: 600, Minutes: 0.75, StreamMinutes: 0.9})
	m.Settled(usage.Settled{Type: stream.Audio, Status: "aborted"})
	m.Settled(usage.Settled{Type: stream.Audio, Status: "direct_link", Minutes: 2})

	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"delivered bytes default", testutil.ToFloat64(m.deliveredBytes.WithLabelValues("default")), 1500},
		{"stream bytes default", testutil.ToFloat64(m.streamBytes.WithLabelValues("default")), 1800},
		{"billed minutes default", testutil.ToFloat64(m.billedMinutes.WithLabelValues("default")), 2.25},
		{"stream minutes default", testutil.ToFloat64(m.streamMinutes.WithLabelValues("default")), 2.7},
		{"billed minutes audio", testutil.ToFloat64(m.billedMinutes.WithLabelValues("audio")), 2},
		{"delivered bytes audio", testutil.ToFloat64(m.deliveredBytes.WithLabelValues("audio")), 0},
		{"complete deliveries", testutil.ToFloat64(m.deliveries.WithLabelValues("default", "complete")), 1},
		{"client gone deliveries", testutil.ToFloat64(m.deliveries.WithLabelValues("default", "client_gone")), 1},
		{"aborted deliveries", testutil.ToFloat64(m.deliveries.WithLabelValues("audio", "aborted")), 1},
		{"direct links", testutil.ToFloat64(m.deliveries.WithLabelValues("audio", "direct_link")), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestSettledAsOnSettle settles a real delivery through a meter on SQLite and
// finds its bytes and minutes in the metrics, as /metrics shows them.
func TestSettledAsOnSettle(t *testing.T) {
	ctx := context.Background()
	m := New("test")
	l, err := usage.OpenSQLite(ctx, filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	meter := usage.NewMeter(m.Ledger(l), usage.MeterConfig{OnSettle: m.Settled})
	s, err := meter.Charge(ctx, usage.StartRequest{
		User: "u1", Plan: "free", Video: "v1", Type: stream.Default, LimitMinutes: -1, Duration: 90, Range: billing.Whole,
	})
	if err != nil {
		t.Fatalf("Charge: %v", err)
	}
	if got := testutil.ToFloat64(m.billedMinutes.WithLabelValues("default")); got != s.Minutes || got == 0 {
		t.Errorf("billed minutes = %v, want the %v the ledger billed", got, s.Minutes)
	}
	if got := testutil.ToFloat64(m.deliveries.WithLabelValues("default", "direct_link")); got != 1 {
		t.Errorf("direct_link deliveries = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(m.ledgerDur, "streamgate_ledger_call_duration_seconds"); n == 0 {
		t.Error("no ledger call recorded")
	}
	body := scrape(t, m)
	for _, want := range []string{
		`streamgate_billed_minutes_total{type="default"} 1.5`,
		`streamgate_deliveries_total{outcome="direct_link",type="default"} 1`,
		`streamgate_ledger_call_duration_seconds_count{operation="charge"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestDownloadsInFlight(t *testing.T) {
	m := New("test")
	done1 := m.DownloadStarted()
	done2 := m.DownloadStarted()
	if got := testutil.ToFloat64(m.inFlight); got != 2 {
		t.Fatalf("in flight = %v, want 2", got)
	}
	done1()
	done1() // a second call must not count again
	if got := testutil.ToFloat64(m.inFlight); got != 1 {
		t.Fatalf("in flight after one ended twice = %v, want 1", got)
	}
	done2()
	if got := testutil.ToFloat64(m.inFlight); got != 0 {
		t.Fatalf("in flight after both ended = %v, want 0", got)
	}
}

func TestRefused(t *testing.T) {
	m := New("test")
	for _, r := range []string{RefusedQuota, RefusedQuota, RefusedRate, RefusedConcurrency, RefusedCountry, RefusedAuth, "bogus"} {
		m.Refused(r)
	}
	tests := []struct {
		reason string
		want   float64
	}{
		{"quota", 2}, {"rate", 1}, {"concurrency", 1}, {"country", 1}, {"auth", 1}, {"other", 1}, {"bogus", 0},
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(m.refusals.WithLabelValues(tt.reason)); got != tt.want {
			t.Errorf("refusals{reason=%q} = %v, want %v", tt.reason, got, tt.want)
		}
	}
}

// TestZeroSeriesBeforeEvents: the fixed label sets exist at 0 from the start, so
// rates and alerts see 0 rather than no data.
func TestZeroSeriesBeforeEvents(t *testing.T) {
	body := scrape(t, New("v1.2.3"))
	for _, want := range []string{
		`streamgate_refusals_total{reason="quota"} 0`,
		`streamgate_refusals_total{reason="auth"} 0`,
		`streamgate_billed_minutes_total{type="audio"} 0`,
		`streamgate_ledger_errors_total{operation="settle"} 0`,
		`streamgate_downloads_in_flight 0`,
		`streamgate_build_info{goversion="go`,
		`version="v1.2.3"} 1`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestUpstreamHistograms(t *testing.T) {
	m := New("test")
	m.UpstreamLatency(20 * time.Millisecond)
	m.UpstreamLatency(3 * time.Second)
	m.UpstreamTTFB(40 * time.Millisecond)
	body := scrape(t, m)
	for _, want := range []string{
		`streamgate_upstream_latency_seconds_bucket{le="0.025"} 1`,
		`streamgate_upstream_latency_seconds_bucket{le="5"} 2`,
		`streamgate_upstream_latency_seconds_count 2`,
		`streamgate_upstream_latency_seconds_sum 3.02`,
		`streamgate_upstream_first_byte_seconds_bucket{le="0.025"} 0`,
		`streamgate_upstream_first_byte_seconds_bucket{le="0.05"} 1`,
		`streamgate_upstream_first_byte_seconds_count 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestTokens(t *testing.T) {
	m := New("test")
	m.TokenMinted()
	m.TokenCacheHit()
	m.TokenCacheHit()
	if got := testutil.ToFloat64(m.tokenMints); got != 1 {
		t.Errorf("mints = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.tokenHits); got != 2 {
		t.Errorf("cache hits = %v, want 2", got)
	}
}

// TestLedger times a real SQLite ledger: calls are observed per operation, a
// quota refusal is no failure, a closed store's errors are.
func TestLedger(t *testing.T) {
	ctx := context.Background()
	m := New("test")
	sq, err := usage.OpenSQLite(ctx, filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	l := m.Ledger(sq)
	if _, ok := l.(usage.Shared); ok {
		t.Error("a SQLite ledger became Shared")
	}
	if err := l.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	_, err = l.Open(ctx, billing.Rule{}.WithDefaults(), usage.OpenRequest{
		ID: "d1", NewDownloadID: "dl1", User: "u1", Video: "v1", Type: stream.Default,
		Period: "2026-03", Duration: 60, Limit: 0, Range: billing.Whole,
	})
	if !errors.Is(err, usage.ErrQuotaExceeded) {
		t.Fatalf("Open with no quota: %v, want a quota refusal", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(ctx); err == nil {
		t.Fatal("Ping on a closed ledger succeeded")
	}
	body := scrape(t, m)
	for _, want := range []string{
		`streamgate_ledger_call_duration_seconds_count{operation="ping"} 2`,
		`streamgate_ledger_call_duration_seconds_count{operation="open"} 1`,
		`streamgate_ledger_errors_total{operation="ping"} 1`,
		`streamgate_ledger_errors_total{operation="open"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// sharedLedger is a SQLite ledger that says it is shared, to check that the
// wrapper keeps what the meter looks for.
type sharedLedger struct{ usage.Ledger }

func (sharedLedger) StaleAfter() time.Duration { return 42 * time.Second }

func TestLedgerStaysShared(t *testing.T) {
	sq, err := usage.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sq.Close() })
	l := New("test").Ledger(sharedLedger{sq})
	sh, ok := l.(usage.Shared)
	if !ok {
		t.Fatal("a Shared ledger lost Shared through the wrapper")
	}
	if got := sh.StaleAfter(); got != 42*time.Second {
		t.Errorf("StaleAfter = %v, want 42s", got)
	}
}

// TestStreamAPITransport drives the real Stream client against the emulator
// over a socket and reads the calls back by operation and outcome.
func TestStreamAPITransport(t *testing.T) {
	const uid = "ea95132c15732412d22c1476fa83f27a"
	e := streamtest.New(streamtest.Options{})
	e.AddVideo(streamtest.Video{UID: uid, Duration: 60, Size: 1 << 20, ReadyToStream: true})
	srv := httptest.NewServer(e.Handler())
	t.Cleanup(srv.Close)
	m := New("test")
	newClient := func(token string) *stream.Client {
		c, err := stream.NewClient(stream.ClientConfig{
			AccountID:  e.AccountID(),
			APIToken:   token,
			BaseURL:    srv.URL + "/client/v4/",
			HTTPClient: &http.Client{Transport: m.StreamAPITransport(srv.Client().Transport)},
			MaxRetries: -1,
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := newClient(e.APIToken())
	ctx := context.Background()
	if _, err := c.Video(ctx, uid); err != nil {
		t.Fatalf("Video: %v", err)
	}
	if _, err := c.Video(ctx, "00000000000000000000000000000000"); err == nil {
		t.Fatal("Video of an unknown UID succeeded")
	}
	if _, err := c.Downloads(ctx, uid); err != nil {
		t.Fatalf("Downloads: %v", err)
	}
	if _, err := c.EnableDownload(ctx, uid, stream.Default); err != nil {
		t.Fatalf("EnableDownload: %v", err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := newClient("wrong-token").Ping(ctx); err == nil {
		t.Fatal("Ping with a wrong token succeeded")
	}
	tests := []struct{ op, outcome string }{
		{"video", "ok"}, {"video", "not_found"}, {"downloads", "ok"}, {"enable_download", "ok"},
		{"list_keys", "ok"}, {"list_keys", "denied"},
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(m.apiCalls.WithLabelValues(tt.op, tt.outcome)); got != 1 {
			t.Errorf("stream_api_calls{operation=%q,outcome=%q} = %v, want 1", tt.op, tt.outcome, got)
		}
	}
	if got := testutil.CollectAndCount(m.apiCalls); got != len(tests) {
		t.Errorf("%d series of API calls, want %d", got, len(tests))
	}
}

func TestAPIOperation(t *testing.T) {
	const acct = "/client/v4/accounts/023e105f4ecef8ad9ca31a8372d0c353/stream"
	tests := []struct {
		name, method, path, want string
	}{
		{"video", "GET", acct + "/ea95132c15732412d22c1476fa83f27a", "video"},
		{"list videos", "GET", acct, "list_videos"},
		{"downloads", "GET", acct + "/ea95132c15732412d22c1476fa83f27a/downloads", "downloads"},
		{"enable typed", "POST", acct + "/ea95132c15732412d22c1476fa83f27a/downloads/audio", "enable_download"},
		{"delete", "DELETE", acct + "/ea95132c15732412d22c1476fa83f27a/downloads/default", "delete_download"},
		{"list keys", "GET", acct + "/keys", "list_keys"},
		{"create key", "POST", acct + "/keys", "create_key"},
		{"revoke key", "DELETE", acct + "/keys/8f926b2b01f383510284a17ea4b5f2f1", "revoke_key"},
		{"token", "POST", acct + "/ea95132c15732412d22c1476fa83f27a/token", "other"},
		{"not stream", "GET", "/client/v4/user/tokens/verify", "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := apiOperation(tt.method, tt.path); got != tt.want {
				t.Errorf("apiOperation(%s %s) = %q, want %q", tt.method, tt.path, got, tt.want)
			}
		})
	}
}

func TestAPIOutcome(t *testing.T) {
	res := func(code int) *http.Response { return &http.Response{StatusCode: code} }
	tests := []struct {
		name string
		res  *http.Response
		err  error
		want string
	}{
		{"ok", res(200), nil, "ok"},
		{"unauthorized", res(401), nil, "denied"},
		{"forbidden", res(403), nil, "denied"},
		{"not found", res(404), nil, "not_found"},
		{"rate limited", res(429), nil, "rate_limited"},
		{"bad request", res(400), nil, "client_error"},
		{"server", res(502), nil, "server_error"},
		{"timeout", nil, context.DeadlineExceeded, "timeout"},
		{"canceled", nil, context.Canceled, "canceled"},
		{"refused", nil, errors.New("connection refused"), "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := apiOutcome(tt.res, tt.err); got != tt.want {
				t.Errorf("apiOutcome = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestNil: a nil *Metrics records nothing and does not panic, so components may
// be built without metrics.
func TestNil(t *testing.T) {
	var m *Metrics
	exercise(m)
	m.Settled(usage.Settled{})
	if rt := m.StreamAPITransport(nil); rt != http.DefaultTransport {
		t.Error("nil metrics wrapped the transport")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("nil metrics handler: %d, want 404", rec.Code)
	}
	var l usage.Ledger = sharedLedger{}
	if got := m.Ledger(l); got != l {
		t.Error("nil metrics wrapped the ledger")
	}
}

func TestHandlerOpenMetrics(t *testing.T) {
	srv := httptest.NewServer(New("test").Handler())
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Errorf("Content-Type %q, want OpenMetrics", ct)
	}
}

// scrape fetches m's handler over a real socket.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", res.StatusCode, b)
	}
	return string(b)
}

// Settled is a usage.MeterConfig.OnSettle.
var _ = usage.MeterConfig{OnSettle: (*Metrics)(nil).Settled}
