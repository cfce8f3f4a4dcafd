package proxy

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamgate/streamgate/policy"
	"github.com/streamgate/streamgate/streamtest"
)

// TestConcurrencyCapAcrossReplicas: two gateways sharing a ledger and a Redis
// server are two replicas; a user whose plan allows one download at a time
// cannot run a second on the other replica, and can once the first ends.
func TestConcurrencyCapAcrossReplicas(t *testing.T) {
	addr := os.Getenv("STREAMGATE_TEST_REDIS")
	if addr == "" {
		t.Skip("STREAMGATE_TEST_REDIS is not set: set it to a Redis address to run the cross-replica cap test")
	}
	e := newEnv(t, envOptions{})
	prefix := "streamgate-test:" + rand.Text() + ":"
	replica := func() *gateway {
		c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
		conc := policy.NewRedisConcurrency(c, prefix, policy.WithSlotTimeout(time.Second),
			policy.WithSlotOnError(func(err error) { t.Errorf("redis: %v", err) }))
		t.Cleanup(func() { conc.Close(); _ = c.Close() })
		return e.gateway(func(_ *Config, d *Deps) { d.Concurrency = conc })
	}
	a, b := replica(), replica()
	t.Cleanup(func() {
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		ctx := context.Background()
		iter := c.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			_ = c.Del(ctx, iter.Val()).Err()
		}
	})

	e.emu.SetFault(uidPrivate, streamtest.Fault{BytesPerSecond: 2 << 20})
	tok := e.jwt("spread", "single", nil)
	path := "/v1/videos/" + uidPrivate + "/downloads/default.mp4"
	gb := e.client(addrGB)
	req, _ := http.NewRequest("GET", a.url+path, nil)
	req.Header = bearer(tok)
	resp, err := gb.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("download on replica a: %v %v", err, resp)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
		t.Fatalf("reading the first bytes: %v", err)
	}

	r := do(t, e.client(addrUS), "GET", b.url+path, bearer(tok), nil)
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("second download on replica b: status %d, want 429: %s", r.status, r.body)
	}
	if p := r.problem(t); p["type"] != "urn:streamgate:problem:too_many_downloads" {
		t.Errorf("type = %v", p["type"])
	}

	resp.Body.Close()
	gb.Transport.(*http.Transport).CloseIdleConnections()
	e.settled(t, "spread")
	e.emu.SetFault(uidPrivate, streamtest.Fault{})
	eventually(t, "the slot to be released", func() bool {
		return do(t, e.client(addrUS), "HEAD", b.url+path, bearer(tok), nil).status == http.StatusOK
	})
}
