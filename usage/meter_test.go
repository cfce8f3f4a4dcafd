package usage_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
	"github.com/streamgate/streamgate/usage"
	"github.com/streamgate/streamgate/usage/ledgertest"
)

const size = ledgertest.Size

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
	c := streamtest.NewClock(ledgertest.T0)
	cfg.Now, cfg.Logger = c.Now, zap.New(core)
	return &fixture{ledger: l, meter: usage.NewMeter(l, cfg), clock: c, logs: logs}
}

// req is a request of alice for the whole test video under a 100-minute plan.
func req(mut ...func(*usage.StartRequest)) usage.StartRequest {
	r := usage.StartRequest{
		User: "alice", Plan: "basic", LimitMinutes: 100,
		Video: ledgertest.Video, Type: stream.Default, Duration: ledgertest.Duration,
		Range:   billing.Whole,
		Country: "CH", ClientIP: "192.0.2.1", RequestID: "req-1",
	}
	for _, m := range mut {
		m(&r)
	}
	return r
}

func from(first, last int64) func(*usage.StartRequest) {
	return func(r *usage.StartRequest) { r.Range = billing.Range{First: first, Last: last} }
}

func (f *fixture) start(t *testing.T, r usage.StartRequest) *usage.Delivery {
	t.Helper()
	d, err := f.meter.Start(context.Background(), r)
	if err != nil {
		t.Fatalf("Start(%+v): %v", r, err)
	}
	return d
}

func (f *fixture) wantUsage(t *testing.T, used, reserved float64) {
	t.Helper()
	ledgertest.WantUsage(t, f.ledger, "alice", usage.Period(f.clock.Now()), used, reserved)
}

// counter is a delivery's progress as a test sets it.
type counter struct{ acked, written, read atomic.Int64 }

func (c *counter) progress() usage.Progress {
	return usage.Progress{Acked: c.acked.Load(), Written: c.written.Load(), StreamBytes: c.read.Load(), Source: "tcp_info"}
}

// TestMeterBillsWhatWasAcknowledged: bytes written but not acknowledged by the
// client are neither billed nor held; a resume pays for them once.
func TestMeterBillsWhatWasAcknowledged(t *testing.T) {
	f := newFixture(t, usage.Proportional)
	d := f.start(t, req())
	f.wantUsage(t, 0, 10) // the size is not known yet: the whole duration
	if err := d.Respond(200, size, ledgertest.ETag, billing.Interval{End: size}); err != nil {
		t.Fatal(err)
	}
	var c counter
	d.Count(c.progress)
	c.written.Store(size / 2)
	c.acked.Store(size / 4)
	c.read.Store(size / 2)
	d.Wrote(size / 2) // past CheckpointBytes: a checkpoint
	f.wantUsage(t, 2.5, 7.5)
	st, err := d.Finish(usage.ClientGone)
	if err != nil || st.Acked != size/4 || st.Written != size/2 || !near(st.Minutes, 2.5) || !near(st.StreamMinutes, 5) {
		t.Fatalf("Finish = %+v, %v", st, err)
	}
	f.wantUsage(t, 2.5, 0)
	lines := f.logs.FilterMessage("billable download").All()
	if len(lines) != 1 {
		t.Fatalf("%d billable lines, want 1", len(lines))
	}
	m := lines[0].ContextMap()
	if m["bytes"] != int64(size/4) || m["bytes_written"] != int64(size/2) || m["delivered_by"] != "tcp_info" ||
		m["status"] != "client_gone" || m["stream_minutes"] != 5.0 {
		t.Fatalf("log line %v", m)
	}

	// The client kept less than it acknowledged and resumes from there: the
	// overlap is free.
	f.clock.Advance(time.Minute)
	r := f.start(t, req(from(size/8, -1)))
	if r.StartsDownload() || !near(r.Reserved(), 7.5) {
		t.Fatalf("resume: starts %v, reserved %.4f", r.StartsDownload(), r.Reserved())
	}
	if err := r.Respond(206, size, ledgertest.ETag, billing.Interval{Start: size / 8, End: size}); err != nil {
		t.Fatal(err)
	}
	r.Wrote(size - size/8) // no counter: written counts as delivered
	if st, err := r.Finish(usage.Complete); err != nil || !near(st.Minutes, 7.5) {
		t.Fatalf("resume Finish = %+v, %v", st, err)
	}
	f.wantUsage(t, 10, 0)
}

