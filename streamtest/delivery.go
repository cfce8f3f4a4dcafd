package streamtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/streamgate/streamgate/acked"
)

func (e *Emulator) serveDelivery(w http.ResponseWriter, r *http.Request) {
	e.inflight.Add(1)
	defer e.inflight.Add(-1)

	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeDeliveryError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	segs := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if len(segs) != 3 || segs[0] == "" || segs[1] != "downloads" {
		writeDeliveryError(w, http.StatusNotFound, "not found")
		return
	}
	t, ok := typeFromFile(segs[2])
	if !ok {
		writeDeliveryError(w, http.StatusNotFound, "not found")
		return
	}
	q := r.URL.Query()
	name := ""
	if q.Has("filename") {
		if name, ok = filenameBase(q.Get("filename"), t); !ok {
			writeDeliveryError(w, http.StatusBadRequest,
				"invalid filename: want 1 to 120 characters of A-Za-z0-9-_, optionally ending in "+t.ext())
			return
		}
	}

	// Who is asking, and for which video.
	var claims *tokenClaims
	var rules []compiled
	uid := segs[0]
	if !isUID(uid) {
		c, rs, ref := e.verify(uid)
		if ref != nil {
			e.refuse(w, dlKey{}, ref)
			return
		}
		claims, rules, uid = c, rs, c.Subject
	}
	k := dlKey{uid, t}
	e.mu.Lock()
	vp, ok := e.videos[uid]
	var v video
	if ok {
		v = *vp
	}
	fault := e.faults[uid]
	e.mu.Unlock()
	if !ok {
		writeDeliveryError(w, http.StatusNotFound, "video not found")
		return
	}
	if claims == nil && v.RequireSignedURLs {
		e.refuse(w, k, unauthorized("video requires a signed URL"))
		return
	}
	if claims != nil {
		if v.RequireSignedURLs && !claims.Downloadable {
			e.refuse(w, k, forbidden("token is not downloadable"))
			return
		}
		client := remoteAddr(r)
		if ok, i := allowed(rules, client, e.country(client)); !ok {
			e.refuse(w, k, forbidden("access rule %d blocks %s", i, client))
			return
		}
	}
	e.count(k, Stats{Requests: 1})

	if fault.Delay > 0 {
		if err := sleep(r.Context(), fault.Delay); err != nil {
			return
		}
	}
	if fault.Status != 0 {
		writeDeliveryError(w, fault.Status, "injected fault")
		return
	}

	now := e.now()
	e.mu.Lock()
	d := e.downloads[k]
	state := ""
	if d != nil {
		state, _ = e.downloadState(d, now)
	}
	e.mu.Unlock()
	if state != "ready" {
		writeDeliveryError(w, http.StatusNotFound, "download not found or not ready")
		return
	}

	f, err := OpenFile(v.Video, t)
	if err != nil {
		writeDeliveryError(w, http.StatusInternalServerError, err.Error())
		return
	}
	size := f.Size()
	if name == "" {
		name = uid
	}
	h := w.Header()
	h.Set("Content-Type", t.contentType())
	h.Set("Content-Disposition", `attachment; filename="`+name+t.ext()+`"`)
	h.Set("ETag", f.ETag())
	if strings.Contains(r.Header.Get("Range"), ",") {
		r.Header.Del("Range") // multipart ranges are not served: answer in full
	}
	bw := &bodyWriter{
		ResponseWriter: w,
		rc:             http.NewResponseController(w),
		e:              e,
		key:            k,
		get:            r.Method == http.MethodGet,
		ctx:            r.Context(),
		fault:          fault,
		size:           size,
		minutes:        v.minutes(),
	}
	http.ServeContent(bw, r, "", v.created, f.NewReader())
	bw.settle(r)
}

// settle counts, once the body is written, what its receiver acknowledged
// instead of what was written, when the connection tells (see [Server]): bytes
// still in socket buffers when the receiver went away never reached it. A
// body written whole waits for its receiver for as long as the connection
// lives and acknowledgements keep coming within a minute (a player that
// paused reading lets its buffers fill).
func (b *bodyWriter) settle(r *http.Request) {
	if !b.billable || b.written == 0 {
		return
	}
	_ = b.rc.Flush()
	n, src := acked.ForRequest(r, b.written)
	if src == acked.SourceWritten {
		return
	}
	last, idle := n, time.Now()
	pause := 20 * time.Microsecond // acknowledgements on loopback take microseconds
	for !b.broken && n < b.written && r.Context().Err() == nil && time.Since(idle) < time.Minute {
		time.Sleep(pause)
		pause = min(2*pause, 2*time.Millisecond)
		if n, _ = acked.ForRequest(r, b.written); n > last {
			last, idle = n, time.Now()
		}
	}
	n, _ = acked.ForRequest(r, b.written)
	b.account(n - b.written)
}

