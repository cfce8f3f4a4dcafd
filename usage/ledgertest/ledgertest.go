// Package ledgertest is the conformance suite for usage.Ledger implementations.
// A store's tests call Run with a function that opens a fresh, empty ledger:
//
//	func TestPostgresLedger(t *testing.T) {
//		ledgertest.Run(t, func(t *testing.T) usage.Ledger { return openEmptyPostgres(t) })
//	}
//
// open is called once per subtest and must return a ledger no other subtest uses;
// it should register the ledger's Close with t.Cleanup.
package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/usage"
)

// T0 is the instant the suite's deliveries open at: mid-March 2026, UTC.
var T0 = time.Date(2026, time.March, 15, 12, 0, 0, 0, time.UTC)

// Run runs every conformance test against the ledgers open returns.
func Run(t *testing.T, open func(t *testing.T) usage.Ledger) {
	tests := []struct {
		name string
		fn   func(t *testing.T, l usage.Ledger)
	}{
		{"ReserveSettleArithmetic", testReserveSettle},
		{"SettleIsIdempotent", testSettleIdempotent},
		{"RefusalCarriesFigures", testRefusal},
		{"RefusalRecordsNothing", testRefusalRecordsNothing},
		{"UnlimitedAndZero", testUnlimitedAndZero},
		{"Adjust", testAdjust},
		{"OncePerDownload", testOncePerDownload},
		{"CheckpointAndRecover", testCheckpointRecover},
		{"Heartbeat", testHeartbeat},
		{"ConcurrentReserve", testConcurrentReserve},
		{"FindAndTouchDownload", testFindDownload},
		{"Report", testReport},
		{"PeriodsAreSeparate", testPeriods},
		{"UnknownDelivery", testUnknown},
		{"Ping", func(t *testing.T, l usage.Ledger) {
			if err := l.Ping(context.Background()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

var seq atomic.Int64

// Open returns an open delivery of user that starts its own download and reserves
// reserve minutes in T0's period.
func Open(user string, reserve float64) usage.OpenDelivery {
	n := seq.Add(1)
	return usage.OpenDelivery{
		ID:          fmt.Sprintf("dlv-%d", n),
		DownloadID:  fmt.Sprintf("dwn-%d", n),
		NewDownload: true,
		User:        user,
		Plan:        "basic",
		Video:       "0123456789abcdef0123456789abcdef",
		Type:        stream.Default,
		Mode:        usage.Proportional,
		Period:      usage.Period(T0),
		Duration:    600,
		Reserve:     reserve,
		RangeStart:  -1,
		RangeEnd:    -1,
		Country:     "CH",
		At:          T0,
	}
}

func ctx() context.Context { return context.Background() }

// WantUsage fails t unless user's used and reserved minutes in period are as given.
func WantUsage(t testing.TB, l usage.Ledger, user, period string, used, reserved float64) {
	t.Helper()
	u, err := l.Usage(ctx(), user, period)
	if err != nil {
		t.Fatalf("Usage(%s, %s): %v", user, period, err)
	}
	if !near(u.MinutesUsed, used) || !near(u.MinutesReserved, reserved) {
		t.Fatalf("Usage(%s, %s) = used %v reserved %v, want used %v reserved %v",
			user, period, u.MinutesUsed, u.MinutesReserved, used, reserved)
	}
	if u.Period != period {
		t.Fatalf("Usage period = %q, want %q", u.Period, period)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func mustReserve(t *testing.T, l usage.Ledger, d usage.OpenDelivery, limit float64) {
	t.Helper()
	if err := l.Reserve(ctx(), d, limit); err != nil {
		t.Fatalf("Reserve(%s, %v of %v): %v", d.ID, d.Reserve, limit, err)
	}
}

func mustSettle(t *testing.T, l usage.Ledger, id string, s usage.Settlement) usage.Settled {
	t.Helper()
	if s.At.IsZero() {
		s.At = T0.Add(time.Minute)
	}
	st, err := l.Settle(ctx(), id, s)
	if err != nil {
		t.Fatalf("Settle(%s): %v", id, err)
	}
	return st
}

func testReserveSettle(t *testing.T, l usage.Ledger) {
	p := usage.Period(T0)
	a, b := Open("alice", 10), Open("alice", 2.5)
	mustReserve(t, l, a, 30)
	mustReserve(t, l, b, 30)
	WantUsage(t, l, "alice", p, 0, 12.5)

	st := mustSettle(t, l, a.ID, usage.Settlement{Status: "complete", Bytes: 4000, TotalSize: 10000, Minutes: 4})
	WantUsage(t, l, "alice", p, 4, 2.5)
	if st.Status != "complete" || st.Bytes != 4000 || !near(st.Minutes, 4) || !near(st.Reserved, 10) ||
		st.DeliveryID != a.ID || st.DownloadID != a.DownloadID || !st.StartedDownload || st.User != "alice" ||
		st.Plan != "basic" || st.Video != a.Video || st.Type != stream.Default || st.Mode != usage.Proportional ||
		st.Period != p || st.Country != "CH" || st.TotalSize != 10000 || st.Duration != 600 ||
		st.RangeStart != -1 || st.RangeEnd != -1 || !st.OpenedAt.Equal(T0) || !st.SettledAt.Equal(T0.Add(time.Minute)) {
		t.Fatalf("Settle = %+v", st)
	}

	// Sums are exact: ten times 0.1 minutes is 1, where float64 sums to 0.9999999999999999.
	for range 10 {
		d := Open("bob", 1)
		mustReserve(t, l, d, -1)
		mustSettle(t, l, d.ID, usage.Settlement{Status: "complete", Bytes: 1, Minutes: 0.1})
	}
	if u, err := l.Usage(ctx(), "bob", p); err != nil || u.MinutesUsed != 1 || u.MinutesReserved != 0 {
		t.Fatalf("Usage(bob) = %+v, %v; want exactly 1 used, 0 reserved", u, err)
	}

	st = mustSettle(t, l, b.ID, usage.Settlement{Status: "client_gone", Bytes: 0})
	if st.Minutes != 0 {
		t.Fatalf("a delivery settled with 0 minutes billed %v", st.Minutes)
	}
	WantUsage(t, l, "alice", p, 4, 0)
}

func testSettleIdempotent(t *testing.T, l usage.Ledger) {
	p := usage.Period(T0)
	d := Open("alice", 10)
	mustReserve(t, l, d, 30)
	first := mustSettle(t, l, d.ID, usage.Settlement{Status: "complete", Bytes: 100, Minutes: 6})
	again := mustSettle(t, l, d.ID, usage.Settlement{Status: "shutdown", Bytes: 999, Minutes: 9, At: T0.Add(time.Hour)})
	if again != first {
		t.Fatalf("second Settle = %+v, want the first %+v", again, first)
	}
	WantUsage(t, l, "alice", p, 6, 0)
	if err := l.Checkpoint(ctx(), d.ID, 5000, 8, 0, T0.Add(2*time.Minute)); err != nil {
		t.Fatalf("Checkpoint after Settle: %v", err)
	}
	if err := l.Adjust(ctx(), d.ID, 1); !errors.Is(err, usage.ErrSettled) {
		t.Fatalf("Adjust after Settle = %v, want ErrSettled", err)
	}
	got, err := l.Recover(ctx(), T0.Add(2*time.Hour))
	if err != nil || len(got) != 0 {
		t.Fatalf("Recover = %v, %v; want nothing open", got, err)
	}
	WantUsage(t, l, "alice", p, 6, 0)
}

func testRefusal(t *testing.T, l usage.Ledger) {
	p := usage.Period(T0)
	a := Open("alice", 4)
	mustReserve(t, l, a, 30)
	mustSettle(t, l, a.ID, usage.Settlement{Status: "complete", Bytes: 1, Minutes: 4})
	b := Open("alice", 20)
	mustReserve(t, l, b, 30)

	c := Open("alice", 6.5)
	err := l.Reserve(ctx(), c, 30)
	if !errors.Is(err, usage.ErrQuotaExceeded) {
		t.Fatalf("Reserve past the limit = %v, want ErrQuotaExceeded", err)
	}
	var qe *usage.QuotaError
	if !errors.As(err, &qe) {
		t.Fatalf("Reserve error %T is not a *QuotaError", err)
	}
	want := usage.Usage{Period: p, Plan: "basic", MinutesLimit: 30, MinutesUsed: 4, MinutesReserved: 20, MinutesRemaining: 6}
	if qe.Usage != want || !near(qe.Requested, 6.5) {
		t.Fatalf("QuotaError = %+v requested %v, want %+v requested 6.5", qe.Usage, qe.Requested, want)
	}
	if qe.Error() == "" {
		t.Fatal("QuotaError has no message")
	}

	// Exactly what remains still fits.
	c.Reserve = 6
	mustReserve(t, l, c, 30)
	WantUsage(t, l, "alice", p, 4, 26)
}

func testRefusalRecordsNothing(t *testing.T, l usage.Ledger) {
	p := usage.Period(T0)
	d := Open("alice", 31)
	if err := l.Reserve(ctx(), d, 30); !errors.Is(err, usage.ErrQuotaExceeded) {
		t.Fatalf("Reserve = %v, want ErrQuotaExceeded", err)
	}
	if _, err := l.Settle(ctx(), d.ID, usage.Settlement{Status: "complete"}); !errors.Is(err, usage.ErrNotFound) {
		t.Fatalf("Settle of a refused delivery = %v, want ErrNotFound", err)
	}
	if _, ok, err := l.FindDownload(ctx(), usage.DownloadKey{User: "alice", Video: d.Video, Type: d.Type}, time.Time{}); err != nil || ok {
		t.Fatalf("FindDownload after a refusal = %v, %v; want no download", ok, err)
	}
	// A delivery ID used twice is refused and leaks no reservation.
	ok := Open("alice", 5)
	mustReserve(t, l, ok, 30)
	dup := ok
	dup.DownloadID, dup.Reserve = "dwn-dup-"+ok.ID, 7
	if err := l.Reserve(ctx(), dup, 30); err == nil {
		t.Fatal("Reserve with a duplicate delivery ID succeeded")
	}
	WantUsage(t, l, "alice", p, 0, 5)
}

func testUnlimitedAndZero(t *testing.T, l usage.Ledger) {
	p := usage.Period(T0)
	big := Open("alice", 1e6)
	mustReserve(t, l, big, -1)
	WantUsage(t, l, "alice", p, 0, 1e6)
	mustSettle(t, l, big.ID, usage.Settlement{Status: "complete", Bytes: 1, Minutes: 1e6})

	// Over the limit (used 1e6 > 30), a zero reservation is still allowed: a
	// continuation of a paid download is never refused.
	zero := Open("alice", 0)
	mustReserve(t, l, zero, 30)
	one := Open("alice", 0.000001)
	if err := l.Reserve(ctx(), one, 30); !errors.Is(err, usage.ErrQuotaExceeded) {
		t.Fatalf("Reserve over the limit = %v, want ErrQuotaExceeded", err)
	}
	WantUsage(t, l, "alice", p, 1e6, 0)
}

func testAdjust(t *testing.T, l usage.Ledger) {
	p := usage.Period(T0)
	a, b := Open("alice", 10), Open("alice", 10)
	mustReserve(t, l, a, 30)
	mustReserve(t, l, b, 30)
	if err := l.Adjust(ctx(), a.ID, 2.5); err != nil {
		t.Fatalf("Adjust down: %v", err)
	}
	WantUsage(t, l, "alice", p, 0, 12.5)
	if err := l.Adjust(ctx(), a.ID, 20); err != nil {
		t.Fatalf("Adjust up to the limit: %v", err)
	}
	WantUsage(t, l, "alice", p, 0, 30)
	err := l.Adjust(ctx(), a.ID, 20.5)
	var qe *usage.QuotaError
	if !errors.As(err, &qe) || !near(qe.Requested, 0.5) || !near(qe.Usage.MinutesLimit, 30) {
		t.Fatalf("Adjust past the limit = %v, want a QuotaError asking 0.5 of a 30 limit", err)
	}
	WantUsage(t, l, "alice", p, 0, 30)
	if err := l.Adjust(ctx(), a.ID, -3); err != nil {
		t.Fatalf("Adjust to below 0: %v", err)
	}
	WantUsage(t, l, "alice", p, 0, 10)
	st := mustSettle(t, l, a.ID, usage.Settlement{Status: "complete"})
	if st.Reserved != 0 {
		t.Fatalf("settled Reserved = %v, want the adjusted 0", st.Reserved)
	}
	mustSettle(t, l, b.ID, usage.Settlement{Status: "complete", Bytes: 1, Minutes: 10})
	WantUsage(t, l, "alice", p, 10, 0)
	if err := l.Adjust(ctx(), "no-such-delivery", 1); !errors.Is(err, usage.ErrNotFound) {
		t.Fatalf("Adjust of an unknown delivery = %v, want ErrNotFound", err)
	}

	// An unlimited delivery may be raised without bound.
	u := Open("carol", 1)
	mustReserve(t, l, u, -1)
	if err := l.Adjust(ctx(), u.ID, 1e5); err != nil {
		t.Fatalf("Adjust of an unlimited delivery: %v", err)
	}
	WantUsage(t, l, "carol", p, 0, 1e5)
}

func testOncePerDownload(t *testing.T, l usage.Ledger) {
	p := usage.Period(T0)
	start := Open("alice", 10)
	start.Mode, start.Once = usage.PerDownload, 10
	cont := Open("alice", 0)
	cont.Mode, cont.Once = usage.PerDownload, 10
	cont.DownloadID, cont.NewDownload, cont.RangeStart = start.DownloadID, false, 500
	mustReserve(t, l, start, 30)
	mustReserve(t, l, cont, 30)

	st := mustSettle(t, l, start.ID, usage.Settlement{Status: "client_gone", Bytes: 500, Once: true})
	if !near(st.Minutes, 10) {
		t.Fatalf("first delivery of a download billed %v, want 10", st.Minutes)
	}
	st = mustSettle(t, l, cont.ID, usage.Settlement{Status: "complete", Bytes: 500, Once: true})
	if st.Minutes != 0 || st.StartedDownload || st.DownloadID != start.DownloadID {
		t.Fatalf("continuation = %+v, want 0 minutes on download %s", st, start.DownloadID)
	}
	WantUsage(t, l, "alice", p, 10, 0)

	// When the starting delivery delivered nothing, the first that does carries
	// the charge.
	s2 := Open("alice", 10)
	s2.Mode, s2.Once = usage.PerDownload, 10
	c2 := Open("alice", 0)
	c2.Mode, c2.Once, c2.DownloadID, c2.NewDownload = usage.PerDownload, 10, s2.DownloadID, false
	mustReserve(t, l, s2, 30)
	mustReserve(t, l, c2, 30)
	if st := mustSettle(t, l, s2.ID, usage.Settlement{Status: "aborted"}); st.Minutes != 0 {
		t.Fatalf("aborted start billed %v", st.Minutes)
	}
	if st := mustSettle(t, l, c2.ID, usage.Settlement{Status: "complete", Bytes: 10, Once: true}); !near(st.Minutes, 10) {
		t.Fatalf("continuation of an unbilled download billed %v, want 10", st.Minutes)
	}
	WantUsage(t, l, "alice", p, 20, 0)
}

func testCheckpointRecover(t *testing.T, l usage.Ledger) {
	p := usage.Period(T0)
	prop := Open("alice", 10)
	quiet := Open("alice", 5)
	per := Open("bob", 10)
	per.Mode, per.Once = usage.PerDownload, 10
	perQuiet := Open("bob", 10)
	perQuiet.Mode, perQuiet.Once = usage.PerDownload, 10
	done := Open("alice", 1)
	for _, d := range []usage.OpenDelivery{prop, quiet, per, perQuiet, done} {
		mustReserve(t, l, d, 100)
	}
	mustSettle(t, l, done.ID, usage.Settlement{Status: "complete", Bytes: 10, Minutes: 1})
	for _, c := range []struct {
		id      string
		bytes   int64
		minutes float64
	}{
		{prop.ID, 1000, 2},
		{prop.ID, 3000, 6},
		{prop.ID, 2000, 4}, // late and lower: ignored
		{per.ID, 700, 0},
	} {
		if err := l.Checkpoint(ctx(), c.id, c.bytes, c.minutes, 10000, T0.Add(time.Minute)); err != nil {
			t.Fatalf("Checkpoint(%s): %v", c.id, err)
		}
	}
	now := T0.Add(time.Hour)
	got, err := l.Recover(ctx(), now)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	byID := map[string]usage.Settled{}
	for _, s := range got {
		byID[s.DeliveryID] = s
		if s.Status != "recovered" || !s.SettledAt.Equal(now) {
			t.Fatalf("recovered %s has status %q at %v, want recovered at %v", s.DeliveryID, s.Status, s.SettledAt, now)
		}
	}
	// The file size a checkpoint recorded survives recovery.
	if s := byID[prop.ID]; s.TotalSize != 10000 {
		t.Errorf("recovered %s keeps a file size of %d, want the checkpointed 10000", prop.ID, s.TotalSize)
	}
	want := map[string]struct {
		bytes   int64
		minutes float64
	}{
		prop.ID:     {3000, 6},
		quiet.ID:    {0, 0},
		per.ID:      {700, 10},
		perQuiet.ID: {0, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("Recover settled %d deliveries, want %d", len(got), len(want))
	}
	for id, w := range want {
		s, ok := byID[id]
		if !ok || s.Bytes != w.bytes || !near(s.Minutes, w.minutes) {
			t.Fatalf("recovered %s = %+v, want %d bytes %v minutes", id, s, w.bytes, w.minutes)
		}
	}
	WantUsage(t, l, "alice", p, 7, 0)
	WantUsage(t, l, "bob", p, 10, 0)
	if again, err := l.Recover(ctx(), now); err != nil || len(again) != 0 {
		t.Fatalf("second Recover = %v, %v; want nothing", again, err)
	}
}

func testHeartbeat(t *testing.T, l usage.Ledger) {
	p := usage.Period(T0)
	live := Open("alice", 10)
	done := Open("alice", 5)
	mustReserve(t, l, live, 100)
	mustReserve(t, l, done, 100)
	mustSettle(t, l, done.ID, usage.Settlement{Status: "complete", Bytes: 50, Minutes: 5})
	if err := l.Checkpoint(ctx(), live.ID, 400, 4, 0, T0.Add(time.Second)); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if err := l.Heartbeat(ctx(), nil, T0.Add(time.Minute)); err != nil {
		t.Fatalf("Heartbeat of nothing: %v", err)
	}
	// Settled and unknown IDs are ignored; progress and quota are untouched.
	if err := l.Heartbeat(ctx(), []string{live.ID, done.ID, "nope"}, T0.Add(time.Minute)); err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	WantUsage(t, l, "alice", p, 5, 10)
	now := T0.Add(time.Hour)
	got, err := l.Recover(ctx(), now)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if len(got) != 1 || got[0].DeliveryID != live.ID || got[0].Bytes != 400 || !near(got[0].Minutes, 4) {
		t.Fatalf("Recover = %+v, want %s with its checkpoint of 400 bytes and 4 minutes", got, live.ID)
	}
	if st := mustSettle(t, l, done.ID, usage.Settlement{Status: "shutdown"}); st.Status != "complete" || st.Bytes != 50 {
		t.Fatalf("heartbeat changed a settled delivery: %+v", st)
	}
	WantUsage(t, l, "alice", p, 9, 0)
}

func testConcurrentReserve(t *testing.T, l usage.Ledger) {
	ReserveConcurrently(t, []usage.Ledger{l})
}

// ReserveConcurrently sends 200 reservations of 3 minutes for one user at once,
// spread over ledgers (replicas of one store, or one ledger), against a quota of
// 30: exactly 10 must be granted, and every ledger must then show 30 reserved.
func ReserveConcurrently(t *testing.T, ledgers []usage.Ledger) {
	t.Helper()
	const n, each, limit = 200, 3.0, 30.0
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			err := ledgers[i%len(ledgers)].Reserve(ctx(), Open("alice", each), limit)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, usage.ErrQuotaExceeded):
				refused.Add(1)
			default:
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Reserve: %v", err)
	}
	if ok.Load() != 10 || refused.Load() != n-10 {
		t.Fatalf("%d reservations succeeded and %d were refused, want 10 and %d", ok.Load(), refused.Load(), n-10)
	}
	for _, l := range ledgers {
		WantUsage(t, l, "alice", usage.Period(T0), 0, limit)
	}
}

func testFindDownload(t *testing.T, l usage.Ledger) {
	video := "0123456789abcdef0123456789abcdef"
	key := usage.DownloadKey{User: "alice", Video: video, Type: stream.Default}
	if _, ok, err := l.FindDownload(ctx(), key, time.Time{}); err != nil || ok {
		t.Fatalf("FindDownload on an empty ledger = %v, %v", ok, err)
	}
	older := Open("alice", 1)
	newer := Open("alice", 1)
	newer.At = T0.Add(10 * time.Minute)
	audio := Open("alice", 1)
	audio.Type, audio.At = stream.Audio, T0.Add(20*time.Minute)
	granted := Open("alice", 1)
	granted.Session, granted.At = "grant-1", T0.Add(30*time.Minute)
	other := Open("bob", 1)
	other.At = T0.Add(40 * time.Minute)
	for _, d := range []usage.OpenDelivery{older, newer, audio, granted, other} {
		mustReserve(t, l, d, -1)
	}
	find := func(k usage.DownloadKey, since time.Time) string {
		t.Helper()
		d, ok, err := l.FindDownload(ctx(), k, since)
		if err != nil {
			t.Fatalf("FindDownload: %v", err)
		}
		if !ok {
			return ""
		}
		return d.ID
	}
	tests := []struct {
		name  string
		key   usage.DownloadKey
		since time.Time
		want  string
	}{
		{"latest", key, time.Time{}, newer.DownloadID},
		{"within the window", key, T0.Add(10 * time.Minute), newer.DownloadID},
		{"window passed", key, T0.Add(11 * time.Minute), ""},
		{"other type", usage.DownloadKey{User: "alice", Video: video, Type: stream.Audio}, T0, audio.DownloadID},
		{"session", usage.DownloadKey{User: "alice", Video: video, Type: stream.Default, Session: "grant-1"}, time.Time{}, granted.DownloadID},
		{"other session", usage.DownloadKey{User: "alice", Video: video, Type: stream.Default, Session: "grant-2"}, time.Time{}, ""},
		{"other user", usage.DownloadKey{User: "carol", Video: video, Type: stream.Default}, time.Time{}, ""},
	}
	for _, tt := range tests {
		if got := find(tt.key, tt.since); got != tt.want {
			t.Errorf("%s: FindDownload = %q, want %q", tt.name, got, tt.want)
		}
	}
	// Touching the older download makes it the latest and extends its window.
	if err := l.TouchDownload(ctx(), older.DownloadID, T0.Add(50*time.Minute)); err != nil {
		t.Fatalf("TouchDownload: %v", err)
	}
	if got := find(key, T0.Add(45*time.Minute)); got != older.DownloadID {
		t.Fatalf("after touch: FindDownload = %q, want %q", got, older.DownloadID)
	}
	// A touch never moves activity back.
	if err := l.TouchDownload(ctx(), older.DownloadID, T0); err != nil {
		t.Fatalf("TouchDownload: %v", err)
	}
	if got := find(key, T0.Add(45*time.Minute)); got != older.DownloadID {
		t.Fatalf("after an earlier touch: FindDownload = %q, want %q", got, older.DownloadID)
	}

	// What the download's deliveries sent, and whether it was billed: a
	// checkpoint of the open delivery counts, then a second delivery settled with
	// the download's charge.
	state := func() usage.DownloadState {
		t.Helper()
		d, ok, err := l.FindDownload(ctx(), key, time.Time{})
		if err != nil || !ok || d.ID != older.DownloadID {
			t.Fatalf("FindDownload = %+v, %v, %v; want %s", d, ok, err, older.DownloadID)
		}
		return d
	}
	if d := state(); d.Bytes != 0 || d.Billed {
		t.Fatalf("a download with nothing sent: %+v", d)
	}
	if err := l.Checkpoint(ctx(), older.ID, 300, 0.3, 0, T0.Add(50*time.Minute)); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if d := state(); d.Bytes != 300 || d.Billed {
		t.Fatalf("after a checkpoint of 300 bytes: %+v", d)
	}
	cont := Open("alice", 1)
	cont.DownloadID, cont.NewDownload, cont.Once, cont.At = older.DownloadID, false, 10, T0.Add(51*time.Minute)
	mustReserve(t, l, cont, -1)
	mustSettle(t, l, cont.ID, usage.Settlement{Status: "complete", Bytes: 700, TotalSize: 1000, Once: true})
	if d := state(); d.Bytes != 1000 || !d.Billed || d.Size != 1000 {
		t.Fatalf("after a continuation of 700 bytes that carried the charge: %+v", d)
	}
	// Every delivery counts its bytes as possibly lost (open ones at their last
	// checkpoint), up to the cap each.
	dora := usage.DownloadKey{User: "dora", Video: video, Type: stream.Default}
	first := Open("dora", 1)
	mustReserve(t, l, first, -1)
	cont2 := Open("dora", 1)
	cont2.DownloadID, cont2.NewDownload, cont2.Once = first.DownloadID, false, 10
	mustReserve(t, l, cont2, -1)
	mustSettle(t, l, first.ID, usage.Settlement{Status: "client_gone", Bytes: 5000})
	if err := l.Checkpoint(ctx(), cont2.ID, 100, 0, 0, T0.Add(time.Minute)); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if d, _, err := l.FindDownload(ctx(), dora, time.Time{}); err != nil || d.ID != first.DownloadID || d.Billed || d.Lost != 5100 || d.Bytes != 5100 {
		t.Fatalf("FindDownload = %+v, %v; want not billed, 5,100 bytes, all of them possibly lost", d, err)
	}
	mustSettle(t, l, cont2.ID, usage.Settlement{Status: "upstream_failed", Bytes: usage.LostPerDelivery + 1, Once: true})
	if d, _, err := l.FindDownload(ctx(), dora, time.Time{}); err != nil || !d.Billed || d.Lost != 5000+usage.LostPerDelivery {
		t.Fatalf("FindDownload = %+v, %v; want billed, the lost bytes capped per delivery", d, err)
	}
}

func testReport(t *testing.T, l usage.Ledger) {
	p := usage.Period(T0)
	a1 := Open("alice", 5)
	a2 := Open("alice", 5) // continues a1's download
	a2.DownloadID, a2.NewDownload = a1.DownloadID, false
	a3 := Open("alice", 5)
	aborted := Open("alice", 5)
	open := Open("alice", 5)
	b1 := Open("bob", 5)
	next := Open("bob", 5)
	next.Period = "2026-04"
	for _, d := range []usage.OpenDelivery{a1, a2, a3, aborted, open, b1, next} {
		mustReserve(t, l, d, -1)
	}
	mustSettle(t, l, a1.ID, usage.Settlement{Status: "client_gone", Bytes: 100, Minutes: 1})
	mustSettle(t, l, a2.ID, usage.Settlement{Status: "complete", Bytes: 300, Minutes: 3})
	mustSettle(t, l, a3.ID, usage.Settlement{Status: "complete", Bytes: 1000, Minutes: 0.5})
	mustSettle(t, l, aborted.ID, usage.Settlement{Status: "aborted"})
	mustSettle(t, l, b1.ID, usage.Settlement{Status: "complete", Bytes: 50, Minutes: 2.25})
	mustSettle(t, l, next.ID, usage.Settlement{Status: "complete", Bytes: 70, Minutes: 9})

	got, err := l.Report(ctx(), p)
	if err != nil {
		t.Fatalf("Report: %v", err)
	}
	want := []usage.ReportRow{
		{User: "alice", Downloads: 2, Deliveries: 3, Minutes: 4.5, Bytes: 1400},
		{User: "bob", Downloads: 1, Deliveries: 1, Minutes: 2.25, Bytes: 50},
	}
	if len(got) != len(want) {
		t.Fatalf("Report = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Report row %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if got, err := l.Report(ctx(), "2025-01"); err != nil || len(got) != 0 {
		t.Fatalf("Report of an empty period = %v, %v", got, err)
	}
}

func testPeriods(t *testing.T, l usage.Ledger) {
	march := Open("alice", 30)
	mustReserve(t, l, march, 30)
	april := Open("alice", 30)
	april.Period = "2026-04"
	mustReserve(t, l, april, 30) // a new month, a new quota
	WantUsage(t, l, "alice", "2026-03", 0, 30)
	WantUsage(t, l, "alice", "2026-04", 0, 30)
	WantUsage(t, l, "alice", "2026-05", 0, 0)
}

func testUnknown(t *testing.T, l usage.Ledger) {
	if _, err := l.Settle(ctx(), "nope", usage.Settlement{Status: "complete"}); !errors.Is(err, usage.ErrNotFound) {
		t.Fatalf("Settle of an unknown delivery = %v, want ErrNotFound", err)
	}
	if err := l.Checkpoint(ctx(), "nope", 1, 1, 0, T0); err != nil {
		t.Fatalf("Checkpoint of an unknown delivery = %v, want a no-op", err)
	}
	if err := l.Heartbeat(ctx(), []string{"nope"}, T0); err != nil {
		t.Fatalf("Heartbeat of an unknown delivery = %v, want a no-op", err)
	}
	if err := l.Reserve(ctx(), usage.OpenDelivery{User: "alice"}, -1); err == nil {
		t.Fatal("Reserve of a delivery without an ID succeeded")
	}
}
