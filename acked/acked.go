package acked

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Source says where an unacknowledged count came from.
type Source string

const (
	// SourceTCPInfo: Linux TCP_INFO's tcpi_bytes_acked against the bytes
	// written.
	SourceTCPInfo Source = "tcp_info"
	// SourceOutq: the Linux SIOCOUTQ ioctl, the bytes in the send queue not
	// acknowledged yet.
	SourceOutq Source = "siocoutq"
	// SourceWritten: no acknowledgement is known; the count is 0 and callers
	// bill the bytes written.
	SourceWritten Source = "written"
	// SourceCut: the connection was reset by [Conn.Cut]; the count is what
	// the kernel had not sent yet (Linux SIOCOUTQNSD), which the reset
	// discarded. What it had sent may still arrive, so it counts as delivered.
	SourceCut Source = "cut"
)

// Listener is a net.Listener whose connections are [*Conn].
type Listener struct {
	net.Listener
}

var _ net.Listener = (*Listener)(nil)

// Listen wraps inner so that its connections count the bytes written to
// them. Put TLS on top of it, not below it. On Linux, Accept reads TCP_INFO
// once per TCP connection, for the starting value of its acknowledged count.
func Listen(inner net.Listener) *Listener {
	return &Listener{Listener: inner}
}

// Accept waits for the next connection and returns it as a [*Conn].
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newConn(c), nil
}

// Conn counts the bytes written to a connection and asks the kernel how many
// of them the peer has acknowledged. Its methods are safe for concurrent use.
type Conn struct {
	inner   net.Conn
	written atomic.Int64
	sys     sysConn // what the platform file knows about the socket
	// final is the last reading, taken as the connection closes, so that a
	// settlement that runs after the server closed still gets a figure.
	final atomic.Pointer[reading]
}

type reading struct {
	unacked int64
	source  Source
}

var _ net.Conn = (*Conn)(nil)

// newConn wraps c before anything is written to it: the kernel's
// acknowledged count is taken relative to its value now.
func newConn(c net.Conn) *Conn {
	return &Conn{inner: c, sys: probe(c)}
}

// Write writes to the connection and counts the bytes the kernel took.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.inner.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// Written is the number of bytes written to the connection since it was
// accepted, all responses and framing included (after TLS: ciphertext).
func (c *Conn) Written() int64 { return c.written.Load() }

// Unacked is the number of bytes written to the connection that the peer has
// not acknowledged yet, and where that figure comes from. It is a system call
// on Linux TCP connections; call it at checkpoints, not per write, from the
// goroutine that writes: a write completing concurrently moves the written
// count the figure is taken against.
//
// It keeps working after the peer reset or closed the connection, as long as
// this side has not closed it; after [Conn.Close] it returns the figure read
// just before closing. That matters with net/http, which closes the
// connection as soon as a write to it fails, before the handler's deferred
// settlement runs. With [SourceWritten] the count is 0: nothing is known
// beyond the bytes written.
func (c *Conn) Unacked() (int64, Source) {
	if r := c.final.Load(); r != nil {
		return r.unacked, r.source
	}
	if n, src, ok := c.sys.unacked(&c.written); ok {
		return n, src
	}
	// The socket may have closed between the two loads.
	if r := c.final.Load(); r != nil {
		return r.unacked, r.source
	}
	return 0, SourceWritten
}

// Close reads the unacknowledged count a last time (one system call per
// connection), then closes the connection. The kernel may still deliver some
// of those bytes after the close; the figure kept errs on the side of not
// billing them.
func (c *Conn) Close() error {
	if c.final.Load() == nil {
		n, src, ok := c.sys.unacked(&c.written)
		if !ok {
			n, src = 0, SourceWritten
		}
		c.final.CompareAndSwap(nil, &reading{unacked: n, source: src})
	}
	return c.inner.Close()
}

