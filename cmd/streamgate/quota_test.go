package main

import (
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/streamgate/streamgate/stream"
)

// quotaGateway starts a gateway whose basic plan's quota fits exactly fits
// whole downloads, with a concurrency cap of maxConcurrent (0: none), and
// returns videos distinct videos of one length (each request of a test fetches
// its own, so that each is a download of its own), the gateway and the quota in
// minutes.
func quotaGateway(t *testing.T, mode string, fits, maxConcurrent, videos int) ([]string, *testGateway, float64) {
	t.Helper()
	se := newStreamEnv(t)
	uids := make([]string, videos)
	for i := range uids {
		uids[i] = se.addVideo(testDuration, testSize)
	}
	limit := float64(fits) * testMinutes
	gw := startGateway(t, se, gwOptions{
		Metering: mode,
		Plans:    map[string]plan{"basic": {Minutes: limit, MaxConcurrent: maxConcurrent}},
	})
	return uids, gw, limit
}

// TestQuotaUnderConcurrency sends 200 simultaneous whole-file downloads (of 200
// videos) for a user whose monthly quota covers exactly 10 of them: exactly 10 are
// served in full, every other one is refused before its first byte, and the
// ledger never shows more than the quota, neither while they run nor after.
func TestQuotaUnderConcurrency(t *testing.T) {
	const (
		clients = 200
		fits    = 10
	)
	for _, mode := range []string{"proportional", "per-download"} {
		t.Run(mode, func(t *testing.T) {
			uids, gw, limit := quotaGateway(t, mode, fits, 0, clients+1)
			token := portalToken(t, "carol", "basic")
			c := clientFrom(t, ipGB)

			// Watch the ledger while the downloads run: used + reserved never
			// passes the limit.
			stop := make(chan struct{})
			var watched sync.WaitGroup
			var worst atomic.Value
			worst.Store(0.0)
			watched.Add(1)
			go func() {
				defer watched.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					req, _ := http.NewRequest(http.MethodGet, gw.url+"/v1/me/usage", nil)
					req.Header.Set("Authorization", "Bearer "+token)
					resp, err := c.Do(req)
					if err != nil {
						continue
					}
					var u usageFigures
					if resp.StatusCode == http.StatusOK {
						_ = jsonDecode(resp.Body, &u)
					}
					resp.Body.Close()
					if s := u.MinutesUsed + u.MinutesReserved; s > worst.Load().(float64) {
						worst.Store(s)
					}
				}
			}()

			var (
				wg     sync.WaitGroup
				mu     sync.Mutex
				status = map[int]int{}
				full   atomic.Int64
				start  = make(chan struct{})
			)
			for i := range clients {
				uid := uids[i]
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					req, _ := http.NewRequest(http.MethodGet, gw.downloadURL(uid, stream.Default), nil)
					req.Header.Set("Authorization", "Bearer "+token)
					resp, err := c.Do(req)
					if err != nil {
						t.Errorf("download: %v", err)
						return
					}
					defer resp.Body.Close()
					body, err := io.ReadAll(resp.Body)
					mu.Lock()
					status[resp.StatusCode]++
					mu.Unlock()
					switch resp.StatusCode {
					case http.StatusOK:
						if err != nil || len(body) != testSize {
							t.Errorf("a served download got %d bytes (%v), want %d", len(body), err, testSize)
							return
						}
						checkContent(t, body, uid, stream.Default, 0)
						full.Add(1)
					case http.StatusForbidden, http.StatusTooManyRequests:
						if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
							t.Errorf("refusal %d has Content-Type %q, want application/problem+json", resp.StatusCode, ct)
						}
					default:
						t.Errorf("download answered %d: %s", resp.StatusCode, body)
					}
				}()
			}
			close(start)
			wg.Wait()
			close(stop)
			watched.Wait()

			t.Logf("statuses: %v", status)
			if got := full.Load(); got != fits {
				t.Errorf("%d downloads served in full, want exactly %d", got, fits)
			}
			if status[http.StatusOK]+status[http.StatusForbidden]+status[http.StatusTooManyRequests] != clients {
				t.Errorf("statuses %v: want only 200, 403 and 429", status)
			}
			if w := worst.Load().(float64); w > limit+1e-6 {
				t.Errorf("while running, used + reserved reached %.6f minutes, over the limit %.6f", w, limit)
			}

			u := settledUsage(t, c, gw.url, token)
			if !near(u.MinutesUsed, limit, 1e-6) {
				t.Errorf("minutes_used = %.6f, want %.6f (%d whole downloads)", u.MinutesUsed, limit, fits)
			}
			if u.MinutesReserved != 0 || u.MinutesRemaining != 0 || u.MinutesLimit != limit {
				t.Errorf("usage = %+v, want nothing reserved or remaining of %.0f", u, limit)
			}

			// A further download is refused with the quota figures.
			r := do(t, c, http.MethodGet, gw.downloadURL(uids[clients], stream.Default), token, nil)
			if r.status != http.StatusForbidden {
				t.Fatalf("download past the quota: status %d, want 403", r.status)
			}
			body := r.json(t)
			if body["minutes_limit"] != limit || body["minutes_remaining"] != 0.0 || body["minutes_needed"] != testMinutes ||
				body["type"] != "urn:streamgate:problem:quota_exceeded" {
				t.Errorf("quota refusal body = %v", body)
			}

			rep := reportRows(t, gw.cfgPath, u.Period)
			if len(rep.Users) != 1 || rep.Users[0].User != "carol" {
				t.Fatalf("usage report = %+v, want one row for carol", rep)
			}
			row := rep.Users[0]
			if row.Minutes > limit+1e-6 || !near(row.Minutes, limit, 1e-6) {
				t.Errorf("usage report: %.6f minutes, want %.6f", row.Minutes, limit)
			}
			if row.Downloads != fits || row.Deliveries != fits || row.Bytes != fits*testSize {
				t.Errorf("usage report row = %+v, want %d downloads and deliveries of %d bytes", row, fits, testSize)
			}
		})
	}
}

