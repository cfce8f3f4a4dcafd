package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

// The ledger outage of TestFencingAcrossLedgerOutage, scaled down from
// production's minutes to seconds: with a stale threshold of fenceStale a
// replica fences a delivery after 3/4 of it without a ledger write, and
// heartbeats every quarter of it.
const (
	fenceStale     = 3 * time.Second
	fenceOutage    = fenceStale + 2*time.Second // longer than the threshold
	fenceBeforeCut = 1500 * time.Millisecond    // bytes flowing and checkpointed before the outage
	fenceSize      = 3 << 20
	fenceRate      = 256 << 10 // bytes a second: each download would take 12 s
	fenceDownloads = 8
)

// TestFencingAcrossLedgerOutage runs two replicas on one PostgreSQL ledger
// with a stale threshold of a few seconds. Slow downloads, paced by Stream
// (the emulator's bandwidth fault), run on both when the ledger becomes
// unreachable for longer than the threshold, then reachable again.
//
// The shared PostgreSQL server is never stopped (other tests use it): the
// replicas reach it through a TCP relay (pgProxy) that, to stop, closes every
// connection it relays and its listening socket, so queries in flight fail
// and new connections are refused, as when the server stops; it restarts by
// listening on the same port again.
//
// Every client then resumes what it did not receive from the other replica.
// The test checks that every byte a client received was billed exactly once:
// each request's delivery row holds exactly the bytes its client read (none
// sent after the fence goes unbilled, none billed that did not arrive), each
// user's download is billed the whole file once, the quota's used minutes are
// the deliveries' sum and nothing stays reserved or open; and that no replica
// settled a delivery as recovered while its owner was still sending it (a
// body paced by Stream reaches its client as it is sent, so the client's last
// byte is the owner's last send). Without fencing the owners keep sending
// through the outage and are recovered under way.
func TestFencingAcrossLedgerOutage(t *testing.T) {
	runFenceOutage(t, false)
}

// TestFencingSlowReaders is the same outage with downloads paced by clients
// that read slowly, so that when a replica fences a delivery its socket still
// holds megabytes the client has not acknowledged. A delivery the gateway
// stops early resets its connection (acked.Cut), so that the kernel does not
// go on sending that queue after the delivery settled; one whose body was all
// written waits for the client's acknowledgements as it reads on.
func TestFencingSlowReaders(t *testing.T) {
	runFenceOutage(t, true)
}