// Cut ends a live connection so that nothing more of what was written reaches
// the peer: it reads what the kernel has not sent yet and resets the
// connection (SO_LINGER 0), which discards those bytes. After it, [Conn.Unacked]
// returns that figure with [SourceCut]: bytes already sent may still arrive
// and count as delivered, those never sent cannot. A server that stops a
// response early (fenced, shutting down, the upstream failed) cuts it, or the
// kernel would go on sending its send queue to a slow reader after the
// delivery was settled, unbilled.
//
// It reports false, and leaves the connection as it is, when it cannot: not a
// Linux TCP socket, or one the peer already closed or reset (then nothing more
// will arrive anyway and the acknowledged figure stands).
func (c *Conn) Cut() bool {
	if c.final.Load() != nil {
		return false
	}
	n, ok := c.sys.cut(&c.written)
	if !ok {
		return false
	}
	if !c.final.CompareAndSwap(nil, &reading{unacked: n, source: SourceCut}) {
		return false
	}
	_ = c.inner.Close()
	return true
}

// CutRequest cuts the connection that serves r ([Conn.Cut]) when r has it to
// itself (HTTP/1.x); on HTTP/2 it does nothing and reports false.
func CutRequest(r *http.Request) bool {
	c, ok := FromContext(r.Context())
	if !ok || !Exclusive(r) {
		return false
	}
	return c.Cut()
}

// Read reads from the connection; reads are not counted.
func (c *Conn) Read(p []byte) (int, error) { return c.inner.Read(p) }

// CloseWrite shuts down the writing side when the wrapped connection can
// (net/http uses it to end a response before closing), and returns
// [errors.ErrUnsupported] otherwise.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.inner.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// NetConn returns the wrapped connection. Bytes written to it directly are
// not counted, and Unacked then overstates what is in flight.
func (c *Conn) NetConn() net.Conn { return c.inner }

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.inner.LocalAddr() }

// RemoteAddr returns the remote network address.
func (c *Conn) RemoteAddr() net.Addr { return c.inner.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.inner.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.inner.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.inner.SetWriteDeadline(t) }

// Delivered is the number of a response body's bytes the peer acknowledged,
// given the body bytes written to the connection and [Conn.Unacked] read
// after them: bodyWritten - unacked, never below 0.
//
// It is exact on HTTP/1.x. TCP delivers bytes in order, and the body being
// written is the last thing written on the connection, so whatever is not
// acknowledged is the tail of this body (and, once the body's own bytes are
// all counted, of the headers or earlier responses before it, hence the
// floor at 0). Some things make it err low, never high: chunked framing and
// TLS record overhead in the unacknowledged tail count against the body, and
// a client that resets right after reading may never send the acknowledgement
// its kernel was delaying (a reset's acknowledgement field is not processed).
//
// bodyWritten must be the bytes that reached the connection. net/http's
// ResponseWriter holds up to a few KiB before passing them on: flush it
// (http.ResponseController.Flush) before reading Unacked at a checkpoint, and
// when a write failed, the bytes it accepted but never sent are not
// delivered.
//
// On HTTP/2 the unacknowledged tail may belong to any stream of the
// connection, so the result means nothing there: see [Exclusive] and
// [ForRequest].
func Delivered(bodyWritten, unacked int64) int64 {
	return max(0, bodyWritten-unacked)
}

// Exclusive reports whether r's response is alone on its connection while
// the handler runs, which is what makes [Delivered] exact: true for HTTP/1.x,
// false for HTTP/2 and anything else, where callers must count the bytes
// written.
func Exclusive(r *http.Request) bool {
	return r.ProtoMajor == 1
}

// ForRequest is the body bytes of r's response the peer acknowledged, given
// the body bytes written, and where the figure comes from. It returns
// bodyWritten and [SourceWritten] when the connection is not known (no
// [ConnContext]), when r is not [Exclusive] on it, or when the kernel's figure
// is not available.
func ForRequest(r *http.Request, bodyWritten int64) (int64, Source) {
	c, ok := FromContext(r.Context())
	if !ok || !Exclusive(r) {
		return bodyWritten, SourceWritten
	}
	unacked, src := c.Unacked()
	return Delivered(bodyWritten, unacked), src
}

