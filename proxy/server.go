// Package proxy is streamgate's HTTP surface: the routes, the authenticated and
// link download handlers built on httputil.ReverseProxy, link minting, metering of
// the response body, and JSON problem responses.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/streamgate/streamgate/auth"
	"github.com/streamgate/streamgate/policy"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/usage"
)

// ErrShutdown is the cause to cancel the requests' base context with when the
// server cuts off what is still running at the end of its grace period: the
// downloads then settle with status "shutdown" rather than "client_gone".
var ErrShutdown = errors.New("server shutting down")

// Authenticator verifies a portal user's credential on a request.
type Authenticator interface {
	Authenticate(r *http.Request) (auth.Identity, error)
}

// GrantIssuer signs and verifies link grants.
type GrantIssuer interface {
	Sign(g auth.Grant) (string, error)
	Verify(token string) (auth.Grant, error)
}

// TokenSigner mints Stream tokens.
type TokenSigner interface {
	Mint(c stream.Claims, now time.Time) (string, error)
}

// StreamAPI is the part of the Stream API the gateway reads.
type StreamAPI interface {
	Video(ctx context.Context, uid string) (stream.Video, error)
	Downloads(ctx context.Context, uid string) (stream.Downloads, error)
}

// Metering reserves, meters and settles billable minutes.
type Metering interface {
	Start(ctx context.Context, req usage.StartRequest) (*usage.Delivery, error)
	// Charge bills a direct-mode link in full when it is handed out.
	Charge(ctx context.Context, req usage.StartRequest) (usage.Settled, error)
	Usage(ctx context.Context, user, plan string, limit float64) (usage.Usage, error)
}

// Check is one readiness probe: nil when the dependency answers.
type Check func(ctx context.Context) error

// RateLimiter spends one request of a key's bucket.
type RateLimiter interface {
	Allow(key string) policy.Result
}

// ClientAddr reads the client's address off a request, believing the proxies
// it trusts ([policy.ClientIP]).
type ClientAddr interface {
	FromRequest(r *http.Request) netip.Addr
}

// Locator finds the country of an address, "" when unknown ([policy.GeoIP]).
type Locator interface {
	Country(ip netip.Addr) string
}

// CountryRules decides by country, per plan, and restates the rules for
// direct-mode tokens ([policy.CountryPolicy]).
type CountryRules interface {
	Check(plan, country string) policy.Decision
	Rules(plan string) policy.CountryRules
}

// ConcurrencyCap holds a slot per download in flight ([policy.Concurrency]).
type ConcurrencyCap interface {
	Acquire(key string, max int) (release func(), ok bool)
}

// Recorder counts what the handlers do, for the metrics ([metrics.Metrics]).
// Its methods must not block.
type Recorder interface {
	// Request counts an answer by route pattern and status.
	Request(route string, status int)
	// DownloadStarted counts a download body in flight until done is called.
	DownloadStarted() (done func())
	// Refused counts a refusal by its policy: quota, rate, concurrency,
	// country or auth.
	Refused(reason string)
	UpstreamLatency(time.Duration)
	UpstreamTTFB(time.Duration)
	TokenMinted()
	TokenCacheHit()
}

// Plan is what a plan allows.
type Plan struct {
	// MinutesPerMonth is the quota of billable minutes per calendar month (UTC);
	// negative means unlimited.
	MinutesPerMonth float64
	// Links and Downloads are per-user buckets; nil means unlimited.
	Links, Downloads RateLimiter
	// MaxConcurrent caps a user's downloads in flight; 0 means unlimited.
	MaxConcurrent int
	// MaxBytesPerSecond paces a user's downloads together, per replica
	// (pace.go); 0 means unpaced.
	MaxBytesPerSecond int64
}

