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

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/usage"
)

// T0 is the instant the suite's deliveries open at: mid-March 2026, UTC.
var T0 = time.Date(2026, time.March, 15, 12, 0, 0, 0, time.UTC)

// The suite's file: a 10-minute video of Size bytes.
const (
	Video    = "0123456789abcdef0123456789abcdef"
	Duration = 600.0
	Size     = 24 << 20
	ETag     = `"v1"`
)

// Rules the suite bills by.
var (
	Prop   = billing.Rule{Mode: billing.Proportional, Window: time.Hour}
	PerDl  = billing.Rule{Mode: billing.PerDownload, Window: time.Hour, CopiesPerCharge: 2}
	Period = usage.Period(T0)
)

// Run runs every conformance test against the ledgers open returns.
func Run(t *testing.T, open func(t *testing.T) usage.Ledger) {
	tests := []struct {
		name string
		fn   func(t *testing.T, l usage.Ledger)
	}{
		{"OpenProgressSettle", testOpenProgressSettle},
		{"SettleIsIdempotent", testSettleIdempotent},
		{"RefusalCarriesFiguresAndRecordsNothing", testRefusal},
		{"Unlimited", testUnlimited},
		{"SizeLearntFromResponse", testRespond},
		{"NoBodyReleases", testNoBody},
		{"UnknownLengthBilled", testUnknownLength},
		{"AnotherFileStartsADownload", testAnotherFile},
		{"GrowingClaimChecked", testGrowingClaim},
		{"ResumeJoinsWithinWindow", testResumeWindow},
		{"SegmentsBilledOnce", func(t *testing.T, l usage.Ledger) { SegmentsConcurrently(t, []usage.Ledger{l}, Prop) }},
		{"SegmentsBilledOncePerDownload", func(t *testing.T, l usage.Ledger) { SegmentsConcurrently(t, []usage.Ledger{l}, PerDl) }},
		{"PaidDownloadNeverRefused", testPaidNeverRefused},
		{"PerDownloadCopies", testCopies},
		{"ProgressAndRecover", testRecover},
		{"AnsweredAsClaimedThenRecover", testAnsweredThenRecover},
		{"ConcurrentOpen", func(t *testing.T, l usage.Ledger) { OpenConcurrently(t, []usage.Ledger{l}) }},
		{"FailuresAreTheirOwn", FailuresAreTheirOwn},
		{"Charge", testCharge},
		{"Report", testReport},
		{"PeriodsAreSeparate", testPeriods},
		{"UnknownDelivery", testUnknown},
		{"LinkUsesSpentByDownloads", func(t *testing.T, l usage.Ledger) { LinkUsesConcurrently(t, []usage.Ledger{l}) }},
		{"LinkSegmentsAndResumesSpendNothing", testLinkSegmentsAndResumes},
		{"RevokeByUser", testRevokeByUser},
		{"RevokeByUserAndVideo", testRevokeByUserAndVideo},
		{"RevokeByID", testRevokeByID},
		{"RevocationIsSeenAtOnce", func(t *testing.T, l usage.Ledger) { RevocationAcrossLedgers(t, []usage.Ledger{l}) }},
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

// Request returns an open request of user for the suite's file with range rg,
// at T0, with its size and ETag known.
func Request(user string, rg billing.Range) usage.OpenRequest {
	n := seq.Add(1)
	return usage.OpenRequest{
		ID:            fmt.Sprintf("dlv-%d", n),
		NewDownloadID: fmt.Sprintf("dwn-%d", n),
		User:          user,
		Plan:          "basic",
		Video:         Video,
		Type:          stream.Default,
		Limit:         -1,
		Period:        Period,
		Duration:      Duration,
		Range:         rg,
		Size:          Size,
		ETag:          ETag,
		Country:       "CH",
		ClientIP:      "192.0.2.1",
		RequestID:     fmt.Sprintf("req-%d", n),
		At:            T0,
	}
}

// Bytes is a byte range request first..last.
func Bytes(first, last int64) billing.Range { return billing.Range{First: first, Last: last} }

func ctx() context.Context { return context.Background() }

// MustOpen opens req or fails the test.
func MustOpen(t testing.TB, l usage.Ledger, rule billing.Rule, req usage.OpenRequest) usage.Opened {
	t.Helper()
	op, err := l.Open(ctx(), rule, req)
	if err != nil {
		t.Fatalf("Open %s: %v", req.ID, err)
	}
	return op
}

// MustSettle settles id with acked bytes delivered, or fails the test.
func MustSettle(t testing.TB, l usage.Ledger, rule billing.Rule, id string, acked int64) usage.Settled {
	t.Helper()
	st, err := l.Settle(ctx(), rule, id, usage.Settlement{Outcome: usage.Complete,
		Progress: usage.Progress{Acked: acked, Written: acked, StreamBytes: acked, Source: "test", At: T0.Add(time.Minute)}})
	if err != nil {
		t.Fatalf("Settle %s: %v", id, err)
	}
	return st
}

// WantUsage checks the user's used and reserved minutes in period.
func WantUsage(t testing.TB, l usage.Ledger, user, period string, used, reserved float64) {
	t.Helper()
	u, err := l.Usage(ctx(), user, period)
	if err != nil {
		t.Fatalf("Usage: %v", err)
	}
	if !near(u.MinutesUsed, used) || !near(u.MinutesReserved, reserved) {
		t.Fatalf("%s in %s: used %.6f reserved %.6f, want used %.6f reserved %.6f",
			user, period, u.MinutesUsed, u.MinutesReserved, used, reserved)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 2e-6 }

func testOpenProgressSettle(t *testing.T, l usage.Ledger) {
	req := Request("alice", billing.Whole)
	op := MustOpen(t, l, Prop, req)
	if !op.Started || op.DownloadID != req.NewDownloadID || op.Claim != (billing.Interval{Start: 0, End: Size}) || !near(op.Reserved, 10) {
		t.Fatalf("Open = %+v", op)
	}
	WantUsage(t, l, "alice", Period, 0, 10)
	if u, _ := l.Usage(ctx(), "alice", Period); u.DeliveriesOpen != 1 {
		t.Fatalf("%d deliveries open, want 1", u.DeliveriesOpen)
	}
	if err := l.Progress(ctx(), Prop, req.ID, usage.Progress{Acked: Size / 4, Written: Size / 2, StreamBytes: Size / 2, At: T0}); err != nil {
		t.Fatal(err)
	}
	WantUsage(t, l, "alice", Period, 2.5, 7.5)
	// Progress never goes back.
	if err := l.Progress(ctx(), Prop, req.ID, usage.Progress{Acked: Size / 8, At: T0}); err != nil {
		t.Fatal(err)
	}
	WantUsage(t, l, "alice", Period, 2.5, 7.5)
	st := MustSettle(t, l, Prop, req.ID, Size/2)
	WantUsage(t, l, "alice", Period, 5, 0)
	if st.Status != "complete" || st.Acked != Size/2 || !near(st.Minutes, 5) || st.Size != Size ||
		st.StreamBytes != Size/2 || !near(st.StreamMinutes, 5) || !st.StartedDownload || st.User != "alice" {
		t.Fatalf("Settled = %+v", st)
	}
	u, _ := l.Usage(ctx(), "alice", Period)
	if !near(u.StreamMinutes, 5) || u.DeliveriesOpen != 0 {
		t.Fatalf("stream minutes %.6f, %d deliveries open; want 5 and none", u.StreamMinutes, u.DeliveriesOpen)
	}
}

func testSettleIdempotent(t *testing.T, l usage.Ledger) {
	req := Request("alice", billing.Whole)
	MustOpen(t, l, Prop, req)
	first := MustSettle(t, l, Prop, req.ID, Size)
	again := MustSettle(t, l, Prop, req.ID, 2*Size)
	if again.Acked != first.Acked || again.Minutes != first.Minutes || again.Status != first.Status {
		t.Fatalf("second Settle = %+v, first %+v", again, first)
	}
	WantUsage(t, l, "alice", Period, 10, 0)
}

func testRefusal(t *testing.T, l usage.Ledger) {
	first := Request("alice", billing.Whole)
	first.Limit = 15
	MustOpen(t, l, Prop, first)
	other := Request("alice", billing.Whole)
	other.Video, other.Limit = "ffffffffffffffffffffffffffffffff", 15
	_, err := l.Open(ctx(), Prop, other)
	var qe *usage.QuotaError
	if !errors.As(err, &qe) || !errors.Is(err, usage.ErrQuotaExceeded) {
		t.Fatalf("Open past the limit: %v, want a *QuotaError", err)
	}
	if !near(qe.Requested, 10) || !near(qe.Usage.MinutesReserved, 10) || !near(qe.Usage.MinutesRemaining, 5) ||
		qe.Usage.MinutesLimit != 15 || qe.Usage.Plan != "basic" {
		t.Fatalf("refusal figures: %+v", qe)
	}
	// Nothing was recorded: a later request of that video starts afresh.
	if _, err := l.Settle(ctx(), Prop, other.ID, usage.Settlement{Outcome: usage.Complete}); !errors.Is(err, usage.ErrNotFound) {
		t.Fatalf("refused delivery was recorded: %v", err)
	}
	WantUsage(t, l, "alice", Period, 0, 10)
}

func testUnlimited(t *testing.T, l usage.Ledger) {
	for range 5 {
		req := Request("alice", billing.Whole)
		req.Video = fmt.Sprintf("%032x", seq.Add(1))
		MustOpen(t, l, Prop, req)
	}
	WantUsage(t, l, "alice", Period, 0, 50)
	// A limit far past 32 bits of micro-minutes works like any other.
	big := Request("bob", billing.Whole)
	big.Limit = 1e7
	MustOpen(t, l, Prop, big)
	charged := Request("bob", billing.Whole)
	charged.Video, charged.Limit = "ffffffffffffffffffffffffffffffff", 1e7
	if _, err := l.Charge(ctx(), charged, usage.DirectLink); err != nil {
		t.Fatalf("Charge under a large limit: %v", err)
	}
	WantUsage(t, l, "bob", Period, 10, 10)
}

// testRespond: a request for a file of unknown size reserves the whole
// duration; Stream's answer trues it up to the range.
func testRespond(t *testing.T, l usage.Ledger) {
	req := Request("alice", Bytes(Size/2, -1))
	req.Size, req.ETag = 0, ""
	op := MustOpen(t, l, Prop, req)
	if op.Claim.End != billing.Unknown {
		t.Fatalf("claim with unknown size = %v", op.Claim)
	}
	WantUsage(t, l, "alice", Period, 0, 10)
	if err := l.Respond(ctx(), Prop, req.ID, usage.Response{Size: Size, ETag: ETag, Body: billing.Interval{Start: Size / 2, End: Size}, At: T0}); err != nil {
		t.Fatal(err)
	}
	WantUsage(t, l, "alice", Period, 0, 5)
	st := MustSettle(t, l, Prop, req.ID, Size/2)
	if !near(st.Minutes, 5) || st.Size != Size {
		t.Fatalf("Settled = %+v", st)
	}
	WantUsage(t, l, "alice", Period, 5, 0)
}

// testUnknownLength: an answer that tells no size (a chunked 200) carries the
// file to its unknown end, and what is delivered of it is billed.
func testUnknownLength(t *testing.T, l usage.Ledger) {
	req := Request("alice", billing.Whole)
	req.Size, req.ETag = 0, ""
	MustOpen(t, l, Prop, req)
	if err := l.Respond(ctx(), Prop, req.ID, usage.Response{Body: billing.Interval{Start: 0, End: billing.Unknown}, At: T0}); err != nil {
		t.Fatal(err)
	}
	WantUsage(t, l, "alice", Period, 0, 10)
	if st := MustSettle(t, l, Prop, req.ID, Size/2); st.Acked != Size/2 || !near(st.Minutes, 10) {
		t.Fatalf("delivery of a file of unknown size = %+v, want its bytes and the whole duration", st)
	}
	WantUsage(t, l, "alice", Period, 10, 0)
}

func testNoBody(t *testing.T, l usage.Ledger) {
	req := Request("alice", billing.Whole)
	MustOpen(t, l, Prop, req)
	if err := l.Respond(ctx(), Prop, req.ID, usage.Response{At: T0}); err != nil {
		t.Fatal(err)
	}
	WantUsage(t, l, "alice", Period, 0, 0)
	st := MustSettle(t, l, Prop, req.ID, 500) // bytes of an error body are not the file's
	if st.Acked != 0 || st.Minutes != 0 {
		t.Fatalf("a response without the file billed: %+v", st)
	}
	WantUsage(t, l, "alice", Period, 0, 0)
}

func testAnotherFile(t *testing.T, l usage.Ledger) {
	a := Request("alice", billing.Whole)
	MustOpen(t, l, Prop, a)
	MustSettle(t, l, Prop, a.ID, Size)
	b := Request("alice", billing.Whole)
	op := MustOpen(t, l, Prop, b)
	if op.Started || op.DownloadID != a.NewDownloadID || op.Reserved != 0 {
		t.Fatalf("a request of a held file: %+v", op)
	}
	// Stream answers with another file (re-encoded): it is a new download, billed.
	if err := l.Respond(ctx(), Prop, b.ID, usage.Response{Size: Size, ETag: `"v2"`, Body: billing.Interval{End: Size}, At: T0}); err != nil {
		t.Fatal(err)
	}
	WantUsage(t, l, "alice", Period, 10, 10)
	st := MustSettle(t, l, Prop, b.ID, Size)
	if st.DownloadID == a.NewDownloadID || !st.StartedDownload || !near(st.Minutes, 10) {
		t.Fatalf("delivery of another file: %+v", st)
	}
	WantUsage(t, l, "alice", Period, 20, 0)
}

func testGrowingClaim(t *testing.T, l usage.Ledger) {
	req := Request("alice", Bytes(0, Size/10-1))
	req.Limit = 5
	op := MustOpen(t, l, Prop, req)
	if !near(op.Reserved, 1) {
		t.Fatalf("reserved %.6f, want 1", op.Reserved)
	}
	// Stream ignores the range (an If-Range that no longer matched): the whole
	// file would take the user past the limit.
	err := l.Respond(ctx(), Prop, req.ID, usage.Response{Size: Size, ETag: ETag, Body: billing.Interval{End: Size}, At: T0})
	if !errors.Is(err, usage.ErrQuotaExceeded) {
		t.Fatalf("Respond past the limit: %v", err)
	}
	WantUsage(t, l, "alice", Period, 0, 1)
	MustSettle(t, l, Prop, req.ID, 0)
	WantUsage(t, l, "alice", Period, 0, 0)
}

func testResumeWindow(t *testing.T, l usage.Ledger) {
	first := Request("alice", billing.Whole)
	MustOpen(t, l, Prop, first)
	MustSettle(t, l, Prop, first.ID, Size/2)
	// A resume 30 minutes later joins and pays for the rest only.
	resume := Request("alice", Bytes(Size/2-1000, -1))
	resume.At = T0.Add(30 * time.Minute)
	op := MustOpen(t, l, Prop, resume)
	if op.Started || op.DownloadID != first.NewDownloadID {
		t.Fatalf("resume within the window: %+v", op)
	}
	MustSettle(t, l, Prop, resume.ID, Size/2+1000)
	WantUsage(t, l, "alice", Period, 10, 0)
	// Past the window (from the last activity, the resume's settlement at T0+1m
	// or its opening at T0+30m), a request starts a fresh download.
	late := Request("alice", billing.Whole)
	late.At = T0.Add(91 * time.Minute)
	op = MustOpen(t, l, Prop, late)
	if !op.Started {
		t.Fatalf("request past the window joined: %+v", op)
	}
	// Another user, or type, never joins alice's download.
	bob := Request("bob", billing.Whole)
	bob.At = late.At
	if op := MustOpen(t, l, Prop, bob); !op.Started {
		t.Fatalf("another user's request joined: %+v", op)
	}
	audio := Request("alice", billing.Whole)
	audio.Type, audio.At = stream.Audio, late.At
	if op := MustOpen(t, l, Prop, audio); !op.Started {
		t.Fatalf("another type's request joined: %+v", op)
	}
}

// SegmentsConcurrently plays aria2c -x8 against ledgers (replicas of one store,
// or one ledger): a GET of the whole file that delivers a little and is closed,
// then eight segments opened, delivered and settled concurrently, each through
// the next ledger in turn. The download must bill one duration, whatever the
// rule, and hold nothing reserved after.
func SegmentsConcurrently(t *testing.T, ledgers []usage.Ledger, rule billing.Rule) {
	t.Helper()
	first := Request("alice", billing.Whole)
	first.Limit = 12 // one duration fits, two would not
	MustOpen(t, ledgers[0], rule, first)
	const seg = Size / 8
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			l := ledgers[(i+1)%len(ledgers)]
			req := Request("alice", Bytes(int64(i)*seg, int64(i+1)*seg-1))
			req.Limit = first.Limit
			if _, err := l.Open(ctx(), rule, req); err != nil {
				errs <- fmt.Errorf("open segment %d: %w", i, err)
				return
			}
			if err := l.Progress(ctx(), rule, req.ID, usage.Progress{Acked: seg / 2, At: T0}); err != nil {
				errs <- err
				return
			}
			if _, err := l.Settle(ctx(), rule, req.ID, usage.Settlement{Outcome: usage.Complete,
				Progress: usage.Progress{Acked: seg, StreamBytes: seg, At: T0}}); err != nil {
				errs <- err
			}
		})
	}
	// The first GET delivers its first 2 MiB meanwhile, then is closed.
	if _, err := ledgers[0].Settle(ctx(), rule, first.ID, usage.Settlement{Outcome: usage.ClientGone,
		Progress: usage.Progress{Acked: 2 << 20, StreamBytes: 4 << 20, At: T0}}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, l := range ledgers {
		WantUsage(t, l, "alice", Period, 10, 0)
	}
}

func testPaidNeverRefused(t *testing.T, l usage.Ledger) {
	for _, rule := range []billing.Rule{Prop, PerDl} {
		user := "user-" + string(rule.Mode)
		first := Request(user, billing.Whole)
		first.Limit = 10
		MustOpen(t, l, rule, first)
		MustSettle(t, l, rule, first.ID, Size)
		WantUsage(t, l, user, Period, 10, 0)
		// The quota is spent, yet a seek back in the paid download is served.
		seek := Request(user, Bytes(Size/3, -1))
		seek.Limit = 10
		op, err := l.Open(ctx(), rule, seek)
		if err != nil || op.Started {
			t.Fatalf("%s: a seek in a paid download: %+v, %v", rule.Mode, op, err)
		}
		MustSettle(t, l, rule, seek.ID, Size-Size/3)
		WantUsage(t, l, user, Period, 10, 0)
	}
}

func testCopies(t *testing.T, l usage.Ledger) {
	for i := range 5 {
		req := Request("alice", billing.Whole)
		req.At = T0.Add(time.Duration(i) * time.Minute)
		op := MustOpen(t, l, PerDl, req)
		if i > 0 && op.Started {
			t.Fatalf("copy %d started a new download", i+1)
		}
		MustSettle(t, l, PerDl, req.ID, Size)
	}
	// Five copies: one duration per two copies, rounded up.
	WantUsage(t, l, "alice", Period, 30, 0)
}

// testAnsweredThenRecover: deliveries whose responses carried exactly what
// they claimed, of the file their downloads knew, and whose process died
// before a checkpoint (one) and after one (the other), are recovered as
// checkpointed, and nothing stays reserved.
func testAnsweredThenRecover(t *testing.T, l usage.Ledger) {
	early, late := Request("alice", billing.Whole), Request("bob", Bytes(Size/2, -1))
	for _, req := range []usage.OpenRequest{early, late} {
		op := MustOpen(t, l, Prop, req)
		if err := l.Respond(ctx(), Prop, req.ID, usage.Response{Size: Size, ETag: ETag, Body: op.Claim, At: T0}); err != nil {
			t.Fatalf("Respond %s: %v", req.ID, err)
		}
	}
	WantUsage(t, l, "alice", Period, 0, 10)
	WantUsage(t, l, "bob", Period, 0, 5)
	if err := l.Progress(ctx(), Prop, late.ID, usage.Progress{Acked: Size / 4, StreamBytes: Size / 4, At: T0}); err != nil {
		t.Fatal(err)
	}
	out, err := l.Recover(ctx(), Prop, T0.Add(time.Hour))
	if err != nil || len(out) != 2 {
		t.Fatalf("Recover = %+v, %v", out, err)
	}
	for _, st := range out {
		want := map[string]float64{"alice": 0, "bob": 2.5}[st.User]
		if st.Status != "recovered" || !near(st.Minutes, want) || !near(st.StreamMinutes, want) {
			t.Errorf("recovered %s = %+v, want %.1f minutes", st.User, st, want)
		}
	}
	WantUsage(t, l, "alice", Period, 0, 0)
	WantUsage(t, l, "bob", Period, 2.5, 0)
}

func testRecover(t *testing.T, l usage.Ledger) {
	req := Request("alice", billing.Whole)
	MustOpen(t, l, Prop, req)
	if err := l.Progress(ctx(), Prop, req.ID, usage.Progress{Acked: Size / 4, StreamBytes: Size / 2, At: T0}); err != nil {
		t.Fatal(err)
	}
	now := T0.Add(time.Hour)
	if s, ok := l.(usage.Shared); ok {
		// A live delivery (written just now) is left alone.
		fresh := Request("alice", billing.Whole)
		fresh.Video = "ffffffffffffffffffffffffffffffff"
		fresh.At = now
		MustOpen(t, l, Prop, fresh)
		if err := l.Heartbeat(ctx(), []string{fresh.ID}, now); err != nil {
			t.Fatal(err)
		}
		out, err := l.Recover(ctx(), Prop, now)
		if err != nil || len(out) != 1 || out[0].DeliveryID != req.ID {
			t.Fatalf("Recover on a shared ledger = %+v, %v (stale after %s)", out, err, s.StaleAfter())
		}
		MustSettle(t, l, Prop, fresh.ID, 0)
	} else {
		out, err := l.Recover(ctx(), Prop, now)
		if err != nil || len(out) != 1 {
			t.Fatalf("Recover = %+v, %v", out, err)
		}
	}
	WantUsage(t, l, "alice", Period, 2.5, 0)
	// Its owner, back in touch, settles it with what it really sent: the
	// bytes after the last checkpoint are billed, once.
	st := MustSettle(t, l, Prop, req.ID, Size/2)
	if st.Status != "recovered" || st.Acked != Size/2 || !near(st.Minutes, 5) {
		t.Fatalf("recovered delivery settled by its owner = %+v", st)
	}
	WantUsage(t, l, "alice", Period, 5, 0)
	if again := MustSettle(t, l, Prop, req.ID, Size/2); again.Acked != Size/2 || !near(again.Minutes, 5) {
		t.Fatalf("second settlement by the owner = %+v", again)
	}
	WantUsage(t, l, "alice", Period, 5, 0)
	if out, err := l.Recover(ctx(), Prop, now); err != nil || len(out) != 0 {
		t.Fatalf("second Recover = %+v, %v", out, err)
	}
	// The delivery's bytes stay held: a resume pays for the rest.
	resume := Request("alice", Bytes(Size/4, -1))
	resume.At = now
	if op := MustOpen(t, l, Prop, resume); op.Started || !near(op.Reserved, 5) {
		t.Fatalf("resume after recovery: %+v", op)
	}
}

// OpenConcurrently sends 200 requests of 3-minute videos for one user at once,
// spread over ledgers, against a quota of 30: exactly 10 must be granted, and
// every ledger must then show 30 reserved.
func OpenConcurrently(t *testing.T, ledgers []usage.Ledger) {
	t.Helper()
	const n, limit = 200, 30.0
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			req := Request("alice", billing.Whole)
			req.Video, req.Duration, req.Limit = fmt.Sprintf("%032x", i), 180, limit
			_, err := ledgers[i%len(ledgers)].Open(ctx(), Prop, req)
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
		t.Fatalf("Open: %v", err)
	}
	if ok.Load() != 10 || refused.Load() != n-10 {
		t.Fatalf("%d requests were granted and %d refused, want 10 and %d", ok.Load(), refused.Load(), n-10)
	}
	for _, l := range ledgers {
		WantUsage(t, l, "alice", Period, 0, limit)
	}
}

