package proxy

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// pacer holds one token bucket of bytes per user, shared by all of that
// user's downloads in this process, so a plan's max_bytes_per_second bounds
// the user's downloads together. The bucket is spent by the copy loop itself
// (paceWrite, called from meteredWriter.Write): pacing adds no goroutine, and
// a download waits only while it has bytes to send.
//
// Like the concurrency cap without Redis, the rate holds per replica: n
// replicas serving one user's downloads let it n times the rate.
type pacer struct {
	mu    sync.Mutex
	users map[string]*paceEntry
	// sweepAt is the map size at which the next acquire drops idle entries.
	sweepAt int
}

// paceEntry is one user's bucket and the downloads using it.
type paceEntry struct {
	lim  *rate.Limiter
	bps  int64
	refs int
}

// Bounds of the map of buckets: it is swept of idle entries when it reaches
// sweepAt (at least minPaceSweep, twice what the last sweep left), and past
// maxPaceUsers an idle bucket is dropped even when it is still refilling.
const (
	minPaceSweep = 1024
	maxPaceUsers = 100000
)

func newPacer() *pacer {
	return &pacer{users: map[string]*paceEntry{}, sweepAt: minPaceSweep}
}

// paceBurst is the bucket size for bps bytes per second: a sixteenth of a
// second's worth, at most 64 KiB (so a write is paced in steps short enough to
// keep two downloads of one user interleaved) and at least 4 KiB or the whole
// rate when that is less.
func paceBurst(bps int64) int {
	b := min(bps/16, 64<<10)
	b = max(b, min(bps, 4<<10))
	return int(max(b, 1))
}

// acquire returns the user's bucket for bps bytes per second (nil when bps is
// 0 or less: no pacing) and the release to call when the download ends. A
// user whose plan's rate differs from the bucket in use keeps the bucket its
// running downloads share until they end.
func (p *pacer) acquire(user string, bps int64) (*rate.Limiter, func()) {
	if bps <= 0 {
		return nil, func() {}
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.users[user]
	if !ok || (e.refs == 0 && e.bps != bps) {
		if !ok && len(p.users) >= p.sweepAt {
			p.sweep(now)
		}
		e = &paceEntry{lim: rate.NewLimiter(rate.Limit(bps), paceBurst(bps)), bps: bps}
		p.users[user] = e
	}
	e.refs++
	var once sync.Once
	return e.lim, func() {
		once.Do(func() {
			p.mu.Lock()
			e.refs--
			p.mu.Unlock()
		})
	}
}

// sweep drops the buckets no download uses that have refilled: a full bucket
// is what a new one would be, so forgetting it changes nothing. A bucket still
// refilling is kept, or a user could start a download after each burst and
// never be paced; past maxPaceUsers it goes too. The caller holds p.mu.
func (p *pacer) sweep(now time.Time) {
	for user, e := range p.users {
		if e.refs == 0 && e.lim.TokensAt(now) >= float64(e.lim.Burst()) {
			delete(p.users, user)
		}
	}
	if len(p.users) >= maxPaceUsers {
		for user, e := range p.users {
			if e.refs == 0 {
				delete(p.users, user)
			}
		}
	}
	p.sweepAt = max(2*len(p.users), minPaceSweep)
}

// size is the number of buckets held.
func (p *pacer) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.users)
}

// paceWrite writes b through write in pieces no larger than lim's burst,
// waiting before each until lim allows its bytes. The wait ends with ctx (the
// request's), so a client that leaves while paced ends its download at once.
// It returns the bytes written.
func paceWrite(ctx context.Context, lim *rate.Limiter, b []byte, write func([]byte) (int, error)) (int, error) {
	written := 0
	for len(b) > 0 {
		// WaitN refuses more than the burst at once.
		n := min(len(b), lim.Burst())
		if err := lim.WaitN(ctx, n); err != nil {
			return written, err
		}
		m, err := write(b[:n])
		written += m
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}