// TestMeterLearnsTheFile: once a response told the file's size, a request
// starting a download reserves only its range's share.
func TestMeterLearnsTheFile(t *testing.T) {
	f := newFixture(t, usage.Proportional)
	d := f.start(t, req(from(0, 1)))
	if !near(d.Reserved(), 10) {
		t.Fatalf("first probe reserved %.4f, want the whole duration", d.Reserved())
	}
	if err := d.Respond(206, size, ledgertest.ETag, billing.Interval{End: 2}); err != nil {
		t.Fatal(err)
	}
	d.Wrote(2)
	d.Finish(usage.Complete)
	bob := f.start(t, req(from(0, size/10-1), func(r *usage.StartRequest) { r.User = "bob" }))
	if !bob.StartsDownload() || !near(bob.Reserved(), 1) {
		t.Fatalf("bob's first tenth: starts %v, reserved %.4f, want 1", bob.StartsDownload(), bob.Reserved())
	}
}

func TestMeterAnswersWithoutTheFile(t *testing.T) {
	for _, status := range []int{304, 412, 416} {
		f := newFixture(t, usage.PerDownload)
		d := f.start(t, req())
		if err := d.Respond(status, 0, "", billing.Interval{}); err != nil {
			t.Fatal(err)
		}
		d.Wrote(300)
		st, err := d.Finish(usage.Complete)
		if err != nil || st.Minutes != 0 || st.Acked != 0 {
			t.Fatalf("%d: Finish = %+v, %v", status, st, err)
		}
		f.wantUsage(t, 0, 0)
		if n := f.logs.FilterMessage("billable download").Len(); n != 0 {
			t.Fatalf("%d: %d billable lines for an answer without the file", status, n)
		}
	}
}

func TestMeterAbort(t *testing.T) {
	f := newFixture(t, usage.PerDownload)
	d := f.start(t, req())
	d.Abort("mint_failed")
	f.wantUsage(t, 0, 0)
	if st, _ := d.Finish(usage.Complete); st.Status != "aborted" || st.Minutes != 0 {
		t.Fatalf("aborted delivery = %+v", st)
	}
	// An abort after body bytes bills them.
	d = f.start(t, req())
	if err := d.Respond(200, size, ledgertest.ETag, billing.Interval{End: size}); err != nil {
		t.Fatal(err)
	}
	d.Wrote(10)
	d.Abort("upstream_failed")
	f.wantUsage(t, 10, 0)
	// An abort before the client got a byte (it left while Stream answered)
	// bills the user nothing, but what Stream had put into the gateway's
	// socket is on Stream's bill.
	d = f.start(t, req())
	var c counter
	d.Count(c.progress)
	c.read.Store(size / 4)
	d.Abort("client_gone")
	f.wantUsage(t, 10, 0)
	if st, _ := d.Finish(usage.Complete); st.Status != "aborted" || st.Minutes != 0 || st.StreamBytes != size/4 ||
		!near(st.StreamMinutes, 2.5) {
		t.Fatalf("delivery aborted after Stream sent a quarter of the file = %+v", st)
	}
}

func TestMeterStartRefusals(t *testing.T) {
	f := newFixture(t, usage.Proportional)
	for name, r := range map[string]usage.StartRequest{
		"no user":          req(func(r *usage.StartRequest) { r.User = "" }),
		"unknown duration": req(func(r *usage.StartRequest) { r.Duration = -1 }),
		"bad type":         req(func(r *usage.StartRequest) { r.Type = "video" }),
	} {
		if _, err := f.meter.Start(context.Background(), r); err == nil {
			t.Errorf("%s: Start succeeded", name)
		}
	}
	// Past the quota: a *QuotaError with the figures.
	first := f.start(t, req(func(r *usage.StartRequest) { r.LimitMinutes = 15 }))
	_, err := f.meter.Start(context.Background(), req(func(r *usage.StartRequest) {
		r.LimitMinutes, r.Video = 15, "ffffffffffffffffffffffffffffffff"
	}))
	var qe *usage.QuotaError
	if !errors.As(err, &qe) || !near(qe.Requested, 10) || !near(qe.Usage.MinutesRemaining, 5) {
		t.Fatalf("Start past the quota: %v", err)
	}
	first.Abort("test")
}

