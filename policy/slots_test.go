package policy

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// slotRedis returns a client of the test server and a prefix whose slot keys
// are deleted when the test ends.
func slotRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	c, prefix := testRedis(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := deleteKeys(ctx, c, prefix+"conc:*"); err != nil {
			t.Errorf("deleting the slot keys: %v", err)
		}
	})
	return c, prefix
}

// testClock is a clock tests move by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// replica builds a Redis-backed Concurrency as one replica of the gateway
// would, with the test's clock and a lease far longer than the test, so that
// only the test's clock moves slots towards expiry.
func replica(t *testing.T, c redis.UniversalClient, prefix string, clk *testClock, opts ...ConcurrencyOption) *Concurrency {
	t.Helper()
	opts = append([]ConcurrencyOption{WithSlotClock(clk.Now), WithSlotLease(time.Hour), WithSlotTimeout(time.Second),
		WithSlotOnError(func(err error) { t.Errorf("OnError: %v", err) })}, opts...)
	cc := NewRedisConcurrency(c, prefix, opts...)
	t.Cleanup(cc.Close)
	return cc
}

func TestRedisConcurrencyCapAcrossReplicas(t *testing.T) {
	c, prefix := slotRedis(t)
	clk := &testClock{now: time.Unix(1_700_000_000, 0)}
	a := replica(t, c, prefix, clk)
	b := replica(t, newTestClient(t, testRedisAddr(t)), prefix, clk)
	if !a.Shared() || NewConcurrency().Shared() {
		t.Fatal("Shared: want true with Redis, false without")
	}

	ra, ok1 := a.Acquire("alice", 2)
	rb, ok2 := b.Acquire("alice", 2)
	_, ok3 := a.Acquire("alice", 2)
	_, ok4 := b.Acquire("alice", 2)
	if !ok1 || !ok2 || ok3 || ok4 {
		t.Fatalf("ok = %v %v %v %v, want true true false false: the cap of 2 must hold across both replicas", ok1, ok2, ok3, ok4)
	}
	if _, ok := b.Acquire("bob", 2); !ok {
		t.Error("bob refused: keys must be independent")
	}
	if got := a.InUse("alice"); got != 1 {
		t.Errorf("InUse on replica a = %d, want 1 (its own slots)", got)
	}
	ra()
	ra() // idempotent: must not free b's slot
	if _, ok := b.Acquire("alice", 2); !ok {
		t.Fatal("refused after a's slot was released")
	}
	if _, ok := a.Acquire("alice", 2); ok {
		t.Fatal("a third slot was granted after one release")
	}
	rb()
	if _, ok := a.Acquire("alice", 2); !ok {
		t.Error("refused after b's slot was released")
	}
}

// TestRedisConcurrencyHeldAtOnce races many acquires over two replicas: never
// more than the cap at once.
func TestRedisConcurrencyHeldAtOnce(t *testing.T) {
	c, prefix := slotRedis(t)
	clk := &testClock{now: time.Unix(1_700_000_000, 0)}
	reps := []*Concurrency{replica(t, c, prefix, clk), replica(t, newTestClient(t, testRedisAddr(t)), prefix, clk)}
	var granted atomic.Int64
	var releases sync.Map
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if r, ok := reps[i%2].Acquire("carol", 3); ok {
				granted.Add(1)
				releases.Store(i, r)
			}
		})
	}
	wg.Wait()
	if got := granted.Load(); got != 3 {
		t.Errorf("granted %d slots at once, want 3", got)
	}
}

func TestRedisConcurrencyDeadReplicaExpires(t *testing.T) {
	c, prefix := slotRedis(t)
	clk := &testClock{now: time.Unix(1_700_000_000, 0)}
	lease := time.Minute
	dead := replica(t, c, prefix, clk, WithSlotLease(lease))
	live := replica(t, c, prefix, clk, WithSlotLease(lease))

	if _, ok := dead.Acquire("alice", 1); !ok {
		t.Fatal("first slot refused")
	}
	dead.Close() // the replica dies: it neither renews nor releases

	clk.Advance(lease - time.Millisecond)
	if _, ok := live.Acquire("alice", 1); ok {
		t.Fatal("granted while the dead replica's slot was still within its lease")
	}
	clk.Advance(2 * time.Millisecond)
	if _, ok := live.Acquire("alice", 1); !ok {
		t.Fatal("refused after the dead replica's slot expired")
	}
}

