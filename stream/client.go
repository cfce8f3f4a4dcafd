package stream

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cloudflare/cloudflare-go/v6/option"
	cfstream "github.com/cloudflare/cloudflare-go/v6/stream"
)

// DefaultBaseURL is the Cloudflare API v4 root.
const DefaultBaseURL = "https://api.cloudflare.com/client/v4/"

// Defaults of ClientConfig.
const (
	DefaultMaxRetries     = 2
	DefaultRequestTimeout = 30 * time.Second
	DefaultMaxRetryWait   = 5 * time.Second
	DefaultPollInterval   = 2 * time.Second
)

// Download statuses Stream reports.
const (
	DownloadInProgress = "inprogress"
	DownloadReady      = "ready"
	DownloadError      = "error"
)

// ClientConfig configures a Client. AccountID and APIToken are required.
type ClientConfig struct {
	// AccountID is the Cloudflare account that owns the videos.
	AccountID string
	// APIToken is a Cloudflare API token with Stream read and edit permission.
	// Surrounding whitespace (a trailing newline from a file) is trimmed.
	APIToken string
	// BaseURL is the API root; default DefaultBaseURL. Tests point it at the
	// emulator: <emulator URL>/client/v4/.
	BaseURL string
	// HTTPClient sends the requests; default a client of its own over
	// http.DefaultTransport.
	HTTPClient *http.Client
	// MaxRetries is how often a call is retried after a connection error, 408,
	// 429 or 5xx; default 2 (0 means the default). A negative value disables
	// retries.
	MaxRetries int
	// RequestTimeout bounds each attempt; default 30s. The context bounds the
	// whole call, retries included.
	RequestTimeout time.Duration
	// MaxRetryWait is the longest Retry-After the client sleeps through before a
	// retry; default 5s. A longer one (Stream asks for minutes once the rate limit
	// is hit), or one past the context's deadline, fails at once with
	// ErrRateLimited and APIError.RetryAfter, so a caller is never held for
	// minutes.
	MaxRetryWait time.Duration
}

// Client calls the Stream API for one account: video details, downloads and
// signing keys. It is safe for concurrent use.
type Client struct {
	account string
	api     *cfstream.StreamService
}

