package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/streamgate/streamgate/acked"
	"github.com/streamgate/streamgate/auth"
	"github.com/streamgate/streamgate/config"
	"github.com/streamgate/streamgate/metrics"
	"github.com/streamgate/streamgate/policy"
	"github.com/streamgate/streamgate/proxy"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/usage"
)

// gateway is a wired streamgate: every component built from one Config.
type gateway struct {
	cfg     *config.Config
	log     *zap.Logger
	handler http.Handler
	ledger  usage.Ledger
	geoip   *policy.GeoIP
	redis   *redis.Client
	conc    *policy.Concurrency
	cancel  context.CancelFunc
	// reaped is closed when the ledger reaper has stopped.
	reaped chan struct{}
	// srv is the public routes, told to drain at shutdown.
	srv     *proxy.Server
	metrics *metrics.Metrics
	// admin is the operators' listener (admin.listen); nil when none is
	// configured. adminAddr is its address once Serve listens.
	admin     *adminServer
	adminAddr chan string
	// refusals keeps refused requests for the admin API: in Redis when it is
	// configured, else in this process.
	refusals refusalStore
}

// refusalStore is where refusals are kept and looked up.
type refusalStore interface {
	proxy.RefusalStore
	Get(ctx context.Context, requestID string) (proxy.Refusal, bool, error)
}

// Refusals are kept for a day, at most this many (per replica without Redis):
// long enough to answer a user who writes in about a refusal the same day.
const (
	refusalTTL  = 24 * time.Hour
	refusalKeep = 100_000
)

type gatewayOptions struct {
	// Now replaces the clock (tests).
	Now func() time.Time
	// Wrap, when set, wraps the gateway's handler: the demo serves its page
	// beside the gateway's routes this way.
	Wrap func(http.Handler) http.Handler
}

func loadConfig(path string, getenv func(string) string) (*config.Config, error) {
	if path == "" {
		return nil, errors.New("no configuration file given (--config)")
	}
	return config.Load(path, getenv)
}

func newLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	enc := zapcore.NewJSONEncoder(ec)
	if format == "console" {
		enc = zapcore.NewConsoleEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl)), nil
}

// newGateway wires the components cfg describes into a handler: Stream, the
// portal's identities, the policy, the meter, then the routes over them.
func newGateway(ctx context.Context, cfg *config.Config, log *zap.Logger, opts gatewayOptions) (_ *gateway, err error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g := &gateway{cfg: cfg, log: log, cancel: cancel, metrics: metrics.New(version), adminAddr: make(chan string, 1)}
	// Whatever was opened before a failure is closed; g stays set, whatever the
	// function returns.
	defer func() {
		if err != nil {
			g.Close()
		}
	}()

	signer, err := stream.NewSigner(cfg.Stream.SigningKeyID, cfg.Stream.SigningKey.Bytes())
	if err != nil {
		return nil, err
	}
	sc := cfg.StreamClient()
	sc.HTTPClient = &http.Client{Transport: g.metrics.StreamAPITransport(nil)}
	api, err := stream.NewClient(sc)
	if err != nil {
		return nil, err
	}
	verifier, grants, err := newIdentities(bg, cfg, log, now)
	if err != nil {
		return nil, err
	}
	pol, err := g.newPolicy(ctx, cfg)
	if err != nil {
		return nil, err
	}
	meter, err := g.newMeter(ctx, bg, cfg, now)
	if err != nil {
		return nil, err
	}
	g.refusals = g.newRefusals(now)
	hooks, err := newWebhooks(cfg, now)
	if err != nil {
		return nil, err
	}

	srv, err := proxy.New(proxy.Config{
		PublicURL:     cfg.PublicURL,
		DeliveryURL:   cfg.Stream.DeliveryURL,
		TokenTTL:      cfg.Stream.TokenTTL,
		EgressRules:   cfg.Stream.EgressRules,
		LinkMode:      cfg.Links.Mode,
		LinkTTL:       cfg.Links.TTL,
		BindIP:        cfg.Links.BindIP,
		VideoCacheTTL: cfg.Stream.VideoCacheTTL,
		PortalOrigins: cfg.Auth.PortalOrigins,
		DefaultPlan:   cfg.DefaultPlan,
		Plans:         pol.plans,
		AutoEnable:    cfg.AutoEnable(),
	}, proxy.Deps{
		Auth:        verifier,
		Grants:      grants,
		Signer:      signer,
		API:         api,
		Meter:       meter,
		ClientIP:    pol.clientIP,
		GeoIP:       g.geoip,
		Country:     pol.countries,
		IPLimit:     pol.ipLimit,
		Concurrency: g.conc,
		Checks: map[string]proxy.Check{
			"stream_api": api.Ping,
			"ledger":     g.ledger.Ping,
		},
		Log:      log,
		Now:      now,
		Metrics:  g.metrics,
		Refusals: g.refusals,
		Webhooks: hooks,
		Enabler:  api,
		Links:    linkChecker(g.ledger),
	})
	if err != nil {
		return nil, err
	}
	g.srv = srv
	if cfg.Admin.Listen != "" {
		g.admin = newAdmin(g.metrics, adminOptions{Token: cfg.Admin.Token.Bytes(), Log: log})
		g.admin.Handle("GET /v1/admin/refusals/{request_id}", refusalLookup(g.refusals))
		if rv, ok := g.ledger.(usage.Revoker); ok {
			g.admin.Handle("POST /v1/admin/links/revoke", srv.AdminLinks(rv))
		}
	}
	g.handler = srv
	if opts.Wrap != nil {
		g.handler = opts.Wrap(srv)
	}
	return g, nil
}

