package policy

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// testRedisEnv names the variable holding the address of a Redis server the
// tests may write to, under keys they delete afterwards.
const testRedisEnv = "STREAMGATE_TEST_REDIS"

func testRedisAddr(tb testing.TB) string {
	tb.Helper()
	addr := os.Getenv(testRedisEnv)
	if addr == "" {
		tb.Skip(testRedisEnv + " is not set: set it to a Redis address (say 127.0.0.1:6379) to run the Redis rate-limit tests")
	}
	return addr
}

// newTestClient returns a client built the way the gateway should build one:
// the limiter's deadline reaches the socket.
func newTestClient(tb testing.TB, addr string) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true,
		DialTimeout:           time.Second,
		ReadTimeout:           500 * time.Millisecond,
		WriteTimeout:          500 * time.Millisecond,
	})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// testRedis returns a client of the test server and a prefix of its own,
// whose keys are deleted when the test ends.
func testRedis(tb testing.TB) (*redis.Client, string) {
	tb.Helper()
	c := newTestClient(tb, testRedisAddr(tb))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		tb.Fatalf("%s=%s: %v", testRedisEnv, os.Getenv(testRedisEnv), err)
	}
	return c, testPrefix(tb, c)
}

func testPrefix(tb testing.TB, c *redis.Client) string {
	tb.Helper()
	prefix := "streamgate-test:" + rand.Text() + ":"
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if n, err := deleteKeys(ctx, c, "rate:"+prefix+"*"); err != nil {
			tb.Errorf("deleting the test keys: %v (%d deleted)", err, n)
		}
	})
	return prefix
}

// deleteKeys deletes the keys matching pattern with SCAN and DEL, never KEYS,
// so that it is safe on a shared server.
func deleteKeys(ctx context.Context, c *redis.Client, pattern string) (int, error) {
	n := 0
	iter := c.Scan(ctx, 0, pattern, 100).Iterator()
	for iter.Next(ctx) {
		if err := c.Del(ctx, iter.Val()).Err(); err != nil {
			return n, err
		}
		n++
	}
	return n, iter.Err()
}

func countKeys(t *testing.T, c *redis.Client, pattern string) int {
	t.Helper()
	keys, _, err := c.Scan(context.Background(), 0, pattern, 1000).Result()
	if err != nil {
		t.Fatalf("SCAN %s: %v", pattern, err)
	}
	return len(keys)
}

func TestRedisLimiterBurstDeny(t *testing.T) {
	c, prefix := testRedis(t)
	var failures atomic.Int64
	l := NewRedisLimiter(c, PerWindow(3, time.Hour), prefix, WithOnError(func(err error) {
		failures.Add(1)
		t.Errorf("OnError: %v", err)
	}))

	// One every 20 minutes: the test is over long before a token refills.
	for i, want := range []int{2, 1, 0} {
		got := l.Allow("alice")
		if !got.Allowed || got.Remaining != want || got.RetryAfter != 0 || got.Limit != 3 {
			t.Errorf("request %d: got %+v, want allowed with %d remaining", i+1, got, want)
		}
		if want := time.Duration(i+1) * 20 * time.Minute; got.Reset > want || got.Reset < want-time.Second {
			t.Errorf("request %d: Reset = %v, want just under %v", i+1, got.Reset, want)
		}
	}
	got := l.Allow("alice")
	if got.Allowed || got.Remaining != 0 {
		t.Fatalf("request 4: got %+v, want denied", got)
	}
	if got.RetryAfter <= 0 || got.RetryAfter > 20*time.Minute {
		t.Errorf("request 4: RetryAfter = %v, want in (0, 20m]", got.RetryAfter)
	}
	if got.Reset < time.Hour-time.Second || got.Reset > time.Hour {
		t.Errorf("request 4: Reset = %v, want just under 1h", got.Reset)
	}

	h := http.Header{}
	got.SetHeaders(h)
	for k, want := range map[string]string{
		"RateLimit-Policy": `"default";q=3;w=3600`,
		"RateLimit":        `"default";r=0;t=3600`,
		"Retry-After":      "1200",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: got %q, want %q", k, got, want)
		}
	}

	// Keys are independent.
	if got := l.Allow("bob"); !got.Allowed || got.Remaining != 2 {
		t.Errorf("bob: got %+v, want allowed with 2 remaining", got)
	}
	if n := failures.Load(); n != 0 {
		t.Errorf("OnError called %d times", n)
	}
}

