package bench_test

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/streamgate/streamgate/bench"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

// TestStack checks that the stack the benchmarks measure serves correct bytes on
// every path they take, and that its ledger bills what the emulator delivered.
func TestStack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const size = 256 << 10
	v := bench.DefaultVideos(1, size, 120)[0]
	st, err := bench.New(ctx, bench.Options{Videos: []streamtest.Video{v}, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := bench.NewClient(4)
	defer c.CloseIdleConnections()
	tok, err := st.UserToken("alice")
	if err != nil {
		t.Fatal(err)
	}
	want := streamtest.Content(v.UID, stream.Default, 0, size)
	start := time.Now()

	get := func(url, bearer, rng string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}

	direct, err := st.DirectURL(v.UID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	link, err := bench.CreateLink(ctx, c, st.LinksURL(v.UID), tok)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url, bearer, rng string
		status                 int
		body                   []byte
	}{
		{"gateway", st.DownloadURL(v.UID), tok, "", http.StatusOK, want},
		{"resume", st.DownloadURL(v.UID), tok, "bytes=100000-", http.StatusPartialContent, want[100000:]},
		{"link", link, "", "", http.StatusOK, want},
		{"direct", direct, "", "", http.StatusOK, want},
		{"no credential", st.DownloadURL(v.UID), "", "", http.StatusUnauthorized, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := get(tc.url, tc.bearer, tc.rng)
			if status != tc.status {
				t.Fatalf("status %d, want %d", status, tc.status)
			}
			if tc.body != nil && !bytes.Equal(body, tc.body) {
				t.Fatalf("got %d bytes that differ from the %d expected", len(body), len(tc.body))
			}
		})
	}

	if err := st.Quiesce(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := st.Billing(ctx, start, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Direct delivery is the emulator's alone; the ledger sees the rest. The
	// user pays for the file once (the resume and the link ask for bytes the
	// download holds); the ledger's Stream minutes are what the emulator sent.
	directMinutes := v.Duration / 60
	emu := got.Emulator.ProportionalMinutes - directMinutes
	if emu <= 0 || math.Abs(got.StreamMinutes-emu) > 0.01*emu {
		t.Errorf("ledger counted %.4f Stream minutes, emulator delivered %.4f through the gateway", got.StreamMinutes, emu)
	}
	if math.Abs(got.LedgerMinutes-v.Duration/60) > 1e-6 {
		t.Errorf("ledger billed %.4f minutes, want one duration (%.4f)", got.LedgerMinutes, v.Duration/60)
	}

	// An abandoned download, as the load harness makes them, by another user
	// (alice holds the whole file). What the emulator had sent into socket
	// buffers when the client left never reached the user: the ledger bills no
	// more than the emulator counted, and something.
	cutTok, err := st.UserToken("cut-user")
	if err != nil {
		t.Fatal(err)
	}
	cut := bench.Get{URL: st.DownloadURL(v.UID), Bearer: cutTok, Limit: 1000, Trace: true}
	if got, err := cut.Do(ctx, c); err != nil || got.Status != http.StatusOK || got.Bytes != 1000 || got.TTFB <= 0 {
		t.Fatalf("cut download: %+v, %v", got, err)
	}
	if err := st.Quiesce(ctx); err != nil {
		t.Fatal(err)
	}
	if st.Mints() != 1 {
		t.Errorf("gateway minted %d Stream tokens, want 1 (cached)", st.Mints())
	}
	after, err := st.Billing(ctx, start, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ledgerCut := after.LedgerMinutes - got.LedgerMinutes
	emuCut := after.Emulator.ProportionalMinutes - got.Emulator.ProportionalMinutes
	if ledgerCut <= 0 || ledgerCut > emuCut+1e-9 {
		t.Errorf("abandoned download: ledger billed %.6f minutes, emulator sent %.6f", ledgerCut, emuCut)
	}
}
