package policy

import (
	"container/heap"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/streamgate/streamgate/stream"
)

// DefaultMaxKeys is how many keys a Limiter tracks when NewLimiter is given
// maxKeys <= 0.
const DefaultMaxKeys = 100_000

// Limit is a token bucket: Burst requests at once, refilled at Rate per
// second. Burst requests per Burst/Rate seconds is the quota advertised in
// the RateLimit-Policy header.
type Limit struct {
	// Rate is the refill rate in requests per second. rate.Inf means no
	// limit. Otherwise it must be > 0. No default.
	Rate rate.Limit
	// Burst is the bucket size, the requests allowed at once after an idle
	// period; at least 1 unless Rate is rate.Inf. No default.
	Burst int
	// Name names the policy in the RateLimit headers: letters, digits and
	// "-", "_", ".", ":", at most 64. Default "default".
	Name string
}

// PerWindow returns a Limit of q requests per window w, refilled smoothly:
// PerWindow(10, time.Minute) allows 10 at once and one more every 6 seconds.
func PerWindow(q int, w time.Duration) Limit {
	return Limit{Rate: rate.Limit(float64(q) / w.Seconds()), Burst: q}
}

// Validate reports what is wrong with l, if anything.
func (l Limit) Validate() error {
	var errs []error
	if l.Rate != rate.Inf {
		if !(l.Rate > 0) || math.IsInf(float64(l.Rate), 0) {
			errs = append(errs, fmt.Errorf("rate %v: must be a positive number of requests per second", float64(l.Rate)))
		}
		if l.Burst < 1 {
			errs = append(errs, fmt.Errorf("burst %d: must be at least 1", l.Burst))
		}
	}
	if !validPolicyName(l.Name) {
		errs = append(errs, fmt.Errorf("name %q: use at most 64 letters, digits, '-', '_', '.' or ':'", l.Name))
	}
	return errors.Join(errs...)
}

func validPolicyName(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !stream.URLSafeByte(c) && c != '.' && c != ':' {
			return false
		}
	}
	return true
}

// windowSeconds is the time to refill an empty bucket, in whole seconds.
func (l Limit) windowSeconds() int64 {
	w := float64(l.Burst) / float64(l.Rate)
	if r := math.Round(w); math.Abs(w-r) < 1e-6 {
		return int64(r)
	}
	return int64(math.Ceil(w))
}

// RateLimiter checks and counts one request for a key. Limiter does it in
// this process; RedisLimiter does it in Redis, so that every replica draws on
// the same buckets.
type RateLimiter interface {
	Allow(key string) Result
}

var _ RateLimiter = (*Limiter)(nil)

// Result is the outcome of one rate-limit check, with what the RateLimit
// headers need.
type Result struct {
	// Allowed reports whether the request may go on; it used one token.
	Allowed bool
	// RetryAfter is how long until a request would be allowed; zero when
	// Allowed.
	RetryAfter time.Duration
	// Limit is the quota: the bucket size (Limit.Burst).
	Limit int
	// Remaining is the whole number of requests allowed right now, after
	// this one.
	Remaining int
	// Reset is how long until the bucket is full again (Remaining == Limit).
	Reset time.Duration
	// Policy is the RateLimit-Policy item, `"default";q=10;w=60`: quota q
	// requests per window of w seconds. "" when there is no limit.
	Policy string
	// Saturated reports a denial because the Limiter was tracking as many
	// keys as it may and none of them could be dropped (see Limiter); the key
	// itself had not been seen.
	Saturated bool
}

