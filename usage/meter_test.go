package usage_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
	"github.com/streamgate/streamgate/usage"
	"github.com/streamgate/streamgate/usage/ledgertest"
)

const (
	video = "0123456789abcdef0123456789abcdef"
	size  = 1000 // bytes in the test file
	secs  = 600  // the test video's duration: 10 minutes
)

func newClock() *streamtest.Clock { return streamtest.NewClock(ledgertest.T0) }

type fixture struct {
	ledger usage.Ledger
	meter  *usage.Meter
	clock  *streamtest.Clock
	logs   *observer.ObservedLogs
}

func newFixture(t *testing.T, mode usage.Mode) *fixture {
	t.Helper()
	return newFixtureOn(t, openMemory(t), usage.MeterConfig{Mode: mode})
}

func newFixtureOn(t *testing.T, l usage.Ledger, cfg usage.MeterConfig) *fixture {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	c := newClock()
	cfg.Now, cfg.Logger = c.Now, zap.New(core)
	return &fixture{ledger: l, meter: usage.NewMeter(l, cfg), clock: c, logs: logs}
}

// req is a request of alice for the whole test video under a 100-minute plan.
func req(mut ...func(*usage.StartRequest)) usage.StartRequest {
	r := usage.StartRequest{
		User: "alice", Plan: "basic", LimitMinutes: 100,
		Video: video, Type: stream.Default, Duration: secs,
		RangeStart: -1, RangeEnd: -1,
		Country: "CH", ClientIP: "192.0.2.1", RequestID: "req-1",
	}
	for _, m := range mut {
		m(&r)
	}
	return r
}

func from(start, end int64) func(*usage.StartRequest) {
	return func(r *usage.StartRequest) { r.RangeStart, r.RangeEnd = start, end }
}

func session(s string) func(*usage.StartRequest) {
	return func(r *usage.StartRequest) { r.Session = s }
}

func (f *fixture) start(t *testing.T, r usage.StartRequest) *usage.Delivery {
	t.Helper()
	d, err := f.meter.Start(context.Background(), r)
	if err != nil {
		t.Fatalf("Start(%+v): %v", r, err)
	}
	return d
}

// deliver runs a delivery of r through headers, n body bytes and Finish(status).
func (f *fixture) deliver(t *testing.T, r usage.StartRequest, n int64, status string) (*usage.Delivery, usage.Settled) {
	t.Helper()
	d := f.start(t, r)
	code, length, total := 200, int64(size), int64(-1)
	if r.RangeStart >= 0 {
		last := int64(size - 1)
		if r.RangeEnd >= 0 && r.RangeEnd < last {
			last = r.RangeEnd
		}
		code, length, total = 206, last-r.RangeStart+1, size
	}
	if err := d.Headers(code, length, total); err != nil {
		t.Fatalf("Headers: %v", err)
	}
	d.Add(n)
	st, err := d.Finish(status)
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	return d, st
}

func (f *fixture) wantUsage(t *testing.T, used, reserved float64) {
	t.Helper()
	ledgertest.WantUsage(t, f.ledger, "alice", usage.Period(f.clock.Now()), used, reserved)
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

var modes = []usage.Mode{usage.Proportional, usage.PerDownload}

func TestPeriod(t *testing.T) {
	tests := []struct {
		name string
		t    time.Time
		want string
	}{
		{"mid-month", time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC), "2026-03"},
		{"last instant", time.Date(2026, 3, 31, 23, 59, 59, 999999999, time.UTC), "2026-03"},
		{"first instant", time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC), "2026-04"},
		{"UTC, not local", time.Date(2026, 4, 1, 1, 0, 0, 0, time.FixedZone("CET", 2*3600)), "2026-03"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := usage.Period(tt.t); got != tt.want {
				t.Errorf("Period(%v) = %q, want %q", tt.t, got, tt.want)
			}
		})
	}
}

func TestMeterConcurrentQuota(t *testing.T) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			f := newFixture(t, mode)
			const n, fits = 200, 10
			limit := float64(fits * secs / 60)
			var ok, refused atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for range n {
				wg.Go(func() {
					d, err := f.meter.Start(context.Background(), req(func(r *usage.StartRequest) { r.LimitMinutes = limit }))
					if errors.Is(err, usage.ErrQuotaExceeded) {
						refused.Add(1)
						return
					} else if err != nil {
						errs <- err
						return
					}
					if err := d.Headers(200, size, -1); err != nil {
						errs <- err
					}
					d.Add(size)
					if _, err := d.Finish("complete"); err != nil {
						errs <- err
					}
					ok.Add(1)
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if ok.Load() != fits || refused.Load() != n-fits {
				t.Fatalf("%d deliveries ran and %d were refused, want %d and %d", ok.Load(), refused.Load(), fits, n-fits)
			}
			u, err := f.meter.Usage(context.Background(), "alice", "basic", limit)
			if err != nil {
				t.Fatal(err)
			}
			if u.MinutesUsed != limit || u.MinutesReserved != 0 || u.MinutesRemaining != 0 {
				t.Fatalf("Usage = %+v, want %v used, nothing reserved or remaining", u, limit)
			}
		})
	}
}