// progressCounter counts the ledger's Progress calls.
type progressCounter struct {
	usage.Ledger
	n atomic.Int64
}

func (c *progressCounter) Progress(ctx context.Context, rule billing.Rule, id string, p usage.Progress) error {
	c.n.Add(1)
	return c.Ledger.Progress(ctx, rule, id, p)
}

func TestMeterCheckpointsAreRationed(t *testing.T) {
	l := &progressCounter{Ledger: openMemory(t)}
	f := newFixtureOn(t, l, usage.MeterConfig{CheckpointBytes: 1 << 20, CheckpointEvery: time.Hour})
	d := f.start(t, req())
	if err := d.Respond(200, size, ledgertest.ETag, billing.Interval{End: size}); err != nil {
		t.Fatal(err)
	}
	for range 768 {
		d.Wrote(32 << 10) // 24 MiB in all: one checkpoint per MiB
	}
	if n := l.n.Load(); n < 23 || n > 25 {
		t.Fatalf("%d checkpoints for 24 MiB at one per MiB", n)
	}
	d.Finish(usage.Complete)
	f.wantUsage(t, 10, 0)
}

// TestMeterCrashRecovery: a process dies with a delivery open; the next start
// settles it from its last checkpoint and releases its claim.
func TestMeterCrashRecovery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l1, err := usage.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureOn(t, l1, usage.MeterConfig{CheckpointBytes: 1 << 20})
	d := f.start(t, req())
	if err := d.Respond(200, size, ledgertest.ETag, billing.Interval{End: size}); err != nil {
		t.Fatal(err)
	}
	d.Wrote(size / 2) // checkpointed
	l1.Close()        // the process dies: no Finish

	l2 := openFile(t, path)
	g := newFixtureOn(t, l2, usage.MeterConfig{})
	out, err := g.meter.Recover(context.Background())
	if err != nil || len(out) != 1 || out[0].Status != "recovered" || out[0].Acked != size/2 || !near(out[0].Minutes, 5) {
		t.Fatalf("Recover = %+v, %v", out, err)
	}
	ledgertest.WantUsage(t, l2, "alice", usage.Period(g.clock.Now()), 5, 0)
	if n := g.logs.FilterMessage("billable download").FilterField(zap.String("status", "recovered")).Len(); n != 1 {
		t.Fatalf("%d recovered lines, want 1", n)
	}
}

func TestMeterChargeDirectLink(t *testing.T) {
	f := newFixture(t, usage.Proportional)
	st, err := f.meter.Charge(context.Background(), req())
	if err != nil || st.Status != "direct_link" || !near(st.Minutes, 10) {
		t.Fatalf("Charge = %+v, %v", st, err)
	}
	f.wantUsage(t, 10, 0)
	if _, err := f.meter.Charge(context.Background(), req(func(r *usage.StartRequest) { r.LimitMinutes = 15 })); !errors.Is(err, usage.ErrQuotaExceeded) {
		t.Fatalf("Charge past the quota: %v", err)
	}
}

// failingSettle fails the next fail calls of Settle.
type failingSettle struct {
	usage.Ledger
	fail atomic.Int32
}

func (l *failingSettle) Settle(ctx context.Context, rule billing.Rule, id string, s usage.Settlement) (usage.Settled, error) {
	if l.fail.Add(-1) >= 0 {
		return usage.Settled{}, errors.New("ledger unavailable")
	}
	return l.Ledger.Settle(ctx, rule, id, s)
}

