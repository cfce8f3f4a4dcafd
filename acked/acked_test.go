package acked

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDelivered(t *testing.T) {
	tests := []struct {
		name                 string
		bodyWritten, unacked int64
		want                 int64
	}{
		{name: "all acknowledged", bodyWritten: 1000, unacked: 0, want: 1000},
		{name: "tail in flight", bodyWritten: 1000, unacked: 300, want: 700},
		{name: "whole body in flight", bodyWritten: 1000, unacked: 1000, want: 0},
		{name: "headers in flight too", bodyWritten: 1000, unacked: 1200, want: 0},
		{name: "nothing written", bodyWritten: 0, unacked: 0, want: 0},
		{name: "nothing of the body, earlier bytes in flight", bodyWritten: 0, unacked: 500, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Delivered(tt.bodyWritten, tt.unacked); got != tt.want {
				t.Errorf("Delivered(%d, %d) = %d, want %d", tt.bodyWritten, tt.unacked, got, tt.want)
			}
		})
	}
}

// pipeConn is a connection that is not a socket, for what does not need one.
type pipeConn struct{ net.Conn }

func TestForRequestWithoutAcknowledgements(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	c := newConn(pipeConn{a})
	tlsWrapped := tls.Server(c, &tls.Config{})
	tests := []struct {
		name      string
		conn      net.Conn // passed to ConnContext; nil: no ConnContext
		protoMaj  int
		wantFound bool
	}{
		{name: "HTTP/1.1 on a counting conn", conn: c, protoMaj: 1, wantFound: true},
		{name: "HTTP/1.1 under TLS", conn: tlsWrapped, protoMaj: 1, wantFound: true},
		{name: "HTTP/2", conn: tlsWrapped, protoMaj: 2, wantFound: true},
		{name: "conn not wrapped", conn: pipeConn{a}, protoMaj: 1, wantFound: false},
		{name: "no ConnContext", conn: nil, protoMaj: 1, wantFound: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.conn != nil {
				ctx = ConnContext(ctx, tt.conn)
			}
			got, found := FromContext(ctx)
			if found != tt.wantFound || (found && got != c) {
				t.Fatalf("FromContext = %p, %v; want %p, %v", got, found, c, tt.wantFound)
			}
			r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
			r.ProtoMajor = tt.protoMaj
			if Exclusive(r) != (tt.protoMaj == 1) {
				t.Errorf("Exclusive = %v for HTTP/%d", Exclusive(r), tt.protoMaj)
			}
			// A pipe has no kernel figure: the body written is the answer.
			if n, src := ForRequest(r, 12345); n != 12345 || src != SourceWritten {
				t.Errorf("ForRequest = %d, %q; want 12345, %q", n, src, SourceWritten)
			}
		})
	}
}

func TestWriteCounts(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	c := newConn(pipeConn{a})
	got := make(chan int64)
	go func() {
		n, _ := io.Copy(io.Discard, b)
		got <- n
	}()
	for _, size := range []int{1, 0, 4096, 100000} {
		if _, err := c.Write(make([]byte, size)); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	read := <-got
	if c.Written() != read || read != 1+4096+100000 {
		t.Errorf("Written = %d, peer read %d, want both %d", c.Written(), read, 1+4096+100000)
	}
	if n, src := c.Unacked(); n != 0 || src != SourceWritten {
		t.Errorf("Unacked after close = %d, %q; want 0, %q", n, src, SourceWritten)
	}
}

// report is what a test handler saw when it measured its response.
type report struct {
	conn        *Conn
	bodyWritten int64
	unacked     int64
	src         Source
	delivered   int64
	forRequest  int64
	proto       int
	exclusive   bool
	writeErr    error
}

// measure fills a report for r's response, the way a settlement does.
func measure(r *http.Request, bodyWritten int64, werr error) report {
	c, _ := FromContext(r.Context())
	rep := report{conn: c, bodyWritten: bodyWritten, proto: r.ProtoMajor, exclusive: Exclusive(r), writeErr: werr}
	if c != nil {
		rep.unacked, rep.src = c.Unacked()
		rep.delivered = Delivered(bodyWritten, rep.unacked)
	}
	rep.forRequest, _ = ForRequest(r, bodyWritten)
	return rep
}

// writeBody writes size bytes in chunks with a write deadline rolled forward
// before each chunk, as the gateway does, and returns how many the
// ResponseWriter took. Content-Length is set, so no chunked framing mixes
// into the counts.
func writeBody(w http.ResponseWriter, size int64, stall time.Duration) (int64, error) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return 0, err
	}
	chunk := make([]byte, 64<<10)
	var n int64
	for n < size {
		if err := rc.SetWriteDeadline(time.Now().Add(stall)); err != nil {
			return n, err
		}
		k, err := w.Write(chunk[:min(int64(len(chunk)), size-n)])
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, rc.Flush()
}

