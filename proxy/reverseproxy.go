package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/streamgate/streamgate/acked"
	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/usage"
)

type upstreamCtxKey struct{}

var upstreamKey = upstreamCtxKey{}

// upstream is what one proxied request carries through the ReverseProxy hooks.
type upstream struct {
	path      string // /TOKEN/downloads/FILE
	filename  string
	delivery  delivery     // nil for HEAD
	read      atomic.Int64 // body bytes Stream delivered: read, or unread in the socket when abandoned
	conn      net.Conn     // the connection the answer came on
	headersOK bool         // a 2xx (or 304/412/416) answer was passed on
	err       error        // why the proxy answered instead of Stream
	// body is Stream's body once its answer is passed on; serveDownload
	// copies it to the client and closes it.
	body   *idleBody
	length int64 // the body's Content-Length, -1 unknown
}

func (u *upstream) failure() string {
	if u.err == nil {
		return "no_body"
	}
	return "upstream_failed"
}

// passHeaders are the response headers the client sees from Stream; the rest of
// Stream's headers stay behind.
var passHeaders = []string{
	"Content-Type", "Content-Length", "Content-Range", "Accept-Ranges",
	"Content-Disposition", "Etag", "Last-Modified", "Date",
}

// ledgerError is a ledger failure while the response headers were handled.
type ledgerError struct{ err error }

func (e ledgerError) Error() string { return "ledger: " + e.err.Error() }
func (e ledgerError) Unwrap() error { return e.err }

// logWriter turns the lines a log.Logger writes into warnings of the process
// log, redacted.
type logWriter struct{ log *zap.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Warn(redactText(strings.TrimSpace(string(p))))
	return len(p), nil
}

// statusError is an upstream answer the gateway does not pass on.
type statusError struct{ status int }

func (e statusError) Error() string { return fmt.Sprintf("stream answered %d", e.status) }

