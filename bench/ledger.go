package bench

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/streamgate/streamgate/billing"
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

func (l *timedLedger) Open(ctx context.Context, rule billing.Rule, req usage.OpenRequest) (op usage.Opened, err error) {
	err = l.write("Open", func() error {
		op, err = l.SQLite.Open(ctx, rule, req)
		return err
	})
	return op, err
}

func (l *timedLedger) Respond(ctx context.Context, rule billing.Rule, id string, r usage.Response) error {
	return l.write("Respond", func() error { return l.SQLite.Respond(ctx, rule, id, r) })
}

func (l *timedLedger) Progress(ctx context.Context, rule billing.Rule, id string, p usage.Progress) error {
	return l.write("Progress", func() error { return l.SQLite.Progress(ctx, rule, id, p) })
}

func (l *timedLedger) Settle(ctx context.Context, rule billing.Rule, id string, s usage.Settlement) (st usage.Settled, err error) {
	err = l.write("Settle", func() error {
		st, err = l.SQLite.Settle(ctx, rule, id, s)
		return err
	})
	return st, err
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
