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

// wrapped is a ledger behind a type of its own, as metrics wrap the
// gateway's: it has only the Ledger methods.
type wrapped struct{ usage.Ledger }

// skipsResponses: a response of the file the download knew, carrying the
// bytes the delivery claimed, changes nothing and costs no transaction; any
// other is written at once. Either way the settlement bills what it should.
func skipsResponses(t *testing.T, l committer, through usage.Ledger) {
	f := newFixtureOn(t, through, noCheckpoints)
	f.learnFile(t)
	period := usage.Period(f.clock.Now())
	tests := []struct {
		name     string
		req      usage.StartRequest
		status   int
		body     billing.Interval
		reserved float64 // after Respond
		wrote    int64
		acked    int64
		minutes  float64
		commits  int64 // Start to Finish
	}{
		{"whole file", req(user("bob")), 200, billing.Interval{End: size}, 10, size / 4, size / 4, 2.5, 2},
		{"range as asked", req(user("carol"), from(size/2, -1)), 206, billing.Interval{Start: size / 2, End: size},
			5, size / 2, size / 2, 5, 2},
		// Fewer bytes than asked: the claim shrinks, and what was sent past
		// the answer's end is not the file's.
		{"short answer", req(user("dave")), 206, billing.Interval{End: size / 2}, 5, size, size / 2, 5, 3},
		// No body: the claim is released at once.
		{"not found", req(user("erin")), 404, billing.Interval{}, 0, 100, 0, 0, 3},
	}
	for _, tt := range tests {
		c0 := commits(l)
		d := f.start(t, tt.req)
		sz, etag := int64(size), ledgertest.ETag
		if tt.status == 404 {
			sz, etag = 0, ""
		}
		if err := d.Respond(tt.status, sz, etag, tt.body); err != nil {
			t.Fatalf("%s: Respond: %v", tt.name, err)
		}
		ledgertest.WantUsage(t, l, tt.req.User, period, 0, tt.reserved)
		d.Wrote(tt.wrote)
		st, err := d.Finish(usage.Complete)
		if err != nil || st.Acked != tt.acked || !near(st.Minutes, tt.minutes) {
			t.Fatalf("%s: Finish = %+v, %v; want %d bytes, %.1f minutes", tt.name, st, err, tt.acked, tt.minutes)
		}
		if tt.status != 404 && (st.Size != size || st.Claim != tt.body || !near(st.StreamMinutes, 10*float64(tt.wrote)/size)) {
			t.Fatalf("%s: Finish = %+v; want claim %v of %d bytes", tt.name, st, tt.body, size)
		}
		if n := commits(l) - c0; n != tt.commits {
			t.Errorf("%s: %d transactions from Start to Finish, want %d", tt.name, n, tt.commits)
		}
		ledgertest.WantUsage(t, l, tt.req.User, period, tt.minutes, 0)
	}
}

func TestSQLiteSkipsResponses(t *testing.T) {
	l := openFile(t, filepath.Join(t.TempDir(), "ledger.db"))
	skipsResponses(t, l, l)
}

func TestSQLiteSkipsResponsesBehindAWrapper(t *testing.T) {
	l := openFile(t, filepath.Join(t.TempDir(), "ledger.db"))
	skipsResponses(t, l, wrapped{Ledger: l})
}

func TestPostgresSkipsResponses(t *testing.T) {
	l := openPostgres(t, freshSchema(t))
	skipsResponses(t, l, l)
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

// TestMeterCrashWithSkippedResponses: a process dies with two deliveries open
// whose responses were not written, one before its first checkpoint, one
// after. The next start bills
// each exactly what its last checkpoint recorded and releases both claims.
func TestMeterCrashWithSkippedResponses(t *testing.T) {
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
	late.Wrote(size / 2)  // a checkpoint
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