func testCharge(t *testing.T, l usage.Ledger) {
	req := Request("alice", billing.Whole)
	req.Limit = 15
	st, err := l.Charge(ctx(), req, usage.DirectLink)
	if err != nil || st.Status != "direct_link" || !near(st.Minutes, 10) {
		t.Fatalf("Charge = %+v, %v", st, err)
	}
	again := Request("alice", billing.Whole)
	again.Limit = 15
	if _, err := l.Charge(ctx(), again, usage.DirectLink); !errors.Is(err, usage.ErrQuotaExceeded) {
		t.Fatalf("Charge past the limit: %v", err)
	}
	WantUsage(t, l, "alice", Period, 10, 0)
}

func testReport(t *testing.T, l usage.Ledger) {
	a := Request("alice", billing.Whole)
	MustOpen(t, l, Prop, a)
	MustSettle(t, l, Prop, a.ID, Size/2)
	b := Request("alice", Bytes(0, -1))
	MustOpen(t, l, Prop, b)
	MustSettle(t, l, Prop, b.ID, Size) // half of it held already
	c := Request("bob", billing.Whole)
	MustOpen(t, l, Prop, c)
	MustSettle(t, l, Prop, c.ID, 0)
	rows, err := l.Report(ctx(), Period)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("Report = %+v, want alice and bob", rows)
	}
	alice, bob := rows[0], rows[1]
	if alice.User != "alice" || alice.Downloads != 1 || alice.Deliveries != 2 || !near(alice.Minutes, 10) ||
		alice.Bytes != Size+Size/2 || alice.StreamBytes != Size+Size/2 || !near(alice.StreamMinutes, 15) {
		t.Errorf("alice: %+v", alice)
	}
	if bob.User != "bob" || bob.Downloads != 0 || bob.Deliveries != 0 || bob.Minutes != 0 {
		t.Errorf("bob: %+v", bob)
	}
	if rows, err := l.Report(ctx(), "2026-04"); err != nil || len(rows) != 0 {
		t.Errorf("Report of an empty period = %+v, %v", rows, err)
	}
}