func (s *Server) newReverseProxy() http.Handler {
	tr := s.Transport
	if tr == nil {
		tr = &http.Transport{
			Proxy: nil,
			DialContext: trackedDial(&net.Dialer{
				Timeout:   s.cfg.DialTimeout,
				KeepAlive: 30 * time.Second,
			}),
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          512,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   s.cfg.DialTimeout,
			ResponseHeaderTimeout: s.cfg.ResponseHeaderTimeout,
			ExpectContinueTimeout: time.Second,
			// Stream's bytes are passed on as they are.
			DisableCompression: true,
			// The buffers of each connection to Stream: a request's line and
			// headers (the token is most of it) and an answer's headers fit in
			// 2 KiB; the body is read straight into the copy buffer. The
			// default 4 KiB each would be held by every download in flight.
			WriteBufferSize: 2 << 10,
			ReadBufferSize:  2 << 10,
		}
	}
	target := s.delivery
	return &httputil.ReverseProxy{
		// What ReverseProxy reports itself (a body copy that failed) goes to the
		// process log, redacted like every other line.
		ErrorLog:  log.New(logWriter{s.log.Named("proxy")}, "", 0),
		Transport: tr,
		// ReverseProxy copies no body: ModifyResponse hands Stream's body to
		// serveDownload (copyBody), whose buffers fit the client. What it
		// copies is http.NoBody, which a small buffer reads as well as any.
		BufferPool: noBodyBuffers{},
		Rewrite: func(pr *httputil.ProxyRequest) {
			up := pr.In.Context().Value(upstreamKey).(*upstream)
			// The target is always the configured delivery host, never anything
			// from the request.
			u := *target
			u.Path = strings.TrimRight(target.Path, "/") + up.path
			u.RawPath = ""
			u.RawQuery = ""
			if up.filename != "" {
				u.RawQuery = url.Values{"filename": {up.filename}}.Encode()
			}
			pr.Out.URL = &u
			pr.Out.Host = target.Host
			if up.delivery != nil {
				// Learn the connection, to count what Stream delivered into
				// its socket should the body be abandoned.
				pr.Out = pr.Out.WithContext(httptrace.WithClientTrace(pr.Out.Context(), &httptrace.ClientTrace{
					GotConn: func(i httptrace.GotConnInfo) { up.conn = i.Conn },
				}))
			}
			for _, h := range []string{"Authorization", "Cookie", "Forwarded", "X-Forwarded-For",
				"X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "X-Request-Id", "Accept-Encoding", "Referer", "Origin"} {
				pr.Out.Header.Del(h)
			}
			pr.Out.Header.Set("User-Agent", "streamgate")
		},
		ModifyResponse: func(resp *http.Response) error {
			up := resp.Request.Context().Value(upstreamKey).(*upstream)
			switch {
			case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent:
			case resp.StatusCode == http.StatusNotModified, resp.StatusCode == http.StatusPreconditionFailed,
				resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
				// Nothing is billed for these; they pass on as the client's own answer.
			default:
				return statusError{resp.StatusCode}
			}
			keep := http.Header{}
			for _, h := range passHeaders {
				if v := resp.Header.Values(h); len(v) > 0 {
					keep[h] = v
				}
			}
			keep.Set("Cache-Control", "private, no-store")
			resp.Header = keep
			if up.delivery != nil {
				size, body := answerBytes(resp)
				if err := up.delivery.Respond(resp.StatusCode, size, resp.Header.Get("Etag"), body); err != nil {
					var qe *usage.QuotaError
					if !errors.As(err, &qe) {
						err = ledgerError{err}
					}
					return err
				}
			}
			up.headersOK = true
			body := newIdleBody(resp.Body, s.cfg.UpstreamIdleTimeout, &up.read)
			if resp.ProtoMajor == 1 {
				body.conn = up.conn
			}
			up.body, up.length = body, resp.ContentLength
			resp.Body = http.NoBody
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			up := r.Context().Value(upstreamKey).(*upstream)
			up.err = err
			up.headersOK = false
			// A round trip cancelled, or an answer refused, after the
			// connection was chosen: what Stream had delivered into its socket
			// is counted from the close (acked.Tracked).
			if up.conn != nil {
				n, ok := acked.Drained(up.conn)
				if !ok && errors.Is(err, context.Canceled) {
					// The transport is tearing the connection down, and may
					// not have closed it yet: close it here, counting.
					n, ok = acked.Abandon(up.conn)
				}
				if ok {
					up.read.Add(n)
				}
			}
			// The problem body is the gateway's, not Stream's: it must not be
			// counted as delivered, or Abort would bill it as a download.
			if mw, ok := w.(*meteredWriter); ok {
				w = mw.ResponseWriter
			}
			handler(func(http.ResponseWriter, *http.Request) error {
				return s.upstreamError(r, err)
			}).ServeHTTP(w, r)
		},
	}
}

// upstreamError maps a failed round trip to Stream's delivery: the meter's
// refusals first, then upstreamFailure.
func (s *Server) upstreamError(r *http.Request, err error) error {
	var qe *usage.QuotaError
	var le ledgerError
	switch {
	case errors.As(err, &qe):
		return s.quotaError(err)
	case errors.As(err, &le):
		return ledgerUnavailable("usage could not be recorded; retry later", err)
	}
	return upstreamFailure(r.Context(), streamDelivery, err)
}

// trackedDial dials with d and tracks each connection (acked.Track), so that
// what Stream had delivered into its socket is known even after the transport
// closed it for a request the client abandoned.
func trackedDial(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return acked.Track(c), nil
	}
}