// Config is what the handlers need to know, as config validated it: the
// settings config has keys for come set (config.Default holds their defaults).
// The timeouts config has no key for are the proxy's own: New fills in the
// defaults shown.
type Config struct {
	// PublicURL is the base of proxy-mode link URLs.
	PublicURL string
	// DeliveryURL is the Stream delivery origin the proxy forwards to.
	DeliveryURL string
	// TokenTTL is the life of the Stream tokens the proxy mints. Required.
	TokenTTL time.Duration
	// EgressRules go into every proxy-mode token (none by default).
	EgressRules []stream.AccessRule
	// LinkMode is "proxy" or "direct"; "" is "proxy".
	LinkMode string
	// LinkTTL is the life of a link. Required.
	LinkTTL time.Duration
	// BindIP pins direct-mode tokens and grants to the client's address.
	BindIP bool
	// VideoCacheTTL is how long video details and download states are reused.
	VideoCacheTTL time.Duration
	// DialTimeout and ResponseHeaderTimeout bound the upstream (defaults 5s and 30s).
	DialTimeout, ResponseHeaderTimeout time.Duration
	// WriteIdleTimeout cuts a client off that has taken no bytes for this long
	// (default 60s).
	WriteIdleTimeout time.Duration
	// UpstreamIdleTimeout cuts a download off when Stream has sent no bytes of
	// its body for this long (default 60s), so a stalled upstream does not hold
	// the request, its concurrency slot and its reservation indefinitely.
	UpstreamIdleTimeout time.Duration
	// PortalOrigins are the origins (scheme://host[:port]) of the portal pages
	// that send the portal's cookie. A cookie-authenticated request without
	// Sec-Fetch-Site (older browsers) whose Origin, or else Referer, is neither
	// one of these nor PublicURL's origin is refused as cross-site. Default none:
	// only PublicURL's origin.
	PortalOrigins []string
	// AutoEnable are the download types a verified video-ready webhook
	// enables (hooks.go); it needs Deps.Webhooks and Deps.Enabler. Default none.
	AutoEnable []stream.DownloadType
	// DefaultPlan names the plan of identities without one.
	DefaultPlan string
	Plans       map[string]Plan
}

// Deps are the components the handlers call.
type Deps struct {
	Auth   Authenticator
	Grants GrantIssuer
	Signer TokenSigner
	API    StreamAPI
	Meter  Metering
	// ClientIP trusts no proxy when nil.
	ClientIP ClientAddr
	// GeoIP, when nil, leaves every country unknown.
	GeoIP Locator
	// Country, when nil, allows every country.
	Country CountryRules
	// IPLimit spends a token per failed authentication from one client address.
	IPLimit RateLimiter
	// Concurrency caps each user's downloads in this process when nil.
	Concurrency ConcurrencyCap
	// Checks are the readiness probes /readyz runs, by name ("stream_api",
	// "ledger").
	Checks map[string]Check
	Log    *zap.Logger
	// Webhooks verifies Stream's webhooks; nil leaves POST /hooks/stream off.
	Webhooks WebhookVerifier
	// Enabler enables downloads for Config.AutoEnable.
	Enabler DownloadEnabler
	// Now is the clock for tokens, grants and metering (default time.Now).
	Now func() time.Time
	// Transport overrides the upstream transport (tests).
	Transport http.RoundTripper
	// Metrics records requests, refusals, downloads in flight, upstream
	// timings and token mints; nil records nothing.
	Metrics Recorder
	// Refusals keeps every refused request for the admin API to look up by
	// request ID; nil keeps none.
	Refusals RefusalStore
	// Links checks a link's revocation for requests that open no delivery
	// (HEAD); nil checks none there. Downloads are checked as they open.
	Links LinkChecker
}

// LinkChecker tells whether a link was revoked, changing nothing.
type LinkChecker interface {
	CheckLink(ctx context.Context, user, video string, l usage.Link) error
}

// Server serves streamgate's routes.
type Server struct {
	cfg Config
	Deps
	log      *zap.Logger
	now      func() time.Time
	delivery *url.URL
	public   *url.URL
	rp       http.Handler
	tokens   *tokenCache
	pace     *pacer
	slots    *downloadSlots
	links    *linkTokens
	videos   *videoCache
	ready    readiness
	handler  http.Handler
	// origins are the normalized portal origins and the gateway's own.
	origins map[string]bool
}