// NewClient checks cfg, reporting every problem at once, and builds the client.
// The errors never contain the API token.
func NewClient(cfg ClientConfig) (*Client, error) {
	var problems []error
	account := strings.TrimSpace(cfg.AccountID)
	if account == "" {
		problems = append(problems, errors.New("stream api: account id is empty"))
	} else if !validPathSegment(account) {
		problems = append(problems, errors.New("stream api: account id: want letters, digits, '-' and '_' only"))
	}
	token := strings.TrimSpace(cfg.APIToken)
	if token == "" {
		problems = append(problems, errors.New("stream api: api token is empty"))
	} else if strings.IndexFunc(token, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		problems = append(problems, errors.New("stream api: api token contains whitespace or control characters"))
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		problems = append(problems, fmt.Errorf("stream api: base url %q: want an absolute http or https URL", base))
	} else if !strings.HasSuffix(base, "/") {
		// Request paths are resolved against the base; without the slash the
		// last segment ("v4") would be replaced.
		base += "/"
	}
	if cfg.RequestTimeout < 0 {
		problems = append(problems, errors.New("stream api: request timeout is negative"))
	}
	if cfg.MaxRetryWait < 0 {
		problems = append(problems, errors.New("stream api: max retry wait is negative"))
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}

	retries := cfg.MaxRetries
	switch {
	case retries == 0:
		retries = DefaultMaxRetries
	case retries < 0:
		retries = 0
	}
	timeout := cfg.RequestTimeout
	if timeout == 0 {
		timeout = DefaultRequestTimeout
	}
	maxWait := cfg.MaxRetryWait
	if maxWait == 0 {
		maxWait = DefaultMaxRetryWait
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	api := cfstream.NewStreamService(
		option.WithBaseURL(base),
		option.WithAPIToken(token),
		option.WithHTTPClient(hc),
		// The SDK's own default is 10 retries with up to 30s between them.
		option.WithMaxRetries(retries),
		option.WithRequestTimeout(timeout),
		option.WithMiddleware(limitRetries(maxWait)),
	)
	return &Client{account: account, api: api}, nil
}

// UnknownDuration is Video.Duration when Stream does not know the video's length.
const UnknownDuration = -1

// Video is what the gateway needs of a video's details.
type Video struct {
	UID string
	// Duration is in seconds, above 0; UnknownDuration (-1) while Stream does not
	// know it: Client.Video reports a duration that is absent, null, not a
	// number, -1 or otherwise not above 0 as UnknownDuration. Bill through
	// Minutes, which refuses an unknown duration, never through this field alone.
	Duration float64
	// ReadyToStream is true once at least one quality level is playable; downloads
	// can be enabled only then.
	ReadyToStream bool
	// RequireSignedURLs: only a signed token opens the video.
	RequireSignedURLs bool
	// Size is the stored size in bytes; 0 when unknown.
	Size int64
	// State is status.state: pendingupload, downloading, queued, inprogress,
	// ready, error or live-inprogress.
	State string
}

// Billable reports, as an error matching ErrNotReady, why the video cannot be
// billed yet: not ready to stream, or its duration still unknown. A video is never
// billed as 0 minutes.
func (v Video) Billable() error {
	switch {
	case !v.ReadyToStream:
		return fmt.Errorf("video %s (state %q): %w", v.UID, v.State, ErrNotReady)
	case !knownDuration(v.Duration):
		return fmt.Errorf("video %s: duration unknown: %w", v.UID, ErrNotReady)
	}
	return nil
}

// Minutes is the video's billable length in minutes, or an error matching
// ErrNotReady when Billable refuses it. It is never 0 without an error.
func (v Video) Minutes() (float64, error) {
	if err := v.Billable(); err != nil {
		return 0, err
	}
	return v.Duration / 60, nil
}

// knownDuration reports whether seconds is a length that can be billed: a finite
// number above 0. Stream says -1 while it does not know; 0 would bill nothing.
func knownDuration(seconds float64) bool {
	return seconds > 0 && !math.IsInf(seconds, 0)
}

// Download is one generated download file of a video.
type Download struct {
	Type DownloadType
	// Status is DownloadInProgress, DownloadReady or DownloadError.
	Status string
	// URL is where Stream serves the file once Status is ready.
	URL string
	// PercentComplete runs 0 to 100.
	PercentComplete float64
}

// Ready reports whether the file can be fetched.
func (d Download) Ready() bool { return d.Status == DownloadReady }

// Downloads holds a video's downloads by type; a type is present only once it
// has been enabled.
type Downloads map[DownloadType]Download

// SigningKey is a new Stream signing key. PEM and JWK are decoded (Stream sends
// both base64-encoded) and shown by Stream only once.
type SigningKey struct {
	ID      string
	PEM     []byte
	JWK     []byte
	Created time.Time
}

// Signer returns a Signer for the key.
func (k SigningKey) Signer() (*Signer, error) { return NewSigner(k.ID, k.PEM) }

// Video fetches the video's details.
func (c *Client) Video(ctx context.Context, uid string) (Video, error) {
	op := "get video " + uid
	if err := checkUID(uid); err != nil {
		return Video{}, err
	}
	var p cfstream.StreamGetParams
	p.AccountID.Value, p.AccountID.Present = c.account, true
	var res *http.Response
	v, err := c.api.Get(ctx, uid, p, option.WithResponseInto(&res))
	if err != nil {
		return Video{}, failed(op, err, res)
	}
	if v.UID == "" {
		return Video{}, fmt.Errorf("stream: %s: response holds no video", op)
	}
	out := Video{
		UID:               v.UID,
		Duration:          v.Duration,
		ReadyToStream:     v.ReadyToStream,
		RequireSignedURLs: v.RequireSignedURLs,
		Size:              int64(v.Size),
		State:             string(v.Status.State),
	}
	if v.JSON.Duration.IsNull() || v.JSON.Duration.IsInvalid() || !knownDuration(v.Duration) {
		// Absent, null, -1 and 0 are all "unknown", never a zero-minute video.
		out.Duration = UnknownDuration
	}
	return out, nil
}

// Downloads lists the video's downloads. With none enabled, Stream answers
// either {} (an empty Downloads) or NotFound, "video or downloads not found"
// (an error matching ErrNotFound): a caller that knows the video exists reads the
// latter as none enabled, not as a missing video.
func (c *Client) Downloads(ctx context.Context, uid string) (Downloads, error) {
	op := "list downloads of " + uid
	if err := checkUID(uid); err != nil {
		return nil, err
	}
	var p cfstream.DownloadGetParams
	p.AccountID.Value, p.AccountID.Present = c.account, true
	var (
		res  *http.Response
		body []byte
	)
	_, err := c.api.Downloads.Get(ctx, uid, p, option.WithResponseInto(&res), option.WithResponseBodyInto(&body))
	if err != nil {
		return nil, failed(op, err, res)
	}
	ds, err := parseDownloads(res, body, Default)
	if err != nil {
		return nil, fmt.Errorf("stream: %s: %w", op, err)
	}
	return ds, nil
}

// EnableDownload asks Stream to generate the video's download of type t (POST
// .../downloads/default or .../downloads/audio) and returns its first state,
// usually in progress. Enabling one that exists returns its current state.
//
// Stream enables downloads only for a video ready to stream. The refusal it gives
// otherwise is undocumented, so any other client error is checked against the
// video's readyToStream, and matches ErrNotReady when that is false.
func (c *Client) EnableDownload(ctx context.Context, uid string, t DownloadType) (Download, error) {
	op := fmt.Sprintf("enable %s download of %s", t, uid)
	if err := checkUID(uid); err != nil {
		return Download{}, err
	}
	if _, err := ParseDownloadType(string(t)); err != nil {
		return Download{}, fmt.Errorf("stream: %s: %w", op, err)
	}
	var p cfstream.DownloadNewParams
	p.AccountID.Value, p.AccountID.Present = c.account, true
	var (
		res  *http.Response
		body []byte
	)
	_, err := c.api.Downloads.New(ctx, uid, p, typePath(t), option.WithResponseInto(&res), option.WithResponseBodyInto(&body))
	if err != nil {
		err = failed(op, err, res)
		c.checkNotReady(ctx, uid, err)
		return Download{}, err
	}
	ds, err := parseDownloads(res, body, t)
	if err != nil {
		return Download{}, fmt.Errorf("stream: %s: %w", op, err)
	}
	d, ok := ds[t]
	if !ok {
		return Download{}, fmt.Errorf("stream: %s: response holds no %s download", op, t)
	}
	return d, nil
}

// checkNotReady marks err as ErrNotReady when it is a client error not otherwise
// classified and the video turns out not to be ready to stream.
func (c *Client) checkNotReady(ctx context.Context, uid string, err error) {
	var ae *APIError
	if !errors.As(err, &ae) || ae.notReady || ae.Status < 400 || ae.Status >= 500 {
		return
	}
	switch ae.Status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusTooManyRequests:
		return
	}
	if v, verr := c.Video(ctx, uid); verr == nil && !v.ReadyToStream {
		ae.notReady = true
	}
}

