package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
	"github.com/streamgate/streamgate/usage"
)

// TestStreamBytesAgree: whatever a client does with a body (reads it all,
// reads part and leaves, stalls and leaves), the bytes the ledger counts as
// delivered by Stream are the bytes the emulator counts, to a few segments.
func TestStreamBytesAgree(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	const uid, size = "b16b16b16b16b16b16b16b16b16b16b1", 32 << 20
	e.emu.AddVideo(streamtest.Video{UID: uid, Duration: 600, Size: size, ReadyToStream: true})
	e.emu.SetDownloadReady(uid, stream.Default)
	u, _ := url.Parse(e.gw.url)

	get := func(tok, rng string, read int64, pause time.Duration) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addrGB)}}
		c, err := d.Dial("tcp", u.Host)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		fmt.Fprintf(c, "GET /v1/videos/%s/downloads/default.mp4 HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n%s\r\n", uid, u.Host, tok, rng)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := io.CopyN(io.Discard, resp.Body, read); err != nil {
			t.Error(err)
		}
		time.Sleep(pause) // buffers fill
	}
	for i, read := range []int64{size, 5 << 20, 0, 1 << 20, 0} {
		user := fmt.Sprintf("counter-%d", i)
		get(e.jwt(user, "", nil), "", read, 200*time.Millisecond)
		e.settled(t, user)
	}
	// aria2c's pattern: the whole file, read fast and dropped at the half,
	// beside a range of the second half.
	for i := range 3 {
		user := fmt.Sprintf("segments-%d", i)
		tok := e.jwt(user, "", nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			get(tok, fmt.Sprintf("Range: bytes=%d-\r\n", size/2), size/2, 0)
		}()
		get(tok, "", size/2, 0)
		<-done
		e.settled(t, user)
	}
	e.quiet(t)
	rows, err := e.ledger.Report(t.Context(), usage.Period(t0))
	if err != nil {
		t.Fatal(err)
	}
	var ledger int64
	for _, r := range rows {
		ledger += r.StreamBytes
	}
	emu := e.emu.Stats(uid, stream.Default).Bytes
	t.Logf("ledger %d, emulator %d Stream bytes", ledger, emu)
	if d := ledger - emu; d > 5*1448 || d < -5*1448 {
		t.Errorf("the ledger counted %d bytes from Stream, the emulator %d: %d apart", ledger, emu, d)
	}
}