func TestRedisConcurrencyRenewal(t *testing.T) {
	c, prefix := slotRedis(t)
	clk := &testClock{now: time.Unix(1_700_000_000, 0)}
	lease := time.Minute
	holder := replica(t, c, prefix, clk, WithSlotLease(lease))
	other := replica(t, c, prefix, clk, WithSlotLease(lease))

	release, ok := holder.Acquire("alice", 1)
	if !ok {
		t.Fatal("first slot refused")
	}
	// The download goes on: the holder renews, as its loop does every third of
	// the lease.
	for range 5 {
		clk.Advance(lease / 2)
		if err := holder.shared.renew(); err != nil {
			t.Fatalf("renew: %v", err)
		}
		if _, ok := other.Acquire("alice", 1); ok {
			t.Fatal("a renewed slot expired")
		}
	}
	release()
	if _, ok := other.Acquire("alice", 1); !ok {
		t.Fatal("refused after release")
	}
}

// TestRedisConcurrencyOutage: with Redis unreachable each replica caps on its
// own, and reports the failures; the slots it handed out then reach Redis with
// the next renewal that succeeds.
func TestRedisConcurrencyOutage(t *testing.T) {
	clk := &testClock{now: time.Unix(1_700_000_000, 0)}
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = dead.Close() })
	var failures atomic.Int64
	cc := NewRedisConcurrency(dead, "x:", WithSlotClock(clk.Now), WithSlotLease(time.Hour), WithSlotOnError(func(err error) {
		if !strings.HasPrefix(err.Error(), "redis concurrency") {
			t.Errorf("OnError: %v", err)
		}
		failures.Add(1)
	}))
	t.Cleanup(cc.Close)

	r1, ok1 := cc.Acquire("alice", 1)
	_, ok2 := cc.Acquire("alice", 1)
	if !ok1 || ok2 {
		t.Fatalf("ok = %v %v, want true false: the replica's own cap holds while Redis is down", ok1, ok2)
	}
	if failures.Load() == 0 {
		t.Error("the failure was not reported")
	}
	r1()
	if _, ok := cc.Acquire("alice", 1); !ok {
		t.Error("refused after release during the outage")
	}

	// A slot handed out while Redis failed is written back by renewal.
	c, prefix := slotRedis(t)
	a := replica(t, c, prefix, clk)
	b := replica(t, c, prefix, clk)
	a.shared.downUntil.Store(clk.Now().Add(time.Hour).UnixNano()) // a is in its cooldown
	if _, ok := a.Acquire("dave", 1); !ok {
		t.Fatal("refused during the cooldown")
	}
	if _, ok := b.Acquire("dave", 1); !ok {
		t.Fatal("b refused although a's slot never reached Redis")
	}
	if err := a.shared.renew(); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if _, ok := b.Acquire("eve", 1); !ok {
		t.Fatal("eve refused")
	}
	if n, err := c.ZCard(context.Background(), prefix+"conc:dave").Result(); err != nil || n != 2 {
		t.Errorf("dave's slots in Redis = %d, %v; want 2 (a's written back beside b's)", n, err)
	}
}

// TestRedisConcurrencyUnlimited: max <= 0 never asks Redis.
func TestRedisConcurrencyUnlimited(t *testing.T) {
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = dead.Close() })
	cc := NewRedisConcurrency(dead, "x:", WithSlotOnError(func(err error) { t.Errorf("Redis asked: %v", err) }))
	t.Cleanup(cc.Close)
	for range 10 {
		if _, ok := cc.Acquire("k", 0); !ok {
			t.Fatal("max 0 refused")
		}
	}
	if got := cc.InUse("k"); got != 10 {
		t.Errorf("InUse = %d, want 10", got)
	}
}
