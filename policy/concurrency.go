package policy

import (
	"sync"
	"sync/atomic"
)

// Concurrency caps how many things (downloads in flight) each key (a user)
// may have at once. It is safe for concurrent use. A key is tracked only
// while it holds at least one slot, so the map never outgrows what is in
// flight.
//
// Built by NewConcurrency the cap holds in this process only: n replicas let a
// user run n times the cap. Built by NewRedisConcurrency it holds across every
// replica sharing the Redis server (see sharedSlots).
type Concurrency struct {
	mu    sync.Mutex
	inUse map[string]int
	// shared, when set, decides in Redis; inUse still counts this process's
	// slots, for InUse and for the fallback while Redis fails.
	shared *sharedSlots
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
	if c.shared != nil && max > 0 {
		return c.acquireShared(key, max)
	}
	if !c.take(key, max) {
		return noRelease, false
	}
	var released atomic.Bool
	return func() {
		if released.CompareAndSwap(false, true) {
			c.release(key)
		}
	}, true
}

// take counts a slot for key in this process if fewer than max (<= 0: no cap)
// are counted.
func (c *Concurrency) take(key string, max int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.inUse[key]
	if max > 0 && n >= max {
		return false
	}
	c.inUse[key] = n + 1
	return true
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