func etag(uid string, t DownloadType, size int64) string {
	sum := sha256.Sum256([]byte(uid + "/" + string(t) + "/" + strconv.FormatInt(size, 10)))
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}

// remoteAddr is the TCP peer's address, IPv4-mapped addresses as IPv4.
func remoteAddr(r *http.Request) netip.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	if a, err := netip.ParseAddr(r.RemoteAddr); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}

func (e *Emulator) refuse(w http.ResponseWriter, k dlKey, ref *refusal) {
	e.count(k, Stats{Refused: 1})
	if ref.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="stream"`)
	}
	writeDeliveryError(w, ref.status, ref.reason)
}

func writeDeliveryError(w http.ResponseWriter, status int, reason string) {
	writeJSON(w, status, map[string]string{"error": reason})
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errCut ends a body that a fault cut off.
var errCut = errors.New("streamtest: connection cut by fault")

// bodyWriter counts the body as it is written and applies a fault's bandwidth
// limit and connection cut.
type bodyWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	e       *Emulator
	key     dlKey
	get     bool
	ctx     context.Context
	fault   Fault
	size    int64
	minutes float64

	wroteHeader bool
	billable    bool // the answer is a 200 or 206 body, which Stream bills
	cut         bool
	broken      bool // a write failed or the connection was cut: no more acknowledgements will come
	written     int64
	start       time.Time
}

func (b *bodyWriter) Unwrap() http.ResponseWriter { return b.ResponseWriter }

func (b *bodyWriter) WriteHeader(code int) {
	if b.wroteHeader {
		return
	}
	b.wroteHeader = true
	b.billable = code == http.StatusOK || code == http.StatusPartialContent
	if b.get && (code == http.StatusOK ||
		code == http.StatusPartialContent && strings.HasPrefix(b.Header().Get("Content-Range"), "bytes 0-")) {
		b.e.count(b.key, Stats{DownloadMinutes: b.minutes})
	}
	b.ResponseWriter.WriteHeader(code)
}

func (b *bodyWriter) Write(p []byte) (int, error) {
	if !b.wroteHeader {
		b.WriteHeader(http.StatusOK)
	}
	if b.cut {
		return 0, errCut
	}
	bps := b.fault.BytesPerSecond
	if bps > 0 && b.start.IsZero() {
		b.start = time.Now()
	}
	total := 0
	for len(p) > 0 {
		chunk := p
		if bps > 0 {
			chunk = p[:min(int64(len(p)), max(bps/20, 512))]
		}
		cutNow := false
		if b.fault.ResetAfter > 0 {
			if rest := b.fault.ResetAfter - b.written; int64(len(chunk)) >= rest {
				chunk, cutNow = chunk[:max(rest, 0)], true
			}
		}
		if len(chunk) > 0 {
			// Counted before the write, so a client that has its bytes finds
			// them in Stats; what the write did not take is taken back.
			b.account(int64(len(chunk)))
			n, err := b.ResponseWriter.Write(chunk)
			b.account(int64(n - len(chunk)))
			total += n
			if err != nil {
				b.broken = true
				return total, err
			}
		}
		if cutNow {
			b.cutConnection()
			return total, errCut
		}
		p = p[len(chunk):]
		if bps > 0 {
			if err := b.rc.Flush(); err != nil {
				return total, err
			}
			due := b.start.Add(time.Duration(float64(b.written) / float64(bps) * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				if err := sleep(b.ctx, wait); err != nil {
					return total, err
				}
			}
		}
	}
	return total, nil
}

// account adds n body bytes (negative: takes them back) to the counts.
func (b *bodyWriter) account(n int64) {
	if n == 0 || !b.billable {
		return
	}
	b.written += n
	s := Stats{Bytes: n}
	if b.size > 0 {
		s.ProportionalMinutes = b.minutes * float64(n) / float64(b.size)
	}
	b.e.count(b.key, s)
}

// cutConnection sends what was written so far and closes the connection without
// finishing the response.
func (b *bodyWriter) cutConnection() {
	b.cut, b.broken = true, true
	_ = b.rc.Flush()
	conn, _, err := b.rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}