// DeleteDownload removes the video's download of type t (DELETE
// .../downloads/default or .../downloads/audio).
func (c *Client) DeleteDownload(ctx context.Context, uid string, t DownloadType) error {
	op := fmt.Sprintf("delete %s download of %s", t, uid)
	if err := checkUID(uid); err != nil {
		return err
	}
	if _, err := ParseDownloadType(string(t)); err != nil {
		return fmt.Errorf("stream: %s: %w", op, err)
	}
	var p cfstream.DownloadDeleteParams
	p.AccountID.Value, p.AccountID.Present = c.account, true
	var (
		res  *http.Response
		body []byte
	)
	// The body is taken raw: Stream answers with a string result, the emulator
	// may not, and nothing in it is needed beyond the envelope's verdict.
	_, err := c.api.Downloads.Delete(ctx, uid, p, typePath(t), option.WithResponseInto(&res), option.WithResponseBodyInto(&body))
	if err != nil {
		return failed(op, err, res)
	}
	if _, err := parseEnvelope(res, body); err != nil {
		return fmt.Errorf("stream: %s: %w", op, err)
	}
	return nil
}

// WaitReady polls the video's downloads, first at once and then every interval
// (DefaultPollInterval when every <= 0), until the download of type t is ready;
// Stream has no webhook for downloads. Status "error" fails with
// ErrDownloadFailed; a type that is not enabled fails with ErrNotFound; ctx ends
// the wait.
func (c *Client) WaitReady(ctx context.Context, uid string, t DownloadType, every time.Duration) (Download, error) {
	if err := checkUID(uid); err != nil {
		return Download{}, err
	}
	if _, err := ParseDownloadType(string(t)); err != nil {
		return Download{}, fmt.Errorf("stream: wait for download of %s: %w", uid, err)
	}
	if every <= 0 {
		every = DefaultPollInterval
	}
	var tick *time.Ticker
	for {
		ds, err := c.Downloads(ctx, uid)
		if err != nil {
			return Download{}, err
		}
		d, ok := ds[t]
		switch {
		case !ok:
			return Download{}, fmt.Errorf("stream: wait for %s download of %s: not enabled: %w", t, uid, ErrNotFound)
		case d.Status == DownloadReady:
			return d, nil
		case d.Status == DownloadError:
			return d, fmt.Errorf("stream: wait for %s download of %s: %w", t, uid, ErrDownloadFailed)
		}
		if tick == nil {
			tick = time.NewTicker(every)
			defer tick.Stop()
		}
		select {
		case <-ctx.Done():
			return d, fmt.Errorf("stream: wait for %s download of %s (%.0f%% complete): %w", t, uid, d.PercentComplete, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// CreateSigningKey creates a signing key (POST .../stream/keys). Stream shows the
// key material only in this response: store it before anything else.
func (c *Client) CreateSigningKey(ctx context.Context) (SigningKey, error) {
	const op = "create signing key"
	var p cfstream.KeyNewParams
	p.AccountID.Value, p.AccountID.Present = c.account, true
	p.Body = struct{}{}
	var res *http.Response
	k, err := c.api.Keys.New(ctx, p, option.WithResponseInto(&res))
	if err != nil {
		return SigningKey{}, failed(op, err, res)
	}
	if k.ID == "" {
		return SigningKey{}, fmt.Errorf("stream: %s: response holds no key id", op)
	}
	pemBytes, err := decodeKeyMaterial(k.Pem, "-----BEGIN")
	if err != nil {
		return SigningKey{}, fmt.Errorf("stream: %s %s: pem: %w", op, k.ID, err)
	}
	jwk, err := decodeKeyMaterial(k.Jwk, "{")
	if err != nil {
		return SigningKey{}, fmt.Errorf("stream: %s %s: jwk: %w", op, k.ID, err)
	}
	return SigningKey{ID: k.ID, PEM: pemBytes, JWK: jwk, Created: k.Created}, nil
}

// Ping checks that the API is reachable and that the token may use Stream on the
// account, for a readiness probe. It lists the account's signing keys (GET
// .../stream/keys): an account-scoped Stream read, so a token valid for another
// account or without Stream permission fails it (a token-verify call would not
// notice), while the answer stays small and changes nothing. Every call counts
// against the API rate limit: cache the verdict rather than ping per probe.
func (c *Client) Ping(ctx context.Context) error {
	var p cfstream.KeyGetParams
	p.AccountID.Value, p.AccountID.Present = c.account, true
	var res *http.Response
	if _, err := c.api.Keys.Get(ctx, p, option.WithResponseInto(&res)); err != nil {
		return failed("ping", err, res)
	}
	return nil
}

// typePath turns the SDK's typed call on .../downloads into one on
// .../downloads/{type}. cloudflare-go v6 has typed calls only for /downloads, and
// Stream's per-type endpoints differ from it by one trailing segment with the
// same envelope. A middleware keeps everything else the SDK does for the call
// (base URL, auth header, retries, Retry-After, envelope errors); a hand-built
// request would have to repeat all of it. The path is derived from the original
// request on every attempt, so a retry never appends the segment twice.
func typePath(t DownloadType) option.RequestOption {
	return option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/downloads") {
			u := *r.URL
			u.Path += "/" + string(t)
			u.RawPath = ""
			r.URL = &u
		}
		return next(r)
	})
}

// limitRetries stops the SDK from sleeping through a long Retry-After (it honours
// any value, and Stream's rate limit asks for five minutes) or one that ends past
// the context's deadline, and from retrying 409: on this API a conflict is a
// verdict about the video (for instance not ready), not a transient lock. The
// SDK reads X-Should-Retry before its own rules.
func limitRetries(maxWait time.Duration) option.Middleware {
	return func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		res, err := next(r)
		if err != nil || res == nil {
			return res, err
		}
		switch res.StatusCode {
		case http.StatusConflict:
			res.Header.Set("X-Should-Retry", "false")
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			now := time.Now()
			d, ok := retryAfter(res.Header, now)
			if !ok {
				break
			}
			if dl, has := r.Context().Deadline(); d > maxWait || has && now.Add(d).After(dl) {
				res.Header.Set("X-Should-Retry", "false")
			}
		}
		return res, err
	}
}

