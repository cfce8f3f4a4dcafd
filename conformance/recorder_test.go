package conformance

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// recorder wraps the emulator's handler and logs, per video, every delivery
// request: its Range header, the status, and which bytes of the file the
// emulator wrote in answer. From it a scenario knows what the emulator sent at
// least once, the most a client can have received, whatever the gateway did.
type recorder struct {
	next http.Handler

	mu     sync.Mutex
	videos map[string]*videoLog
}

type videoLog struct {
	inFlight int
	requests []requestLog
	sent     intervals // bytes of the file written at least once
	written  int64     // body bytes written, repeats included
	live     int64     // body bytes written so far, open requests included
}

type requestLog struct {
	Range  string
	Status int
	Start  int64 // first byte of the body in the file
	Bytes  int64 // body bytes written
}

func (r requestLog) String() string {
	rng := r.Range
	if rng == "" {
		rng = "no Range"
	}
	return fmt.Sprintf("%s → %d, %d bytes from %d", rng, r.Status, r.Bytes, r.Start)
}

func newRecorder(next http.Handler) *recorder {
	return &recorder{next: next, videos: map[string]*videoLog{}}
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	uid, ok := deliveryVideo(r.URL.Path)
	if !ok {
		rc.next.ServeHTTP(w, r)
		return
	}
	rc.mu.Lock()
	v := rc.videos[uid]
	if v == nil {
		v = &videoLog{}
		rc.videos[uid] = v
	}
	v.inFlight++
	rc.mu.Unlock()
	cw := &countingWriter{ResponseWriter: w, onWrite: func(n int64) {
		rc.mu.Lock()
		v.live += n
		rc.mu.Unlock()
	}}
	defer func() {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		v.inFlight--
		v.requests = append(v.requests, requestLog{Range: r.Header.Get("Range"), Status: cw.status, Start: cw.start, Bytes: cw.n})
		if cw.n > 0 {
			v.sent.add(cw.start, cw.start+cw.n)
			v.written += cw.n
		}
	}()
	rc.next.ServeHTTP(cw, r)
}

// inFlight is the number of delivery requests of uid being served.
func (rc *recorder) inFlight(uid string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if v := rc.videos[uid]; v != nil {
		return v.inFlight
	}
	return 0
}

// video returns a copy of what was recorded of uid.
func (rc *recorder) video(uid string) videoLog {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	v := rc.videos[uid]
	if v == nil {
		return videoLog{}
	}
	c := *v
	c.requests = append([]requestLog(nil), v.requests...)
	c.sent = append(intervals(nil), v.sent...)
	return c
}

// liveBytes is the number of body bytes of uid written so far, those of open
// requests included.
func (rc *recorder) liveBytes(uid string) int64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if v := rc.videos[uid]; v != nil {
		return v.live
	}
	return 0
}

// deliveryVideo names the video of a delivery path, /{UID or TOKEN}/downloads/FILE,
// reading the token's sub claim without checking it (the emulator checks it).
func deliveryVideo(path string) (string, bool) {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(segs) != 3 || segs[1] != "downloads" {
		return "", false
	}
	if uidRE.MatchString(segs[0]) {
		return segs[0], true
	}
	parts := strings.Split(segs[0], ".")
	if len(parts) != 3 {
		return "", false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", false
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Sub == "" {
		return "", false
	}
	return claims.Sub, true
}

var uidRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// countingWriter counts the body bytes of a 200 or 206 answer and where in
// the file they start. It unwraps, so the emulator's ResponseController still
// reaches the connection.
type countingWriter struct {
	http.ResponseWriter
	onWrite func(n int64)
	status  int
	start   int64
	n       int64
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		if code == http.StatusPartialContent {
			w.start = contentRangeStart(w.Header().Get("Content-Range"))
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	if w.status == http.StatusOK || w.status == http.StatusPartialContent {
		w.n += int64(n)
		w.onWrite(int64(n))
	}
	return n, err
}

// contentRangeStart is A of "bytes A-B/SIZE"; 0 when it cannot be read.
func contentRangeStart(cr string) int64 {
	rest, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return 0
	}
	a, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// intervals is a sorted set of disjoint half-open byte intervals [a, b).
type intervals [][2]int64

// add puts [a, b) in the set, merging what touches it.
func (s *intervals) add(a, b int64) {
	if a >= b {
		return
	}
	out := (*s)[:0:0]
	for _, iv := range *s {
		if iv[1] < a || iv[0] > b {
			out = append(out, iv)
			continue
		}
		a, b = min(a, iv[0]), max(b, iv[1])
	}
	out = append(out, [2]int64{a, b})
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	*s = out
}

func (s intervals) total() int64 {
	var n int64
	for _, iv := range s {
		n += iv[1] - iv[0]
	}
	return n
}
