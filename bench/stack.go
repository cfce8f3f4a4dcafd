// Package bench measures streamgate's speed and memory. It builds the whole
// download path in one process, over real loopback sockets: the Stream emulator
// (streamtest) on an httptest server, and the gateway (proxy.New) wired as
// cmd/streamgate wires it, with the real portal JWT verifier, link grants, policy
// (client IP, GeoIP country, country rules, rate limiters, concurrency caps),
// Stream API client, token signer and a SQLite ledger in a temporary directory.
// Rate limits and quotas are set high enough never to refuse, so that what is
// measured is the cost of checking them, not their refusals.
//
// The Go benchmarks in this package and the load harness in bench/load share
// the Stack built here; docs/benchmarks.md holds the results.
package bench

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"fmt"
	"github.com/streamgate/streamgate/config"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"

	"github.com/streamgate/streamgate/acked"
	"github.com/streamgate/streamgate/auth"
	"github.com/streamgate/streamgate/policy"
	"github.com/streamgate/streamgate/proxy"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
	"github.com/streamgate/streamgate/usage"
)

// Plan is the only plan the stack's users have.
const Plan = "bench"

// Options configure a Stack. The zero value is usable.
type Options struct {
	// Videos are served by the emulator, private (signed URLs only), with their
	// default and audio downloads ready. Default: DefaultVideos(1, 1 MiB, 600 s).
	Videos []streamtest.Video
	// Mode is the metering mode. Default usage.Proportional.
	Mode usage.Mode
	// Dir holds the SQLite ledger. Default: a temporary directory removed by Close.
	Dir string
	// TokenTTL is the life of the Stream tokens the gateway mints (default the
	// gateway's, 5m). The gateway reuses a token while more than half its life is
	// left, so 1ns makes it mint one per request.
	TokenTTL time.Duration
	// Log receives the gateway's JSON log lines at level info, as in production.
	// Default io.Discard: the lines are still encoded, only not kept.
	Log io.Writer
	// ReadTimeout is the gateway server's http.Server.ReadTimeout. Default 30s,
	// the value cmd/streamgate uses; negative means none.
	ReadTimeout time.Duration
}

// DefaultVideos returns n videos of size bytes and seconds of duration, with
// fixed UIDs so that runs are comparable.
func DefaultVideos(n int, size int64, seconds float64) []streamtest.Video {
	vs := make([]streamtest.Video, n)
	for i := range vs {
		vs[i] = streamtest.Video{
			UID:               fmt.Sprintf("%08x%024x", 0xbe0c0000+i, size),
			Duration:          seconds,
			Size:              size,
			RequireSignedURLs: true,
			ReadyToStream:     true,
		}
	}
	return vs
}

// Stack is the emulator and the gateway, each on its own loopback socket.
type Stack struct {
	// Emulator is the Stream account the gateway talks to.
	Emulator *streamtest.Emulator
	// Ledger is the gateway's SQLite ledger.
	Ledger *usage.SQLite
	// Gateway is the handler under test.
	Gateway *proxy.Server
	// GatewayURL and EmulatorURL are the two servers' origins.
	GatewayURL, EmulatorURL string
	// Videos are the videos the emulator serves.
	Videos []streamtest.Video

	emuSrv, gwSrv *httptest.Server
	signer        *countingSigner
	ledger        *timedLedger
	portalSecret  []byte
	inflight      atomic.Int64
	dir           string
	removeDir     bool
	cancel        context.CancelFunc
}

// countingSigner counts the Stream tokens the gateway mints.
type countingSigner struct {
	*stream.Signer
	n atomic.Int64
}

func (s *countingSigner) Mint(c stream.Claims, now time.Time) (string, error) {
	s.n.Add(1)
	return s.Signer.Mint(c, now)
}

var _ proxy.TokenSigner = (*countingSigner)(nil)

