package bench

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/streamgate/streamgate/usage"
)

// timedLedger is the SQLite ledger with the time of each call on a download's
// path recorded, waiting included.
type timedLedger struct {
	*usage.SQLite

	mu    sync.Mutex
	times map[string][]time.Duration
}

func newTimedLedger(l *usage.SQLite) *timedLedger {
	return &timedLedger{SQLite: l, times: map[string][]time.Duration{}}
}

// write runs a write and records how long it took.
func (l *timedLedger) write(name string, f func() error) error {
	start := time.Now()
	err := f()
	l.record(name, time.Since(start))
	return err
}

func (l *timedLedger) record(name string, d time.Duration) {
	l.mu.Lock()
	l.times[name] = append(l.times[name], d)
	l.mu.Unlock()
}

func (l *timedLedger) Reserve(ctx context.Context, d usage.OpenDelivery, limit float64) error {
	return l.write("Reserve", func() error { return l.SQLite.Reserve(ctx, d, limit) })
}

func (l *timedLedger) Adjust(ctx context.Context, id string, reserved float64) error {
	return l.write("Adjust", func() error { return l.SQLite.Adjust(ctx, id, reserved) })
}

func (l *timedLedger) Settle(ctx context.Context, id string, s usage.Settlement) (st usage.Settled, err error) {
	err = l.write("Settle", func() error {
		st, err = l.SQLite.Settle(ctx, id, s)
		return err
	})
	return st, err
}

func (l *timedLedger) TouchDownload(ctx context.Context, id string, at time.Time) error {
	return l.write("TouchDownload", func() error { return l.SQLite.TouchDownload(ctx, id, at) })
}

func (l *timedLedger) FindDownload(ctx context.Context, key usage.DownloadKey, since time.Time) (d usage.DownloadState, ok bool, err error) {
	start := time.Now()
	d, ok, err = l.SQLite.FindDownload(ctx, key, since)
	l.record("FindDownload", time.Since(start))
	return d, ok, err
}

// Latency sums up the durations of one kind of call.
type Latency struct {
	Call               string
	Count              int
	P50, P90, P99, Max time.Duration
}

// latencies reports every call recorded since the last reset, and resets.
func (l *timedLedger) latencies() []Latency {
	l.mu.Lock()
	times := l.times
	l.times = map[string][]time.Duration{}
	l.mu.Unlock()
	var out []Latency
	for name, d := range times {
		slices.Sort(d)
		q := func(p float64) time.Duration { return d[min(int(p*float64(len(d))), len(d)-1)] }
		out = append(out, Latency{Call: name, Count: len(d), P50: q(0.5), P90: q(0.9), P99: q(0.99), Max: d[len(d)-1]})
	}
	slices.SortFunc(out, func(a, b Latency) int { return b.Count - a.Count })
	return out
}
