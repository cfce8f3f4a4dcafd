package main

import (
	"crypto/rand"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/streamgate/streamgate/stream"
)

// sharedStores returns a PostgreSQL DSN on a schema of the test's own and a Redis
// address with a key prefix of the test's own, skipping t unless both services are
// named by STREAMGATE_TEST_POSTGRES and STREAMGATE_TEST_REDIS (.ci/run sets them).
func sharedStores(t *testing.T) (dsn, redisAddr, prefix string) {
	t.Helper()
	redisAddr = os.Getenv("STREAMGATE_TEST_REDIS")
	if os.Getenv("STREAMGATE_TEST_POSTGRES") == "" || redisAddr == "" {
		t.Skip("STREAMGATE_TEST_POSTGRES and STREAMGATE_TEST_REDIS are not both set: " +
			"set them (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable and 127.0.0.1:6379) to run the replica tests")
	}
	return pgSchema(t, "sgreplica_"), redisAddr, "sgtest:" + strings.ToLower(rand.Text()) + ":"
}

// TestReplicasShareQuotaAndLimits runs two gateways on one PostgreSQL ledger and
// one Redis: a user's quota and download bucket hold across both, as they would
// behind a load balancer.
func TestReplicasShareQuotaAndLimits(t *testing.T) {
	dsn, redisAddr, prefix := sharedStores(t)
	se := newStreamEnv(t)
	uid := se.addVideo(testDuration, testSize)

	t.Run("quota", func(t *testing.T) {
		// 24 downloads of 24 videos at once, each a download of its own.
		const fits = 3
		limit := fits * testMinutes
		uids := make([]string, 24)
		for i := range uids {
			uids[i] = se.addVideo(testDuration, testSize)
		}
		o := gwOptions{Plans: map[string]plan{"basic": {Minutes: limit}}, LedgerDSN: dsn, RedisAddr: redisAddr, RedisPrefix: prefix + "q:"}
		replicas := []*testGateway{startGateway(t, se, o), startGateway(t, se, o)}
		token := portalToken(t, "rita", "basic")
		c := clientFrom(t, ipGB)

		var (
			wg     sync.WaitGroup
			mu     sync.Mutex
			status = map[int]int{}
		)
		for i := range 24 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := do(t, c, http.MethodGet, replicas[i%2].downloadURL(uids[i], stream.Default), token, nil)
				if r.status == http.StatusOK {
					checkContent(t, r.body, uids[i], stream.Default, 0)
				}
				mu.Lock()
				status[r.status]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if status[http.StatusOK] != fits || status[http.StatusForbidden] != 24-fits {
			t.Errorf("statuses %v across two replicas, want %d × 200 and the rest 403", status, fits)
		}
		for _, gw := range replicas {
			u := settledUsage(t, c, gw.url, token)
			if !near(u.MinutesUsed, limit, 1e-6) || u.MinutesReserved != 0 {
				t.Errorf("replica %s sees %+v, want %.0f used and nothing reserved", gw.url, u, limit)
			}
		}
	})

	t.Run("download bucket", func(t *testing.T) {
		const burst = 4
		o := gwOptions{LedgerDSN: dsn, RedisAddr: redisAddr, RedisPrefix: prefix + "r:", DownloadBurst: burst, DownloadsPerMinute: 1}
		replicas := []*testGateway{startGateway(t, se, o), startGateway(t, se, o)}
		token := portalToken(t, "remy", "basic")
		c := clientFrom(t, ipGB)
		status := map[int]int{}
		for i := range 2 * burst {
			r := do(t, c, http.MethodHead, replicas[i%2].downloadURL(uid, stream.Default), token, nil)
			status[r.status]++
			if r.status == http.StatusTooManyRequests && (r.header.Get("Retry-After") == "" || r.header.Get("RateLimit-Policy") == "") {
				t.Errorf("429 without Retry-After or RateLimit-Policy: %v", r.header)
			}
		}
		// In memory each replica would allow its own burst: 2 × burst in all.
		if status[http.StatusOK] != burst || status[http.StatusTooManyRequests] != burst {
			t.Errorf("statuses %v across two replicas, want %d × 200 then %d × 429", status, burst, burst)
		}
	})
}