func TestUnixSocketFallsBackToWritten(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Skipf("no unix sockets here: %v", err)
	}
	reports := make(chan report, 1)
	const size = 3 << 20
	srv := &http.Server{
		ConnContext: ConnContext,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, err := writeBody(w, size, time.Minute)
			reports <- measure(r, n, err)
		}),
	}
	go srv.Serve(Listen(ln))
	t.Cleanup(func() { srv.Close() })

	conn, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(conn) // the server closes after the response
	if err != nil {
		t.Fatal(err)
	}
	rep := <-reports
	if rep.conn == nil {
		t.Fatal("FromContext found no connection")
	}
	if rep.src != SourceWritten || rep.unacked != 0 {
		t.Errorf("Unacked = %d, %q; want 0, %q", rep.unacked, rep.src, SourceWritten)
	}
	if rep.writeErr != nil || rep.bodyWritten != size {
		t.Fatalf("handler wrote %d (%v), want %d", rep.bodyWritten, rep.writeErr, size)
	}
	if rep.delivered != size || rep.forRequest != size {
		t.Errorf("Delivered = %d, ForRequest = %d, want %d", rep.delivered, rep.forRequest, size)
	}
	if got := rep.conn.Written(); got != int64(len(all)) {
		t.Errorf("Written = %d, client read %d bytes", got, len(all))
	}
	if body := len(all) - headerLen(t, all); body != size {
		t.Errorf("client got a body of %d bytes, want %d", body, size)
	}
}

// headerLen is the length of the status line and headers at the start of b.
func headerLen(t *testing.T, b []byte) int {
	t.Helper()
	i := strings.Index(string(b[:min(len(b), 4096)]), "\r\n\r\n")
	if i < 0 {
		t.Fatalf("no end of headers in %q", b[:min(len(b), 200)])
	}
	return i + 4
}

// TestHTTP2IsNotExclusive runs HTTP/2 over TLS on the counting listener:
// the connection is found through TLS, and ForRequest falls back to the
// bytes written, whatever the kernel says.
func TestHTTP2IsNotExclusive(t *testing.T) {
	reports := make(chan report, 1)
	const size = 1 << 20
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := writeBody(w, size, time.Minute)
		reports <- measure(r, n, err)
	}))
	srv.Listener = Listen(srv.Listener)
	srv.Config.ConnContext = ConnContext
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	res, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil || got != size {
		t.Fatalf("client read %d (%v), want %d", got, err, size)
	}
	rep := <-reports
	if rep.proto != 2 || res.ProtoMajor != 2 {
		t.Fatalf("served HTTP/%d, client saw HTTP/%d; want 2", rep.proto, res.ProtoMajor)
	}
	if rep.conn == nil {
		t.Fatal("FromContext found no connection under TLS")
	}
	if rep.exclusive {
		t.Error("Exclusive = true on HTTP/2")
	}
	if rep.forRequest != size {
		t.Errorf("ForRequest = %d on HTTP/2, want the %d bytes written", rep.forRequest, size)
	}
	// Counted below TLS: the handshake and record overhead are in it.
	if w := rep.conn.Written(); w < size+1024 {
		t.Errorf("Written = %d, want more than the %d body bytes plus TLS", w, size)
	}
}

// discardConn takes every write, for measuring the cost of counting.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }
func (discardConn) LocalAddr() net.Addr         { return &net.UnixAddr{Name: "discard", Net: "unix"} }

func BenchmarkWrite(b *testing.B) {
	c := newConn(discardConn{})
	p := make([]byte, 32<<10)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		c.Write(p)
	}
}

func BenchmarkWriteParallel(b *testing.B) {
	c := newConn(discardConn{})
	p := make([]byte, 32<<10)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Write(p)
		}
	})
}

func TestCloseWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listen(ln)
	defer l.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := s.(*Conn)
	if _, err := c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The peer sees the end of the stream and can still answer.
	if got, err := io.ReadAll(client); string(got) != "bye" || err != nil {
		t.Fatalf("peer read %q (%v), want %q", got, err, "bye")
	}
	if _, err := client.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	client.Close()
	if got, err := io.ReadAll(c); string(got) != "ok" || err != nil {
		t.Errorf("read %q (%v) after CloseWrite, want %q", got, err, "ok")
	}

	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if err := newConn(pipeConn{a}).CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("CloseWrite on a pipe = %v, want %v", err, errors.ErrUnsupported)
	}
}