// newIdentities builds the portal token verifier and the link grant issuer.
func newIdentities(bg context.Context, cfg *config.Config, log *zap.Logger, now func() time.Time) (*auth.Verifier, proxy.GrantIssuer, error) {
	vc, err := cfg.Verifier()
	if err != nil {
		return nil, nil, err
	}
	vc.Now = now
	vc.OnJWKSError = func(err error) {
		log.Warn("jwks refresh failed", zap.Error(err))
	}
	verifier, err := auth.NewVerifier(bg, vc)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: %w", err)
	}
	var grants *auth.Grants
	if gks := cfg.GrantKeys(); len(gks) > 0 {
		if grants, err = auth.NewGrants(gks, now); err != nil {
			return nil, nil, fmt.Errorf("links.grant_keys: %w", err)
		}
	}
	return verifier, grantIssuer(grants), nil
}

// gatewayPolicy is what the gateway's policy is made of.
type gatewayPolicy struct {
	clientIP  *policy.ClientIP
	countries *policy.CountryPolicy
	ipLimit   proxy.RateLimiter
	plans     map[string]proxy.Plan
}

// newPolicy builds who may download from where and how often: the client
// address and country, the rate limits and the concurrency cap, through Redis
// when it is configured.
func (g *gateway) newPolicy(ctx context.Context, cfg *config.Config) (gatewayPolicy, error) {
	var pol gatewayPolicy
	var err error
	if pol.clientIP, err = policy.NewClientIP(cfg.Policy.TrustedProxies); err != nil {
		return pol, fmt.Errorf("policy.trusted_proxies: %w", err)
	}
	if cfg.Policy.GeoIPDB != "" {
		if g.geoip, err = policy.OpenGeoIP(cfg.Policy.GeoIPDB); err != nil {
			return pol, fmt.Errorf("policy.geoip_db: %w", err)
		}
	}
	if pol.countries, err = policy.NewCountryPolicy(cfg.CountryRules()); err != nil {
		return pol, fmt.Errorf("country rules: %w", err)
	}
	if cfg.Redis.Addr != "" {
		g.redis = openRedis(ctx, cfg.Redis, g.log)
	}
	log := g.log
	maxKeys := cfg.Policy.MaxLimiterKeys
	newLimiter := func(l policy.Limit, prefix string) proxy.RateLimiter {
		if g.redis == nil {
			return policy.NewLimiter(l, maxKeys)
		}
		return policy.NewRedisLimiter(g.redis, l, cfg.Redis.KeyPrefix+prefix,
			policy.WithLocalMaxKeys(maxKeys),
			policy.WithOnError(func(err error) {
				log.Warn("rate limit falling back to this replica", zap.Error(err))
			}))
	}
	// max_concurrent holds across replicas through Redis, else per process.
	g.conc = policy.NewConcurrency()
	if g.redis != nil {
		g.conc = policy.NewRedisConcurrency(g.redis, cfg.Redis.KeyPrefix,
			policy.WithSlotLease(cfg.Redis.SlotLease),
			policy.WithSlotOnError(func(err error) {
				log.Warn("concurrency cap falling back to this replica", zap.Error(err))
			}))
	}
	pol.ipLimit = newLimiter(cfg.Policy.IPLimit.Limit("ip"), "")
	pol.plans = map[string]proxy.Plan{}
	for name, p := range cfg.Plans {
		// Every plan names its buckets "links" and "downloads": the plan in the
		// prefix keeps plans apart in Redis, as they are in memory.
		pol.plans[name] = proxy.Plan{
			MinutesPerMonth: p.MinutesPerMonth,
			Links:           newLimiter(p.Links.Limit("links"), "plan:"+name+":"),
			Downloads:       newLimiter(p.Downloads.Limit("downloads"), "plan:"+name+":"),
			MaxConcurrent:   p.MaxConcurrent,
			// Paced per replica, as the cap is without Redis.
			MaxBytesPerSecond: p.MaxBytesPerSecond,
		}
	}
	return pol, nil
}