// SetHeaders writes the RateLimit-Policy and RateLimit fields of
// draft-ietf-httpapi-ratelimit-headers (-09/-10: structured-field items with
// a quoted policy name) and, when the request is denied, Retry-After:
//
//	RateLimit-Policy: "default";q=10;w=60
//	RateLimit: "default";r=3;t=5
//	Retry-After: 6
//
// r is Remaining; t is Reset in whole seconds, rounded up. Retry-After is
// RetryAfter in whole seconds, rounded up, at least 1. Without a policy (no
// limit) nothing is written.
func (r Result) SetHeaders(h http.Header) {
	if r.Policy == "" {
		return
	}
	name := r.Policy
	if i := strings.IndexByte(name, ';'); i >= 0 {
		name = name[:i]
	}
	h.Set("RateLimit-Policy", r.Policy)
	h.Set("RateLimit", name+";r="+strconv.Itoa(max(r.Remaining, 0))+";t="+strconv.FormatInt(ceilSeconds(r.Reset), 10))
	if !r.Allowed {
		h.Set("Retry-After", strconv.FormatInt(max(ceilSeconds(r.RetryAfter), 1), 10))
	}
}

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// Limiter rate-limits requests per key (a user ID, a client IP) with one
// token bucket (a rate.Limiter) per key, in a map of bounded size. It is safe
// for concurrent use; the map is split into shards, each with its own lock.
//
// Bounding the map must not give anyone a fresh burst: a key forgotten while
// its bucket is part-empty would come back full. So when the map holds
// maxKeys keys, a new key may only take the place of a key whose bucket is
// full again at that instant (idle long enough that forgetting it changes
// nothing); the new key even reuses that bucket, which is indistinguishable
// from a new one. Buckets are kept in a min-heap by the instant they become
// full, so the candidate is always at the top: admission is one comparison
// and O(log n) heap work, with no scan.
//
// If no bucket is full, the new key is denied (Result.Saturated, with
// RetryAfter until the first bucket fills). That is the choice that keeps
// limits honest under a flood of distinct keys: keys already tracked, and so
// every user over their limit, keep their state, and the flood is refused
// rather than served unmetered. Size maxKeys above the number of keys active
// within one window (Burst/Rate) so that ordinary traffic never sees it.
type Limiter struct {
	limit     Limit
	policy    string
	unlimited bool
	seed      maphash.Seed
	shards    []limiterShard
}

type limiterShard struct {
	mu      sync.Mutex
	max     int
	buckets map[string]*bucket
	heap    bucketHeap
}

type bucket struct {
	key    string
	lim    *rate.Limiter
	fullAt time.Time // when the bucket holds Burst tokens again
	index  int       // position in the shard's heap
}

// fullEpsilon absorbs float rounding when asking whether a bucket is full.
const fullEpsilon = 1e-9

// maxShards bounds the lock split; shards hold at least minShardKeys keys so
// that a small maxKeys is not cut into slices uneven enough to matter.
const (
	maxShards    = 16
	minShardKeys = 1024
)

// NewLimiter returns a Limiter applying l to each key, tracking at most
// maxKeys keys (DefaultMaxKeys when maxKeys <= 0). It panics if l is invalid
// (see Limit.Validate), as configuration is validated before this is called.
// With l.Rate == rate.Inf every request is allowed and nothing is tracked.
func NewLimiter(l Limit, maxKeys int) *Limiter {
	if err := l.Validate(); err != nil {
		panic("policy: NewLimiter: " + err.Error())
	}
	if l.Name == "" {
		l.Name = "default"
	}
	lim := &Limiter{limit: l, seed: maphash.MakeSeed()}
	if l.Rate == rate.Inf {
		lim.unlimited = true
		return lim
	}
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	lim.policy = `"` + l.Name + `";q=` + strconv.Itoa(l.Burst) + ";w=" + strconv.FormatInt(l.windowSeconds(), 10)
	n := 1
	for n < maxShards && maxKeys/(2*n) >= minShardKeys {
		n *= 2
	}
	lim.shards = make([]limiterShard, n)
	for i := range lim.shards {
		// Rounding down keeps the total at or under maxKeys.
		lim.shards[i] = limiterShard{max: maxKeys / n, buckets: make(map[string]*bucket)}
	}
	return lim
}

// Limit returns the limit applied to each key.
func (l *Limiter) Limit() Limit { return l.limit }

// Allow checks and counts one request for key now. A nil *Limiter allows
// everything.
func (l *Limiter) Allow(key string) Result {
	return l.AllowAt(key, time.Now())
}

