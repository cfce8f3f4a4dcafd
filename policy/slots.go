package policy

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultSlotLease is how long a slot of a Redis-backed Concurrency lives
// without being renewed: the time a replica that died goes on counting against
// its users' caps.
const DefaultSlotLease = 30 * time.Second

// sharedSlots keeps every replica's slots in Redis. A key's slots are one sorted
// set, prefix + "conc:" + key, whose members are slot IDs scored by when they
// expire. Taking a slot is one script: drop the expired members, count the rest,
// add one if fewer than the cap. The replica holding slots renews them every
// third of the lease while their requests run (a download runs while bytes flow:
// a stalled client or upstream is cut off by the idle timeouts), and removes them
// when the requests end; the slots of a replica that died expire a lease later.
// Expiry reads the Redis server's clock, so replicas need not agree on the time.
//
// When Redis fails, a slot is decided as without Redis, by this replica's own
// count, and is written to Redis by the next renewal that succeeds, so that the
// slots handed out during an outage count again once it is over. This follows
// RedisLimiter: an outage of Redis must not refuse every download nor lift the
// cap, and for its length a user spread over n replicas may run up to n times the
// cap. After a failure Redis is left alone for a cooldown, then one request at a
// time tries it again.
type sharedSlots struct {
	client   redis.UniversalClient
	prefix   string // prefix + "conc:"
	lease    time.Duration
	timeout  time.Duration
	cooldown time.Duration
	onError  func(error)
	// clock, when set, replaces the Redis server's clock in the scripts (tests).
	clock func() time.Time
	now   func() time.Time
	// downUntil is when to try Redis again after a failure, in Unix
	// nanoseconds; 0 while Redis answers.
	downUntil atomic.Int64

	mu   sync.Mutex
	held map[string]map[string]bool // key → IDs of the slots this replica holds

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// ConcurrencyOption configures a Redis-backed Concurrency.
type ConcurrencyOption func(*sharedSlots)

// WithSlotLease sets how long a slot lives unrenewed (default
// DefaultSlotLease; d <= 0 keeps the default). Slots are renewed every third of
// it.
func WithSlotLease(d time.Duration) ConcurrencyOption {
	return func(s *sharedSlots) {
		if d > 0 {
			s.lease = d
		}
	}
}

// WithSlotTimeout bounds each call to Redis (default DefaultRedisTimeout).
func WithSlotTimeout(d time.Duration) ConcurrencyOption {
	return func(s *sharedSlots) {
		if d > 0 {
			s.timeout = d
		}
	}
}

// WithSlotCooldown sets how long this replica's own count decides alone after
// Redis failed (default DefaultRedisCooldown).
func WithSlotCooldown(d time.Duration) ConcurrencyOption {
	return func(s *sharedSlots) {
		if d > 0 {
			s.cooldown = d
		}
	}
}

// WithSlotOnError calls f with every failed call to Redis, to log or count it.
// f must be safe for concurrent use and should not block. Default none.
func WithSlotOnError(f func(error)) ConcurrencyOption {
	return func(s *sharedSlots) { s.onError = f }
}

// WithSlotClock makes slots expire by now rather than by the Redis server's
// clock, and times the cooldown by it (tests). Default: Redis TIME, time.Now.
func WithSlotClock(now func() time.Time) ConcurrencyOption {
	return func(s *sharedSlots) { s.clock, s.now = now, now }
}

// NewRedisConcurrency returns a Concurrency whose cap holds across every
// replica that shares client and prefix (say "streamgate:"). It renews the slots
// it holds in a goroutine until Close. Build client with ContextTimeoutEnabled,
// as for NewRedisLimiter. The caller owns client and closes it after Close.
func NewRedisConcurrency(client redis.UniversalClient, prefix string, opts ...ConcurrencyOption) *Concurrency {
	s := &sharedSlots{
		client:   client,
		prefix:   prefix + "conc:",
		lease:    DefaultSlotLease,
		timeout:  DefaultRedisTimeout,
		cooldown: DefaultRedisCooldown,
		now:      time.Now,
		held:     map[string]map[string]bool{},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	go s.renewLoop()
	return &Concurrency{inUse: make(map[string]int), shared: s}
}

// Shared reports whether the cap holds across replicas (through Redis) rather
// than in this process only.
func (c *Concurrency) Shared() bool { return c != nil && c.shared != nil }

// Close stops renewing the slots this replica holds; they expire a lease later
// unless released first. A Concurrency without Redis has nothing to stop.
func (c *Concurrency) Close() {
	if c == nil || c.shared == nil {
		return
	}
	s := c.shared
	s.once.Do(func() { close(s.stop) })
	<-s.done
}

// acquireShared takes a slot in Redis, or by this replica's count while Redis
// fails.
func (c *Concurrency) acquireShared(key string, max int) (func(), bool) {
	s := c.shared
	id := rand.Text()
	if s.tryRedis() {
		ok, err := s.take(key, id, max)
		if err == nil {
			if !ok {
				return noRelease, false
			}
			c.mu.Lock()
			c.inUse[key]++
			c.mu.Unlock()
			return c.holdShared(key, id), true
		}
		s.failed(fmt.Errorf("redis concurrency slot: %w", err))
	}
	if !c.take(key, max) {
		return noRelease, false
	}
	return c.holdShared(key, id), true
}

// holdShared records slot id of key for renewal and returns its release.
func (c *Concurrency) holdShared(key, id string) func() {
	s := c.shared
	s.mu.Lock()
	if s.held[key] == nil {
		s.held[key] = map[string]bool{}
	}
	s.held[key][id] = true
	s.mu.Unlock()
	var released atomic.Bool
	return func() {
		if !released.CompareAndSwap(false, true) {
			return
		}
		s.mu.Lock()
		delete(s.held[key], id)
		if len(s.held[key]) == 0 {
			delete(s.held, key)
		}
		s.mu.Unlock()
		c.release(key)
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		defer cancel()
		// A failure leaves the slot to expire a lease later.
		if err := s.client.ZRem(ctx, s.prefix+key, id).Err(); err != nil {
			s.failed(fmt.Errorf("redis concurrency release: %w", err))
		}
	}
}

// The scripts take the time in milliseconds from ARGV when given (tests), else
// from the Redis server.
const slotNow = `
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local lease = tonumber(ARGV[2])
`

// takeScript: KEYS[1] the key's set; ARGV now, lease (ms), max, slot ID.
var takeScript = redis.NewScript(slotNow + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[4])
redis.call('PEXPIRE', KEYS[1], lease)
return 1
`)

// renewScript: KEYS[1] the key's set; ARGV now, lease (ms), slot IDs. A slot
// that is gone (expired during an outage, or taken while Redis failed) is added
// back: its request is still running.
var renewScript = redis.NewScript(slotNow + `
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], lease)
return 1
`)

func (s *sharedSlots) nowArg() string {
	if s.clock == nil {
		return ""
	}
	return strconv.FormatInt(s.clock().UnixMilli(), 10)
}

func (s *sharedSlots) take(key, id string, max int) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	n, err := takeScript.Run(ctx, s.client, []string{s.prefix + key},
		s.nowArg(), s.lease.Milliseconds(), max, id).Int()
	if err != nil {
		return false, err
	}
	if s.downUntil.Load() != 0 {
		s.downUntil.Store(0)
	}
	return n == 1, nil
}

// renew extends every slot this replica holds by a lease, in one pipeline.
func (s *sharedSlots) renew() error {
	s.mu.Lock()
	batch := make(map[string][]any, len(s.held))
	for key, ids := range s.held {
		args := []any{s.nowArg(), s.lease.Milliseconds()}
		for id := range ids {
			args = append(args, id)
		}
		batch[key] = args
	}
	s.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(s.timeout, s.lease/3))
	defer cancel()
	// Load the script first: EVALSHA in a pipeline cannot fall back to EVAL.
	if err := renewScript.Load(ctx, s.client).Err(); err != nil {
		return fmt.Errorf("redis concurrency renewal: %w", err)
	}
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for key, args := range batch {
			renewScript.EvalSha(ctx, p, []string{s.prefix + key}, args...)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis concurrency renewal: %w", err)
	}
	return nil
}

func (s *sharedSlots) renewLoop() {
	defer close(s.done)
	t := time.NewTicker(max(s.lease/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.renew(); err != nil && s.onError != nil {
				s.onError(err)
			}
		}
	}
}

func (s *sharedSlots) failed(err error) {
	s.downUntil.Store(s.now().Add(s.cooldown).UnixNano())
	if s.onError != nil {
		s.onError(err)
	}
}

// tryRedis reports whether to ask Redis, as RedisLimiter.tryRedis does.
func (s *sharedSlots) tryRedis() bool {
	until := s.downUntil.Load()
	if until == 0 {
		return true
	}
	now := s.now()
	if now.UnixNano() < until {
		return false
	}
	return s.downUntil.CompareAndSwap(until, now.Add(s.cooldown).UnixNano())
}
