package policy

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestLimiterBurstDenyRefill(t *testing.T) {
	l := NewLimiter(PerWindow(3, 3*time.Second), 100) // 1/s, burst 3
	steps := []struct {
		at        time.Duration
		allowed   bool
		remaining int
		retry     time.Duration
		reset     time.Duration
	}{
		{at: 0, allowed: true, remaining: 2, reset: 1 * time.Second},
		{at: 0, allowed: true, remaining: 1, reset: 2 * time.Second},
		{at: 0, allowed: true, remaining: 0, reset: 3 * time.Second},
		{at: 0, allowed: false, remaining: 0, retry: time.Second, reset: 3 * time.Second},
		{at: 500 * time.Millisecond, allowed: false, remaining: 0, retry: 500 * time.Millisecond, reset: 2500 * time.Millisecond},
		{at: time.Second, allowed: true, remaining: 0, reset: 3 * time.Second},
		{at: time.Second, allowed: false, remaining: 0, retry: time.Second, reset: 3 * time.Second},
		{at: 2500 * time.Millisecond, allowed: true, remaining: 0, reset: 2500 * time.Millisecond},
		{at: 10 * time.Second, allowed: true, remaining: 2, reset: time.Second}, // refilled, not beyond burst
	}
	for i, s := range steps {
		got := l.AllowAt("alice", t0.Add(s.at))
		if got.Allowed != s.allowed || got.Remaining != s.remaining || got.RetryAfter != s.retry || got.Reset != s.reset {
			t.Errorf("step %d at +%v: got allowed=%v remaining=%d retry=%v reset=%v, want %v %d %v %v",
				i, s.at, got.Allowed, got.Remaining, got.RetryAfter, got.Reset, s.allowed, s.remaining, s.retry, s.reset)
		}
		if got.Limit != 3 || got.Saturated {
			t.Errorf("step %d: Limit=%d Saturated=%v, want 3 false", i, got.Limit, got.Saturated)
		}
	}
	// Keys are independent.
	if got := l.AllowAt("bob", t0); !got.Allowed || got.Remaining != 2 {
		t.Errorf("bob: got %+v, want allowed with 2 remaining", got)
	}
}

