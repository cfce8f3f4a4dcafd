//go:build linux

package acked

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	mib = 1 << 20
	// clientBuffer is the receive buffer the test clients ask for, so that
	// the kernel acknowledges little beyond what the client read.
	clientBuffer = 32 << 10
	// clientHolds bounds what a client's kernel acknowledges without the
	// client reading it (Linux doubles the buffer asked for, and counts
	// overhead against it).
	clientHolds = 512 << 10
)

// gateway is an HTTP server on the counting listener whose /big handler
// hands its connection to the test, writes 32 MiB with a write deadline of
// ?stall= rolled forward before each write, reports what it measured right
// after the last write (a failed one included), and waits for the test to let
// it return; /small writes 1 MiB and returns.
type gateway struct {
	url     string
	addr    string
	conns   chan *Conn // /big's connection, sent before it writes
	reports chan report
	release chan struct{}
}

func startGateway(t *testing.T, tlsOn bool) *gateway {
	t.Helper()
	g := &gateway{conns: make(chan *Conn, 1), reports: make(chan report, 1), release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /small", func(w http.ResponseWriter, r *http.Request) {
		writeBody(w, mib, time.Minute)
	})
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		stall, err := time.ParseDuration(r.URL.Query().Get("stall"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c, _ := FromContext(r.Context())
		g.conns <- c
		n, werr := writeBody(w, 32*mib, stall)
		g.reports <- measure(r, n, werr)
		<-g.release
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = Listen(srv.Listener)
	srv.Config.ConnContext = ConnContext
	if tlsOn {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(g.release) }) // runs before srv.Close
	g.url, g.addr = srv.URL, srv.Listener.Addr().String()
	return g
}

