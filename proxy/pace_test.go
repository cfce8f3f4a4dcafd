package proxy

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/usage"
)

func TestPaceBurst(t *testing.T) {
	tests := []struct {
		name string
		bps  int64
		want int
	}{
		{name: "a sixteenth of a second", bps: 256 << 10, want: 16 << 10},
		{name: "at most 64 KiB", bps: 100 << 20, want: 64 << 10},
		{name: "at least 4 KiB", bps: 32 << 10, want: 4 << 10},
		{name: "the whole rate when below 4 KiB", bps: 1024, want: 1024},
		{name: "never 0", bps: 0, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := paceBurst(tt.bps); got != tt.want {
				t.Errorf("paceBurst(%d) = %d, want %d", tt.bps, got, tt.want)
			}
		})
	}
}

// pieces records each write it is given.
type pieces struct {
	sizes []int
	buf   bytes.Buffer
}

func (p *pieces) write(b []byte) (int, error) {
	p.sizes = append(p.sizes, len(b))
	return p.buf.Write(b)
}

func TestPaceWriteSplitsAndCharges(t *testing.T) {
	const bps, burst = 1 << 20, 4 << 10
	lim := rate.NewLimiter(bps, burst)
	body := bytes.Repeat([]byte("0123456789abcdef"), 2500) // 40000 bytes, not a multiple of the burst
	var p pieces
	start := time.Now()
	n, err := paceWrite(context.Background(), lim, body, p.write)
	end := time.Now()
	if err != nil || n != len(body) {
		t.Fatalf("paceWrite = %d, %v; want %d, nil", n, err, len(body))
	}
	if !bytes.Equal(p.buf.Bytes(), body) {
		t.Fatal("the bytes written differ from the body")
	}
	for i, s := range p.sizes {
		if s > burst {
			t.Errorf("write %d is %d bytes, more than the burst %d", i, s, burst)
		}
	}
	// Every byte was charged to the bucket: what is left is at most what the
	// bucket held, less the body, plus what refilled meanwhile.
	left := lim.TokensAt(end)
	if most := float64(burst) - float64(len(body)) + bps*end.Sub(start).Seconds(); left > most+1 {
		t.Errorf("bucket holds %.0f tokens after the body, want at most %.0f", left, most)
	}
}

func TestPaceWriteEndsWithTheRequest(t *testing.T) {
	// At 1 KiB/s, 1 MiB would take seventeen minutes: only the cancellation
	// can end this write within the test's time.
	lim := rate.NewLimiter(1024, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	var p pieces
	write := func(b []byte) (int, error) {
		if len(p.sizes) == 1 {
			cancel()
		}
		return p.write(b)
	}
	n, err := paceWrite(ctx, lim, make([]byte, 1<<20), write)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("paceWrite error = %v, want context.Canceled", err)
	}
	if n != 2*1024 || p.buf.Len() != n {
		t.Errorf("paceWrite wrote %d bytes (%d passed on), want 2048: the first burst and the one charged before the cancel", n, p.buf.Len())
	}
}

func TestPaceWriteStopsOnWriteError(t *testing.T) {
	lim := rate.NewLimiter(rate.Inf, 100)
	gone := errors.New("client gone")
	calls := 0
	n, err := paceWrite(context.Background(), lim, make([]byte, 1000), func(b []byte) (int, error) {
		calls++
		if calls == 3 {
			return 10, gone
		}
		return len(b), nil
	})
	if !errors.Is(err, gone) || n != 210 || calls != 3 {
		t.Errorf("paceWrite = %d, %v after %d writes; want 210, client gone after 3", n, err, calls)
	}
}

func TestPacerSharesOneBucketPerUser(t *testing.T) {
	p := newPacer()
	a1, releaseA1 := p.acquire("alice", 1<<20)
	a2, releaseA2 := p.acquire("alice", 1<<20)
	b, releaseB := p.acquire("bob", 1<<20)
	if a1 != a2 {
		t.Error("two downloads of one user got two buckets")
	}
	if a1 == b {
		t.Error("two users share a bucket")
	}
	if lim, release := p.acquire("carol", 0); lim != nil {
		t.Error("a plan without max_bytes_per_second got a bucket")
	} else {
		release()
	}
	// A rate change waits for the user's running downloads to end.
	if lim, release := p.acquire("alice", 2<<20); lim != a1 {
		t.Error("a new rate replaced the bucket running downloads share")
	} else {
		release()
	}
	releaseA1()
	releaseA1() // a release counts once
	if lim, release := p.acquire("alice", 1<<20); lim != a1 {
		t.Error("a release called twice let the bucket go while a download used it")
	} else {
		release()
	}
	releaseA2()
	releaseB()
	if lim, release := p.acquire("alice", 2<<20); lim == a1 || lim.Limit() != 2<<20 {
		t.Error("an idle bucket kept its old rate")
	} else {
		release()
	}
}