// TestRedisLimiterHeadersMatchLocal checks that a client sees the same
// headers whichever limiter answers.
func TestRedisLimiterHeadersMatchLocal(t *testing.T) {
	c, prefix := testRedis(t)
	tests := []struct {
		name string
		l    Limit
	}{
		{name: "per minute", l: PerWindow(10, time.Minute)},
		{name: "named", l: Limit{Rate: 0.5, Burst: 1, Name: "downloads"}},
		{name: "window rounds up", l: Limit{Rate: 0.3, Burst: 2, Name: "links"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local := NewLimiter(tt.l, 10)
			remote := NewRedisLimiter(c, tt.l, prefix+tt.name+":")
			for i := range tt.l.Burst + 1 {
				want, got := http.Header{}, http.Header{}
				local.Allow("k").SetHeaders(want)
				remote.Allow("k").SetHeaders(got)
				for _, k := range []string{"RateLimit-Policy", "RateLimit", "Retry-After"} {
					if got.Get(k) != want.Get(k) {
						t.Errorf("request %d: %s = %q, want %q as from the local limiter", i+1, k, got.Get(k), want.Get(k))
					}
				}
			}
		})
	}
}

// TestRedisLimiterReplicasShareBuckets runs two limiters, as two replicas
// would, on one key: they hand out one burst between them, not one each.
func TestRedisLimiterReplicasShareBuckets(t *testing.T) {
	c, prefix := testRedis(t)
	lim := PerWindow(10, time.Hour)
	replicas := []*RedisLimiter{
		NewRedisLimiter(c, lim, prefix),
		NewRedisLimiter(newTestClient(t, testRedisAddr(t)), lim, prefix),
	}
	allowed := make([]int, len(replicas))
	for i := range 30 {
		if replicas[i%2].Allow("alice").Allowed {
			allowed[i%2]++
		}
	}
	if total := allowed[0] + allowed[1]; total != lim.Burst {
		t.Errorf("allowed %v between the replicas, %d in all, want %d in all", allowed, total, lim.Burst)
	}

	// At once from many goroutines, still one burst.
	var n atomic.Int64
	var wg sync.WaitGroup
	for g := range 20 {
		wg.Go(func() {
			for range 5 {
				if replicas[g%2].Allow("bob").Allowed {
					n.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := n.Load(); got != int64(lim.Burst) {
		t.Errorf("concurrent: allowed %d, want %d", got, lim.Burst)
	}
}

func TestRedisLimiterKeyIsolation(t *testing.T) {
	c, prefix := testRedis(t)
	other := testPrefix(t, c)
	lim := Limit{Rate: 0.001, Burst: 1, Name: "downloads"}
	a := NewRedisLimiter(c, lim, prefix)
	if !a.Allow("alice").Allowed || a.Allow("alice").Allowed {
		t.Fatal("first limiter: want one request allowed, then denied")
	}
	tests := []struct {
		name string
		l    *RedisLimiter
	}{
		{name: "other prefix", l: NewRedisLimiter(c, lim, other)},
		{name: "other limit name", l: NewRedisLimiter(c, Limit{Rate: 0.001, Burst: 1, Name: "links"}, prefix)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.l.Allow("alice"); !got.Allowed {
				t.Errorf("got %+v, want allowed: a fresh bucket", got)
			}
		})
	}
	if n := countKeys(t, c, "rate:"+prefix+"downloads/*"); n != 1 {
		t.Errorf("keys under %q: %d, want 1", prefix+"downloads/", n)
	}
	if n := countKeys(t, c, "rate:"+prefix+"*"); n != 2 {
		t.Errorf("keys under %q: %d, want 2", prefix, n)
	}
}

func TestRedisLimiterUnlimited(t *testing.T) {
	// Never asks Redis: the client points nowhere.
	var failures atomic.Int64
	l := NewRedisLimiter(newTestClient(t, deadAddr(t)), Limit{Rate: rate.Inf}, "p:",
		WithOnError(func(error) { failures.Add(1) }))
	for range 10 {
		if got := l.Allow("k"); !got.Allowed || got.Policy != "" {
			t.Fatalf("got %+v, want allowed without a policy", got)
		}
	}
	if failures.Load() != 0 {
		t.Errorf("OnError called %d times", failures.Load())
	}
	var nl *RedisLimiter
	if got := nl.Allow("k"); !got.Allowed {
		t.Errorf("nil RedisLimiter: got %+v, want allowed", got)
	}
}

// deadAddr returns an address nothing listens on.
func deadAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestRedisLimiterFallback points the limiter at a closed port: the local
// limiter answers, with the same policy, and the failure is reported; during
// the cooldown Redis is not asked at all.
func TestRedisLimiterFallback(t *testing.T) {
	var errs []error // OnError runs in Allow, on this goroutine
	now := t0
	l := NewRedisLimiter(newTestClient(t, deadAddr(t)), PerWindow(3, time.Minute), "p:",
		WithCooldown(10*time.Second),
		WithOnError(func(err error) { errs = append(errs, err) }))
	l.now = func() time.Time { return now }

	for i, want := range []int{2, 1, 0} {
		if got := l.Allow("alice"); !got.Allowed || got.Remaining != want || got.Policy != `"default";q=3;w=60` {
			t.Errorf("request %d: got %+v, want allowed by the local limiter with %d remaining", i+1, got, want)
		}
	}
	got := l.Allow("alice")
	if got.Allowed || got.RetryAfter <= 0 {
		t.Errorf("request 4: got %+v, want denied by the local limiter", got)
	}
	if len(errs) != 1 {
		t.Fatalf("OnError called %d times (%v), want once: the cooldown skips Redis", len(errs), errs)
	}
	if want := `redis rate limit "default": `; !strings.HasPrefix(errs[0].Error(), want) {
		t.Errorf("error %q, want it to start with %q", errs[0], want)
	}

	now = now.Add(10 * time.Second) // the cooldown is over: Redis is tried again
	l.Allow("bob")
	if len(errs) != 2 {
		t.Errorf("after the cooldown: OnError called %d times, want 2", len(errs))
	}
	l.Allow("bob")
	if len(errs) != 2 {
		t.Errorf("in the next cooldown: OnError called %d times, want 2", len(errs))
	}
}

// TestRedisLimiterSlow points the limiter at a server that accepts
// connections and never answers: each check gives up after the timeout.
func TestRedisLimiterSlow(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		conns.Wait()
	})
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				<-done
				c.Close()
			})
		}
	}()

	var failures atomic.Int64
	var last atomic.Value
	l := NewRedisLimiter(newTestClient(t, ln.Addr().String()), PerWindow(3, time.Minute), "p:",
		WithTimeout(50*time.Millisecond),
		WithOnError(func(err error) {
			failures.Add(1)
			last.Store(err)
		}))
	start := time.Now()
	got := l.Allow("alice")
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Errorf("Allow took %v with a 50ms timeout", d)
	}
	if !got.Allowed || got.Remaining != 2 {
		t.Errorf("got %+v, want allowed by the local limiter", got)
	}
	if failures.Load() != 1 {
		t.Fatalf("OnError called %d times, want 1", failures.Load())
	}
	if err := last.Load().(error); !errors.Is(err, context.DeadlineExceeded) {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("error %v, want a timeout", err)
		}
	}
}

