package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/streamgate/streamgate/stream"
)

// The middleware order, outermost first: request ID → log → recover → drain
// (refuseWhileDraining, health.go) → request edges (checkEdges, edges.go) →
// handler. Auth and limits run inside the handlers, because which credential a
// route takes and which bucket it spends differ per route.
func (s *Server) middleware(h http.Handler) http.Handler {
	return s.requestID(s.logRequests(s.recoverPanics(s.refuseWhileDraining(s.checkEdges(h)))))
}

type ctxKey int

const (
	infoKey ctxKey = iota
	clientIPKey
)

// requestInfo is what the request log reports. Handlers write to it and never
// read it back: a value a handler needs (client address, country) is passed as
// a value.
type requestInfo struct {
	id       string
	route    string
	path     string // the path with grants and tokens redacted
	user     string
	video    string
	country  string
	clientIP netip.Addr
	err      *Error
	bytes    atomic.Int64
}

func infoFrom(ctx context.Context) *requestInfo {
	ri, _ := ctx.Value(infoKey).(*requestInfo)
	return ri
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// validRequestID accepts a caller's X-Request-ID only when it is short and plain, so
// nothing odd reaches the logs.
func validRequestID(s string) bool {
	return len(s) > 0 && len(s) <= 64 && stream.URLSafe(s)
}

func (s *Server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-ID", id)
		ri := &requestInfo{id: id, path: redactPath(r.URL.Path)}
		ri.clientIP = s.ClientIP.FromRequest(r)
		ctx := context.WithValue(r.Context(), infoKey, ri)
		ctx = context.WithValue(ctx, clientIPKey, ri.clientIP)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// statusWriter records the status and counts the body bytes written. A
// download body (a 200 or 206 of a download route, not HEAD) counts as in
// flight from its status line until the request ends.
type statusWriter struct {
	http.ResponseWriter
	status int
	info   *requestInfo
	rec    Recorder
	head   bool
	// ended ends the in-flight count of a download body; nil for other answers.
	ended func()
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.answered(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.answered(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.info.bytes.Add(int64(n))
	return n, err
}

func (w *statusWriter) answered(code int) {
	w.status = code
	if !w.head && (code == http.StatusOK || code == http.StatusPartialContent) && downloadRoutes[w.info.route] {
		w.ended = w.rec.DownloadStarted()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		ri := infoFrom(r.Context())
		sw := &statusWriter{ResponseWriter: w, info: ri, rec: s.Metrics, head: r.Method == http.MethodHead}
		defer func() {
			status := sw.status
			if status == 0 {
				// Nothing was written: the client left before an answer.
				status = 499
			}
			s.record(r, ri, sw, status)
			lvl := zapcore.InfoLevel
			switch {
			case status >= 500 && status != 499:
				lvl = zapcore.ErrorLevel
			case status >= 400:
				lvl = zapcore.WarnLevel
			}
			ce := s.log.Check(lvl, "request")
			if ce == nil {
				return
			}
			fields := []zap.Field{
				zap.String("request_id", ri.id),
				zap.String("method", r.Method),
				zap.String("route", ri.route),
				zap.String("path", ri.path),
				zap.Int("status", status),
				zap.Int64("bytes", ri.bytes.Load()),
				zap.Duration("duration", s.now().Sub(start)),
				zap.String("client_ip", addrString(ri.clientIP)),
			}
			if ri.user != "" {
				fields = append(fields, zap.String("user", ri.user))
			}
			if ri.video != "" {
				fields = append(fields, zap.String("video", ri.video))
			}
			if ri.country != "" {
				fields = append(fields, zap.String("country", ri.country))
			}
			if ri.err != nil {
				fields = append(fields, zap.String("problem", ri.err.Type))
				if ri.err.Cause != nil {
					fields = append(fields, zap.String("cause", redactText(ri.err.Cause.Error())))
				}
			}
			ce.Write(fields...)
		}()
		next.ServeHTTP(sw, r)
	})
}

// record counts the answer (route, status, in flight, refusals) and keeps
// the refusal of a refused request for the admin API to look up.
func (s *Server) record(r *http.Request, ri *requestInfo, sw *statusWriter, status int) {
	if sw.ended != nil {
		sw.ended()
	}
	s.Metrics.Request(ri.route, status)
	if ri.err == nil {
		return
	}
	if reason := refusalReason(ri.err.Type); reason != "" {
		s.Metrics.Refused(reason)
	}
	if s.Refusals != nil && keepRefusal(ri, status) {
		s.Refusals.Put(refusal(r, ri, ri.err, sw.Header(), s.now()))
	}
}

func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return handler(func(w http.ResponseWriter, r *http.Request) (err error) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				// A body copy that failed mid-way: net/http closes the connection.
				panic(v)
			}
			s.log.Error("panic", zap.String("request_id", infoFrom(r.Context()).id), zap.Any("panic", v), zap.Stack("stack"))
			err = internal(nil)
		}()
		next.ServeHTTP(w, r)
		return nil
	})
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// redactPath hides the secret segment of link paths (/dl/GRANT/...), and then
// anything that looks like a JWT or a grant wherever it stands (/dl//GRANT/...).
func redactPath(p string) string {
	if rest, ok := strings.CutPrefix(p, "/dl/"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			p = "/dl/[redacted]" + rest[i:]
		} else {
			p = "/dl/[redacted]"
		}
	}
	return redactText(p)
}

// redactText replaces every dot-separated token of three base64url parts (a JWT) in s.
func redactText(s string) string {
	if !strings.Contains(s, ".") {
		return s
	}
	var b strings.Builder
	start := 0
	isTok := func(c byte) bool {
		return stream.URLSafeByte(c) || c == '.'
	}
	for i := 0; i <= len(s); i++ {
		if i < len(s) && isTok(s[i]) {
			continue
		}
		word := s[start:i]
		if strings.Count(word, ".") >= 2 && len(word) >= 40 {
			b.WriteString("[redacted]")
		} else {
			b.WriteString(word)
		}
		if i < len(s) {
			b.WriteByte(s[i])
		}
		start = i + 1
	}
	return b.String()
}

// deadlineWriter rolls the connection's write deadline forward on every write, so a
// reader that stalls is cut off while a long download that keeps moving is not.
type deadlineWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
	last time.Time
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	if t := time.Now(); t.Sub(w.last) > time.Second {
		w.last = t
		_ = w.rc.SetWriteDeadline(t.Add(w.idle))
	}
	return w.ResponseWriter.Write(b)
}

func (w *deadlineWriter) WriteHeader(code int) {
	w.last = time.Now()
	_ = w.rc.SetWriteDeadline(w.last.Add(w.idle))
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) clear() { _ = w.rc.SetWriteDeadline(time.Time{}) }

func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *deadlineWriter) Flush() { _ = w.rc.Flush() }