// dial opens a raw client connection with a small receive buffer.
// accepted is a loopback connection through Listen, its server side c having
// received a byte from client; the listener closes with the test.
func accepted(t *testing.T) (c *Conn, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listen(ln)
	t.Cleanup(func() { l.Close() })
	client = dial(t, ln.Addr().String())
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c = s.(*Conn)
	client.Write([]byte("x"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	return c, client
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := c.(*net.TCPConn)
	if err := tc.SetReadBuffer(clientBuffer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	return tc
}

func send(t *testing.T, c net.Conn, path string) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: gateway\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
}

// readSmall reads one /small response and returns the bytes it took on the
// wire.
func readSmall(t *testing.T, c net.Conn) int64 {
	t.Helper()
	cr := &countingReader{r: c}
	br := bufio.NewReader(cr)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	if err != nil || n != mib {
		t.Fatalf("small body: read %d (%v), want %d", n, err, mib)
	}
	if br.Buffered() != 0 {
		t.Fatalf("%d bytes after the small response", br.Buffered())
	}
	return cr.n
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// inq is the number of bytes in c's receive queue: received and
// acknowledged by its kernel, not read yet.
func inq(t *testing.T, c *net.TCPConn) int64 {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := raw.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return int64(n)
}

// poll waits for cond, which depends on acknowledgements the kernels
// exchange on their own time; it fails the test if cond never holds.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 5000 {
		if cond() {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("never: %s", what)
}

// waitStall waits until megabytes written to c are unacknowledged: the peer
// stopped reading and the sender's buffer filled.
func waitStall(t *testing.T, c *Conn) {
	t.Helper()
	poll(t, "megabytes unacknowledged", func() bool {
		n, _ := c.Unacked()
		return n >= 1*mib
	})
}

// waitAcked waits until the gateway has seen the client acknowledge the n
// bytes it read. A client that resets right after reading may never send the
// acknowledgement its kernel was delaying (a reset's acknowledgement field is
// not processed), and those bytes are then not counted as delivered: short by
// one delayed acknowledgement, on the side of billing less.
func waitAcked(t *testing.T, c *Conn, n int64) {
	t.Helper()
	poll(t, "the client's acknowledgements reached the gateway", func() bool {
		u, _ := c.Unacked()
		return c.Written()-u >= n
	})
}

// kernelsAgree checks TCP_INFO's figure against SIOCOUTQ's, read one after
// the other while nothing moves.
func kernelsAgree(t *testing.T, c *Conn) int64 {
	t.Helper()
	info, src := c.Unacked()
	outq, osrc, ok := c.sys.read(&c.written, false)
	if src != SourceTCPInfo || !ok || osrc != SourceOutq {
		t.Fatalf("sources %q and %q (%v), want %q and %q", src, osrc, ok, SourceTCPInfo, SourceOutq)
	}
	if info != outq {
		t.Errorf("unacked from TCP_INFO = %d, from SIOCOUTQ = %d", info, outq)
	}
	return info
}

// readHead reads a response's status line and headers and returns their
// length on the wire.
func readHead(t *testing.T, c net.Conn) (*http.Response, *bufio.Reader, int64) {
	t.Helper()
	cr := &countingReader{r: c}
	br := bufio.NewReader(cr)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res, br, cr.n - int64(br.Buffered())
}

// TestStalledClient: a client that reads nothing while the gateway writes.
// The gateway's written count runs megabytes ahead of what the client's
// kernel acknowledged, and Delivered is what that kernel holds; once the
// client reads it all, nothing is unacknowledged and Delivered is the body.
func TestStalledClient(t *testing.T) {
	tests := []struct {
		name   string
		before int // /small responses on the connection before /big
	}{
		{name: "fresh connection", before: 0},
		{name: "after kept-alive responses", before: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := startGateway(t, false)
			c := dial(t, g.addr)
			var read int64 // bytes the client read before /big
			for range tt.before {
				send(t, c, "/small")
				read += readSmall(t, c)
			}
			send(t, c, "/big?stall=1m")
			conn := <-g.conns

			// Wait for the stall: the client's window closed, megabytes
			// queued in the gateway's kernel.
			// A write that completes between reading the written count and
			// Unacked would skew the pair: read them until the count holds
			// still around the kernel's figure.
			var written, unacked int64
			poll(t, "megabytes unacknowledged, no write moving", func() bool {
				var src Source
				written = conn.Written()
				unacked, src = conn.Unacked()
				if src != SourceTCPInfo {
					t.Fatalf("source %q, want %q", src, SourceTCPInfo)
				}
				return unacked >= 1*mib && conn.Written() == written
			})
			// SIOCOUTQ also holds the part of the blocked write that the
			// kernel took before Write returned, which the written count has
			// not seen yet: at most the 64 KiB chunk.
			if outq, _, _ := conn.sys.read(&conn.written, false); outq < unacked || outq-unacked > 64<<10 {
				t.Errorf("unacked from SIOCOUTQ = %d, from TCP_INFO = %d", outq, unacked)
			}
			queued := inq(t, c) // read after the gateway's figure: it can only have grown
			// The gateway counts as acknowledged at least what the client
			// read and at most that plus what its kernel holds (the client's
			// last acknowledgements may not have reached the gateway yet).
			if acked := written - unacked; acked < read || acked > read+queued {
				t.Errorf("acknowledged %d; the client read %d and its kernel holds %d more", acked, read, queued)
			}

			res, br, head := readHead(t, c)
			body, err := io.Copy(io.Discard, res.Body)
			if err != nil || body != 32*mib || br.Buffered() != 0 {
				t.Fatalf("client read a body of %d (%v, %d left), want %d", body, err, br.Buffered(), 32*mib)
			}
			bodyAtStall := written - read - head
			got, held := Delivered(bodyAtStall, unacked), max(0, queued-head)
			if got > held {
				t.Errorf("Delivered at the stall = %d, the client's kernel held %d body bytes", got, held)
			}
			if bodyAtStall-got < 1*mib || got > clientHolds {
				t.Errorf("Delivered at the stall = %d of %d written, want at most %d and megabytes below",
					got, bodyAtStall, clientHolds)
			}

			rep := <-g.reports
			if rep.writeErr != nil || rep.bodyWritten != body {
				t.Fatalf("handler wrote %d (%v), client read %d", rep.bodyWritten, rep.writeErr, body)
			}
			if w := conn.Written(); w != read+head+body {
				t.Errorf("Written = %d, client read %d", w, read+head+body)
			}
			poll(t, "everything acknowledged", func() bool {
				n, _ := conn.Unacked()
				return n == 0
			})
			kernelsAgree(t, conn)
			n, _ := conn.Unacked()
			if d := Delivered(rep.bodyWritten, n); d != body {
				t.Errorf("Delivered after the client read it all = %d, client got %d", d, body)
			}
		})
	}
}

// TestWriteDeadline: the gateway's write deadline fires on a client that
// reads nothing. net/http closes the connection at once; the figure kept at
// close still tells how little was delivered.
func TestWriteDeadline(t *testing.T) {
	g := startGateway(t, false)
	c := dial(t, g.addr)
	send(t, c, "/big?stall=300ms")
	<-g.conns
	rep := <-g.reports
	if !errors.Is(rep.writeErr, os.ErrDeadlineExceeded) {
		t.Fatalf("write error %v, want a deadline", rep.writeErr)
	}
	if rep.src != SourceTCPInfo {
		t.Fatalf("source %q, want %q", rep.src, SourceTCPInfo)
	}
	if rep.unacked < 1*mib {
		t.Errorf("unacked = %d with a stalled client, want megabytes", rep.unacked)
	}
	if rep.forRequest != rep.delivered {
		t.Errorf("ForRequest = %d, Delivered = %d", rep.forRequest, rep.delivered)
	}
	queued := inq(t, c)

	// The kernel still sends what was queued, then the end of the stream.
	res, _, head := readHead(t, c)
	body, _ := io.Copy(io.Discard, res.Body) // short: unexpected EOF
	if body != rep.bodyWritten {
		t.Errorf("client got %d body bytes, handler wrote %d", body, rep.bodyWritten)
	}
	if rep.conn.Written() != head+body {
		t.Errorf("Written = %d, client read %d", rep.conn.Written(), head+body)
	}
	if held := queued - head; rep.delivered > held || rep.delivered < held-clientHolds {
		t.Errorf("Delivered = %d, the client's kernel held %d body bytes", rep.delivered, held)
	}
	if rep.bodyWritten-rep.delivered < 1*mib {
		t.Errorf("Delivered = %d of %d written, want megabytes below", rep.delivered, rep.bodyWritten)
	}
	if n, src := rep.conn.Unacked(); n != rep.unacked || src != rep.src {
		t.Errorf("Unacked after close = %d (%q), want the %d kept at close", n, src, rep.unacked)
	}
}

// TestClientReset: the client reads 1 MiB and resets; the gateway's write
// fails and its deferred settlement measures after net/http closed the
// connection.
func TestClientReset(t *testing.T) {
	g := startGateway(t, false)
	c := dial(t, g.addr)
	send(t, c, "/big?stall=1m")
	conn := <-g.conns
	got := make([]byte, 1*mib)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	bodyRead := int64(len(got) - headerLen(t, got))
	waitStall(t, conn)
	waitAcked(t, conn, int64(len(got)))
	if err := c.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Close() // sends a reset

	rep := <-g.reports
	if rep.writeErr == nil || errors.Is(rep.writeErr, os.ErrDeadlineExceeded) {
		t.Fatalf("write error %v, want the reset", rep.writeErr)
	}
	if rep.src != SourceTCPInfo {
		t.Fatalf("source %q, want %q", rep.src, SourceTCPInfo)
	}
	if rep.delivered < bodyRead {
		t.Errorf("Delivered = %d, less than the %d body bytes the client read", rep.delivered, bodyRead)
	}
	if rep.delivered > bodyRead+clientHolds {
		t.Errorf("Delivered = %d, more than the %d the client read plus what its kernel could hold", rep.delivered, bodyRead)
	}
	if rep.bodyWritten-rep.delivered < 1*mib {
		t.Errorf("Delivered = %d of %d written, want megabytes below", rep.delivered, rep.bodyWritten)
	}
}

// TestResetOpenSocket: after the peer's reset, both kernel figures still
// answer on a socket this side has not closed.
func TestResetOpenSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listen(ln)
	defer l.Close()
	client := dial(t, ln.Addr().String())
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := s.(*Conn)
	defer c.Close()
	if _, err := client.Write([]byte("GET")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}

	wrote := make(chan error, 1)
	go func() {
		p := make([]byte, 64<<10)
		for {
			if _, err := c.Write(p); err != nil {
				wrote <- err
				return
			}
		}
	}()
	const n = 1 * mib
	if _, err := io.CopyN(io.Discard, client, n); err != nil {
		t.Fatal(err)
	}
	waitStall(t, c)
	waitAcked(t, c, n)
	client.SetLinger(0)
	client.Close()
	if err := <-wrote; errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write error %v, want the reset", err)
	}
	unacked := kernelsAgree(t, c)
	d := Delivered(c.Written(), unacked)
	if d < n || d > n+clientHolds || c.Written()-d < 1*mib {
		t.Errorf("Delivered = %d of %d written, client read %d", d, c.Written(), n)
	}
}

