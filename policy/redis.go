package policy

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Defaults for RedisLimiter.
const (
	// DefaultRedisTimeout bounds one check in Redis.
	DefaultRedisTimeout = 100 * time.Millisecond
	// DefaultRedisCooldown is how long a RedisLimiter answers from its local
	// Limiter after Redis failed before it asks Redis again.
	DefaultRedisCooldown = time.Second
)

// RedisLimiter rate-limits requests per key like Limiter, with the buckets
// kept in Redis so that every replica of the gateway draws on the same ones.
// It runs the GCRA script of github.com/go-redis/redis_rate, which reads the
// clock of the Redis server, so replicas need not agree on the time. A bucket
// is one Redis key, "rate:" + prefix + Limit.Name + "/" + key, holding one
// timestamp and expiring once the bucket is full again. It is safe for
// concurrent use.
//
// Results carry the same policy, quota and window as a Limiter with the same
// Limit, so Result.SetHeaders writes the same headers.
//
// When Redis fails (unreachable, slow beyond the timeout, or answering with
// an error), the request is answered by a local Limiter with the same Limit,
// and the error goes to the OnError callback. For a cooldown after a failure
// every request goes straight to the local Limiter; then one request at a
// time tries Redis again, and the first success ends the fallback. The
// choice is availability: an outage of Redis must not take the gateway down,
// nor add the timeout to every request. The price is that, while Redis is
// down, each replica limits on its own (a client spread over n replicas may
// get up to n times the limit) and starts from full buckets. Failing closed
// (refusing everything) would turn a cache outage into a full outage;
// failing open (no limit at all) would hand the gateway to whoever noticed
// first.
type RedisLimiter struct {
	limiter  *redis_rate.Limiter
	gcra     redis_rate.Limit
	prefix   string // prefix + name + "/"
	name     string
	local    *Limiter
	timeout  time.Duration
	cooldown time.Duration
	onError  func(error)
	now      func() time.Time
	// downUntil is when to try Redis again after a failure, in Unix
	// nanoseconds; 0 while Redis answers.
	downUntil atomic.Int64
}

var _ RateLimiter = (*RedisLimiter)(nil)

// RedisOption configures a RedisLimiter.
type RedisOption func(*RedisLimiter)

// WithTimeout bounds each check in Redis (default DefaultRedisTimeout;
// d <= 0 keeps the default). The deadline reaches the socket only if the
// client was built with redis.Options.ContextTimeoutEnabled.
func WithTimeout(d time.Duration) RedisOption {
	return func(r *RedisLimiter) {
		if d > 0 {
			r.timeout = d
		}
	}
}

// WithCooldown sets how long the local Limiter answers alone after Redis
// failed (default DefaultRedisCooldown; d <= 0 keeps the default).
func WithCooldown(d time.Duration) RedisOption {
	return func(r *RedisLimiter) {
		if d > 0 {
			r.cooldown = d
		}
	}
}

// WithOnError calls f with every failed check in Redis, to log or count it;
// the request has been answered by the local Limiter. Default none. f must be
// safe for concurrent use and should not block.
func WithOnError(f func(error)) RedisOption {
	return func(r *RedisLimiter) { r.onError = f }
}

// WithLocalMaxKeys sets how many keys the local fallback Limiter tracks
// (default DefaultMaxKeys; see NewLimiter).
func WithLocalMaxKeys(n int) RedisOption {
	return func(r *RedisLimiter) { r.local = NewLimiter(r.local.Limit(), n) }
}

// NewRedisLimiter returns a RedisLimiter applying l to each key, with its
// buckets in client under prefix (say "streamgate:"; limiters that must not
// share buckets, such as the same limit name under two plans, need different
// prefixes). It panics if l is invalid (see Limit.Validate), as
// configuration is validated before this is called. With l.Rate == rate.Inf
// every request is allowed and Redis is never asked.
//
// Build client with ContextTimeoutEnabled, or a slow Redis holds each request
// for the client's read timeout rather than the limiter's. The caller owns
// client and closes it.
func NewRedisLimiter(client redis.UniversalClient, l Limit, prefix string, opts ...RedisOption) *RedisLimiter {
	local := NewLimiter(l, DefaultMaxKeys)
	l = local.Limit()
	r := &RedisLimiter{
		limiter:  redis_rate.NewLimiter(client),
		prefix:   prefix + l.Name + "/",
		name:     l.Name,
		local:    local,
		timeout:  DefaultRedisTimeout,
		cooldown: DefaultRedisCooldown,
		now:      time.Now,
	}
	if !local.unlimited {
		r.gcra = gcraLimit(l)
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// gcraLimit expresses l for redis_rate, whose rate is a whole number of
// requests per period: Burst requests per window (Burst/Rate seconds) has the
// same emission interval, 1/Rate seconds, as l.
func gcraLimit(l Limit) redis_rate.Limit {
	ns := math.Round(float64(l.Burst) / float64(l.Rate) * float64(time.Second))
	period := time.Duration(math.MaxInt64)
	if ns < math.MaxInt64 {
		period = max(time.Duration(ns), 1)
	}
	return redis_rate.Limit{Rate: l.Burst, Burst: l.Burst, Period: period}
}

// Limit returns the limit applied to each key.
func (r *RedisLimiter) Limit() Limit { return r.local.Limit() }

// Allow checks and counts one request for key now. A nil *RedisLimiter
// allows everything.
func (r *RedisLimiter) Allow(key string) Result {
	if r == nil || r.local.unlimited {
		return Result{Allowed: true}
	}
	if !r.tryRedis() {
		return r.local.Allow(key)
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	res, err := r.limiter.Allow(ctx, r.prefix+key, r.gcra)
	cancel()
	if err != nil {
		r.downUntil.Store(r.now().Add(r.cooldown).UnixNano())
		if r.onError != nil {
			r.onError(fmt.Errorf("redis rate limit %q: %w", r.name, err))
		}
		return r.local.Allow(key)
	}
	if r.downUntil.Load() != 0 {
		r.downUntil.Store(0)
	}
	out := Result{
		Allowed:   res.Allowed > 0,
		Limit:     r.gcra.Burst,
		Remaining: max(res.Remaining, 0),
		Reset:     max(res.ResetAfter, 0),
		Policy:    r.local.policy,
	}
	if !out.Allowed {
		out.RetryAfter = max(res.RetryAfter, time.Nanosecond)
	}
	return out
}

// tryRedis reports whether to ask Redis: always while it answers; after a
// failure, not until the cooldown is over, and then for one caller at a time,
// who claims the next cooldown while it asks.
func (r *RedisLimiter) tryRedis() bool {
	until := r.downUntil.Load()
	if until == 0 {
		return true
	}
	now := r.now()
	if now.UnixNano() < until {
		return false
	}
	return r.downUntil.CompareAndSwap(until, now.Add(r.cooldown).UnixNano())
}