// New builds the server from cfg as config validated it (absolute URLs, a
// known link mode, a default plan among the plans, http(s) portal origins);
// it checks only that the components it cannot do without are there.
func New(cfg Config, d Deps) (*Server, error) {
	var problems []error
	if d.Auth == nil {
		problems = append(problems, errors.New("proxy: no authenticator"))
	}
	if d.Grants == nil {
		problems = append(problems, errors.New("proxy: no grant issuer"))
	}
	if d.Signer == nil {
		problems = append(problems, errors.New("proxy: no token signer"))
	}
	if d.API == nil {
		problems = append(problems, errors.New("proxy: no stream API"))
	}
	if d.Meter == nil {
		problems = append(problems, errors.New("proxy: no meter"))
	}
	if cfg.TokenTTL <= 0 || cfg.LinkTTL <= 0 {
		problems = append(problems, errors.New("proxy: no token or link lifetime (config.Default has them)"))
	}
	if len(cfg.AutoEnable) > 0 && (d.Webhooks == nil || d.Enabler == nil) {
		problems = append(problems, errors.New("proxy: auto-enabling downloads needs a webhook verifier and an enabler"))
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	del, err := url.Parse(strings.TrimRight(cfg.DeliveryURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("proxy: delivery URL: %w", err)
	}
	pub, err := url.Parse(strings.TrimRight(cfg.PublicURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("proxy: public URL: %w", err)
	}
	if cfg.LinkMode == "" {
		cfg.LinkMode = "proxy"
	}
	origins := map[string]bool{}
	for _, o := range append([]string{cfg.PublicURL}, cfg.PortalOrigins...) {
		if n, ok := normalizeOrigin(o); ok {
			origins[n] = true
		}
	}
	setDefault(&cfg.DialTimeout, 5*time.Second)
	setDefault(&cfg.ResponseHeaderTimeout, 30*time.Second)
	setDefault(&cfg.WriteIdleTimeout, 60*time.Second)
	setDefault(&cfg.UpstreamIdleTimeout, 60*time.Second)
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Concurrency == nil {
		d.Concurrency = policy.NewConcurrency()
	}
	if d.ClientIP == nil {
		d.ClientIP = (*policy.ClientIP)(nil)
	}
	if d.GeoIP == nil {
		d.GeoIP = (*policy.GeoIP)(nil)
	}
	if d.Country == nil {
		d.Country = (*policy.CountryPolicy)(nil)
	}
	if d.Metrics == nil {
		d.Metrics = noRecorder{}
	}
	d.Signer = mintCounter{TokenSigner: d.Signer, rec: d.Metrics}
	s := &Server{cfg: cfg, Deps: d, log: d.Log, now: d.Now, delivery: del, public: pub, origins: origins,
		slots: newDownloadSlots(d.Concurrency)}
	s.tokens = newTokenCache(d.Signer, cfg.TokenTTL, d.Now, d.Metrics)
	s.pace = newPacer()
	s.links = newLinkTokens(d.Signer, cfg.LinkTTL, maxLinkTokens)
	s.videos = newVideoCache(d.API, cfg.VideoCacheTTL, d.Now)
	s.rp = s.newReverseProxy()
	s.timeUpstream()
	s.handler = s.middleware(s.routes())
	return s, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// ServeHTTP makes Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// clientIP is the client's address as the request log's middleware read it on
// arrival, before the edges strip the headers it may come from.
func clientIP(r *http.Request) netip.Addr {
	ip, _ := r.Context().Value(clientIPKey).(netip.Addr)
	return ip
}

func (s *Server) plan(name string) (string, Plan) {
	if p, ok := s.cfg.Plans[name]; ok && name != "" {
		return name, p
	}
	return s.cfg.DefaultPlan, s.cfg.Plans[s.cfg.DefaultPlan]
}
