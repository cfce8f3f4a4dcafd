package ledgertest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/usage"
)

// Link returns a link of maxUses issued at issued, expiring a day after T0.
func Link(id string, maxUses int, issued time.Time) usage.Link {
	return usage.Link{ID: id, IssuedAt: issued, MaxUses: maxUses, ExpiresAt: T0.Add(24 * time.Hour)}
}

// revoker is l as a [usage.Revoker], or fails the test.
func revoker(t testing.TB, l usage.Ledger) usage.Revoker {
	t.Helper()
	r, ok := l.(usage.Revoker)
	if !ok {
		t.Fatalf("%T does not keep link revocations (usage.Revoker)", l)
	}
	return r
}

// wantRefused opens req and wants err, with nothing recorded: no delivery
// open and nothing reserved for its user.
func wantRefused(t testing.TB, l usage.Ledger, req usage.OpenRequest, want error) {
	t.Helper()
	before, err := l.Usage(ctx(), req.User, Period)
	if err != nil {
		t.Fatal(err)
	}
	if op, err := l.Open(ctx(), Prop, req); !errors.Is(err, want) {
		t.Fatalf("Open %s = %+v, %v; want %v", req.ID, op, err, want)
	}
	after, err := l.Usage(ctx(), req.User, Period)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("a refused link changed %s's usage: %+v, was %+v", req.User, after, before)
	}
}