// failed maps an SDK error to an *APIError (wrapped with the operation), keeping
// only status, Stream's code and message and Retry-After: the SDK's error also
// carries the request, whose Authorization header holds the API token.
func failed(op string, err error, res *http.Response) error {
	var sdkErr *cfstream.Error
	switch {
	case errors.As(err, &sdkErr):
		msgs := make([]errorMessage, 0, len(sdkErr.Errors))
		for _, m := range sdkErr.Errors {
			msgs = append(msgs, errorMessage{Code: int(m.Code), Message: m.Message})
		}
		var h http.Header
		if sdkErr.Response != nil {
			h = sdkErr.Response.Header
		}
		return fmt.Errorf("stream: %s: %w", op, newAPIError(sdkErr.StatusCode, h, msgs, time.Now()))
	case res != nil && res.StatusCode >= 400:
		// An error body the SDK could not read.
		return fmt.Errorf("stream: %s: %w", op, newAPIError(res.StatusCode, res.Header, nil, time.Now()))
	}
	return fmt.Errorf("stream: %s: %w", op, err)
}

// envelope is the frame of every Cloudflare API response.
type envelope struct {
	Success *bool           `json:"success"`
	Errors  []errorMessage  `json:"errors"`
	Result  json.RawMessage `json:"result"`
}

