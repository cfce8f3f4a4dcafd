package policy

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

func TestConcurrencyCap(t *testing.T) {
	c := NewConcurrency()
	r1, ok1 := c.Acquire("alice", 2)
	r2, ok2 := c.Acquire("alice", 2)
	r3, ok3 := c.Acquire("alice", 2)
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("ok = %v %v %v, want true true false", ok1, ok2, ok3)
	}
	r3() // a refused slot's release is a no-op
	if got := c.InUse("alice"); got != 2 {
		t.Errorf("InUse = %d, want 2", got)
	}
	if _, ok := c.Acquire("bob", 2); !ok {
		t.Error("bob refused: keys must be independent")
	}
	r1()
	r1() // idempotent
	if got := c.InUse("alice"); got != 1 {
		t.Errorf("after release: InUse = %d, want 1", got)
	}
	if _, ok := c.Acquire("alice", 2); !ok {
		t.Error("alice refused after a release")
	}
	r2()
	if got := c.InUse("alice"); got != 1 {
		t.Errorf("InUse = %d, want 1", got)
	}
}

func TestConcurrencyUnlimited(t *testing.T) {
	c := NewConcurrency()
	var releases []func()
	for range 100 {
		r, ok := c.Acquire("k", 0)
		if !ok {
			t.Fatal("max 0 refused")
		}
		releases = append(releases, r)
	}
	if got := c.InUse("k"); got != 100 {
		t.Errorf("InUse = %d, want 100", got)
	}
	for _, r := range releases {
		r()
	}
	if c.Len() != 0 {
		t.Errorf("Len = %d after all releases, want 0", c.Len())
	}
	var nc *Concurrency
	if r, ok := nc.Acquire("k", 1); !ok {
		t.Error("nil Concurrency refused")
	} else {
		r()
	}
}

func TestConcurrencyRace(t *testing.T) {
	const (
		goroutines = 64
		rounds     = 200
		max        = 3
		keys       = 4
	)
	c := NewConcurrency()
	var held [keys]atomic.Int32
	var peak [keys]atomic.Int32
	var refused atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range rounds {
				k := (g + i) % keys
				key := "user-" + strconv.Itoa(k)
				release, ok := c.Acquire(key, max)
				if !ok {
					refused.Add(1)
					continue
				}
				n := held[k].Add(1)
				for {
					p := peak[k].Load()
					if n <= p || peak[k].CompareAndSwap(p, n) {
						break
					}
				}
				if got := c.InUse(key); got > max {
					t.Errorf("InUse(%s) = %d, want <= %d", key, got, max)
				}
				held[k].Add(-1)
				release()
				release()
			}
		})
	}
	wg.Wait()
	for k := range keys {
		if p := peak[k].Load(); p > max {
			t.Errorf("key %d: %d held at once, want <= %d", k, p, max)
		}
	}
	if c.Len() != 0 {
		t.Errorf("Len = %d after all releases, want 0", c.Len())
	}
	t.Logf("refused %d of %d", refused.Load(), goroutines*rounds)
}