// answerBytes is what an answer reveals of the file: its size (0 unknown) and
// the bytes its body carries, from Content-Range or, for a 200, the whole file.
func answerBytes(resp *http.Response) (size int64, body billing.Interval) {
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength < 0 {
			return 0, billing.Interval{Start: 0, End: billing.Unknown}
		}
		return resp.ContentLength, billing.Interval{Start: 0, End: resp.ContentLength}
	case http.StatusPartialContent:
		// bytes FIRST-LAST/SIZE, SIZE possibly "*"
		spec, ok := strings.CutPrefix(resp.Header.Get("Content-Range"), "bytes ")
		rng, total, ok2 := strings.Cut(spec, "/")
		first, last, ok3 := strings.Cut(rng, "-")
		a, err1 := strconv.ParseInt(first, 10, 64)
		b, err2 := strconv.ParseInt(last, 10, 64)
		if !ok || !ok2 || !ok3 || err1 != nil || err2 != nil || b < a {
			return 0, billing.Interval{Start: 0, End: billing.Unknown}
		}
		if n, err := strconv.ParseInt(total, 10, 64); err == nil {
			size = n
		}
		return size, billing.Interval{Start: a, End: b + 1}
	}
	return 0, billing.Interval{}
}

// idleBody closes an upstream body that has delivered nothing for idle: the
// copy then fails, and the download settles what it delivered.
type idleBody struct {
	io.ReadCloser
	idle  time.Duration
	timer *time.Timer
	read  *atomic.Int64 // counts the bytes Stream delivered
	// conn is the HTTP/1 connection the body comes on: when the body is
	// abandoned, what its socket holds unread was delivered by Stream too, and
	// Stream bills it.
	conn net.Conn
	eof  bool
}

func newIdleBody(rc io.ReadCloser, idle time.Duration, read *atomic.Int64) *idleBody {
	b := &idleBody{ReadCloser: rc, idle: idle, read: read}
	b.timer = time.AfterFunc(idle, func() { rc.Close() })
	return b
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.timer.Reset(b.idle)
		b.read.Add(int64(n))
	}
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	if !b.eof && b.conn != nil {
		// What Stream delivered that was not read: counted, and drained so
		// that Stream hears it arrived.
		if n, ok := acked.Abandon(b.conn); ok {
			b.read.Add(n)
		}
		b.conn = nil // counted once, however often the body is closed
	}
	return b.ReadCloser.Close()
}

// meteredWriter tells the delivery how many body bytes were written, and
// remembers whether writing to the client failed (the client left). With pace
// set, the body goes no faster than the user's bucket allows (pace.go).
type meteredWriter struct {
	http.ResponseWriter
	d delivery
	// pace is the user's bytes-per-second bucket, nil when the plan sets none;
	// ctx (the request's) ends a wait on it.
	pace       *rate.Limiter
	ctx        context.Context
	written    atomic.Int64
	clientGone bool
	fenced     bool
}

// errFenced stops a body whose delivery has lost the shared ledger.
var errFenced = errors.New("delivery fenced: the ledger has not been reachable")

func (w *meteredWriter) Write(b []byte) (int, error) {
	if w.pace == nil {
		return w.write(b)
	}
	n, err := paceWrite(w.ctx, w.pace, b, w.write)
	if err != nil && w.ctx.Err() != nil {
		w.clientGone = true
	}
	return n, err
}

// write passes b on and counts it.
func (w *meteredWriter) write(b []byte) (int, error) {
	if w.d.Fenced() {
		w.fenced = true
		return 0, errFenced
	}
	n, err := w.ResponseWriter.Write(b)
	if n > 0 {
		w.written.Add(int64(n))
		w.d.Wrote(int64(n))
	}
	if err != nil {
		w.clientGone = true
	}
	return n, err
}

func (w *meteredWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *meteredWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// noBodyBuffers hands ReverseProxy the buffer it reads http.NoBody with.
type noBodyBuffers struct{}

// noBodyBuf is shared: http.NoBody never writes into the buffer it is given.
// (An empty one would make ReverseProxy allocate 32 KiB of its own.)
var noBodyBuf = make([]byte, 512)

func (noBodyBuffers) Get() []byte { return noBodyBuf }
func (noBodyBuffers) Put([]byte)  {}
