// Package policy decides where an end user is and what they may do before a
// download starts: the client IP behind trusted proxies (ClientIP), the
// country of that IP (GeoIP), country allow and block rules per plan
// (CountryPolicy), per-key request rate limits (Limiter, PlanLimiters) and
// per-key caps on simultaneous downloads (Concurrency).
//
// Every check here is local to one process and cheap enough to run on each
// request. Quotas and billing live in package usage.
package policy
