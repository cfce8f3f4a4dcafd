package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func testRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	addr := os.Getenv("STREAMGATE_TEST_REDIS")
	if addr == "" {
		t.Skip("STREAMGATE_TEST_REDIS is not set")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "sgtest:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := c.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
	return c, prefix
}

// TestRedisRefusals: a refusal written by one store is found by another over
// the same Redis (another replica), lives for its TTL, and the store keeps no
// more than its bound, forgetting the oldest.
func TestRedisRefusals(t *testing.T) {
	c, prefix := testRedis(t)
	ctx := context.Background()
	a := NewRedisRefusals(c, prefix, 3, time.Hour, nil)
	for i := range 5 {
		a.Put(Refusal{RequestID: fmt.Sprint("r", i), Type: "rate_limited", Figures: map[string]any{"retry_after_seconds": i}})
	}
	a.Close() // writes what is queued

	b := NewRedisRefusals(c, prefix, 3, time.Hour, nil)
	defer b.Close()
	for i := range 5 {
		id := fmt.Sprint("r", i)
		r, ok, err := b.Get(ctx, id)
		if err != nil {
			t.Fatalf("Get(%s): %v", id, err)
		}
		if want := i >= 2; ok != want {
			t.Errorf("Get(%s) found %v, want %v: the store keeps the last 3", id, ok, want)
		}
		if ok && (r.Type != "rate_limited" || r.Figures["retry_after_seconds"] != float64(i)) {
			t.Errorf("Get(%s) = %+v", id, r)
		}
	}
	if n, _ := c.ZCard(ctx, prefix+"refusals").Result(); n != 3 {
		t.Errorf("index holds %d keys, want 3", n)
	}
	ttl, err := c.TTL(ctx, prefix+"refusal:r4").Result()
	if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("TTL of a refusal = %v, %v; want about an hour", ttl, err)
	}
	if _, ok, err := b.Get(ctx, "never-refused"); ok || err != nil {
		t.Errorf("Get(never-refused) = %v, %v; want not found", ok, err)
	}
}