func TestMeterProportionalTrueUp(t *testing.T) {
	f := newFixture(t, usage.Proportional)

	// The size is unknown: the full duration is reserved until the headers tell.
	d := f.start(t, req(from(0, 249)))
	if got := d.Reserved(); got != 10 {
		t.Fatalf("reserved before headers = %v, want the full 10", got)
	}
	f.wantUsage(t, 0, 10)
	if err := d.Headers(206, 250, size); err != nil {
		t.Fatal(err)
	}
	if got := d.Reserved(); got != 2.5 {
		t.Fatalf("reserved after headers = %v, want 2.5", got)
	}
	f.wantUsage(t, 0, 2.5)
	d.Add(250)
	if st, err := d.Finish("complete"); err != nil || st.Minutes != 2.5 || st.TotalSize != size {
		t.Fatalf("Finish = %+v, %v; want 2.5 minutes of a %d-byte file", st, err, size)
	}
	f.wantUsage(t, 2.5, 0)

	// The size is now known: later requests reserve their range's share at once.
	tests := []struct {
		name       string
		start, end int64
		want       float64
	}{
		{"whole file", -1, -1, 10},
		{"middle quarter", 500, 749, 2.5},
		{"open-ended tail", 900, -1, 1},
		{"end past the file", 900, 5000, 1},
		{"past the end", 1000, -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := f.start(t, req(from(tt.start, tt.end)))
			defer d.Abort("test")
			if got := d.Reserved(); !near(got, tt.want) {
				t.Fatalf("reserved = %v, want %v", got, tt.want)
			}
		})
	}
	f.wantUsage(t, 2.5, 0)
}

func TestMeterHeadersRaiseRefused(t *testing.T) {
	f := newFixture(t, usage.Proportional)
	f.deliver(t, req(), size, "complete") // learns the size; 10 used
	d := f.start(t, req(from(0, 99), func(r *usage.StartRequest) { r.LimitMinutes = 12 }))
	if got := d.Reserved(); got != 1 {
		t.Fatalf("reserved = %v, want 1", got)
	}
	// The origin answers with far more than was asked for.
	err := d.Headers(206, 500, size)
	var qe *usage.QuotaError
	if !errors.As(err, &qe) || qe.Usage.MinutesUsed != 10 || qe.Usage.MinutesReserved != 1 || !near(qe.Requested, 4) {
		t.Fatalf("Headers = %v, want a QuotaError asking 4 more minutes with 10 used and 1 reserved", err)
	}
	d.Abort("quota")
	f.wantUsage(t, 10, 0)
}

func TestMeterResume(t *testing.T) {
	tests := []struct {
		mode                  usage.Mode
		firstBill, secondBill float64
		secondReserve         float64
		secondContinues       bool
	}{
		{usage.Proportional, 5, 5, 5, true},
		{usage.PerDownload, 10, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			f := newFixture(t, tt.mode)
			// The client goes away halfway through the whole file.
			d1, st1 := f.deliver(t, req(), size/2, "client_gone")
			if st1.Minutes != tt.firstBill || st1.Bytes != size/2 || st1.Status != "client_gone" || !d1.StartsDownload() {
				t.Fatalf("first delivery = %+v, want %v minutes for %d bytes", st1, tt.firstBill, size/2)
			}
			f.clock.Advance(10 * time.Minute)
			d2 := f.start(t, req(from(size/2, -1)))
			if got := d2.Reserved(); got != tt.secondReserve {
				t.Fatalf("resume reserved %v, want %v", got, tt.secondReserve)
			}
			if d2.StartsDownload() || d2.DownloadID() != d1.DownloadID() {
				t.Fatalf("resume is on download %s (starts %v), want a continuation of %s", d2.DownloadID(), d2.StartsDownload(), d1.DownloadID())
			}
			if err := d2.Headers(206, size/2, size); err != nil {
				t.Fatal(err)
			}
			d2.Add(size / 2)
			st2, err := d2.Finish("complete")
			if err != nil || st2.Minutes != tt.secondBill {
				t.Fatalf("resume billed %+v, %v; want %v minutes", st2, err, tt.secondBill)
			}
			f.wantUsage(t, 10, 0)
			rows, err := f.ledger.Report(context.Background(), usage.Period(f.clock.Now()))
			if err != nil || len(rows) != 1 || rows[0].Downloads != 1 || rows[0].Deliveries != 2 || rows[0].Bytes != size {
				t.Fatalf("Report = %+v, %v; want 1 download of 2 deliveries, %d bytes", rows, err, size)
			}
		})
	}
}

