package usage_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/usage"
	"github.com/streamgate/streamgate/usage/ledgertest"
)

// committer is a ledger that counts its transactions.
type committer interface {
	usage.Ledger
	Commits() (commits, writes int64)
}

func commits(l committer) int64 {
	n, _ := l.Commits()
	return n
}

func user(name string) func(*usage.StartRequest) {
	return func(r *usage.StartRequest) { r.User = name }
}

// noCheckpoints is a meter that writes no checkpoint of a test's bodies.
var noCheckpoints = usage.MeterConfig{CheckpointBytes: 1 << 40, CheckpointEvery: 24 * time.Hour}

// learnFile has alice download the whole file, so that the meter knows its
// size and ETag and later downloads of it claim exactly what they ask for.
func (f *fixture) learnFile(t *testing.T) {
	t.Helper()
	d := f.start(t, req())
	if err := d.Respond(200, size, ledgertest.ETag, billing.Interval{End: size}); err != nil {
		t.Fatal(err)
	}
	d.Wrote(size)
	if _, err := d.Finish(usage.Complete); err != nil {
		t.Fatal(err)
	}
}

// holdsResponses: a response of the file the download knew, carrying the bytes
// the delivery claimed, costs no transaction of its own; the settlement records
// it, and bills as if it had been recorded at once.
func holdsResponses(t *testing.T, l committer) {
	f := newFixtureOn(t, l, noCheckpoints)
	f.learnFile(t)
	period := usage.Period(f.clock.Now())

	c0 := commits(l)
	d := f.start(t, req(user("bob")))
	if err := d.Respond(200, size, ledgertest.ETag, billing.Interval{End: size}); err != nil {
		t.Fatal(err)
	}
	if n := commits(l) - c0; n != 1 {
		t.Fatalf("Start and Respond took %d transactions, want 1 (Open)", n)
	}
	ledgertest.WantUsage(t, l, "bob", period, 0, 10)
	d.Wrote(size / 4)
	st, err := d.Finish(usage.ClientGone)
	if err != nil || st.Acked != size/4 || !near(st.Minutes, 2.5) || !near(st.StreamMinutes, 2.5) || st.Size != size ||
		st.Claim != (billing.Interval{End: size}) || st.Status != "client_gone" {
		t.Fatalf("Finish = %+v, %v", st, err)
	}
	if n := commits(l) - c0; n != 2 {
		t.Fatalf("a whole delivery took %d transactions, want 2 (Open, Settle)", n)
	}
	ledgertest.WantUsage(t, l, "bob", period, 2.5, 0)

	// A range, answered as asked.
	c0 = commits(l)
	r := f.start(t, req(user("carol"), from(size/2, -1)))
	if err := r.Respond(206, size, ledgertest.ETag, billing.Interval{Start: size / 2, End: size}); err != nil {
		t.Fatal(err)
	}
	ledgertest.WantUsage(t, l, "carol", period, 0, 5)
	r.Wrote(size / 2)
	if st, err := r.Finish(usage.Complete); err != nil || !near(st.Minutes, 5) || st.Claim != (billing.Interval{Start: size / 2, End: size}) {
		t.Fatalf("range Finish = %+v, %v", st, err)
	}
	if n := commits(l) - c0; n != 2 {
		t.Fatalf("a ranged delivery took %d transactions, want 2", n)
	}
	ledgertest.WantUsage(t, l, "carol", period, 5, 0)

	// An answer of fewer bytes than asked is held, and the settlement records
	// it before it bills: what it sent past the answer's end is not the file's.
	c0 = commits(l)
	s := f.start(t, req(user("dave")))
	if err := s.Respond(206, size, ledgertest.ETag, billing.Interval{End: size / 2}); err != nil {
		t.Fatal(err)
	}
	s.Wrote(size)
	if st, err := s.Finish(usage.Complete); err != nil || st.Acked != size/2 || !near(st.Minutes, 5) ||
		st.Claim != (billing.Interval{End: size / 2}) {
		t.Fatalf("short answer Finish = %+v, %v", st, err)
	}
	if n := commits(l) - c0; n != 2 {
		t.Fatalf("a short answer's delivery took %d transactions, want 2", n)
	}
	ledgertest.WantUsage(t, l, "dave", period, 5, 0)

	// An answer without the file's bytes is held too, and bills nothing.
	e := f.start(t, req(user("erin")))
	if err := e.Respond(404, 0, "", billing.Interval{}); err != nil {
		t.Fatal(err)
	}
	e.Wrote(100) // the error's own body
	if st, err := e.Finish(usage.Complete); err != nil || st.Acked != 0 || st.Minutes != 0 {
		t.Fatalf("404 Finish = %+v, %v", st, err)
	}
	ledgertest.WantUsage(t, l, "erin", period, 0, 0)
}