// New builds and starts a Stack. Close it when done.
func New(ctx context.Context, opts Options) (st *Stack, err error) {
	if len(opts.Videos) == 0 {
		opts.Videos = DefaultVideos(1, 1<<20, 600)
	}
	if opts.Mode == "" {
		opts.Mode = usage.Proportional
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = 30 * time.Second
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	st = &Stack{Videos: opts.Videos, cancel: cancel, dir: opts.Dir}
	defer func() {
		if err != nil {
			st.Close()
			st = nil
		}
	}()
	if st.dir == "" {
		if st.dir, err = os.MkdirTemp("", "streamgate-bench-"); err != nil {
			return nil, err
		}
		st.removeDir = true
	}

	// The emulator: every loopback address is in GB, so the GeoIP lookup and the
	// country rules run on every request.
	geo, err := streamtest.CountryDB(map[string]string{"127.0.0.0/8": "GB", "::1": "GB"})
	if err != nil {
		return nil, err
	}
	emu := streamtest.New(streamtest.Options{AccountID: "bench-account", APIToken: randomHex(24), GeoIP: geo})
	for _, v := range opts.Videos {
		emu.AddVideo(v)
		emu.SetDownloadReady(v.UID, stream.Default)
		emu.SetDownloadReady(v.UID, stream.Audio)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	keyID := randomHex(16)
	emu.AddSigningKey(keyID, &key.PublicKey)
	st.Emulator = emu
	st.emuSrv = streamtest.NewServer(emu.Handler())
	st.EmulatorURL = st.emuSrv.URL
	emu.SetDeliveryBase(st.EmulatorURL)

	// The gateway's listener first: its address is the public URL of links.
	st.gwSrv = httptest.NewUnstartedServer(nil)
	st.GatewayURL = "http://" + st.gwSrv.Listener.Addr().String()

	signer, err := stream.NewSignerFromKey(keyID, key)
	if err != nil {
		return nil, err
	}
	st.signer = &countingSigner{Signer: signer}
	api, err := stream.NewClient(stream.ClientConfig{
		AccountID: emu.AccountID(),
		APIToken:  emu.APIToken(),
		BaseURL:   st.EmulatorURL + "/client/v4/",
	})
	if err != nil {
		return nil, err
	}
	log := newLogger(opts.Log)
	st.portalSecret = []byte(randomHex(32))
	verifier, err := auth.NewVerifier(bg, auth.VerifierConfig{
		Algorithms:  []string{"HS256"},
		HMACSecrets: map[string][]byte{"": st.portalSecret},
		Leeway:      30 * time.Second,
		UserClaim:   "sub",
		PlanClaim:   "plan",
	})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	grants, err := auth.NewGrants([]auth.GrantKey{{ID: "bench1", Secret: []byte(randomHex(32))}}, nil)
	if err != nil {
		return nil, err
	}
	clientIP, err := policy.NewClientIP(nil)
	if err != nil {
		return nil, err
	}
	geoip, err := policy.NewGeoIPFromBytes(geo)
	if err != nil {
		return nil, err
	}
	countries, err := policy.NewCountryPolicy(policy.CountryRules{Block: []string{"KP"}, UnknownCountry: "allow"}, nil)
	if err != nil {
		return nil, err
	}
	// Real token buckets, too big to refuse anything.
	high := policy.Limit{Rate: rate.Limit(1e6), Burst: 1e6}
	plans := map[string]proxy.Plan{Plan: {
		MinutesPerMonth: 1e9,
		Links:           policy.NewLimiter(withName(high, "links"), 0),
		Downloads:       policy.NewLimiter(withName(high, "downloads"), 0),
		MaxConcurrent:   100000,
	}}

	if st.Ledger, err = usage.OpenSQLite(ctx, st.dir+"/ledger.db"); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	st.ledger = newTimedLedger(st.Ledger)
	meter := usage.NewMeter(st.ledger, usage.MeterConfig{
		Mode:            opts.Mode,
		ResumeWindow:    time.Hour,
		CheckpointEvery: 2 * time.Second,
		Logger:          log,
	})
	if _, err := meter.Recover(ctx); err != nil {
		return nil, fmt.Errorf("ledger recovery: %w", err)
	}
	dc := config.Default()
	if opts.TokenTTL > 0 {
		dc.Stream.TokenTTL = opts.TokenTTL
	}
	st.Gateway, err = proxy.New(proxy.Config{
		PublicURL:     st.GatewayURL,
		DeliveryURL:   st.EmulatorURL,
		TokenTTL:      dc.Stream.TokenTTL,
		LinkTTL:       dc.Links.TTL,
		VideoCacheTTL: dc.Stream.VideoCacheTTL,
		LinkMode:      "proxy",
		DefaultPlan:   Plan,
		Plans:         plans,
	}, proxy.Deps{
		Auth:        verifier,
		Grants:      grants,
		Signer:      st.signer,
		API:         api,
		Meter:       meter,
		ClientIP:    clientIP,
		GeoIP:       geoip,
		Country:     countries,
		IPLimit:     policy.NewLimiter(withName(high, "ip"), 0),
		Concurrency: policy.NewConcurrency(),
		Checks:      map[string]proxy.Check{"stream_api": api.Ping, "ledger": st.ledger.Ping},
		Log:         log,
	})
	if err != nil {
		return nil, err
	}
	// The server settings of cmd/streamgate's gateway.Serve.
	hs := st.gwSrv.Config
	hs.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st.inflight.Add(1)
		defer st.inflight.Add(-1)
		st.Gateway.ServeHTTP(w, r)
	})
	hs.ReadHeaderTimeout = 10 * time.Second
	hs.ReadTimeout = max(opts.ReadTimeout, 0)
	hs.IdleTimeout = 120 * time.Second
	hs.MaxHeaderBytes = 64 << 10
	hs.ErrorLog = zap.NewStdLog(log.Named("http"))
	hs.ConnContext = acked.ConnContext
	st.gwSrv.Listener = acked.Listen(streamtest.RealMSS(st.gwSrv.Listener))
	st.gwSrv.Start()
	return st, nil
}