// TestRedisLimiterRecovers cuts Redis off and restores it through a relay:
// the limiter falls back while it is gone and returns to it afterwards.
func TestRedisLimiterRecovers(t *testing.T) {
	c, prefix := testRedis(t)
	relay := newRelay(t, testRedisAddr(t))
	var failures atomic.Int64
	now := t0
	l := NewRedisLimiter(newTestClient(t, relay.addr()), PerWindow(2, time.Hour), prefix,
		WithOnError(func(error) { failures.Add(1) }))
	l.now = func() time.Time { return now }
	key := "rate:" + prefix + "default/alice"

	if got := l.Allow("alice"); !got.Allowed || got.Remaining != 1 {
		t.Fatalf("through the relay: got %+v, want allowed with 1 remaining", got)
	}
	if n := c.Exists(context.Background(), key).Val(); n != 1 {
		t.Fatalf("key %s: EXISTS = %d, want 1", key, n)
	}

	relay.setDown(true)
	// The local limiter knows nothing of the request Redis counted.
	if got := l.Allow("alice"); !got.Allowed || got.Remaining != 1 || failures.Load() != 1 {
		t.Errorf("Redis down: got %+v with %d failures, want allowed locally with 1 remaining, 1 failure", got, failures.Load())
	}

	relay.setDown(false)
	if got := l.Allow("alice"); !got.Allowed || got.Remaining != 0 || failures.Load() != 1 {
		t.Errorf("in the cooldown: got %+v with %d failures, want the local limiter's last token", got, failures.Load())
	}
	now = now.Add(DefaultRedisCooldown)
	if got := l.Allow("alice"); !got.Allowed || got.Remaining != 0 {
		t.Errorf("Redis back: got %+v, want Redis's last token", got)
	}
	if got := l.Allow("alice"); got.Allowed {
		t.Errorf("Redis back: got %+v, want denied", got)
	}
	if failures.Load() != 1 {
		t.Errorf("OnError called %d times, want 1", failures.Load())
	}
}

