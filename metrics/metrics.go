// Package metrics is streamgate's Prometheus instrumentation: one registry of its
// own (never the process-global one, so tests and several gateways in one process
// do not collide), typed methods the components call, and the /metrics handler
// the admin listener serves.
//
// Every metric is named streamgate_*, counters end in _total, durations are
// histograms in _seconds and sizes are in _bytes. Labels take only bounded
// values: routes are the router's patterns, never paths; reasons, outcomes and
// operations come from fixed sets. testdata/metrics.golden lists every metric
// with its type, help and labels; the golden test fails when one changes, so a
// dashboard or alert is never silently broken by a rename.
package metrics

import (
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/streamgate/streamgate/usage"
)

// The refusal reasons, one per policy that can say no: the values of the reason
// label of streamgate_refusals_total. They are plain strings so that a consumer
// can declare Refused(string) in its own interface without importing this
// package.
const (
	// RefusedQuota: the user's monthly minutes cannot cover the request (403).
	RefusedQuota = "quota"
	// RefusedRate: a per-user or per-IP rate limit (429).
	RefusedRate = "rate"
	// RefusedConcurrency: the plan's max_concurrent downloads are in flight (429).
	RefusedConcurrency = "concurrency"
	// RefusedCountry: the client's country is not allowed (403).
	RefusedCountry = "country"
	// RefusedAuth: no valid portal token or link grant (401/403).
	RefusedAuth = "auth"
)

// reasons are the known refusal reasons; anything else is counted as "other".
var reasons = []string{RefusedQuota, RefusedRate, RefusedConcurrency, RefusedCountry, RefusedAuth}

// Buckets of the upstream histograms: from a nearby edge (5ms) to a response
// header timeout (30s).
var upstreamBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Buckets of ledger calls: from an in-process SQLite write (0.5ms) to a
// PostgreSQL call at the ledger timeout (10s).
var ledgerBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics holds streamgate's metrics. Its methods are safe for concurrent use.
// A nil *Metrics is valid: it records nothing and its Handler answers 404, so
// components can take one optionally.
type Metrics struct {
	reg *prometheus.Registry

	requests       *prometheus.CounterVec
	deliveries     *prometheus.CounterVec
	deliveredBytes *prometheus.CounterVec
	streamBytes    *prometheus.CounterVec
	billedMinutes  *prometheus.CounterVec
	streamMinutes  *prometheus.CounterVec
	inFlight       prometheus.Gauge
	refusals       *prometheus.CounterVec
	upstreamLat    prometheus.Histogram
	upstreamTTFB   prometheus.Histogram
	apiCalls       *prometheus.CounterVec
	tokenMints     prometheus.Counter
	tokenHits      prometheus.Counter
	ledgerDur      *prometheus.HistogramVec
	ledgerErrs     *prometheus.CounterVec
}

// New returns streamgate's metrics in a registry of their own, with the Go
// runtime's and the process's collectors beside them. version is reported by
// streamgate_build_info.
func New(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamgate_http_requests_total",
			Help: "HTTP requests answered on the public listener, by route pattern and status (499: the client left before an answer).",
		}, []string{"route", "status"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamgate_deliveries_total",
			Help: "Settled deliveries (one response body each, direct links included), by download type and outcome.",
		}, []string{"type", "outcome"}),
		deliveredBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamgate_delivered_bytes_total",
			Help: "Body bytes delivered to clients (acknowledged by them), by download type, counted when a delivery settles.",
		}, []string{"type"}),
		streamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamgate_stream_bytes_total",
			Help: "Body bytes read from Stream, by download type, counted when a delivery settles.",
		}, []string{"type"}),
		billedMinutes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamgate_billed_minutes_total",
			Help: "Minutes billed to users' quotas, by download type.",
		}, []string{"type"}),
		streamMinutes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamgate_stream_minutes_total",
			Help: "Minutes Stream bills the operator for the bytes read from it, by download type.",
		}, []string{"type"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamgate_downloads_in_flight",
			Help: "Download responses whose body is being sent right now.",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamgate_refusals_total",
			Help: "Requests refused by policy, by reason: quota, rate, concurrency, country or auth.",
		}, []string{"reason"}),
		upstreamLat: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "streamgate_upstream_latency_seconds",
			Help:    "Time from sending a download request to Stream's delivery host to its response headers.",
			Buckets: upstreamBuckets,
		}),
		upstreamTTFB: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "streamgate_upstream_first_byte_seconds",
			Help:    "Time from sending a download request to Stream's delivery host to the first byte of its body.",
			Buckets: upstreamBuckets,
		}),
		apiCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamgate_stream_api_calls_total",
			Help: "HTTP calls to the Stream API (retries included), by operation and outcome.",
		}, []string{"operation", "outcome"}),
		tokenMints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_stream_token_mints_total",
			Help: "Stream tokens signed.",
		}),
		tokenHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_stream_token_cache_hits_total",
			Help: "Requests served with a cached Stream token instead of a new signature.",
		}),
		ledgerDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "streamgate_ledger_call_duration_seconds",
			Help:    "Duration of ledger calls, by operation.",
			Buckets: ledgerBuckets,
		}, []string{"operation"}),
		ledgerErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamgate_ledger_errors_total",
			Help: "Ledger calls that failed (quota refusals are not failures), by operation.",
		}, []string{"operation"}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "streamgate_build_info",
		Help: "Always 1; its labels name the running build.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)

	m.reg.MustRegister(
		m.requests, m.deliveries, m.deliveredBytes, m.streamBytes, m.billedMinutes, m.streamMinutes,
		m.inFlight, m.refusals, m.upstreamLat, m.upstreamTTFB, m.apiCalls, m.tokenMints, m.tokenHits,
		m.ledgerDur, m.ledgerErrs, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.initSeries()
	return m
}