// AllowAt checks and counts one request for key at now. A denied request
// uses no token.
func (l *Limiter) AllowAt(key string, now time.Time) Result {
	if l == nil || l.unlimited {
		return Result{Allowed: true}
	}
	s := &l.shards[l.shardIndex(key)]
	s.mu.Lock()
	defer s.mu.Unlock()

	b := s.buckets[key]
	if b == nil {
		if b = s.admit(key, now, l.limit); b == nil {
			wait := max(s.heap[0].fullAt.Sub(now), time.Nanosecond)
			return Result{
				RetryAfter: wait,
				Limit:      l.limit.Burst,
				Reset:      wait,
				Policy:     l.policy,
				Saturated:  true,
			}
		}
	}
	allowed := b.lim.AllowN(now, 1)
	tokens := b.lim.TokensAt(now)
	toFull := l.limit.durationFor(float64(l.limit.Burst) - tokens)
	if allowed {
		// A used token moves the instant the bucket is full again later.
		b.fullAt = now.Add(toFull)
		heap.Fix(&s.heap, b.index)
	}
	r := Result{
		Allowed:   allowed,
		Limit:     l.limit.Burst,
		Remaining: int(max(tokens, 0)),
		Reset:     toFull,
		Policy:    l.policy,
	}
	if !allowed {
		r.RetryAfter = max(l.limit.durationFor(1-tokens), time.Nanosecond)
	}
	return r
}

// admit starts tracking key, or returns nil if the shard is full and no
// bucket in it is full. s.mu is held.
func (s *limiterShard) admit(key string, now time.Time, l Limit) *bucket {
	// The key is cloned so that a long-lived entry never pins a larger string
	// (a header, a token) that key might be a slice of.
	key = strings.Clone(key)
	if len(s.buckets) < s.max {
		b := &bucket{key: key, lim: rate.NewLimiter(l.Rate, l.Burst), fullAt: now}
		s.buckets[key] = b
		heap.Push(&s.heap, b)
		return b
	}
	old := s.heap[0]
	if old.fullAt.After(now) {
		return nil
	}
	// fullAt is rounded to the nanosecond, so allow for a nanosecond's worth
	// of tokens, and for float noise, when asking whether it is full.
	tokens := old.lim.TokensAt(now)
	if tokens < float64(l.Burst)-(fullEpsilon+float64(l.Rate)*1e-9) {
		return nil
	}
	// A full bucket is a new bucket: hand it over instead of allocating,
	// unless it is only within the slack of full.
	delete(s.buckets, old.key)
	if tokens < float64(l.Burst) {
		old.lim = rate.NewLimiter(l.Rate, l.Burst)
	}
	old.key = key
	old.fullAt = now
	s.buckets[key] = old
	heap.Fix(&s.heap, old.index)
	return old
}

// durationFor is the time to gather tokens, to the nearest nanosecond:
// rounding up would turn float noise (a token count of 0.1666…) into an extra
// whole second in the headers.
func (l Limit) durationFor(tokens float64) time.Duration {
	if tokens <= 0 {
		return 0
	}
	ns := math.Round(tokens / float64(l.Rate) * float64(time.Second))
	if ns >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ns)
}

func (l *Limiter) shardIndex(key string) int {
	if len(l.shards) == 1 {
		return 0
	}
	return int(maphash.String(l.seed, key) & uint64(len(l.shards)-1))
}

// Len returns how many keys are tracked.
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.buckets)
		s.mu.Unlock()
	}
	return n
}

// bucketHeap orders buckets by the instant they are full again.
type bucketHeap []*bucket

func (h bucketHeap) Len() int           { return len(h) }
func (h bucketHeap) Less(i, j int) bool { return h[i].fullAt.Before(h[j].fullAt) }
func (h bucketHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *bucketHeap) Push(x any) {
	b := x.(*bucket)
	b.index = len(*h)
	*h = append(*h, b)
}

func (h *bucketHeap) Pop() any {
	old := *h
	b := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return b
}