// linkChecker is the ledger's revocation check for requests that open no
// delivery, when it keeps revocations.
func linkChecker(l usage.Ledger) proxy.LinkChecker {
	if lc, ok := l.(proxy.LinkChecker); ok {
		return lc
	}
	return nil
}

// newWebhooks verifies Stream's webhooks with the configured secrets; nil, and
// POST /hooks/stream off, when there are none.
func newWebhooks(cfg *config.Config, now func() time.Time) (proxy.WebhookVerifier, error) {
	wc, ok := cfg.Webhook()
	if !ok {
		// A nil *stream.WebhookVerifier inside the interface would switch the
		// route on.
		return nil, nil
	}
	wc.Now = now
	v, err := stream.NewWebhookVerifier(wc)
	if err != nil {
		return nil, fmt.Errorf("stream.webhook_secrets: %w", err)
	}
	return v, nil
}

// openRedis connects to the Redis the limits and the concurrency cap share.
// An unreachable Redis is not fatal: limits fall back to this process until
// it answers.
func openRedis(ctx context.Context, rc config.Redis, log *zap.Logger) *redis.Client {
	redis.SetLogger(redisLog{log.Named("redis")})
	c := redis.NewClient(&redis.Options{
		Addr:     rc.Addr,
		Password: string(rc.Password.Bytes()),
		DB:       rc.DB,
		// Without it the limiter's short deadline never reaches the socket
		// and a slow Redis holds every request for the read timeout.
		ContextTimeoutEnabled: true,
		DialTimeout:           time.Second,
		ReadTimeout:           500 * time.Millisecond,
		WriteTimeout:          500 * time.Millisecond,
	})
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		log.Warn("redis unreachable at start; rate limits are per replica until it answers", zap.Error(err))
	}
	return c
}

// newMeter opens the ledger, settles what the last run left open and starts
// the reaper on bg.
func (g *gateway) newMeter(ctx, bg context.Context, cfg *config.Config, now func() time.Time) (*usage.Meter, error) {
	var err error
	if g.ledger, err = openLedger(ctx, cfg); err != nil {
		return nil, err
	}
	mc, err := cfg.Meter()
	if err != nil {
		return nil, err
	}
	mc.Now, mc.Logger, mc.OnSettle = now, g.log, g.metrics.Settled
	// The meter's ledger calls are timed; g.ledger stays the ledger itself,
	// for readiness and Close.
	meter := usage.NewMeter(g.metrics.Ledger(g.ledger), mc)
	// Whatever was open when the last process stopped is settled from its last
	// checkpoint before anything new is reserved.
	recovered, err := meter.Recover(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger recovery: %w", err)
	}
	if len(recovered) > 0 {
		g.log.Info("settled deliveries left open by the previous run", zap.Int("deliveries", len(recovered)))
	}
	// The reaper settles again what failed to settle; on a shared ledger it also
	// settles what replicas that died left open and keeps this replica's stalled
	// deliveries marked alive.
	g.reaped = make(chan struct{})
	go func() {
		defer close(g.reaped)
		meter.RunReaper(bg, 0)
	}()
	return meter, nil
}

