package proxy

import (
	"io"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/streamgate/streamgate/stream"
)

// The refusal reasons Recorder.Refused is given, one per policy that can say
// no: the same strings as metrics' reason label, which proxy does not import.
const (
	reasonQuota       = "quota"
	reasonRate        = "rate"
	reasonConcurrency = "concurrency"
	reasonCountry     = "country"
	reasonAuth        = "auth"
)

// refusalReason is the policy a problem type refuses by, "" for a problem
// that is not a policy's refusal (bad input, a video not ready, a failure).
func refusalReason(problemType string) string {
	switch problemType {
	case "quota_exceeded":
		return reasonQuota
	case "rate_limited":
		return reasonRate
	case "too_many_downloads":
		return reasonConcurrency
	case "country_denied":
		return reasonCountry
	case "unauthorized", "cross_site", "link_address", "link_revoked", "link_used_up":
		return reasonAuth
	}
	return ""
}

// downloadRoutes are the route patterns whose 200 and 206 answers are
// download bodies, counted in flight while they are sent.
var downloadRoutes = map[string]bool{
	"GET /v1/videos/{uid}/downloads/{file}": true,
	"GET /dl/{grant}/{file}":                true,
}

// noRecorder records nothing: the Recorder of a server given none.
type noRecorder struct{}

func (noRecorder) Request(string, int)           {}
func (noRecorder) DownloadStarted() func()       { return func() {} }
func (noRecorder) Refused(string)                {}
func (noRecorder) UpstreamLatency(time.Duration) {}
func (noRecorder) UpstreamTTFB(time.Duration)    {}
func (noRecorder) TokenMinted()                  {}
func (noRecorder) TokenCacheHit()                {}

// mintCounter counts every Stream token its signer mints, for the token cache
// and direct links alike.
type mintCounter struct {
	TokenSigner
	rec Recorder
}

func (m mintCounter) Mint(c stream.Claims, now time.Time) (string, error) {
	tok, err := m.TokenSigner.Mint(c, now)
	if err == nil {
		m.rec.TokenMinted()
	}
	return tok, err
}

// timeUpstream has the reverse proxy's transport time each request to
// Stream's delivery host: to its response headers (latency) and to the first
// byte of its body (TTFB).
func (s *Server) timeUpstream() {
	rp, ok := s.rp.(*httputil.ReverseProxy)
	if !ok {
		return
	}
	base := rp.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	rp.Transport = timedTransport{base: base, rec: s.Metrics}
}

type timedTransport struct {
	base http.RoundTripper
	rec  Recorder
}

func (t timedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	res, err := t.base.RoundTrip(r)
	if err != nil {
		return res, err
	}
	t.rec.UpstreamLatency(time.Since(start))
	if res.Body != nil && res.Body != http.NoBody {
		res.Body = &firstByteBody{ReadCloser: res.Body, start: start, rec: t.rec}
	}
	return res, nil
}

// firstByteBody reports the time to its first byte once. It only passes reads
// and Close through: the body the reverse proxy wraps over it (idleBody) still
// sees every byte and the end of the body.
type firstByteBody struct {
	io.ReadCloser
	start time.Time
	rec   Recorder
	once  sync.Once
}

func (b *firstByteBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.once.Do(func() { b.rec.UpstreamTTFB(time.Since(b.start)) })
	}
	return n, err
}