func testPeriods(t *testing.T, l usage.Ledger) {
	march := Request("alice", billing.Whole)
	MustOpen(t, l, Prop, march)
	MustSettle(t, l, Prop, march.ID, Size)
	april := Request("alice", billing.Whole)
	april.Video = "ffffffffffffffffffffffffffffffff"
	april.At, april.Period = T0.AddDate(0, 1, 0), usage.Period(T0.AddDate(0, 1, 0))
	april.Limit = 10
	MustOpen(t, l, Prop, april)
	WantUsage(t, l, "alice", Period, 10, 0)
	WantUsage(t, l, "alice", april.Period, 0, 10)
}

func testUnknown(t *testing.T, l usage.Ledger) {
	if _, err := l.Settle(ctx(), Prop, "nope", usage.Settlement{Outcome: usage.Complete}); !errors.Is(err, usage.ErrNotFound) {
		t.Errorf("Settle unknown: %v", err)
	}
	if err := l.Respond(ctx(), Prop, "nope", usage.Response{}); !errors.Is(err, usage.ErrNotFound) {
		t.Errorf("Respond unknown: %v", err)
	}
	if err := l.Progress(ctx(), Prop, "nope", usage.Progress{Acked: 1}); !errors.Is(err, usage.ErrNotFound) {
		t.Errorf("Progress unknown: %v", err)
	}
	bad := Request("alice", billing.Whole)
	bad.Duration = -1
	if _, err := l.Open(ctx(), Prop, bad); err == nil {
		t.Error("Open with an unknown duration succeeded")
	}
}