// TestQuotaUnderConcurrencyCap: the same 200 downloads under a concurrency cap
// of 4. Those the cap turns away (429) try again, as a client would, until they
// are served or refused for the quota: exactly 10 are served, the rest end in
// 403, and the ledger never passes the limit.
func TestQuotaUnderConcurrencyCap(t *testing.T) {
	const (
		clients = 200
		fits    = 10
	)
	for _, mode := range []string{"proportional", "per-download"} {
		t.Run(mode, func(t *testing.T) {
			uids, gw, limit := quotaGateway(t, mode, fits, 4, clients)
			token := portalToken(t, "cora", "basic")
			c := clientFrom(t, ipGB)

			var (
				wg       sync.WaitGroup
				served   atomic.Int64
				refused  atomic.Int64
				turnAway atomic.Int64
				start    = make(chan struct{})
			)
			for i := range clients {
				uid := uids[i]
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					for {
						r := do(t, c, http.MethodGet, gw.downloadURL(uid, stream.Default), token, nil)
						switch r.status {
						case http.StatusOK:
							checkContent(t, r.body, uid, stream.Default, 0)
							served.Add(1)
							return
						case http.StatusForbidden:
							refused.Add(1)
							return
						case http.StatusTooManyRequests:
							turnAway.Add(1)
							if r.header.Get("Retry-After") == "" {
								t.Errorf("429 without Retry-After")
								return
							}
							runtime.Gosched()
						default:
							t.Errorf("download answered %d: %s", r.status, r.body)
							return
						}
					}
				}()
			}
			close(start)
			wg.Wait()
			t.Logf("served %d, refused %d, turned away by the cap %d times", served.Load(), refused.Load(), turnAway.Load())
			if served.Load() != fits || refused.Load() != clients-fits {
				t.Errorf("served %d and refused %d, want %d and %d", served.Load(), refused.Load(), fits, clients-fits)
			}
			if turnAway.Load() == 0 {
				t.Error("the concurrency cap never answered: the test did not exercise it")
			}
			u := settledUsage(t, c, gw.url, token)
			if !near(u.MinutesUsed, limit, 1e-6) || u.MinutesReserved != 0 {
				t.Errorf("usage = %+v, want %.0f used and nothing reserved", u, limit)
			}
		})
	}
}