func TestSQLiteMeterHoldsResponses(t *testing.T) {
	holdsResponses(t, openFile(t, filepath.Join(t.TempDir(), "ledger.db")))
}

func TestPostgresMeterHoldsResponses(t *testing.T) {
	holdsResponses(t, openPostgres(t, freshSchema(t)))
}

// TestMeterWritesResponsesThatMayRefuse: a response that may raise the
// reservation or move the delivery to another download is recorded at once,
// so that a refusal comes before the first byte.
func TestMeterWritesResponsesThatMayRefuse(t *testing.T) {
	tests := []struct {
		name    string
		req     usage.StartRequest
		etag    string
		body    billing.Interval
		refused bool
	}{
		{"another file", req(user("bob")), `"v2"`, billing.Interval{End: size}, false},
		{"more than the range asked", req(user("bob"), from(0, 1), func(r *usage.StartRequest) { r.LimitMinutes = 1 }),
			ledgertest.ETag, billing.Interval{End: size}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := openMemory(t)
			f := newFixtureOn(t, l, noCheckpoints)
			f.learnFile(t)
			d := f.start(t, tt.req)
			c0 := commits(l)
			err := d.Respond(200, size, tt.etag, tt.body)
			if got := errors.Is(err, usage.ErrQuotaExceeded); got != tt.refused || (!tt.refused && err != nil) {
				t.Fatalf("Respond = %v, want refused %v", err, tt.refused)
			}
			if n := commits(l) - c0; n != 1 {
				t.Fatalf("Respond took %d transactions, want 1", n)
			}
			d.Abort("test")
		})
	}
}

// TestMeterCrashWithHeldResponses: a process dies while responses are held,
// one delivery before its first checkpoint, one after. The next start bills
// each exactly what its last checkpoint recorded and releases both claims.
func TestMeterCrashWithHeldResponses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l1, err := usage.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureOn(t, l1, usage.MeterConfig{CheckpointBytes: size / 4, CheckpointEvery: 24 * time.Hour})
	f.learnFile(t)
	period := usage.Period(f.clock.Now())
	early := f.start(t, req(user("bob")))
	late := f.start(t, req(user("carol")))
	for _, d := range []*usage.Delivery{early, late} {
		if err := d.Respond(200, size, ledgertest.ETag, billing.Interval{End: size}); err != nil {
			t.Fatal(err)
		}
	}
	early.Wrote(size / 8) // below the checkpoint: nothing recorded
	late.Wrote(size / 2)  // a checkpoint, which records the held response too
	ledgertest.WantUsage(t, l1, "carol", period, 5, 5)
	l1.Close() // the process dies: no Finish

	l2 := openFile(t, path)
	g := newFixtureOn(t, l2, usage.MeterConfig{})
	out, err := g.meter.Recover(context.Background())
	if err != nil || len(out) != 2 {
		t.Fatalf("Recover = %+v, %v", out, err)
	}
	for _, st := range out {
		want := map[string]struct {
			acked   int64
			minutes float64
		}{"bob": {0, 0}, "carol": {size / 2, 5}}[st.User]
		if st.Status != "recovered" || st.Acked != want.acked || !near(st.Minutes, want.minutes) ||
			!near(st.StreamMinutes, want.minutes) {
			t.Errorf("recovered %s: %+v, want %d bytes, %.1f minutes", st.User, st, want.acked, want.minutes)
		}
	}
	ledgertest.WantUsage(t, l2, "bob", period, 0, 0)
	ledgertest.WantUsage(t, l2, "carol", period, 5, 0)
}