// initSeries creates the series of the fixed label sets at zero, so that rates
// and alerts see a 0 rather than no data before the first event.
func (m *Metrics) initSeries() {
	for _, r := range reasons {
		m.refusals.WithLabelValues(r)
	}
	for _, op := range ledgerOps {
		m.ledgerDur.WithLabelValues(op)
		m.ledgerErrs.WithLabelValues(op)
	}
	for _, t := range []string{"default", "audio"} {
		m.deliveredBytes.WithLabelValues(t)
		m.streamBytes.WithLabelValues(t)
		m.billedMinutes.WithLabelValues(t)
		m.streamMinutes.WithLabelValues(t)
	}
}

// Handler serves the metrics in the Prometheus text format (or OpenMetrics when
// the scraper asks for it).
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// Gatherer is the registry, for tests and for serving it elsewhere.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Request counts one answered request. route is the pattern of the route that
// served it ("" when none matched); status 0 means nothing was written, which is
// counted as 499 like the request log does.
func (m *Metrics) Request(route string, status int) {
	if m == nil {
		return
	}
	if route == "" {
		route = "none"
	}
	if status == 0 {
		status = 499
	}
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
}

// Settled records a settled delivery: its outcome, bytes and minutes. Its
// signature is usage.MeterConfig.OnSettle's; it does not block.
func (m *Metrics) Settled(s usage.Settled) {
	if m == nil {
		return
	}
	typ := string(s.Type)
	if typ == "" {
		typ = "unknown"
	}
	outcome := s.Status
	if outcome == "" {
		outcome = "unknown"
	}
	m.deliveries.WithLabelValues(typ, outcome).Inc()
	if s.Acked > 0 {
		m.deliveredBytes.WithLabelValues(typ).Add(float64(s.Acked))
	}
	if s.StreamBytes > 0 {
		m.streamBytes.WithLabelValues(typ).Add(float64(s.StreamBytes))
	}
	if s.Minutes > 0 {
		m.billedMinutes.WithLabelValues(typ).Add(s.Minutes)
	}
	if s.StreamMinutes > 0 {
		m.streamMinutes.WithLabelValues(typ).Add(s.StreamMinutes)
	}
}

// DownloadStarted counts a download body in flight until the returned function
// is called; calling it more than once counts once.
func (m *Metrics) DownloadStarted() (done func()) {
	if m == nil {
		return func() {}
	}
	m.inFlight.Inc()
	var ended atomic.Bool
	return func() {
		if ended.CompareAndSwap(false, true) {
			m.inFlight.Dec()
		}
	}
}

// Refused counts a request refused for reason; reasons outside the known set
// are counted as "other".
func (m *Metrics) Refused(reason string) {
	if m == nil {
		return
	}
	known := false
	for _, r := range reasons {
		known = known || r == reason
	}
	if !known {
		reason = "other"
	}
	m.refusals.WithLabelValues(reason).Inc()
}

// UpstreamLatency records how long Stream's delivery host took to answer with
// headers.
func (m *Metrics) UpstreamLatency(d time.Duration) {
	if m == nil {
		return
	}
	m.upstreamLat.Observe(d.Seconds())
}

// UpstreamTTFB records how long Stream's delivery host took to send the first
// byte of a body.
func (m *Metrics) UpstreamTTFB(d time.Duration) {
	if m == nil {
		return
	}
	m.upstreamTTFB.Observe(d.Seconds())
}

// TokenMinted counts a Stream token signed.
func (m *Metrics) TokenMinted() {
	if m == nil {
		return
	}
	m.tokenMints.Inc()
}

// TokenCacheHit counts a Stream token reused from the cache.
func (m *Metrics) TokenCacheHit() {
	if m == nil {
		return
	}
	m.tokenHits.Inc()
}

// StreamAPICall counts one HTTP call to the Stream API. Callers that do not
// go through [Metrics.StreamAPITransport] use it directly; operation and
// outcome should come from the sets StreamAPITransport uses.
func (m *Metrics) StreamAPICall(operation, outcome string) {
	if m == nil {
		return
	}
	m.apiCalls.WithLabelValues(operation, outcome).Inc()
}

// LedgerCall records one ledger call of operation that took d and failed with
// err (nil: it did not fail). A quota refusal is an answer, not a failure.
func (m *Metrics) LedgerCall(operation string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.ledgerDur.WithLabelValues(operation).Observe(d.Seconds())
	if err != nil && !isRefusal(err) {
		m.ledgerErrs.WithLabelValues(operation).Inc()
	}
}