func TestTLSHTTP1(t *testing.T) {
	reports := make(chan report, 1)
	readAll := make(chan struct{})
	const size = 4 * mib
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := writeBody(w, size, time.Minute)
		<-readAll
		var rep report
		for range 5000 { // until the client's last acknowledgement arrives
			if rep = measure(r, n, err); rep.delivered == n {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		reports <- rep
	}))
	srv.Listener = Listen(srv.Listener)
	srv.Config.ConnContext = ConnContext
	srv.StartTLS()
	t.Cleanup(srv.Close)

	res, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.Copy(io.Discard, res.Body)
	close(readAll)
	res.Body.Close()
	if err != nil || got != size {
		t.Fatalf("client read %d (%v), want %d", got, err, size)
	}
	rep := <-reports
	if rep.proto != 1 || !rep.exclusive || rep.conn == nil {
		t.Fatalf("HTTP/%d, exclusive %v, conn found %v; want 1, true, true", rep.proto, rep.exclusive, rep.conn != nil)
	}
	if rep.src != SourceTCPInfo || rep.delivered != size || rep.forRequest != size {
		t.Errorf("Delivered = %d, ForRequest = %d (%q), want %d from %q", rep.delivered, rep.forRequest, rep.src, size, SourceTCPInfo)
	}
	if w := rep.conn.Written(); w < size+1024 {
		t.Errorf("Written = %d, want the %d body bytes plus TLS", w, size)
	}
}