func TestResultSetHeaders(t *testing.T) {
	tests := []struct {
		name string
		l    Limit
		n    int           // requests at t0 before the one checked
		at   time.Duration // instant of the checked request
		want map[string]string
	}{
		{
			name: "allowed",
			l:    PerWindow(10, time.Minute),
			want: map[string]string{"RateLimit-Policy": `"default";q=10;w=60`, "RateLimit": `"default";r=9;t=6`, "Retry-After": ""},
		},
		{
			name: "denied",
			l:    PerWindow(10, time.Minute),
			n:    10,
			at:   time.Second,
			want: map[string]string{"RateLimit-Policy": `"default";q=10;w=60`, "RateLimit": `"default";r=0;t=59`, "Retry-After": "5"},
		},
		{
			name: "retry after rounds up to at least a second",
			l:    Limit{Rate: 10, Burst: 1, Name: "downloads"},
			n:    1,
			want: map[string]string{"RateLimit-Policy": `"downloads";q=1;w=1`, "RateLimit": `"downloads";r=0;t=1`, "Retry-After": "1"},
		},
		{
			name: "window rounds up",
			l:    Limit{Rate: 0.3, Burst: 2},
			want: map[string]string{"RateLimit-Policy": `"default";q=2;w=7`, "RateLimit": `"default";r=1;t=4`},
		},
		{
			name: "unlimited writes nothing",
			l:    Limit{Rate: rate.Inf},
			want: map[string]string{"RateLimit-Policy": "", "RateLimit": "", "Retry-After": ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(tt.l, 10)
			for range tt.n {
				l.AllowAt("k", t0)
			}
			h := http.Header{}
			l.AllowAt("k", t0.Add(tt.at)).SetHeaders(h)
			for k, want := range tt.want {
				if got := h.Get(k); got != want {
					t.Errorf("%s: got %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestRetryAfterHeaderRounding(t *testing.T) {
	tests := []struct {
		retry time.Duration
		want  string
	}{
		{time.Nanosecond, "1"},
		{999 * time.Millisecond, "1"},
		{time.Second, "1"},
		{time.Second + time.Nanosecond, "2"},
		{90 * time.Second, "90"},
	}
	for _, tt := range tests {
		h := http.Header{}
		Result{RetryAfter: tt.retry, Limit: 1, Policy: `"default";q=1;w=1`}.SetHeaders(h)
		if got := h.Get("Retry-After"); got != tt.want {
			t.Errorf("RetryAfter %v: Retry-After = %q, want %q", tt.retry, got, tt.want)
		}
	}
}

func TestLimiterUnlimitedAndNil(t *testing.T) {
	l := NewLimiter(Limit{Rate: rate.Inf}, 10)
	for i := range 100 {
		if got := l.AllowAt(strconv.Itoa(i), t0); !got.Allowed || got.Policy != "" {
			t.Fatalf("unlimited: got %+v", got)
		}
	}
	if l.Len() != 0 {
		t.Errorf("unlimited: Len = %d, want 0", l.Len())
	}
	var nl *Limiter
	if got := nl.Allow("k"); !got.Allowed {
		t.Errorf("nil Limiter: got %+v, want allowed", got)
	}
}

func TestLimitValidate(t *testing.T) {
	tests := []struct {
		name string
		l    Limit
		want string // "" for valid
	}{
		{name: "valid", l: Limit{Rate: 1, Burst: 1}},
		{name: "unlimited", l: Limit{Rate: rate.Inf}},
		{name: "zero", l: Limit{}, want: "rate 0"},
		{name: "negative rate", l: Limit{Rate: -1, Burst: 1}, want: "rate -1"},
		{name: "no burst", l: Limit{Rate: 1}, want: "burst 0"},
		{name: "bad name", l: Limit{Rate: 1, Burst: 1, Name: `a"b`}, want: `name "a\"b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.l.Validate()
			if tt.want == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	defer func() {
		if recover() == nil {
			t.Error("NewLimiter(invalid): did not panic")
		}
	}()
	NewLimiter(Limit{}, 10)
}

// TestLimiterBoundedFlood sends 100,000 distinct keys through a Limiter that
// may track 1,100 while one user, over the limit, keeps asking. The map stays
// bounded, every passing key is served, and the user never gets a new burst.
func TestLimiterBoundedFlood(t *testing.T) {
	const (
		maxKeys = 1100
		keys    = 100_000
	)
	l := NewLimiter(Limit{Rate: 1, Burst: 10}, maxKeys)
	for range 10 {
		if !l.AllowAt("mallory", t0).Allowed {
			t.Fatal("mallory's burst was refused")
		}
	}
	malloryAllowed := 0
	var now time.Time
	for i := 1; i <= keys; i++ {
		now = t0.Add(time.Duration(i) * time.Millisecond)
		if got := l.AllowAt("user-"+strconv.Itoa(i), now); !got.Allowed {
			t.Fatalf("key %d at +%v: refused (%+v)", i, now.Sub(t0), got)
		}
		if i%10 == 0 {
			if l.AllowAt("mallory", now).Allowed {
				malloryAllowed++
			}
		}
		if n := l.Len(); n > maxKeys {
			t.Fatalf("after key %d: Len = %d, want <= %d", i, n, maxKeys)
		}
	}
	// Refill alone gives one request a second; any eviction would have handed
	// back a burst of 10.
	if limit := int(now.Sub(t0)/time.Second) + 1; malloryAllowed > limit {
		t.Errorf("mallory allowed %d times in %v, want at most %d", malloryAllowed, now.Sub(t0), limit)
	}
	if got := l.AllowAt("mallory", now); got.Allowed || got.Remaining != 0 {
		t.Errorf("mallory at the end: got %+v, want limited", got)
	}
}

// TestLimiterSaturated fills the map with part-empty buckets: new keys are
// refused rather than let in by forgetting anyone, and a forgotten key's
// place is taken only once its bucket is full.
func TestLimiterSaturated(t *testing.T) {
	l := NewLimiter(Limit{Rate: 1, Burst: 2}, 3)
	l.AllowAt("a", t0)
	l.AllowAt("a", t0) // a is empty: full again at t0+2s
	l.AllowAt("b", t0) // b, c: full again at t0+1s
	l.AllowAt("c", t0)

	got := l.AllowAt("d", t0.Add(500*time.Millisecond))
	if got.Allowed || !got.Saturated || got.RetryAfter != 500*time.Millisecond {
		t.Fatalf("d while full: got %+v, want saturated with RetryAfter 500ms", got)
	}
	h := http.Header{}
	got.SetHeaders(h)
	if h.Get("Retry-After") != "1" {
		t.Errorf("d while full: Retry-After = %q, want 1", h.Get("Retry-After"))
	}
	if l.Len() != 3 {
		t.Errorf("Len = %d, want 3", l.Len())
	}

	at := t0.Add(time.Second)
	for _, k := range []string{"d", "e"} { // take b's and c's places
		if got := l.AllowAt(k, at); !got.Allowed || got.Remaining != 1 {
			t.Errorf("%s at +1s: got %+v, want allowed with 1 remaining", k, got)
		}
	}
	if got := l.AllowAt("f", at); got.Allowed || !got.Saturated {
		t.Errorf("f at +1s: got %+v, want saturated", got)
	}
	// a was never forgotten: one token refilled, not a fresh burst of 2.
	if got := l.AllowAt("a", at); !got.Allowed || got.Remaining != 0 {
		t.Errorf("a at +1s: got %+v, want allowed with 0 remaining", got)
	}
	if got := l.AllowAt("a", at); got.Allowed {
		t.Errorf("a again at +1s: got %+v, want limited", got)
	}
	if got := l.AllowAt("b", at); got.Allowed || !got.Saturated {
		t.Errorf("b at +1s (forgotten, map full): got %+v, want saturated", got)
	}
	// At +2s d and e are full again and may give way.
	if got := l.AllowAt("b", t0.Add(2*time.Second)); !got.Allowed || got.Remaining != 1 {
		t.Errorf("b at +2s: got %+v, want allowed with a full bucket", got)
	}
}

func TestLimiterShardedBound(t *testing.T) {
	const maxKeys = 20_000
	l := NewLimiter(Limit{Rate: 1, Burst: 5}, maxKeys)
	if len(l.shards) < 2 {
		t.Fatalf("shards = %d, want several", len(l.shards))
	}
	saturated := 0
	for i := range 100_000 {
		if l.AllowAt(strconv.Itoa(i), t0).Saturated {
			saturated++
		}
	}
	n := l.Len()
	if n > maxKeys || n < maxKeys*9/10 {
		t.Errorf("Len = %d, want at most %d and close to it", n, maxKeys)
	}
	if n+saturated != 100_000 {
		t.Errorf("tracked %d + saturated %d != 100000", n, saturated)
	}
}

func TestLimiterConcurrent(t *testing.T) {
	const (
		goroutines = 50
		each       = 100
		burst      = 500
	)
	l := NewLimiter(Limit{Rate: 1, Burst: burst}, 5000)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if l.AllowAt("shared", t0).Allowed {
					allowed.Add(1)
				}
				l.AllowAt("own-"+strconv.Itoa(g)+"-"+strconv.Itoa(i%10), t0)
				l.Len()
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != burst {
		t.Errorf("shared key allowed %d times at one instant, want exactly %d", got, burst)
	}
	if got, want := l.Len(), 1+goroutines*10; got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
}

func BenchmarkLimiterAllow(b *testing.B) {
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	b.Run("existing", func(b *testing.B) {
		l := NewLimiter(Limit{Rate: 1e9, Burst: 100}, 10_000)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			l.Allow(keys[i%len(keys)])
			i++
		}
	})
	b.Run("existing-parallel", func(b *testing.B) {
		l := NewLimiter(Limit{Rate: 1e9, Burst: 100}, 100_000)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				l.Allow(keys[i%len(keys)])
				i++
			}
		})
	})
	b.Run("evicting", func(b *testing.B) {
		// Every request is a new key taking the place of a full bucket: the
		// map holds half the keys, each full again a millisecond after use.
		l := NewLimiter(Limit{Rate: 1000, Burst: 1}, len(keys)/2)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if got := l.AllowAt(keys[i%len(keys)], t0.Add(time.Duration(i)*time.Millisecond)); !got.Allowed {
				b.Fatalf("request %d refused: %+v", i, got)
			}
			i++
		}
	})
}
