// Command compare measures streamgate side by side with the proxies it should
// cost no more than: a bare httputil.ReverseProxy (32 KiB and 256 KiB copy
// buffers) and nginx (proxy_buffering off), all in front of the same Stream
// emulator on loopback, each proxy a process of its own so that its CPU time
// and memory can be read from /proc. Rounds are interleaved (every variant
// once per round, in a rotating order), so that a noisy neighbour weighs on
// all of them alike; the report gives medians, ranges and per-round ratios,
// and is written into docs/benchmarks.md between two markers.
//
//	go run ./bench/compare               # the full run (about 15 minutes)
//	go run ./bench/compare -smoke        # a short run that only checks the harness works
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

// config is the run's flags.
type config struct {
	rounds      int
	duration    time.Duration
	smallSize   int64
	largeSize   int64
	slow        int
	slowRate    int64
	linkClients int
	out         string
	postgres    string
	nginx       bool
	gatewayBin  string
	profile     string
	// serve, listen and the rest run this program as one of its servers.
	serve, listen, upstream, keyFile, secret string
	buffer                                   int
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	var smoke bool
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.rounds, "rounds", 5, "interleaved rounds")
	fs.DurationVar(&c.duration, "duration", 4*time.Second, "length of each request-rate measurement")
	fs.Int64Var(&c.smallSize, "small", 64<<10, "size of the small file, bytes")
	fs.Int64Var(&c.largeSize, "large", 256<<20, "size of the large file, bytes")
	fs.IntVar(&c.slow, "slow", 200, "slow downloads in flight for the memory measurement")
	fs.Int64Var(&c.slowRate, "slow-rate", 256<<10, "bytes per second each slow download reads")
	fs.IntVar(&c.linkClients, "link-clients", 16, "clients creating links at once")
	fs.StringVar(&c.out, "out", "", "Markdown file whose marked section receives the report (docs/benchmarks.md); empty prints it only")
	fs.StringVar(&c.postgres, "postgres", getenv("STREAMGATE_TEST_POSTGRES"),
		"PostgreSQL URL: also measure streamgate on a PostgreSQL ledger (a schema of its own, dropped after)")
	fs.BoolVar(&c.nginx, "nginx", true, "measure nginx (installed with apt-get when missing; skipped when that fails)")
	fs.StringVar(&c.gatewayBin, "streamgate", "", "a streamgate binary to measure; empty builds ./cmd/streamgate")
	fs.StringVar(&c.profile, "profile", "", "instead of the rounds, profile the SQLite streamgate under each workload (CPU, heap, goroutines) into this directory")
	fs.BoolVar(&smoke, "smoke", false, "a short run: 1 round, small sizes, 10 slow downloads")
	fs.StringVar(&c.serve, "serve", "", "internal: serve as bare-proxy or sign")
	fs.StringVar(&c.listen, "listen", "", "internal: address to serve on")
	fs.StringVar(&c.upstream, "upstream", "", "internal: the bare proxy's upstream")
	fs.IntVar(&c.buffer, "buffer", 32<<10, "internal: the bare proxy's copy buffer, bytes")
	fs.StringVar(&c.keyFile, "key", "", "internal: the signing endpoint's RSA key (PEM)")
	fs.StringVar(&c.secret, "secret", "", "internal: the signing endpoint's HS256 secret")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if smoke {
		c.rounds, c.duration, c.largeSize, c.slow, c.slowRate = 1, 500*time.Millisecond, 4<<20, 10, 256<<10
	}
	if c.rounds < 1 || c.duration <= 0 || c.smallSize <= 0 || c.largeSize <= 0 || c.slow < 1 || c.slowRate <= 0 {
		return c, errors.New("rounds, duration, sizes, slow and slow-rate must be positive")
	}
	return c, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	switch cfg.serve {
	case "":
	case "bare-proxy", "sign":
		return serve(ctx, cfg)
	default:
		return fmt.Errorf("-serve %q: want bare-proxy or sign", cfg.serve)
	}
	if cfg.profile != "" {
		return profileAll(ctx, cfg, cfg.profile, stderr)
	}
	rep, err := measureAll(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	md := rep.markdown()
	fmt.Fprint(stdout, md)
	if cfg.out != "" {
		return writeSection(cfg.out, md)
	}
	return nil
}

// serve runs one of the harness's own servers until ctx ends.
func serve(ctx context.Context, cfg config) error {
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	var serr error
	if cfg.serve == "bare-proxy" {
		serr = serveBare(ln, cfg.upstream, cfg.buffer)
	} else {
		serr = serveSign(ln, cfg.keyFile, cfg.secret, cfg.upstream)
	}
	if ctx.Err() != nil {
		return nil
	}
	return serr
}

// setup is everything one run starts.
type setup struct {
	dir        string
	emu        *streamtest.Emulator
	emuURL     string
	smallVideo streamtest.Video
	largeVideo streamtest.Video
	signer     *stream.Signer
	secret     string
	proxies    []*proc // the download proxies, streamgate first
	gateways   map[string]*proc
	signPeer   *proc
	direct     *proc // streamgate with direct links
	skipped    []string
	dropSchema func()
	// whileSlow, when set, runs while the slow downloads are all in flight
	// (-profile takes its memory profiles then).
	whileSlow func() error
}

