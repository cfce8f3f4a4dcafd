// Package policy decides where an end user is and what they may do before a
// download starts: the client IP behind trusted proxies (ClientIP), the
// country of that IP (GeoIP), country allow and block rules per plan
// (CountryPolicy), per-key request rate limits, in this process (Limiter) or
// shared by every replica through Redis (RedisLimiter), and per-key caps on
// simultaneous downloads (Concurrency), per process or, with
// NewRedisConcurrency, across replicas.
//
// Every check except RedisLimiter and a Redis-backed Concurrency is local to one
// process, and all are cheap enough to run on each request. Quotas and billing live in package usage.
package policy