// newRefusals keeps refusals in Redis when it is configured, so that any
// replica's admin API finds any refusal, else in this process.
func (g *gateway) newRefusals(now func() time.Time) refusalStore {
	if g.redis != nil {
		return proxy.NewRedisRefusals(g.redis, g.cfg.Redis.KeyPrefix, refusalKeep, refusalTTL, g.log)
	}
	return proxy.NewMemoryRefusals(refusalKeep, refusalTTL, now)
}

// Serve listens on cfg.Listen (or ln), and on admin.listen when set, until ctx
// ends; then it drains (see drain) and stops the admin listener last, so a
// scrape during the drain still sees the last downloads settle.
func (g *gateway) Serve(ctx context.Context, ln net.Listener) error {
	if g.admin != nil {
		aln, err := net.Listen("tcp", g.cfg.Admin.Listen)
		if err != nil {
			if ln != nil {
				ln.Close()
			}
			return fmt.Errorf("admin.listen: %w", err)
		}
		adminErr := make(chan error, 1)
		go func() { adminErr <- g.admin.Serve(aln) }()
		// Only the first Serve's address is kept; nobody need read it.
		select {
		case g.adminAddr <- aln.Addr().String():
		default:
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = g.admin.Shutdown(sctx)
			if err := <-adminErr; err != nil {
				g.log.Error("admin server", zap.Error(err))
			}
		}()
	}
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", g.cfg.Listen); err != nil {
			return err
		}
	}
	reqCtx, cancelRequests := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelRequests(nil)
	var running inflight
	hs := &http.Server{
		Handler:           running.track(g.handler),
		ReadHeaderTimeout: 10 * time.Second,
		// ReadTimeout bounds reading a request (headers and the small JSON
		// bodies); net/http clears it once the body is read, so it does not cut
		// long downloads.
		ReadTimeout:    30 * time.Second,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		// No WriteTimeout: download routes roll a write deadline forward instead.
		BaseContext: func(net.Listener) context.Context { return reqCtx },
		// Each request knows its connection, so metering can ask the kernel
		// what the client acknowledged (package acked).
		ConnContext: acked.ConnContext,
		ErrorLog:    zap.NewStdLog(g.log.Named("http")),
	}
	errc := make(chan error, 1)
	// Answers net/http writes itself (431, malformed requests) carry problem bodies.
	go func() { errc <- hs.Serve(proxy.ProblemListener(acked.Listen(ln))) }()
	g.log.Info("streamgate listening", zap.String("addr", ln.Addr().String()), zap.String("version", version))
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	return g.drain(hs, &running, cancelRequests)
}

// drain shuts the public server down without cutting a download that can
// finish within shutdown_grace. At once, /readyz answers 503 and every new
// request is refused (503, Connection: close) while the listener stays open,
// so the load balancer sees the replica not ready rather than connections
// refused; keep-alive connections close after their answer. When the running
// requests have ended, or the grace period is over, the listener closes;
// what still runs then is cut off (its requests' context ends with
// proxy.ErrShutdown) and settled for what it delivered.
func (g *gateway) drain(hs *http.Server, running *inflight, cancelRequests context.CancelCauseFunc) error {
	start := time.Now()
	g.log.Info("shutting down", zap.Duration("grace", g.cfg.ShutdownGrace), zap.Int64("requests", running.count()))
	if g.srv != nil {
		g.srv.Drain()
	}
	hs.SetKeepAlivesEnabled(false)
	gctx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownGrace)
	defer cancel()
	running.idle(gctx)
	// Whatever the drain left of the grace period (at least a moment, for the
	// idle connections) lets the last answers go out.
	sctx, cancel := context.WithTimeout(context.Background(), max(g.cfg.ShutdownGrace-time.Since(start), 100*time.Millisecond))
	defer cancel()
	err := hs.Shutdown(sctx)
	if err != nil {
		// Cut what is left: cancelling the requests' context ends their upstream
		// bodies, and each download settles what it delivered.
		cancelRequests(proxy.ErrShutdown)
		_ = hs.Close()
		// Close does not wait for handlers: wait for the cut downloads to settle,
		// or Close of the gateway would shut the ledger under them and leave
		// their deliveries open until the next start.
		wctx, cancel := context.WithTimeout(context.Background(), settleWait)
		defer cancel()
		if !running.wait(wctx) {
			g.log.Warn("requests still running after shutdown")
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = nil
	}
	g.log.Info("shut down", zap.Duration("took", time.Since(start)))
	return err
}