func runFenceOutage(t *testing.T, clientPaced bool) {
	if testing.Short() {
		t.Skip("runs a ledger outage of several seconds; skipped with -short")
	}
	direct := pgTestSchema(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	relay := newPGProxy(t, u.Host)
	u.Host = relay.Addr()

	se := newStreamEnv(t)
	// Checkpoints every 2 s (the default), heartbeats of the deliveries idle
	// since the last round every 750 ms: without fencing, a reaper finds an
	// owner's rows stale when the ledger returns before the owner's next
	// checkpoint freshens them.
	o := gwOptions{LedgerDSN: u.String(), StaleAfter: fenceStale}
	replicas := []*testGateway{startGateway(t, se, o), startGateway(t, se, o)}
	c := clientFrom(t, ipGB)

	fetches := make([]*fenceFetch, fenceDownloads)
	for i := range fetches {
		f := &fenceFetch{user: fmt.Sprintf("fence-%d-%s", i, strings.ToLower(rand.Text()[:6])), clientPaced: clientPaced}
		f.uid = se.addVideo(testDuration, fenceSize)
		if !f.clientPaced {
			se.emu.SetFault(f.uid, streamtest.Fault{BytesPerSecond: fenceRate})
		}
		f.token = portalToken(t, f.user, "basic")
		f.owner, f.other = replicas[i%2], replicas[(i+1)%2]
		fetches[i] = f
	}

	// Every download has its headers and first bytes before the outage.
	var started, ended sync.WaitGroup
	for _, f := range fetches {
		started.Add(1)
		ended.Add(1)
		go func() {
			defer ended.Done()
			f.first = f.get(c, f.owner, 0, started.Done)
		}()
	}
	started.Wait()
	time.Sleep(fenceBeforeCut)
	relay.Stop()
	stoppedAt := time.Now()
	time.Sleep(fenceOutage)
	relay.Start()
	t.Logf("ledger unreachable for %s (stale_after %s)", time.Since(stoppedAt).Round(time.Millisecond), fenceStale)
	ended.Wait()

	for _, f := range fetches {
		if f.first.err != nil {
			t.Fatalf("%s: first request: %v", f.user, f.first.err)
		}
		if f.first.got < fenceSize {
			// What the client did not receive, from the other replica, at
			// full speed.
			se.emu.SetFault(f.uid, streamtest.Fault{})
			f.resume = f.get(c, f.other, f.first.got, nil)
			if f.resume.err != nil {
				t.Fatalf("%s: resume from %d: %v", f.user, f.first.got, f.resume.err)
			}
		}
	}

	db := pgConnect(t, direct)
	waitFor(t, 30*time.Second, "every delivery to settle", func() bool {
		var open int
		if err := db.QueryRow(context.Background(),
			`SELECT COUNT(*) FROM deliveries WHERE settled_at IS NULL`).Scan(&open); err != nil {
			t.Fatal(err)
		}
		return open == 0
	})

	cut := 0
	for _, f := range fetches {
		if f.first.got < fenceSize {
			cut++
		}
		checkFenceLedger(t, db, f)
	}
	// The outage must have met live downloads, or the test proved nothing.
	// Slow readers may all finish, still reading while the ledger is away.
	live := 0
	for _, f := range fetches {
		if f.first.last > stoppedAt.UnixMicro() {
			live++
		}
	}
	if clientPaced && live == len(fetches) {
		t.Logf("%d of %d downloads still reading when the ledger went away", live, len(fetches))
	} else if cut == 0 {
		t.Errorf("no download was cut by the outage: every one of %d ran to its end while the ledger was away", len(fetches))
	}
	t.Logf("%d of %d downloads cut by the outage", cut, len(fetches))
}

// fenceFetch is one user's download of one video during the outage.
type fenceFetch struct {
	user, uid, token string
	clientPaced      bool
	owner, other     *testGateway
	first, resume    fenceRead
}

// fenceRead is what one request received.
type fenceRead struct {
	requestID string
	status    int
	got       int64
	// last is when its last byte arrived, Unix microseconds.
	last int64
	err  error
}

// get fetches the file from off on from gw, checking every byte, and calls
// headers, when set, once the response's headers are in (or the request
// failed). A body cut short is not an error: got says how far it went.
func (f *fenceFetch) get(c *http.Client, gw *testGateway, off int64, headers func()) (out fenceRead) {
	once := sync.OnceFunc(func() {
		if headers != nil {
			headers()
		}
	})
	defer once()
	out.requestID = "fence" + strings.ToLower(rand.Text()[:12])
	req, err := http.NewRequest(http.MethodGet, gw.downloadURL(f.uid, stream.Default), nil)
	if err != nil {
		out.err = err
		return out
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	req.Header.Set("X-Request-ID", out.requestID)
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := c.Do(req)
	if err != nil {
		out.err = err
		return out
	}
	defer resp.Body.Close()
	out.status = resp.StatusCode
	if want := map[bool]int{true: http.StatusPartialContent, false: http.StatusOK}[off > 0]; resp.StatusCode != want {
		b, _ := io.ReadAll(resp.Body)
		out.err = fmt.Errorf("status %d, want %d: %s", resp.StatusCode, want, b)
		return out
	}
	once()
	// The body is read as it comes and checked at the end, so that the
	// client keeps up with a body paced by Stream even on a busy machine.
	body := make([]byte, 0, fenceSize-off)
	start := time.Now()
	for {
		n, err := resp.Body.Read(body[len(body):min(len(body)+256<<10, cap(body))])
		if n > 0 {
			body = body[:len(body)+n]
			out.got += int64(n)
			out.last = time.Now().UnixMicro()
		}
		if err != nil || len(body) == cap(body) {
			// io.ErrUnexpectedEOF: the gateway cut the body short.
			break
		}
		if f.clientPaced && headers != nil {
			if wait := time.Until(start.Add(time.Duration(float64(out.got) / fenceRate * float64(time.Second)))); wait > 0 {
				time.Sleep(wait)
			}
		}
	}
	if want := streamtest.Content(f.uid, stream.Default, off, out.got); !bytes.Equal(body, want) {
		out.err = fmt.Errorf("body from %d differs from Stream's bytes", off)
	}
	return out
}

// fenceRow is a delivery row as the ledger holds it.
type fenceRow struct {
	id, requestID, status, reason string
	acked, minutes, settledAt     int64
}

// checkFenceLedger compares what f's client received with what the ledger
// billed for it.
func checkFenceLedger(t *testing.T, db *pgx.Conn, f *fenceFetch) {
	t.Helper()
	ctx := context.Background()
	rows, err := db.Query(ctx, `SELECT id, request_id, status, reason, acked, minutes_micro, COALESCE(settled_at, 0)
		FROM deliveries WHERE user_id = $1`, f.user)
	if err != nil {
		t.Fatal(err)
	}
	byRequest := map[string]fenceRow{}
	var minutes int64
	for rows.Next() {
		var r fenceRow
		if err := rows.Scan(&r.id, &r.requestID, &r.status, &r.reason, &r.acked, &r.minutes, &r.settledAt); err != nil {
			t.Fatal(err)
		}
		byRequest[r.requestID] = r
		minutes += r.minutes
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	kind := map[bool]string{true: "client-paced", false: "Stream-paced"}[f.clientPaced]
	for _, rd := range []fenceRead{f.first, f.resume} {
		if rd.requestID == "" {
			continue
		}
		r, ok := byRequest[rd.requestID]
		if !ok {
			t.Errorf("%s (%s): no delivery row for request %s", f.user, kind, rd.requestID)
			continue
		}
		if r.acked != rd.got {
			t.Errorf("%s (%s): delivery %s (%s: %s) billed %d bytes; its client received %d",
				f.user, kind, r.id, r.status, r.reason, r.acked, rd.got)
		}
		// Recovery by a replica must follow the owner's last byte: only a
		// body paced by Stream reaches its client as it is sent, so only
		// there is the client's last byte the owner's last send.
		if r.status == "recovered" && !f.clientPaced && r.settledAt < rd.last {
			t.Errorf("%s (%s): delivery %s settled as recovered %s before its owner's last byte reached the client (%s)",
				f.user, kind, r.id, time.Duration(rd.last-r.settledAt)*time.Microsecond, r.reason)
		}
	}
	if len(byRequest) != map[bool]int{true: 2, false: 1}[f.resume.requestID != ""] {
		t.Errorf("%s: %d delivery rows, want one per request", f.user, len(byRequest))
	}

	var held string
	var size, billed, full int64
	if err := db.QueryRow(ctx, `SELECT held, size, billed_micro, full_micro FROM downloads WHERE user_id = $1`,
		f.user).Scan(&held, &size, &billed, &full); err != nil {
		t.Fatalf("%s: the download row: %v", f.user, err)
	}
	if want := fmt.Sprintf("0-%d", fenceSize); held != want || size != fenceSize {
		t.Errorf("%s (%s): download holds %q of %d bytes, want %q: bytes the client received are missing from the bill",
			f.user, kind, held, size, want)
	}
	if billed != full || minutes != full {
		t.Errorf("%s (%s): download billed %d µmin, its deliveries %d; the whole file once is %d", f.user, kind, billed, minutes, full)
	}
	var used, reserved int64
	if err := db.QueryRow(ctx, `SELECT used_micro, reserved_micro FROM quota_periods WHERE user_id = $1`,
		f.user).Scan(&used, &reserved); err != nil {
		t.Fatalf("%s: the quota row: %v", f.user, err)
	}
	if used != minutes || reserved != 0 {
		t.Errorf("%s: quota used %d µmin and reserved %d; its deliveries billed %d and nothing is open", f.user, used, reserved, minutes)
	}
}

// pgTestSchema returns STREAMGATE_TEST_POSTGRES on a schema of the test's own,
// dropped when the test ends, and skips t when the variable is not set.
func pgTestSchema(t *testing.T) string { return pgSchema(t, "sgfence_") }

// pgSchema is pgTestSchema with the schema's name starting with prefix.
func pgSchema(t *testing.T, prefix string) string {
	t.Helper()
	base := os.Getenv("STREAMGATE_TEST_POSTGRES")
	if base == "" {
		t.Skip("STREAMGATE_TEST_POSTGRES is not set: set it (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) " +
			"to run the replicas against a PostgreSQL ledger")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to STREAMGATE_TEST_POSTGRES: %v", err)
	}
	defer conn.Close(ctx)
	schema := prefix + strings.ToLower(rand.Text())
	ident := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+ident); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop schema: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+ident+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// pgConnect opens a connection of the test's own to dsn.
func pgConnect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