// relay forwards TCP connections to a server until it is set down, which
// cuts every connection and refuses new ones.
type relay struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func newRelay(t *testing.T, target string) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, target: target, conns: map[net.Conn]bool{}}
	r.wg.Go(r.serve)
	t.Cleanup(func() {
		ln.Close()
		r.setDown(true)
		r.wg.Wait()
	})
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.down {
			r.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", r.target)
		if err != nil {
			r.mu.Unlock()
			c.Close()
			continue
		}
		r.conns[c], r.conns[up] = true, true
		r.mu.Unlock()
		r.wg.Go(func() { io.Copy(up, c); up.Close() })
		r.wg.Go(func() { io.Copy(c, up); c.Close() })
	}
}

func (r *relay) setDown(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
	if down {
		for c := range r.conns {
			c.Close()
		}
		clear(r.conns)
	}
}

func TestGCRALimit(t *testing.T) {
	tests := []struct {
		l    Limit
		want time.Duration // period for Burst requests
	}{
		{PerWindow(10, time.Minute), time.Minute},
		{Limit{Rate: 0.3, Burst: 2}, 6666666667},
		{Limit{Rate: 1e12, Burst: 1}, time.Nanosecond},
		{Limit{Rate: 1e-12, Burst: 1}, time.Duration(1<<63 - 1)},
	}
	for _, tt := range tests {
		got := gcraLimit(tt.l)
		if got.Rate != tt.l.Burst || got.Burst != tt.l.Burst || got.Period != tt.want {
			t.Errorf("gcraLimit(%+v) = %+v, want %d per %v, burst %d", tt.l, got, tt.l.Burst, tt.want, tt.l.Burst)
		}
	}
}

func BenchmarkRedisLimiterAllow(b *testing.B) {
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	b.Run("redis", func(b *testing.B) {
		c, prefix := testRedis(b)
		l := NewRedisLimiter(c, Limit{Rate: 1e6, Burst: 100}, prefix)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			l.Allow(keys[i%len(keys)])
			i++
		}
	})
	b.Run("redis-parallel", func(b *testing.B) {
		c, prefix := testRedis(b)
		l := NewRedisLimiter(c, Limit{Rate: 1e6, Burst: 100}, prefix)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				l.Allow(keys[i%len(keys)])
				i++
			}
		})
	})
	b.Run("fallback", func(b *testing.B) {
		// Redis is down and the cooldown runs: the local limiter answers.
		l := NewRedisLimiter(newTestClient(b, deadAddr(b)), Limit{Rate: 1e9, Burst: 100}, "p:",
			WithCooldown(time.Hour))
		l.Allow("trip")
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			l.Allow(keys[i%len(keys)])
			i++
		}
	})
}