// stall writes to c until the peer's buffers are full.
func stall(t *testing.T, c net.Conn) {
	t.Helper()
	p := make([]byte, 64<<10)
	for {
		if err := c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(p); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
			return
		}
	}
}

// TestDialedConn checks the starting value: a dialed socket's
// tcpi_bytes_acked counts its SYN, which is no byte written.
func TestDialedConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		s, _ := ln.Accept()
		accepted <- s
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(d)
	defer c.Close()
	s := <-accepted
	defer s.Close()
	s.(*net.TCPConn).SetReadBuffer(clientBuffer)

	stall(t, c)
	t.Logf("base %d", c.sys.base)
	unacked := kernelsAgree(t, c)
	if unacked < 1*mib {
		t.Errorf("unacked = %d with a stalled peer, want megabytes", unacked)
	}
	n, err := io.CopyN(io.Discard, s, c.Written())
	if err != nil || n != c.Written() {
		t.Fatalf("peer read %d (%v), want %d", n, err, c.Written())
	}
	poll(t, "everything acknowledged", func() bool {
		n, _ := c.Unacked()
		return n == 0
	})
	kernelsAgree(t, c)
}

// TestUnackedAfterClose: a settlement that runs after the connection closed
// gets the last figure, not "nothing in flight".
func TestUnackedAfterClose(t *testing.T) {
	c, _ := accepted(t)
	stall(t, c)
	before := kernelsAgree(t, c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	after, src := c.Unacked()
	if after != before || src != SourceTCPInfo || before < 1*mib {
		t.Errorf("unacked %d before close, %d (%q) after; want megabytes, equal, %q", before, after, src, SourceTCPInfo)
	}
}

func BenchmarkUnacked(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	l := Listen(ln)
	defer l.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	s, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	d.Write([]byte("GET"))
	s.Read(make([]byte, 3))
	s.Write([]byte(strings.Repeat("x", 1000)))
	c := s.(*Conn)
	if _, src := c.Unacked(); src != SourceTCPInfo {
		b.Fatalf("source %q", src)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.Unacked()
	}
}

// TestUnread: the receiving side sees what its kernel holds unread, and what
// it reads leaves that figure.
func TestUnread(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const sent = 100 << 10
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write(make([]byte, sent))
		_, _ = c.Read(make([]byte, 1)) // until the client closes
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, ok := Unread(c)
		if !ok {
			t.Fatal("Unread is not available on a loopback TCP connection")
		}
		if n == sent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Unread = %d, want %d once everything arrived", n, sent)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if _, err := io.ReadFull(c, make([]byte, 40<<10)); err != nil {
		t.Fatal(err)
	}
	if n, _ := Unread(c); n != sent-40<<10 {
		t.Fatalf("Unread after reading 40 KiB = %d, want %d", n, sent-40<<10)
	}
	// Through a wrapper with NetConn.
	if n, ok := Unread(wrapped{c}); !ok || n != sent-40<<10 {
		t.Fatalf("Unread through a wrapper = %d, %v", n, ok)
	}
	// A tracked connection, abandoned, reads what its socket held and keeps
	// the count.
	tc := Track(c)
	if n, ok := Drained(wrapped{tc}); ok {
		t.Fatalf("Drained of an open tracked connection = %d, want no figure", n)
	}
	if n, ok := Abandon(wrapped{tc}); !ok || n != sent-40<<10 {
		t.Fatalf("Abandon of a tracked connection = %d, %v, want %d", n, ok, sent-40<<10)
	}
	if n, ok := Unread(wrapped{tc}); !ok || n != sent-40<<10 {
		t.Fatalf("Unread of a closed tracked connection = %d, %v, want %d", n, ok, sent-40<<10)
	}
	if n, ok := Unread(c); ok {
		t.Fatalf("Unread of the closed socket itself = %d, want no figure", n)
	}
	// What a transport's close drained, read without closing anything.
	if n, ok := Drained(wrapped{tc}); !ok || n != sent-40<<10 {
		t.Fatalf("Drained of a closed tracked connection = %d, %v, want %d", n, ok, sent-40<<10)
	}
	if n, ok := Drained(c); ok {
		t.Fatalf("Drained of an untracked connection = %d, want no figure", n)
	}
}

