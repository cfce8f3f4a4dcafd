package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// RedisRefusals keeps refusals in Redis, so that the admin API of any replica
// finds a refusal any replica answered. Each refusal is one key
// (PREFIXrefusal:REQUEST_ID, SET with EX ttl); a sorted set of the keys by time
// bounds their number: past the most kept, the oldest are deleted, so a flood of
// refusals cannot fill Redis. Writes happen in the background: Put never holds
// a request, and when Redis is slow refusals are dropped, not queued without
// end.
type RedisRefusals struct {
	c      redis.Cmdable
	prefix string
	ttl    time.Duration
	max    int
	log    *zap.Logger

	queue chan Refusal
	stop  chan struct{}
	done  sync.WaitGroup
}

// putRefusal stores one refusal and trims the index: KEYS[1] the index,
// KEYS[2] the refusal's key; ARGV json, ttl in seconds, now in ms, max.
var putRefusal = redis.NewScript(`
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], KEYS[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]) * 1000)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 1000)
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[1], over)
  for i = 1, #old, 2 do redis.call('DEL', old[i]) end
end
return 1
`)

// refusalQueue is how many refusals may wait for Redis before new ones are
// dropped.
const refusalQueue = 1024

// NewRedisRefusals starts a store in c under prefix keeping at most n
// refusals, each for ttl. Close stops it.
func NewRedisRefusals(c redis.Cmdable, prefix string, n int, ttl time.Duration, log *zap.Logger) *RedisRefusals {
	if log == nil {
		log = zap.NewNop()
	}
	ttl = max(ttl, time.Second)
	s := &RedisRefusals{c: c, prefix: prefix, ttl: ttl, max: max(n, 1), log: log,
		queue: make(chan Refusal, refusalQueue), stop: make(chan struct{})}
	s.done.Add(1)
	go s.run()
	return s
}

func (s *RedisRefusals) key(id string) string { return s.prefix + "refusal:" + id }

// Put queues r for writing; a full queue drops it.
func (s *RedisRefusals) Put(r Refusal) {
	select {
	case s.queue <- r:
	default:
		s.log.Warn("refusal not kept: Redis is behind", zap.String("request_id", r.RequestID))
	}
}

func (s *RedisRefusals) run() {
	defer s.done.Done()
	for {
		select {
		case r := <-s.queue:
			s.write(r)
		case <-s.stop:
			// What is queued is written before Close returns.
			for {
				select {
				case r := <-s.queue:
					s.write(r)
				default:
					return
				}
			}
		}
	}
}

func (s *RedisRefusals) write(r Refusal) {
	b, err := json.Marshal(r)
	if err != nil {
		s.log.Warn("refusal not kept", zap.String("request_id", r.RequestID), zap.Error(err))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err = putRefusal.Run(ctx, s.c, []string{s.prefix + "refusals", s.key(r.RequestID)},
		string(b), strconv.FormatInt(int64(s.ttl/time.Second), 10), strconv.FormatInt(time.Now().UnixMilli(), 10), s.max).Err()
	if err != nil {
		s.log.Warn("refusal not kept: Redis failed", zap.String("request_id", r.RequestID), zap.Error(err))
	}
}

// Get returns the refusal of request ID id, if Redis still keeps it.
func (s *RedisRefusals) Get(ctx context.Context, id string) (Refusal, bool, error) {
	b, err := s.c.Get(ctx, s.key(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Refusal{}, false, nil
	}
	if err != nil {
		return Refusal{}, false, err
	}
	var r Refusal
	if err := json.Unmarshal(b, &r); err != nil {
		return Refusal{}, false, err
	}
	return r, true, nil
}

// Close writes what is queued and stops the writer.
func (s *RedisRefusals) Close() {
	close(s.stop)
	s.done.Wait()
}

var _ RefusalStore = (*RedisRefusals)(nil)