// TestRunReaperRetriesSettlement: on SQLite the reaper leaves the process's
// live deliveries alone and settles again what failed to settle, so a claim
// does not hold the quota until a restart.
func TestRunReaperRetriesSettlement(t *testing.T) {
	sq := openMemory(t)
	fl := &failingSettle{Ledger: sq}
	f := newFixtureOn(t, fl, usage.MeterConfig{})
	live := f.start(t, req())
	failed := f.start(t, req(func(r *usage.StartRequest) { r.User = "bob" }))
	if err := failed.Respond(200, size, ledgertest.ETag, billing.Interval{End: size}); err != nil {
		t.Fatal(err)
	}
	failed.Wrote(size / 16) // below a checkpoint's worth
	fl.fail.Store(1)
	if _, err := failed.Finish(usage.Complete); err == nil {
		t.Fatal("Finish succeeded though the ledger failed it")
	}
	ledgertest.WantUsage(t, sq, "bob", usage.Period(f.clock.Now()), 0, 10)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.meter.RunReaper(ctx, time.Millisecond)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		u, err := sq.Usage(context.Background(), "bob", usage.Period(f.clock.Now()))
		if err == nil && u.MinutesReserved == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reaper left bob's claim held: %+v, %v", u, err)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	ledgertest.WantUsage(t, sq, "bob", usage.Period(f.clock.Now()), 0.625, 0)
	if st, err := live.Finish(usage.Complete); err != nil || st.Status != "complete" {
		t.Fatalf("Finish = %+v, %v; want the live delivery still open", st, err)
	}
}

func TestMeterOnSettle(t *testing.T) {
	var got []usage.Settled
	f := newFixtureOn(t, openMemory(t), usage.MeterConfig{OnSettle: func(s usage.Settled) { got = append(got, s) }})
	d := f.start(t, req())
	d.Abort("test") // nothing sent: reported all the same
	if _, err := f.meter.Charge(context.Background(), req(func(r *usage.StartRequest) { r.User = "bob" })); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Status != "aborted" || got[1].Status != "direct_link" || !near(got[1].Minutes, 10) {
		t.Fatalf("OnSettle saw %+v", got)
	}
}

// sharedSQLite poses as a ledger replicas share, with a stale threshold.
type sharedSQLite struct {
	*usage.SQLite
	stale time.Duration
	fail  atomic.Bool // Progress and Heartbeat fail: the ledger is unreachable
}

func (l *sharedSQLite) StaleAfter() time.Duration { return l.stale }

func (l *sharedSQLite) Progress(ctx context.Context, rule billing.Rule, id string, p usage.Progress) error {
	if l.fail.Load() {
		return errors.New("ledger unreachable")
	}
	return l.SQLite.Progress(ctx, rule, id, p)
}

func (l *sharedSQLite) Heartbeat(ctx context.Context, ids []string, at time.Time) error {
	if l.fail.Load() {
		return errors.New("ledger unreachable")
	}
	return l.SQLite.Heartbeat(ctx, ids, at)
}

// TestMeterFences: a delivery whose ledger writes have failed for three
// quarters of the stale threshold stops sending, before another replica may
// recover it; one whose writes succeed does not.
func TestMeterFences(t *testing.T) {
	l := &sharedSQLite{SQLite: openMemory(t), stale: 2 * time.Minute}
	f := newFixtureOn(t, l, usage.MeterConfig{CheckpointEvery: 10 * time.Second})
	d := f.start(t, req())
	if err := d.Respond(200, size, ledgertest.ETag, billing.Interval{End: size}); err != nil {
		t.Fatal(err)
	}
	for range 12 { // two minutes of bytes, the ledger answering
		f.clock.Advance(10 * time.Second)
		d.Wrote(1000)
		if d.Fenced() {
			t.Fatal("fenced while the ledger answers")
		}
	}
	l.fail.Store(true)
	f.clock.Advance(80 * time.Second)
	d.Wrote(1000)
	if d.Fenced() {
		t.Fatal("fenced after 80 s without the ledger; the threshold is 90 s")
	}
	f.clock.Advance(20 * time.Second)
	d.Wrote(1000)
	if !d.Fenced() {
		t.Fatal("not fenced after 100 s without the ledger")
	}
	l.fail.Store(false)
	if st, err := d.Finish(usage.Fenced); err != nil || st.Status != "fenced" || st.Written != 14000 {
		t.Fatalf("Finish = %+v, %v", st, err)
	}
	// A ledger one process owns never fences.
	g := newFixture(t, usage.Proportional)
	e := g.start(t, req())
	g.clock.Advance(time.Hour)
	if e.Fenced() {
		t.Error("fenced on a ledger one process owns")
	}
}