type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

// TestCut stalls a client with megabytes queued for it, then ends the
// connection. A plain close lets the kernel send the whole queue after the last
// figure was read, so the client receives more than was counted; a cut resets
// the connection instead, and the client receives exactly what Cut counted as
// delivered.
func TestCut(t *testing.T) {
	for _, cut := range []bool{false, true} {
		t.Run(fmt.Sprintf("cut=%v", cut), func(t *testing.T) {
			c, client := accepted(t)
			stall(t, c)
			waitStall(t, c)
			if cut {
				if !c.Cut() {
					t.Fatal("Cut of a live connection reported false")
				}
			} else if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			unacked, src := c.Unacked()
			counted := c.Written() - unacked
			received, _ := io.Copy(io.Discard, client) // to the FIN, or to the reset
			t.Logf("written %d, counted %d (%s), received %d", c.Written(), counted, src, received)
			if cut {
				if src != SourceCut || received != counted {
					t.Errorf("received %d after a cut, counted %d (%q); want them equal, %q", received, counted, src, SourceCut)
				}
				if c.Cut() {
					t.Error("a second Cut reported true")
				}
				return
			}
			// Without a cut the queue reaches the client after the figure was taken.
			if received <= counted {
				t.Errorf("received %d after a close, counted %d: the gap a cut closes did not show", received, counted)
			}
		})
	}
}

// TestCutAfterPeerReset leaves a connection the peer reset alone: nothing more
// can arrive, and the acknowledged figure stands.
func TestCutAfterPeerReset(t *testing.T) {
	c, client := accepted(t)
	stall(t, c)
	waitStall(t, c)
	before, _ := c.Unacked()
	if err := client.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	client.Close() // a reset: the client's unread bytes are discarded
	poll(t, "the reset reached the server", func() bool {
		_, err := c.Write([]byte("y"))
		return err != nil
	})
	if c.Cut() {
		t.Fatal("Cut of a reset connection reported true")
	}
	if after, src := c.Unacked(); src != SourceTCPInfo || after < before {
		t.Errorf("unacked %d (%q) after the reset, %d before; want at least as many, %q", after, src, before, SourceTCPInfo)
	}
}