func withName(l policy.Limit, name string) policy.Limit {
	l.Name = name
	return l
}

// newLogger is cmd/streamgate's JSON logger at level info, writing to w.
func newLogger(w io.Writer) *zap.Logger {
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.AddSync(w), zapcore.InfoLevel))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Close stops both servers and removes the ledger's temporary directory.
func (s *Stack) Close() {
	if s.gwSrv != nil {
		if s.gwSrv.URL != "" {
			s.gwSrv.Close()
		} else {
			_ = s.gwSrv.Listener.Close()
		}
	}
	if s.emuSrv != nil {
		s.emuSrv.Close()
	}
	if s.Ledger != nil {
		_ = s.Ledger.Close()
	}
	s.cancel()
	if s.removeDir {
		_ = os.RemoveAll(s.dir)
	}
}

// UserToken is a portal JWT for user on the bench plan, valid for a day.
func (s *Stack) UserToken(user string) (string, error) {
	now := time.Now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "plan": Plan, "iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix(),
	}).SignedString(s.portalSecret)
}

// DownloadURL is the gateway's authenticated download URL of a video's MP4.
func (s *Stack) DownloadURL(uid string) string {
	return s.GatewayURL + "/v1/videos/" + uid + "/downloads/default.mp4"
}

// LinksURL is where links to a video are created.
func (s *Stack) LinksURL(uid string) string {
	return s.GatewayURL + "/v1/videos/" + uid + "/links"
}

// DirectURL is the emulator's delivery URL of a video's MP4, signed with the
// gateway's key for ttl: the same download without the gateway.
func (s *Stack) DirectURL(uid string, ttl time.Duration) (string, error) {
	now := time.Now()
	tok, err := s.signer.Signer.Mint(stream.Claims{
		Video: uid, NotBefore: now.Add(-time.Minute), ExpiresAt: now.Add(ttl), Downloadable: true,
	}, now)
	if err != nil {
		return "", err
	}
	return stream.DeliveryURL(s.EmulatorURL, tok, stream.Default, "")
}

// LedgerLatency reports the time the gateway's ledger calls took (waiting for
// SQLite's write lock included) since the last call, most frequent first.
func (s *Stack) LedgerLatency() []Latency { return s.ledger.latencies() }

// Mints is the number of Stream tokens the gateway has minted.
func (s *Stack) Mints() int64 { return s.signer.n.Load() }

// InFlight is the number of requests the gateway is serving.
func (s *Stack) InFlight() int64 { return s.inflight.Load() }

// Quiesce waits until neither the gateway nor the emulator serves a request,
// so that every delivery has settled in the ledger and been counted.
func (s *Stack) Quiesce(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for s.InFlight() > 0 || s.Emulator.InFlight() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("quiesce: gateway %d, emulator %d requests still in flight: %w",
				s.InFlight(), s.Emulator.InFlight(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// DropUpstreamConnections closes the gateway's idle keep-alive connections to
// the emulator, so that a goroutine count can return to where it started. Call
// it only after Quiesce.
func (s *Stack) DropUpstreamConnections() { s.emuSrv.CloseClientConnections() }

// Billing compares what the ledger billed with what the emulator delivered.
type Billing struct {
	// LedgerMinutes and LedgerBytes are what users were billed and received,
	// summed over the settled deliveries.
	LedgerMinutes float64
	LedgerBytes   int64
	// StreamMinutes and StreamBytes are what the ledger counted as read from
	// Stream for them: what the operator pays.
	StreamMinutes float64
	StreamBytes   int64
	Deliveries    int64
	// Emulator is what the emulator counted, all videos together.
	Emulator streamtest.Stats
}

// Billing reads both sides for the quota periods of from and to (the same period
// unless a run crosses a month boundary). Quiesce first.
func (s *Stack) Billing(ctx context.Context, from, to time.Time) (Billing, error) {
	periods := []string{usage.Period(from)}
	if p := usage.Period(to); p != periods[0] {
		periods = append(periods, p)
	}
	var b Billing
	for _, p := range periods {
		rows, err := s.Ledger.Report(ctx, p)
		if err != nil {
			return b, err
		}
		for _, r := range rows {
			b.LedgerMinutes += r.Minutes
			b.LedgerBytes += r.Bytes
			b.StreamMinutes += r.StreamMinutes
			b.StreamBytes += r.StreamBytes
			b.Deliveries += r.Deliveries
		}
	}
	b.Emulator = s.Emulator.TotalStats()
	return b, nil
}

// NewClient is an HTTP client for conns concurrent connections per host, with no
// compression, as a download client would be configured.
func NewClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}