// parseEnvelope returns the result of a successful response; a response that
// says success: false is an *APIError even with a 2xx status.
func parseEnvelope(res *http.Response, body []byte) (json.RawMessage, error) {
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("decode response: %w", err)
	}
	if env.Success != nil && !*env.Success {
		status, h := http.StatusOK, http.Header(nil)
		if res != nil {
			status, h = res.StatusCode, res.Header
		}
		return nil, newAPIError(status, h, env.Errors, time.Now())
	}
	return env.Result, nil
}

// wireDownload is one download as Stream sends it.
type wireDownload struct {
	Status          string  `json:"status"`
	URL             string  `json:"url"`
	PercentComplete float64 `json:"percentComplete"`
}

func (w wireDownload) download(t DownloadType) Download {
	return Download{Type: t, Status: w.Status, URL: w.URL, PercentComplete: w.PercentComplete}
}

// parseDownloads reads a downloads result in either shape Stream is documented
// with: keyed by type ({"default": {...}, "audio": {...}}), or one flat download
// ({status, url, percentComplete}), which is taken as type flat. Unknown types
// are skipped.
func parseDownloads(res *http.Response, body []byte, flat DownloadType) (Downloads, error) {
	result, err := parseEnvelope(res, body)
	if err != nil {
		return nil, err
	}
	ds := Downloads{}
	result = bytes.TrimSpace(result)
	if len(result) == 0 || bytes.Equal(result, []byte("null")) {
		return ds, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(result, &fields); err != nil {
		return nil, fmt.Errorf("decode downloads: %w", err)
	}
	if _, ok := fields["status"]; ok {
		var w wireDownload
		if err := json.Unmarshal(result, &w); err != nil {
			return nil, fmt.Errorf("decode download: %w", err)
		}
		ds[flat] = w.download(flat)
		return ds, nil
	}
	for k, raw := range fields {
		t, err := ParseDownloadType(k)
		if err != nil {
			continue
		}
		var w wireDownload
		if err := json.Unmarshal(raw, &w); err != nil {
			return nil, fmt.Errorf("decode %s download: %w", t, err)
		}
		if w.Status == "" {
			return nil, fmt.Errorf("decode %s download: no status", t)
		}
		ds[t] = w.download(t)
	}
	return ds, nil
}

// decodeKeyMaterial decodes the base64 Stream wraps key material in; material
// already in the clear (starting with plain) is taken as is.
func decodeKeyMaterial(s, plain string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("missing")
	}
	if strings.HasPrefix(s, plain) {
		return []byte(s), nil
	}
	s = strings.Join(strings.Fields(s), "")
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "=")); err != nil {
			return nil, errors.New("neither base64 nor in the clear")
		}
	}
	return b, nil
}

// checkUID refuses a malformed uid before it reaches a request path.
func checkUID(uid string) error {
	if !ValidUID(uid) {
		// The value is not echoed: a delivery token in the wrong place would
		// otherwise reach the logs.
		return errors.New("stream: invalid video uid: want 32 lowercase hex characters")
	}
	return nil
}

// validPathSegment reports whether s is safe to place in a URL path unescaped.
func validPathSegment(s string) bool { return URLSafe(s) }