func TestMeterDownloadStarts(t *testing.T) {
	tests := []struct {
		name   string
		mode   usage.Mode
		first  *usage.StartRequest // nil: no earlier download
		wait   time.Duration
		second usage.StartRequest
		starts bool
		bill   float64
	}{
		{"first at bytes=1- is billed, per-download", usage.PerDownload, nil, 0, req(from(1, -1)), true, 10},
		{"first at bytes=1- is billed, proportional", usage.Proportional, nil, 0, req(from(1, -1)), true, 9.99},
		{"range at 0 starts anew", usage.PerDownload, ptr(req()), time.Minute, req(from(0, -1)), true, 10},
		{"within the window continues", usage.PerDownload, ptr(req()), 59 * time.Minute, req(from(500, -1)), false, 0},
		{"after the window starts anew", usage.PerDownload, ptr(req()), 61 * time.Minute, req(from(500, -1)), true, 10},
		{"same grant continues after the window", usage.PerDownload, ptr(req(session("g1"))), 3 * time.Hour, req(from(500, -1), session("g1")), false, 0},
		{"a new grant starts anew", usage.PerDownload, ptr(req(session("g1"))), time.Minute, req(from(500, -1), session("g2")), true, 10},
		{"a grant does not continue the authenticated route", usage.PerDownload, ptr(req()), time.Minute, req(from(500, -1), session("g1")), true, 10},
		{"other type starts anew", usage.PerDownload, ptr(req()), time.Minute, req(from(500, -1), func(r *usage.StartRequest) { r.Type = stream.Audio }), true, 10},
		{"other user starts anew", usage.PerDownload, ptr(req()), time.Minute, req(from(500, -1), func(r *usage.StartRequest) { r.User = "bob" }), true, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.mode)
			if tt.first != nil {
				// The first request leaves after 500 bytes, so there is something
				// to continue; after a whole file there is not.
				f.deliver(t, *tt.first, 500, "client_gone")
			}
			f.clock.Advance(tt.wait)
			d := f.start(t, tt.second)
			if d.StartsDownload() != tt.starts {
				t.Fatalf("StartsDownload = %v, want %v", d.StartsDownload(), tt.starts)
			}
			if want := map[bool]float64{true: 10, false: 0}[tt.starts]; tt.mode == usage.PerDownload && d.Reserved() != want {
				t.Fatalf("reserved %v, want %v", d.Reserved(), want)
			}
			code, length := 206, int64(size)-max(tt.second.RangeStart, 0)
			if err := d.Headers(code, length, size); err != nil {
				t.Fatal(err)
			}
			d.Add(length)
			st, err := d.Finish("complete")
			if err != nil || !near(st.Minutes, tt.bill) {
				t.Fatalf("Finish = %+v, %v; want %v minutes", st, err, tt.bill)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestMeterAbort(t *testing.T) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			f := newFixture(t, mode)
			d := f.start(t, req())
			f.wantUsage(t, 0, 10)
			d.Abort("upstream_failed")
			f.wantUsage(t, 0, 0)
			d.Abort("again")
			st, err := d.Finish("complete")
			if err != nil || st.Status != "aborted" || st.Reason != "upstream_failed" || st.Minutes != 0 || st.Bytes != 0 {
				t.Fatalf("Finish after Abort = %+v, %v; want the aborted row", st, err)
			}
			f.wantUsage(t, 0, 0)
			if n := f.logs.FilterMessage("billable download").Len(); n != 0 {
				t.Fatalf("an aborted delivery logged %d billable download lines", n)
			}
			if rows, _ := f.ledger.Report(context.Background(), usage.Period(f.clock.Now())); len(rows) != 1 || rows[0].Deliveries != 0 || rows[0].Minutes != 0 {
				t.Fatalf("Report = %+v, want no billed delivery", rows)
			}
		})
	}
}

func TestMeterAbortAfterBytesBills(t *testing.T) {
	f := newFixture(t, usage.Proportional)
	d := f.start(t, req())
	if err := d.Headers(200, size, -1); err != nil {
		t.Fatal(err)
	}
	d.Add(100)
	d.Abort("upstream_failed")
	st, _ := d.Finish("complete")
	if st.Status != "upstream_failed" || st.Minutes != 1 || st.Bytes != 100 {
		t.Fatalf("Abort after 100 bytes settled %+v, want 1 minute for 100 bytes", st)
	}
	f.wantUsage(t, 1, 0)
}