func (s *setup) close() {
	for _, p := range s.proxies {
		p.stop()
	}
	s.direct.stop()
	s.signPeer.stop()
	if s.dropSchema != nil {
		s.dropSchema()
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// start builds streamgate and starts the emulator and every proxy.
func startAll(ctx context.Context, cfg config, log io.Writer) (*setup, error) {
	dir, err := os.MkdirTemp("", "streamgate-compare-")
	if err != nil {
		return nil, err
	}
	s := &setup{dir: dir, gateways: map[string]*proc{}, secret: randomHex(32)}
	bin := cfg.gatewayBin
	if bin == "" {
		fmt.Fprintln(log, "building streamgate")
		if bin, err = buildGateway(dir); err != nil {
			return s, err
		}
	}
	s.smallVideo = video(0, cfg.smallSize, 60)
	s.largeVideo = video(1, cfg.largeSize, 3600)
	s.emu = streamtest.New(streamtest.Options{AccountID: "compare-account", APIToken: randomHex(24)})
	for _, v := range []streamtest.Video{s.smallVideo, s.largeVideo} {
		s.emu.AddVideo(v)
		s.emu.SetDownloadReady(v.UID, stream.Default)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return s, err
	}
	keyID := randomHex(16)
	s.emu.AddSigningKey(keyID, &key.PublicKey)
	if s.signer, err = stream.NewSignerFromKey(keyID, key); err != nil {
		return s, err
	}
	srv := streamtest.NewServer(s.emu.Handler())
	go func() { <-ctx.Done(); srv.Close() }()
	s.emuURL = srv.URL
	s.emu.SetDeliveryBase(s.emuURL)
	emuAddr := strings.TrimPrefix(s.emuURL, "http://")

	g := gatewaySetup{bin: bin, account: s.emu.AccountID(), apiToken: s.emu.APIToken(), emulator: s.emuURL,
		keyID: keyID, key: key, secret: s.secret}
	sqlite := fmt.Sprintf("  driver: sqlite\n  path: %q", filepath.Join(dir, "ledger.db"))
	gw, err := startGateway(ctx, dir, "streamgate", g, "proxy", sqlite)
	if err != nil {
		return s, err
	}
	s.proxies = append(s.proxies, gw)
	s.gateways[gw.name] = gw
	if cfg.postgres != "" {
		dsn, drop, err := freshSchema(ctx, cfg.postgres)
		if err != nil {
			return s, err
		}
		s.dropSchema = drop
		pg, err := startGateway(ctx, dir, "streamgate-pg", g, "proxy", fmt.Sprintf("  driver: postgres\n  dsn: {value: %q}", dsn))
		if err != nil {
			return s, err
		}
		s.proxies = append(s.proxies, pg)
		s.gateways[pg.name] = pg
	}
	if s.direct, err = startGateway(ctx, dir, "streamgate-direct", g, "direct",
		fmt.Sprintf("  driver: sqlite\n  path: %q", filepath.Join(dir, "direct.db"))); err != nil {
		return s, err
	}
	for _, size := range []int{32 << 10, 256 << 10} {
		p, err := startSelf(ctx, dir, fmt.Sprintf("bare-%dk", size>>10),
			"-serve", "bare-proxy", "-upstream", s.emuURL, "-buffer", fmt.Sprint(size))
		if err != nil {
			return s, err
		}
		s.proxies = append(s.proxies, p)
	}
	if cfg.nginx {
		if bin, err := findNginx(log); err != nil {
			s.skipped = append(s.skipped, "nginx: "+err.Error())
			fmt.Fprintln(log, "skipping nginx:", err)
		} else if p, err := startNginx(ctx, dir, bin, emuAddr); err != nil {
			s.skipped = append(s.skipped, "nginx: "+err.Error())
			fmt.Fprintln(log, "skipping nginx:", err)
		} else {
			s.proxies = append(s.proxies, p)
		}
	}
	keyFile := filepath.Join(dir, "sign-key.pem")
	if err := writeKey(keyFile, key); err != nil {
		return s, err
	}
	if s.signPeer, err = startSelf(ctx, dir, "sign", "-serve", "sign", "-key", keyFile, "-secret", s.secret,
		"-upstream", s.emuURL); err != nil {
		return s, err
	}
	return s, nil
}

// video is a private video of the emulator's with a fixed UID.
func video(i int, size int64, seconds float64) streamtest.Video {
	return streamtest.Video{
		UID:               fmt.Sprintf("%08x%024x", 0xc0c0000+i, size),
		Duration:          seconds,
		Size:              size,
		RequireSignedURLs: true,
		ReadyToStream:     true,
	}
}

// freshSchema creates a schema for the PostgreSQL gateway and returns a DSN
// that uses it, and a function that drops it.
func freshSchema(ctx context.Context, base string) (string, func(), error) {
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(ctx)
	schema := "sgcompare_" + randomHex(6)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		return "", nil, fmt.Errorf("postgres: %w", err)
	}
	drop := func() {
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	}
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema, drop, nil
}