// settleWait bounds how long Serve waits, after cutting the remaining requests
// off, for them to settle; a ledger write times out after 10s.
const settleWait = 15 * time.Second

// inflight counts the requests being served.
type inflight struct {
	wg sync.WaitGroup
	n  atomic.Int64
}

func (f *inflight) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.wg.Add(1)
		f.n.Add(1)
		defer f.wg.Done()
		defer f.n.Add(-1)
		h.ServeHTTP(w, r)
	})
}

func (f *inflight) count() int64 { return f.n.Load() }

// idle waits until no request runs, or ctx ends. Probes and refusals during
// the drain are requests too, but they end at once.
func (f *inflight) idle(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for f.count() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// wait reports whether every request ended before ctx did.
func (f *inflight) wait(ctx context.Context) bool {
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// redisLog sends go-redis's own messages (pool dial failures and the like) to the
// process log at debug level: the limiters report failures themselves.
type redisLog struct{ log *zap.Logger }

func (l redisLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...))
}

// openLedger opens the store cfg.Ledger names.
func openLedger(ctx context.Context, cfg *config.Config) (usage.Ledger, error) {
	var (
		l   usage.Ledger
		err error
	)
	switch cfg.Ledger.Driver {
	case "sqlite":
		l, err = usage.OpenSQLite(ctx, cfg.Ledger.Path)
	case "postgres":
		l, err = usage.OpenPostgres(ctx, string(cfg.Ledger.DSN.Bytes()), usage.StaleAfter(cfg.Ledger.StaleAfter))
	default:
		err = fmt.Errorf("driver %q is not supported", cfg.Ledger.Driver)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return l, nil
}

func (g *gateway) Close() {
	g.cancel()
	if g.reaped != nil {
		<-g.reaped
	}
	// The slots' renewal stops before the client it uses closes.
	g.conc.Close()
	// Queued refusals go to Redis before its client closes.
	if rs, ok := g.refusals.(*proxy.RedisRefusals); ok {
		rs.Close()
	}
	if g.redis != nil {
		_ = g.redis.Close()
	}
	if g.ledger != nil {
		_ = g.ledger.Close()
	}
	if g.geoip != nil {
		_ = g.geoip.Close()
	}
}

// grantIssuer keeps a typed nil out of the interface: without grant keys (direct
// link mode) link downloads answer 401.
func grantIssuer(g *auth.Grants) proxy.GrantIssuer {
	if g == nil {
		return noGrants{}
	}
	return g
}

type noGrants struct{}

func (noGrants) Sign(auth.Grant) (string, error) { return "", errors.New("no grant keys configured") }
func (noGrants) Verify(string) (auth.Grant, error) {
	return auth.Grant{}, fmt.Errorf("%w: no grant keys configured", auth.ErrInvalidToken)
}

// The components newGateway hands proxy.New satisfy the interfaces proxy
// declares; a change to either side fails here, at build time.
var (
	_ proxy.Authenticator   = (*auth.Verifier)(nil)
	_ proxy.GrantIssuer     = (*auth.Grants)(nil)
	_ proxy.GrantIssuer     = noGrants{}
	_ proxy.TokenSigner     = (*stream.Signer)(nil)
	_ proxy.StreamAPI       = (*stream.Client)(nil)
	_ proxy.DownloadEnabler = (*stream.Client)(nil)
	_ proxy.LinkChecker     = (*usage.SQLite)(nil)
	_ proxy.LinkChecker     = (*usage.Postgres)(nil)
	_ proxy.WebhookVerifier = (*stream.WebhookVerifier)(nil)
	_ proxy.Metering        = (*usage.Meter)(nil)
	_ proxy.RateLimiter     = (*policy.Limiter)(nil)
	_ proxy.RateLimiter     = (*policy.RedisLimiter)(nil)
	_ proxy.ClientAddr      = (*policy.ClientIP)(nil)
	_ proxy.Locator         = (*policy.GeoIP)(nil)
	_ proxy.CountryRules    = (*policy.CountryPolicy)(nil)
	_ proxy.ConcurrencyCap  = (*policy.Concurrency)(nil)
)