func TestMeterNon2xxBillsNothing(t *testing.T) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			f := newFixture(t, mode)
			d := f.start(t, req())
			if err := d.Headers(404, 120, -1); err != nil {
				t.Fatal(err)
			}
			f.wantUsage(t, 0, 0)
			d.Add(120)
			st, err := d.Finish("complete")
			if err != nil || st.Minutes != 0 || st.Bytes != 0 {
				t.Fatalf("Finish = %+v, %v; want nothing billed", st, err)
			}
			f.wantUsage(t, 0, 0)
		})
	}
}

func TestMeterUnknownSizeBillsFull(t *testing.T) {
	f := newFixture(t, usage.Proportional)
	d := f.start(t, req())
	if err := d.Headers(200, -1, -1); err != nil { // chunked, no length
		t.Fatal(err)
	}
	d.Add(123)
	if st, err := d.Finish("complete"); err != nil || st.Minutes != 10 {
		t.Fatalf("Finish = %+v, %v; want the full 10 minutes", st, err)
	}
}

func TestMeterStartRefusals(t *testing.T) {
	f := newFixture(t, usage.PerDownload)
	f.deliver(t, req(func(r *usage.StartRequest) { r.LimitMinutes = 15 }), 500, "client_gone")
	_, err := f.meter.Start(context.Background(), req(func(r *usage.StartRequest) { r.LimitMinutes = 15 }))
	var qe *usage.QuotaError
	if !errors.Is(err, usage.ErrQuotaExceeded) || !errors.As(err, &qe) {
		t.Fatalf("Start past the quota = %v, want a QuotaError", err)
	}
	want := usage.Usage{Period: "2026-03", Plan: "basic", MinutesLimit: 15, MinutesUsed: 10, MinutesRemaining: 5}
	if qe.Usage != want || qe.Requested != 10 {
		t.Fatalf("QuotaError = %+v requested %v, want %+v requested 10", qe.Usage, qe.Requested, want)
	}
	// A continuation of a paid download is still served, for nothing.
	d := f.start(t, req(from(500, -1), func(r *usage.StartRequest) { r.LimitMinutes = 15 }))
	d.Abort("test")

	tests := []struct {
		name string
		req  usage.StartRequest
	}{
		{"unknown duration", req(func(r *usage.StartRequest) { r.Duration = -1 })},
		{"no user", req(func(r *usage.StartRequest) { r.User = "" })},
		{"bad type", req(func(r *usage.StartRequest) { r.Type = "hd" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.meter.Start(context.Background(), tt.req); err == nil || errors.Is(err, usage.ErrQuotaExceeded) {
				t.Fatalf("Start = %v, want a request error", err)
			}
		})
	}
}

func TestMeterUsage(t *testing.T) {
	f := newFixture(t, usage.Proportional)
	f.deliver(t, req(), size, "complete")
	open := f.start(t, req(from(0, 499)))
	defer open.Abort("test")

	tests := []struct {
		name  string
		limit float64
		want  usage.Usage
	}{
		{"limited", 30, usage.Usage{Period: "2026-03", Plan: "basic", MinutesLimit: 30, MinutesUsed: 10, MinutesReserved: 5, MinutesRemaining: 15}},
		{"overspent", 12, usage.Usage{Period: "2026-03", Plan: "basic", MinutesLimit: 12, MinutesUsed: 10, MinutesReserved: 5, MinutesRemaining: 0}},
		{"unlimited", -1, usage.Usage{Period: "2026-03", Plan: "basic", MinutesLimit: -1, MinutesUsed: 10, MinutesReserved: 5, MinutesRemaining: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.meter.Usage(context.Background(), "alice", "basic", tt.limit)
			if err != nil || got != tt.want {
				t.Fatalf("Usage = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	// A new month starts from nothing.
	f.clock.Advance(20 * 24 * time.Hour)
	got, err := f.meter.Usage(context.Background(), "alice", "basic", 30)
	if want := (usage.Usage{Period: "2026-04", Plan: "basic", MinutesLimit: 30, MinutesRemaining: 30}); err != nil || got != want {
		t.Fatalf("next month: Usage = %+v, %v; want %+v", got, err, want)
	}
}

func TestMeterReport(t *testing.T) {
	f := newFixture(t, usage.PerDownload)
	f.deliver(t, req(), size/2, "client_gone")
	f.deliver(t, req(from(size/2, -1)), size/2, "complete")
	f.deliver(t, req(func(r *usage.StartRequest) { r.Type = stream.Audio }), size, "complete")
	f.deliver(t, req(func(r *usage.StartRequest) { r.User = "bob" }), size, "complete")
	rows, err := f.ledger.Report(context.Background(), "2026-03")
	if err != nil {
		t.Fatal(err)
	}
	want := []usage.ReportRow{
		{User: "alice", Downloads: 2, Deliveries: 3, Minutes: 20, Bytes: 2 * size},
		{User: "bob", Downloads: 1, Deliveries: 1, Minutes: 10, Bytes: size},
	}
	if len(rows) != len(want) || rows[0] != want[0] || rows[1] != want[1] {
		t.Fatalf("Report = %+v, want %+v", rows, want)
	}
}

func TestMeterLogLine(t *testing.T) {
	f := newFixture(t, usage.PerDownload)
	d, st := f.deliver(t, req(), size, "complete")
	entries := f.logs.FilterMessage("billable download").AllUntimed()
	if len(entries) != 1 {
		t.Fatalf("logged %d billable download lines, want 1", len(entries))
	}
	e := entries[0]
	if e.Level != zapcore.InfoLevel {
		t.Errorf("level = %v, want info", e.Level)
	}
	got := e.ContextMap()
	want := map[string]any{
		"user":        "alice",
		"video":       video,
		"type":        "default",
		"minutes":     10.0,
		"bytes":       int64(size),
		"status":      "complete",
		"country":     "CH",
		"download_id": d.DownloadID(),
		"delivery_id": d.ID(),
		"mode":        "per-download",
		"request_id":  "req-1",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("field %s = %#v, want %#v", k, got[k], v)
		}
	}
	if st.DeliveryID != d.ID() {
		t.Errorf("Settled.DeliveryID = %q, want %q", st.DeliveryID, d.ID())
	}
	// Finish is idempotent: no second line.
	if again, err := d.Finish("shutdown"); err != nil || again != st {
		t.Fatalf("second Finish = %+v, %v; want the first %+v", again, err, st)
	}
	if n := f.logs.FilterMessage("billable download").Len(); n != 1 {
		t.Fatalf("after a second Finish: %d lines, want 1", n)
	}
}

// countingLedger counts checkpoint writes.
type countingLedger struct {
	usage.Ledger
	checkpoints atomic.Int64
}

func (c *countingLedger) Checkpoint(ctx context.Context, id string, bytes int64, minutes float64, total int64, at time.Time) error {
	c.checkpoints.Add(1)
	return c.Ledger.Checkpoint(ctx, id, bytes, minutes, total, at)
}

func TestMeterCheckpointsAreRationed(t *testing.T) {
	l := &countingLedger{Ledger: openMemory(t)}
	f := newFixtureOn(t, l, usage.MeterConfig{CheckpointBytes: 100, CheckpointEvery: time.Minute})
	d := f.start(t, req())
	if err := d.Headers(200, size, -1); err != nil {
		t.Fatal(err)
	}
	for range 999 {
		d.Add(1)
	}
	if n := l.checkpoints.Load(); n != 9 {
		t.Fatalf("999 one-byte writes made %d checkpoints, want 9 (one per 100 bytes)", n)
	}
	f.clock.Advance(time.Minute)
	d.Add(1)
	if n := l.checkpoints.Load(); n != 10 {
		t.Fatalf("after a minute: %d checkpoints, want 10", n)
	}
	if _, err := d.Finish("complete"); err != nil {
		t.Fatal(err)
	}
}

// TestMeterCrashRecovery leaves deliveries open, drops the database handle as a
// crash would, and settles them from their checkpoints after reopening the file.
func TestMeterCrashRecovery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	cfg := usage.MeterConfig{CheckpointBytes: 100, CheckpointEvery: 2 * time.Second}

	before := openFile(t, path)
	prop := newFixtureOn(t, before, cfg)
	per := &fixture{ledger: before, clock: prop.clock, meter: usage.NewMeter(before, usage.MeterConfig{
		Mode: usage.PerDownload, CheckpointBytes: cfg.CheckpointBytes, CheckpointEvery: cfg.CheckpointEvery, Now: prop.clock.Now,
	})}

	p := prop.start(t, req())
	if err := p.Headers(200, size, -1); err != nil {
		t.Fatal(err)
	}
	p.Add(50) // not due
	p.Add(60) // 110 bytes: checkpoint
	prop.clock.Advance(3 * time.Second)
	p.Add(10) // 3s later: checkpoint at 120 bytes
	p.Add(5)  // lost in the crash

	pd := per.start(t, req(func(r *usage.StartRequest) { r.User = "bob" }))
	if err := pd.Headers(200, size, -1); err != nil {
		t.Fatal(err)
	}
	pd.Add(200) // checkpoint: a byte was delivered, the download is owed

	idle := per.start(t, req(func(r *usage.StartRequest) { r.User = "carol" })) // no byte yet

	ledgertest.WantUsage(t, before, "alice", "2026-03", 0, 10)
	if err := before.Close(); err != nil { // the crash: no Finish, no Abort
		t.Fatal(err)
	}

	after := openFile(t, path)
	f := newFixtureOn(t, after, cfg)
	f.clock.Advance(time.Hour)
	got, err := f.meter.Recover(context.Background())
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	want := map[string]struct {
		bytes   int64
		minutes float64
	}{
		p.ID():    {120, 1.2},
		pd.ID():   {200, 10},
		idle.ID(): {0, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("Recover settled %d deliveries, want %d: %+v", len(got), len(want), got)
	}
	for _, s := range got {
		w := want[s.DeliveryID]
		if s.Status != "recovered" || s.Bytes != w.bytes || !near(s.Minutes, w.minutes) {
			t.Errorf("recovered %s = %s, %d bytes, %v minutes; want recovered, %d bytes, %v minutes",
				s.DeliveryID, s.Status, s.Bytes, s.Minutes, w.bytes, w.minutes)
		}
	}
	for user, used := range map[string]float64{"alice": 1.2, "bob": 10, "carol": 0} {
		ledgertest.WantUsage(t, after, user, "2026-03", used, 0)
	}
	lines := f.logs.FilterMessage("billable download").FilterField(zap.String("status", "recovered"))
	if lines.Len() != 3 {
		t.Fatalf("logged %d recovered lines, want 3", lines.Len())
	}
}

func TestMeterChargeDirectLink(t *testing.T) {
	for _, mode := range []usage.Mode{usage.Proportional, usage.PerDownload} {
		t.Run(string(mode), func(t *testing.T) {
			f := newFixture(t, mode)
			ctx := context.Background()
			// 100 minutes fit ten 10-minute links; the eleventh is refused and
			// leaves nothing behind.
			for i := range 10 {
				st, err := f.meter.Charge(ctx, req())
				if err != nil {
					t.Fatalf("link %d: %v", i, err)
				}
				if st.Minutes != 10 || st.Status != "direct_link" {
					t.Fatalf("link %d settled %+v, want 10 minutes, status direct_link", i, st)
				}
			}
			if _, err := f.meter.Charge(ctx, req()); !errors.Is(err, usage.ErrQuotaExceeded) {
				t.Fatalf("eleventh link: err = %v, want ErrQuotaExceeded", err)
			}
			u, err := f.meter.Usage(ctx, "alice", "basic", 100)
			if err != nil {
				t.Fatal(err)
			}
			if u.MinutesUsed != 100 || u.MinutesReserved != 0 {
				t.Fatalf("usage %+v, want 100 used and nothing reserved", u)
			}
		})
	}
}

// Per-download mode must not hand out whole files through ranges: each of these
// tricks fetched a file for nothing before.
func TestMeterNoFreeDownloadsThroughRanges(t *testing.T) {
	limit := func(m float64) func(*usage.StartRequest) {
		return func(r *usage.StartRequest) { r.LimitMinutes = m }
	}

	// A 100 MiB file, larger than the discount for bytes left in buffers
	// (usage.LostPerDelivery, 16 MiB here).
	const big = 100 << 20
	bigSend := func(t *testing.T, f *fixture, r usage.StartRequest, n int64, status string) *usage.Delivery {
		t.Helper()
		d := f.start(t, r)
		code, length := 200, int64(big)
		if r.RangeStart > 0 {
			code, length = 206, big-r.RangeStart
		}
		if r.RangeEnd >= 0 {
			code, length = 206, r.RangeEnd-max(r.RangeStart, 0)+1
		}
		if err := d.Headers(code, length, big); err != nil {
			t.Fatal(err)
		}
		d.Add(n)
		if _, err := d.Finish(status); err != nil {
			t.Fatal(err)
		}
		return d
	}

	t.Run("re-fetching a finished file starts a new download", func(t *testing.T) {
		f := newFixture(t, usage.PerDownload)
		bigSend(t, f, req(), big, "complete")
		for i := range 3 {
			f.clock.Advance(time.Minute)
			if d := bigSend(t, f, req(from(1, -1)), big-1, "complete"); !d.StartsDownload() {
				t.Fatalf("re-fetch %d continued a finished download", i+1)
			}
		}
		f.wantUsage(t, 40, 0)
	})

	t.Run("a small file: at most about two copies per charge", func(t *testing.T) {
		// The whole of a small file fits in the discount for bytes left in
		// buffers, so one re-fetch rides on the first charge; the next does not.
		f := newFixture(t, usage.PerDownload)
		f.deliver(t, req(), size, "complete")
		for range 3 {
			f.deliver(t, req(from(1, -1)), size-1, "complete")
		}
		f.wantUsage(t, 20, 0)
	})

	t.Run("a fresh meter learns the size from the ledger", func(t *testing.T) {
		// Another replica, or this one before a restart, served the whole file:
		// a new meter on the same ledger has no size of its own yet.
		f := newFixture(t, usage.PerDownload)
		bigSend(t, f, req(), big, "complete")
		fresh := newFixtureOn(t, f.ledger, usage.MeterConfig{Mode: usage.PerDownload})
		d := fresh.start(t, req(from(1, -1)))
		if !d.StartsDownload() {
			t.Fatal("a range over a finished download continued it on a meter that had not seen the file")
		}
		d.Abort("test")
	})

	t.Run("parallel segments of one download bill one charge", func(t *testing.T) {
		// A segmented downloader: the second segment asks while the first is
		// still being served. Each could end up carrying the charge, so each
		// reserves it, and only one is billed.
		f := newFixture(t, usage.PerDownload)
		first := f.start(t, req(limit(20), from(0, 499)))
		second := f.start(t, req(limit(20), from(500, 999)))
		if second.StartsDownload() {
			t.Fatal("the second segment started a download of its own")
		}
		for i, d := range []*usage.Delivery{first, second} {
			if err := d.Headers(206, 500, size); err != nil {
				t.Fatal(err)
			}
			d.Add(500)
			if _, err := d.Finish("complete"); err != nil {
				t.Fatalf("segment %d: %v", i, err)
			}
		}
		f.wantUsage(t, 10, 0)
	})

	t.Run("a copy beside an open download is a download of its own", func(t *testing.T) {
		// The whole file is being served; bytes=1- asked meanwhile would fit in
		// what the download has sent so far, but not beside what it is sending.
		f := newFixture(t, usage.PerDownload)
		whole := f.start(t, req())
		if err := whole.Headers(200, big, big); err != nil {
			t.Fatal(err)
		}
		whole.Add(1 << 20)
		if d := f.start(t, req(from(1, -1))); !d.StartsDownload() {
			t.Fatal("a second copy beside an open download continued it")
		} else {
			d.Abort("test")
		}
		whole.Abort("test")
	})

	t.Run("segments arriving together join one download", func(t *testing.T) {
		f := newFixture(t, usage.PerDownload)
		bigSend(t, f, req(from(0, 1<<20-1)), 1<<20, "complete") // the first segment learns the size
		const n = 8
		seg := int64(big / n)
		var wg sync.WaitGroup
		ds := make([]*usage.Delivery, n-1)
		for i := 1; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, err := f.meter.Start(context.Background(), req(from(int64(i)*seg, int64(i+1)*seg-1)))
				if err != nil {
					t.Error(err)
					return
				}
				ds[i-1] = d
			}()
		}
		wg.Wait()
		for _, d := range ds {
			if d == nil {
				continue
			}
			if d.StartsDownload() {
				t.Error("a segment started a download of its own")
			}
			d.Abort("test")
		}
		f.wantUsage(t, 10, 0)
	})

	t.Run("a continuation cannot spend a reservation it does not hold", func(t *testing.T) {
		// The first request holds the charge and will end with nothing sent (a
		// 304); a continuation asking meanwhile must reserve the charge itself,
		// or it could bill it after the first released it.
		f := newFixture(t, usage.PerDownload)
		first := f.start(t, req(limit(10)))
		if _, err := f.meter.Start(context.Background(), req(limit(10), from(1, -1))); !errors.Is(err, usage.ErrQuotaExceeded) {
			t.Fatalf("a continuation beside the charge's holder = %v, want ErrQuotaExceeded", err)
		}
		if err := first.Headers(304, 0, -1); err != nil {
			t.Fatal(err)
		}
		if _, err := first.Finish("complete"); err != nil {
			t.Fatal(err)
		}
		f.wantUsage(t, 0, 0)
	})

	t.Run("a long download's resume window runs from its end", func(t *testing.T) {
		f := newFixture(t, usage.PerDownload)
		d := f.start(t, req())
		if err := d.Headers(200, size, size); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(90 * time.Minute) // a slow link: 90 minutes for 500 bytes
		d.Add(500)
		if _, err := d.Finish("client_gone"); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(time.Minute)
		if d := f.start(t, req(from(500, -1))); d.StartsDownload() {
			t.Fatal("a resume a minute after the download ended started a new one")
		} else {
			d.Abort("test")
		}
		f.wantUsage(t, 10, 0)
	})

	t.Run("completed pieces add up to a whole file", func(t *testing.T) {
		f := newFixture(t, usage.PerDownload)
		bigSend(t, f, req(from(0, big/2-1)), big/2, "complete") // billed: 10
		if d := bigSend(t, f, req(from(big/2, -1)), big/2, "complete"); d.StartsDownload() {
			t.Fatal("the second half started a new download")
		}
		if d := bigSend(t, f, req(from(1, -1)), big-1, "complete"); !d.StartsDownload() {
			t.Fatal("a third half continued the download")
		}
		f.wantUsage(t, 20, 0)
	})

	t.Run("a resume after lost bytes is not billed twice", func(t *testing.T) {
		// The gateway counted 900 bytes but the client kept 700, then 250 of which
		// it kept 150: bytes stuck in socket buffers when it left.
		f := newFixture(t, usage.PerDownload)
		f.deliver(t, req(), 900, "client_gone")
		f.deliver(t, req(from(700, -1)), 250, "client_gone")
		d := f.start(t, req(from(850, -1)))
		if d.StartsDownload() {
			t.Fatal("the resume at 850 started a new download")
		}
		d.Abort("test")
		f.wantUsage(t, 10, 0)
	})

	t.Run("interrupting on purpose earns a bounded discount", func(t *testing.T) {
		f := newFixture(t, usage.PerDownload)
		bigSend(t, f, req(), big-(4<<20), "client_gone") // most of the file, then a hang-up
		if d := bigSend(t, f, req(from(big-(6<<20), -1)), 6<<20, "complete"); d.StartsDownload() {
			t.Fatal("a resume within the discount started a new download")
		}
		if d := bigSend(t, f, req(from(1, -1)), big-1, "complete"); !d.StartsDownload() {
			t.Fatal("a second copy was continued for free")
		}
		f.wantUsage(t, 20, 0)
	})

	t.Run("a download that sent nothing is not continued for free", func(t *testing.T) {
		f := newFixture(t, usage.PerDownload)
		// Five links, each opened with a range past the end (416: nothing sent,
		// nothing billed), then resumed: only one fits the 10-minute quota.
		for i := range 5 {
			d := f.start(t, req(limit(10), session(fmt.Sprint("g", i)), from(99999, -1)))
			if err := d.Headers(416, 0, size); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Finish("complete"); err != nil {
				t.Fatal(err)
			}
		}
		served := 0
		for i := range 5 {
			d, err := f.meter.Start(context.Background(), req(limit(10), session(fmt.Sprint("g", i)), from(1, -1)))
			if errors.Is(err, usage.ErrQuotaExceeded) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Headers(206, size-1, size); err != nil {
				t.Fatal(err)
			}
			d.Add(size - 1)
			if _, err := d.Finish("complete"); err != nil {
				t.Fatal(err)
			}
			served++
		}
		if served != 1 {
			t.Errorf("%d resumes of unbilled downloads served under a quota for one", served)
		}
		f.wantUsage(t, 10, 0)
	})

	t.Run("a resume Stream answers in full is a download of its own", func(t *testing.T) {
		f := newFixture(t, usage.PerDownload)
		f.deliver(t, req(), 500, "client_gone") // billed: 10
		d := f.start(t, req(from(500, -1)))
		if d.Reserved() != 0 {
			t.Fatalf("a continuation of a paid download reserved %v", d.Reserved())
		}
		// If-Range no longer matched: 200 with the whole file.
		if err := d.Headers(200, size, size); err != nil {
			t.Fatal(err)
		}
		if d.Reserved() != 10 {
			t.Fatalf("after a 200 the continuation holds %v minutes, want 10", d.Reserved())
		}
		d.Add(size)
		if st, err := d.Finish("complete"); err != nil || st.Minutes != 10 {
			t.Fatalf("Finish = %+v, %v; want 10 minutes", st, err)
		}
		f.wantUsage(t, 20, 0)
	})

	t.Run("a full answer to a download not billed yet is billed once, crash or not", func(t *testing.T) {
		for _, crash := range []bool{false, true} {
			f := newFixture(t, usage.PerDownload)
			first := f.start(t, req(from(99999, -1))) // 416: nothing sent, nothing billed
			if err := first.Headers(416, 0, size); err != nil {
				t.Fatal(err)
			}
			if _, err := first.Finish("complete"); err != nil {
				t.Fatal(err)
			}
			d := f.start(t, req(from(1, -1)))
			if err := d.Headers(200, size, size); err != nil {
				t.Fatal(err)
			}
			f.clock.Advance(3 * time.Second) // so Add writes a checkpoint
			d.Add(size)
			if crash {
				if _, err := f.ledger.Recover(context.Background(), f.clock.Now()); err != nil {
					t.Fatal(err)
				}
			} else if _, err := d.Finish("complete"); err != nil {
				t.Fatal(err)
			}
			f.wantUsage(t, 10, 0)
		}
	})

	t.Run("a resume answered in full is refused when the quota is spent", func(t *testing.T) {
		f := newFixture(t, usage.PerDownload)
		f.deliver(t, req(limit(15)), 500, "client_gone")
		d := f.start(t, req(limit(15), from(500, -1)))
		if err := d.Headers(200, size, size); !errors.Is(err, usage.ErrQuotaExceeded) {
			t.Fatalf("Headers = %v, want ErrQuotaExceeded", err)
		}
		d.Abort("quota")
		f.wantUsage(t, 10, 0)
	})
}