type ctxKey struct{}

// ConnContext puts the [*Conn] beneath c in ctx; it is an
// http.Server.ConnContext. It finds it through TLS and other wrappers that
// have a NetConn method, and leaves ctx as it is when there is none.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if ac := find(c); ac != nil {
		return context.WithValue(ctx, ctxKey{}, ac)
	}
	return ctx
}

// FromContext returns the connection that [ConnContext] put in ctx.
func FromContext(ctx context.Context) (*Conn, bool) {
	c, ok := ctx.Value(ctxKey{}).(*Conn)
	return c, ok
}

// find unwraps c until it reaches a *Conn; the bound guards against a
// wrapper that returns itself.
func find(c net.Conn) *Conn {
	for range 16 {
		switch v := c.(type) {
		case *Conn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// Unread is, on the receiving side of a connection, the bytes its kernel has
// received, and so acknowledged to the sender, that nobody has read yet
// (Linux SIOCINQ; false elsewhere, or when c is not a TCP socket or is closed).
// It looks through wrappers with a NetConn method; under TLS the figure is in
// ciphertext bytes. A gateway that abandons an upstream body adds it to what
// it read, to count what the upstream delivered.
func Unread(c net.Conn) (int64, bool) {
	for range 16 {
		if t, ok := c.(*Tracked); ok {
			return t.unread()
		}
		if _, ok := c.(syscall.Conn); ok {
			if _, tcp := c.LocalAddr().(*net.TCPAddr); tcp {
				return unread(c)
			}
			return 0, false
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return 0, false
		}
		c = w.NetConn()
	}
	return 0, false
}

// Tracked is a dialed connection whose [Unread] figure outlives it: an HTTP
// transport closes a connection whose request was cancelled at once, before
// whoever abandoned the body can ask what the socket held. Close reads what the
// socket holds unread, counting it (the sender has delivered those bytes, and
// reading them lets the sender hear so and the close be a FIN rather than a
// reset), keeps the count, and closes.
type Tracked struct {
	net.Conn
	mu     sync.Mutex
	closed bool
	last   int64
	lastOK bool
}

// Track wraps c, a connection this side dialed (for an http.Transport's
// DialContext).
func Track(c net.Conn) *Tracked { return &Tracked{Conn: c} }

// NetConn is the connection beneath.
func (t *Tracked) NetConn() net.Conn { return t.Conn }

// drainLimit bounds what closing a tracked connection reads: a receive buffer's
// worth, on any system that allows one.
const drainLimit = 64 << 20

// Close counts and discards what the socket holds unread, then closes it.
func (t *Tracked) Close() error {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		t.last, t.lastOK = drain(t.Conn, drainLimit)
	}
	t.mu.Unlock()
	return t.Conn.Close()
}

func (t *Tracked) unread() (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return t.last, t.lastOK
	}
	return Unread(t.Conn)
}

// Drained returns what c's socket held unread when it was closed, when c is
// (or wraps) a [*Tracked] that has been closed; ok is false otherwise. Unlike
// [Abandon] it never closes c: it is for a round trip that failed after the
// connection was chosen, whose connection the transport either closed (the
// answer's bytes in its socket were delivered all the same) or kept for
// another request (nothing was left unread).
func Drained(c net.Conn) (int64, bool) {
	t := trackedIn(c)
	if t == nil {
		return 0, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last, t.closed && t.lastOK
}

// Abandon closes c when it is (or wraps) a [*Tracked], and returns what its
// socket held unread: what the sender delivered that nobody read. Otherwise
// it returns [Unread]'s figure and leaves c open.
func Abandon(c net.Conn) (int64, bool) {
	if t := trackedIn(c); t != nil {
		_ = t.Close()
		return t.unread()
	}
	return Unread(c)
}

// trackedIn is the [*Tracked] c is or wraps (through NetConn), or nil.
func trackedIn(c net.Conn) *Tracked {
	for c != nil {
		if t, ok := c.(*Tracked); ok {
			return t
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = w.NetConn()
	}
	return nil
}