// LinkUsesConcurrently spends a 3-use link over five rounds, each past the
// resume window of the one before, of four concurrent requests spread over
// ledgers (replicas of one store, or one ledger). The first three rounds each
// start one download, which the round's other requests join; the last two
// are refused whole, with ErrLinkUsedUp, and record nothing.
func LinkUsesConcurrently(t *testing.T, ledgers []usage.Ledger) {
	t.Helper()
	const rounds, perRound, maxUses = 5, 4, 3
	link := Link("link-uses", maxUses, T0.Add(-time.Minute))
	var started, joined, usedUp atomic.Int64
	for round := range rounds {
		at := T0.Add(time.Duration(round) * 2 * Prop.Window)
		// A round's requests are all open before any settles: one settled
		// whole would make the next a re-fetch, which spends a use of its own.
		var wg sync.WaitGroup
		errs := make(chan error, perRound)
		opened := make([]usage.OpenRequest, perRound)
		for i := range perRound {
			wg.Go(func() {
				l := ledgers[i%len(ledgers)]
				req := Request("alice", billing.Whole)
				req.Link, req.At = link, at
				op, err := l.Open(ctx(), Prop, req)
				switch {
				case errors.Is(err, usage.ErrLinkUsedUp):
					usedUp.Add(1)
					return
				case err != nil:
					errs <- fmt.Errorf("round %d: open: %w", round, err)
					return
				case op.Started:
					started.Add(1)
				default:
					joined.Add(1)
				}
				opened[i] = req
			})
		}
		wg.Wait()
		for i, req := range opened {
			if req.ID == "" {
				continue
			}
			if _, err := ledgers[i%len(ledgers)].Settle(ctx(), Prop, req.ID, usage.Settlement{Outcome: usage.Complete,
				Progress: usage.Progress{Acked: Size, StreamBytes: Size, At: at}}); err != nil {
				errs <- fmt.Errorf("round %d: settle: %w", round, err)
			}
		}
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	if started.Load() != maxUses || joined.Load() != maxUses*(perRound-1) || usedUp.Load() != (rounds-maxUses)*perRound {
		t.Fatalf("%d downloads started, %d requests joined them, %d refused; want %d, %d, %d",
			started.Load(), joined.Load(), usedUp.Load(), maxUses, maxUses*(perRound-1), (rounds-maxUses)*perRound)
	}
	for _, l := range ledgers {
		u, err := l.Usage(ctx(), "alice", Period)
		if err != nil {
			t.Fatal(err)
		}
		if !near(u.MinutesUsed, maxUses*Duration/60) || u.MinutesReserved != 0 || u.DeliveriesOpen != 0 {
			t.Fatalf("usage after the rounds: %+v; want %v minutes used for %d downloads, nothing held",
				u, maxUses*Duration/60, maxUses)
		}
	}
}

// testLinkSegmentsAndResumes: aria2c -x8 with a 1-use link (a GET, then eight
// segments while it runs) and a resume within the window all belong to the
// download the GET started, so they spend nothing; the next download past
// the window is refused. A link without a limit is never counted.
func testLinkSegmentsAndResumes(t *testing.T, l usage.Ledger) {
	link := Link("link-segments", 1, T0.Add(-time.Minute))
	first := Request("alice", billing.Whole)
	first.Link = link
	if op := MustOpen(t, l, Prop, first); !op.Started {
		t.Fatalf("the link's first request joined: %+v", op)
	}
	const seg = Size / 8
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			req := Request("alice", Bytes(int64(i)*seg, int64(i+1)*seg-1))
			req.Link = link
			op, err := l.Open(ctx(), Prop, req)
			switch {
			case err != nil:
				errs <- fmt.Errorf("segment %d: %w", i, err)
				return
			case op.Started:
				errs <- fmt.Errorf("segment %d started a download", i)
			}
			if _, err := l.Settle(ctx(), Prop, req.ID, usage.Settlement{Outcome: usage.Complete,
				Progress: usage.Progress{Acked: seg, StreamBytes: seg, At: T0}}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	MustSettle(t, l, Prop, first.ID, 1<<20)
	resume := Request("alice", Bytes(Size/2, -1))
	resume.Link, resume.At = link, T0.Add(30*time.Minute)
	if op := MustOpen(t, l, Prop, resume); op.Started {
		t.Fatalf("a resume within the window started a download: %+v", op)
	}
	MustSettle(t, l, Prop, resume.ID, 0)
	WantUsage(t, l, "alice", Period, 10, 0)

	again := Request("alice", billing.Whole)
	again.Link, again.At = link, T0.Add(3*time.Hour)
	wantRefused(t, l, again, usage.ErrLinkUsedUp)

	// Fetching the whole file again, within the window, after a whole copy
	// was sent, spends a use: it joins the download (billed by its rule) but is
	// a use of the link. A part of the file (from the middle, or the first
	// hundred bytes) spends none.
	twice := Link("link-twice", 2, T0.Add(-time.Minute))
	for i, want := range []error{nil, nil, usage.ErrLinkUsedUp} {
		req := Request("carol", billing.Whole)
		req.Link, req.At = twice, T0.Add(time.Duration(i)*time.Minute)
		if want != nil {
			wantRefused(t, l, req, want)
			break
		}
		op := MustOpen(t, l, Prop, req)
		if op.Started != (i == 0) {
			t.Fatalf("fetch %d of the whole file: started %v", i+1, op.Started)
		}
		MustSettle(t, l, Prop, req.ID, Size)
		for _, part := range []billing.Range{Bytes(Size/2, -1), Bytes(0, 99)} {
			r := Request("carol", part)
			r.Link, r.At = twice, req.At.Add(time.Second)
			MustOpen(t, l, Prop, r)
			MustSettle(t, l, Prop, r.ID, 0)
		}
	}

	// Unlimited links, and requests without a link, are not counted.
	for i := range 3 {
		req := Request("bob", billing.Whole)
		req.Link = Link("link-unlimited", 0, T0)
		req.At = T0.Add(time.Duration(i) * 2 * time.Hour)
		if op := MustOpen(t, l, Prop, req); !op.Started {
			t.Fatalf("download %d of an unlimited link: %+v", i, op)
		}
		MustSettle(t, l, Prop, req.ID, Size)
	}
}

// testRevokeByUser: a revocation of a user refuses the links issued before
// it, in the same second included, of every video, and of no other user;
// links issued after it work, and a later revocation never moves it back.
func testRevokeByUser(t *testing.T, l usage.Ledger) {
	r := revoker(t, l)
	at := T0.Add(500 * time.Millisecond)
	if err := r.RevokeLinks(ctx(), "alice", "", at); err != nil {
		t.Fatalf("RevokeLinks: %v", err)
	}
	tests := []struct {
		name    string
		user    string
		video   string
		issued  time.Time
		revoked bool
	}{
		{"issued a minute before", "alice", Video, T0.Add(-time.Minute), true},
		{"issued in the same second", "alice", Video, T0, true},
		{"of another video", "alice", "fedcba9876543210fedcba9876543210", T0.Add(-time.Minute), true},
		{"issued at an unknown time", "alice", Video, time.Time{}, true},
		{"issued the next second", "alice", Video, T0.Add(time.Second), false},
		{"of another user", "bob", Video, T0.Add(-time.Minute), false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := Request(tc.user, billing.Whole)
			req.Video = tc.video
			req.Link = Link(fmt.Sprintf("link-user-%d", i), 0, tc.issued)
			req.At = T0.Add(time.Minute)
			if tc.revoked {
				wantRefused(t, l, req, usage.ErrLinkRevoked)
				return
			}
			MustOpen(t, l, Prop, req)
			MustSettle(t, l, Prop, req.ID, Size)
		})
	}
	// An earlier revocation does not lift the later one.
	if err := r.RevokeLinks(ctx(), "alice", "", T0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	req := Request("alice", billing.Whole)
	req.Link = Link("link-user-late", 0, T0.Add(-30*time.Minute))
	wantRefused(t, l, req, usage.ErrLinkRevoked)
}

// testRevokeByUserAndVideo: a revocation of a user's video leaves the user's
// links to other videos working.
func testRevokeByUserAndVideo(t *testing.T, l usage.Ledger) {
	const other = "fedcba9876543210fedcba9876543210"
	if err := revoker(t, l).RevokeLinks(ctx(), "alice", Video, T0); err != nil {
		t.Fatalf("RevokeLinks: %v", err)
	}
	req := Request("alice", billing.Whole)
	req.Link = Link("link-video-1", 0, T0.Add(-time.Minute))
	wantRefused(t, l, req, usage.ErrLinkRevoked)

	req = Request("alice", billing.Whole)
	req.Video, req.Link = other, Link("link-video-2", 0, T0.Add(-time.Minute))
	MustOpen(t, l, Prop, req)
	// A request without a link (the portal's own route) is not a link's.
	req = Request("alice", billing.Whole)
	MustOpen(t, l, Prop, req)
}

// testRevokeByID: a link revoked by its ID is refused at once, a request that
// would join its running download included, while the user's other links
// work.
func testRevokeByID(t *testing.T, l usage.Ledger) {
	link := Link("link-id-1", 2, T0.Add(-time.Minute))
	first := Request("alice", billing.Whole)
	first.Link = link
	MustOpen(t, l, Prop, first)
	if err := revoker(t, l).RevokeLink(ctx(), link.ID, link.ExpiresAt); err != nil {
		t.Fatalf("RevokeLink: %v", err)
	}
	seg := Request("alice", Bytes(0, Size/2))
	seg.Link = link
	wantRefused(t, l, seg, usage.ErrLinkRevoked)
	MustSettle(t, l, Prop, first.ID, Size)

	other := Request("alice", billing.Whole)
	other.Link = Link("link-id-2", 2, T0.Add(-time.Minute))
	MustOpen(t, l, Prop, other)
}

// RevocationAcrossLedgers revokes on ledgers[0] and expects the next request
// on every other ledger (replicas sharing one store) to be refused.
func RevocationAcrossLedgers(t *testing.T, ledgers []usage.Ledger) {
	t.Helper()
	if err := revoker(t, ledgers[0]).RevokeLinks(ctx(), "alice", "", T0); err != nil {
		t.Fatal(err)
	}
	if err := revoker(t, ledgers[0]).RevokeLink(ctx(), "link-across-2", T0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for i, l := range ledgers {
		req := Request("alice", billing.Whole)
		req.Link = Link("link-across-1", 0, T0.Add(-time.Second))
		wantRefused(t, l, req, usage.ErrLinkRevoked)
		req = Request("bob", billing.Whole)
		req.Link = Link("link-across-2", 0, T0)
		wantRefused(t, l, req, usage.ErrLinkRevoked)
		req = Request("alice", billing.Whole)
		req.Link = Link(fmt.Sprintf("link-across-new-%d", i), 0, T0.Add(time.Second))
		MustOpen(t, l, Prop, req)
	}
}
