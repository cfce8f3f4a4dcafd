package policy

import (
	"sync"
	"sync/atomic"
)

// Concurrency caps how many things (downloads in flight) each key (a user)
// may have at once. It is safe for concurrent use. A key is tracked only
// while it holds at least one slot, so the map never outgrows what is in
// flight.
type Concurrency struct {
	mu    sync.Mutex
	inUse map[string]int
}

// NewConcurrency returns an empty Concurrency.
func NewConcurrency() *Concurrency {
	return &Concurrency{inUse: make(map[string]int)}
}

// noRelease is what a refused Acquire returns, so that callers may defer
// release before looking at ok.
func noRelease() {}

// Acquire takes one slot for key if fewer than max are taken; max <= 0 means
// no cap (the slot is still counted, for InUse). When ok, release gives the
// slot back; calling it more than once is harmless. When not ok, release is
// a no-op. A nil *Concurrency allows everything and counts nothing.
func (c *Concurrency) Acquire(key string, max int) (release func(), ok bool) {
	if c == nil {
		return noRelease, true
	}
	c.mu.Lock()
	n := c.inUse[key]
	if max > 0 && n >= max {
		c.mu.Unlock()
		return noRelease, false
	}
	c.inUse[key] = n + 1
	c.mu.Unlock()

	var released atomic.Bool
	return func() {
		if released.CompareAndSwap(false, true) {
			c.release(key)
		}
	}, true
}

func (c *Concurrency) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.inUse[key]; n > 1 {
		c.inUse[key] = n - 1
	} else {
		delete(c.inUse, key)
	}
}

// InUse returns how many slots key holds.
func (c *Concurrency) InUse(key string) int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inUse[key]
}

// Len returns how many keys hold at least one slot.
func (c *Concurrency) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.inUse)
}