// FailuresAreTheirOwn runs, at once, writes that succeed beside writes that
// fail in each way a write can: a statement the database refuses (a delivery
// ID already taken), a quota refusal and a delivery that does not exist. A
// ledger that commits concurrent writes together must neither fail nor lose
// the good ones, nor keep any part of a failed one.
func FailuresAreTheirOwn(t *testing.T, l usage.Ledger) {
	taken := Request("bob", billing.Whole)
	MustOpen(t, l, Prop, taken)
	const n = 96
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		user := fmt.Sprintf("user-%d", i)
		wg.Go(func() {
			req := Request(user, billing.Whole)
			switch i % 4 {
			case 0: // the database refuses it, after it wrote a download and a reservation
				req.ID = taken.ID
				if _, err := l.Open(ctx(), Prop, req); err == nil {
					errs <- fmt.Errorf("%s: Open with a taken delivery ID succeeded", user)
				}
			case 1: // over quota
				req.Limit = 1
				if _, err := l.Open(ctx(), Prop, req); !errors.Is(err, usage.ErrQuotaExceeded) {
					errs <- fmt.Errorf("%s: Open over quota: %v, want a quota error", user, err)
				}
			case 2: // no such delivery
				if _, err := l.Settle(ctx(), Prop, "missing-"+user, usage.Settlement{Outcome: usage.Complete}); !errors.Is(err, usage.ErrNotFound) {
					errs <- fmt.Errorf("%s: Settle of a missing delivery: %v, want ErrNotFound", user, err)
				}
			default: // a whole download
				if _, err := l.Open(ctx(), Prop, req); err != nil {
					errs <- fmt.Errorf("%s: Open: %w", user, err)
					return
				}
				if err := l.Respond(ctx(), Prop, req.ID, usage.Response{Size: Size, ETag: ETag,
					Body: billing.Interval{Start: 0, End: Size}, At: T0}); err != nil {
					errs <- fmt.Errorf("%s: Respond: %w", user, err)
					return
				}
				if _, err := l.Settle(ctx(), Prop, req.ID, usage.Settlement{Outcome: usage.Complete,
					Progress: usage.Progress{Acked: Size / 2, StreamBytes: Size / 2, At: T0}}); err != nil {
					errs <- fmt.Errorf("%s: Settle: %w", user, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range n {
		user := fmt.Sprintf("user-%d", i)
		used := 0.0
		if i%4 == 3 {
			used = 5
		}
		WantUsage(t, l, user, Period, used, 0)
		u, err := l.Usage(ctx(), user, Period)
		if err != nil {
			t.Fatal(err)
		}
		if u.DeliveriesOpen != 0 {
			t.Errorf("%s: %d deliveries open, want 0", user, u.DeliveriesOpen)
		}
	}
	WantUsage(t, l, "bob", Period, 0, 10)
}

// Bench measures whole deliveries (Open, Respond, Settle) of one small file
// through l, each by its own user, from b.RunParallel's goroutines.
func Bench(b *testing.B, l usage.Ledger) {
	b.ReportAllocs()
	var users atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := Request(fmt.Sprintf("bench-%d", users.Add(1)), billing.Whole)
			req.Size = 64 << 10
			if _, err := l.Open(ctx(), Prop, req); err != nil {
				b.Error(err)
				return
			}
			if err := l.Respond(ctx(), Prop, req.ID, usage.Response{Size: req.Size, ETag: ETag,
				Body: billing.Interval{Start: 0, End: req.Size}, At: T0}); err != nil {
				b.Error(err)
				return
			}
			if _, err := l.Settle(ctx(), Prop, req.ID, usage.Settlement{Outcome: usage.Complete,
				Progress: usage.Progress{Acked: req.Size, StreamBytes: req.Size, At: T0}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