func TestPacerSweepsIdleBuckets(t *testing.T) {
	p := newPacer()
	// Spent: its bucket must outlive the download, or a user could start a
	// download per burst and never be paced.
	spent, release := p.acquire("spent", 4096)
	spent.AllowN(time.Now(), 4096)
	release()
	_, releaseBusy := p.acquire("busy", 4096)
	defer releaseBusy()
	for i := range minPaceSweep - 2 {
		_, r := p.acquire("idle"+strconv.Itoa(i), 1<<20)
		r()
	}
	if got := p.size(); got != minPaceSweep {
		t.Fatalf("%d buckets are held before the sweep, want %d", got, minPaceSweep)
	}
	// The map reached sweepAt: the next new user sweeps it.
	_, r := p.acquire("new", 1<<20)
	r()
	if got := p.size(); got != 3 {
		t.Errorf("after the sweep %d buckets are held, want 3 (spent, busy, new)", got)
	}
	if lim, r := p.acquire("spent", 4096); lim != spent {
		t.Error("the sweep dropped a bucket that was still refilling")
	} else {
		r()
	}
}

// fakeDelivery counts what the metered writer reports.
type fakeDelivery struct {
	mu     sync.Mutex
	wrote  int64
	fenced bool
}

func (d *fakeDelivery) Respond(int, int64, string, billing.Interval) error { return nil }
func (d *fakeDelivery) Count(func() usage.Progress)                        {}
func (d *fakeDelivery) Wrote(n int64)                                      { d.mu.Lock(); d.wrote += n; d.mu.Unlock() }
func (d *fakeDelivery) Finish(usage.Outcome) (usage.Settled, error)        { return usage.Settled{}, nil }
func (d *fakeDelivery) Abort(string)                                       {}
func (d *fakeDelivery) Fenced() bool                                       { return d.fenced }

func TestMeteredWriterPaced(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	rec := httptest.NewRecorder()
	d := &fakeDelivery{}
	mw := &meteredWriter{ResponseWriter: rec, d: d, pace: rate.NewLimiter(4096, 4096), ctx: ctx}
	if n, err := mw.Write(make([]byte, 4096)); n != 4096 || err != nil {
		t.Fatalf("first write = %d, %v", n, err)
	}
	cancel()
	if _, err := mw.Write(make([]byte, 4096)); err == nil {
		t.Fatal("a write after the request ended succeeded")
	}
	if !mw.clientGone {
		t.Error("a wait ended by the request did not mark the client gone")
	}
	if got := mw.written.Load(); got != 4096 || d.wrote != 4096 || rec.Body.Len() != 4096 {
		t.Errorf("written %d, reported %d, passed on %d; want 4096 each", got, d.wrote, rec.Body.Len())
	}
	var _ http.ResponseWriter = mw
}

// TestPacedDownloads: a paced download arrives whole and right, and two
// downloads of one user share the user's rate.
func TestPacedDownloads(t *testing.T) {
	t.Parallel()
	const bps = 4 << 20
	e := newEnv(t, envOptions{})
	gw := e.gateway(func(c *Config, _ *Deps) {
		c.Plans["paced"] = Plan{MinutesPerMonth: 1000, MaxBytesPerSecond: bps}
	})
	u := gw.url + "/v1/videos/" + uidPublic + "/downloads/default.mp4"

	r := do(t, e.client(addrGB), "GET", u, bearer(e.jwt("solo", "paced", nil)), nil)
	if r.status != http.StatusOK {
		t.Fatalf("paced download: %d %s", r.status, r.body)
	}
	checkBody(t, r, uidPublic, stream.Default, 0, sizePublic)
	r = do(t, e.client(addrGB), "GET", u, withRange(bearer(e.jwt("solo", "paced", nil)), "bytes=1000-99999"), nil)
	if r.status != http.StatusPartialContent {
		t.Fatalf("paced range: %d %s", r.status, r.body)
	}
	checkBody(t, r, uidPublic, stream.Default, 1000, 99000)

	// Two downloads of one user at once: both whole, and together no faster
	// than the one rate allows. Had each its own bucket, they would end in
	// about half that time.
	tok := e.jwt("pair", "paced", nil)
	start := time.Now()
	var wg sync.WaitGroup
	results := make([]result, 2)
	for i, src := range []string{addrGB, addrUS} {
		wg.Go(func() { results[i] = do(t, e.client(src), "GET", u, bearer(tok), nil) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, r := range results {
		if r.status != http.StatusOK {
			t.Fatalf("concurrent paced download: %d %s", r.status, r.body)
		}
		checkBody(t, r, uidPublic, stream.Default, 0, sizePublic)
	}
	if least := time.Duration(float64(2*sizePublic-paceBurst(bps)) / bps * float64(time.Second)); elapsed < least {
		t.Errorf("two downloads of one user took %v, less than the %v the shared rate allows", elapsed, least)
	}
	e.settled(t, "pair")
}
