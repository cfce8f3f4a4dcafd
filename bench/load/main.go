// Command load drives concurrent download clients against streamgate and reports
// throughput, latency, errors, memory, goroutines and whether the ledger billed
// what Stream delivered.
//
// By default it builds the whole stack in its own process (bench.New: the Stream
// emulator and the gateway on loopback sockets, SQLite ledger in a temporary
// directory), so that memory and metering can be read directly:
//
//	go run ./bench/load -clients 50 -duration 20s -size 8MiB -mode proportional
//
// With -gateway it drives a running gateway instead, with one portal JWT and the
// given videos; only the client-side figures are then meaningful:
//
//	go run ./bench/load -gateway http://127.0.0.1:8080 -token "$ALICE" -video UID
//
// Each client repeats, until -duration has passed, an operation drawn from -mix:
// full (a whole download), resume (a download given up part way, then resumed
// with Range: bytes=N-) and link (POST .../links, then a download through the
// link). -direct sends full and resume downloads straight to the emulator, with
// signed URLs, for a baseline without the gateway.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/streamgate/streamgate/bench"
	"github.com/streamgate/streamgate/usage"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	clients     int
	duration    time.Duration
	size        int64
	mode        string
	mix         mix
	videos      int
	seconds     float64
	readRate    int64
	readTimeout time.Duration
	direct      bool
	gateway     string
	token       string
	videoUIDs   []string
	jsonOut     bool
	logPath     string
	seed        uint64
	pprof       string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.clients, "clients", 50, "concurrent clients")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "how long clients start new operations")
	size := fs.String("size", "8MiB", "file size of each video (B, KiB, MiB, GiB, KB, MB, GB)")
	fs.StringVar(&o.mode, "mode", "proportional", "metering mode of the in-process gateway: proportional or per-download")
	mixFlag := fs.String("mix", "full=70,resume=20,link=10", "operation weights: full, resume, link")
	fs.IntVar(&o.videos, "videos", 4, "videos served by the in-process emulator")
	fs.Float64Var(&o.seconds, "video-seconds", 600, "billable duration of each video, seconds")
	rate := fs.String("read-rate", "0", "per-client body read rate, bytes per second (0: as fast as possible)")
	fs.DurationVar(&o.readTimeout, "read-timeout", 30*time.Second, "the in-process gateway server's ReadTimeout (cmd/streamgate uses 30s; 0 for none)")
	fs.BoolVar(&o.direct, "direct", false, "download straight from the emulator with signed URLs (baseline without the gateway)")
	fs.StringVar(&o.gateway, "gateway", "", "drive a running gateway at this URL instead of an in-process stack")
	fs.StringVar(&o.token, "token", "", "portal JWT for -gateway")
	videos := fs.String("video", "", "comma-separated video UIDs for -gateway")
	fs.BoolVar(&o.jsonOut, "json", false, "print the results as JSON")
	fs.StringVar(&o.logPath, "log", "", "write the in-process gateway's JSON log to this file (default: encoded, then discarded)")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed")
	fs.StringVar(&o.pprof, "pprof", "", "serve net/http/pprof on this address while the run lasts (e.g. 127.0.0.1:6060)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var problems []error
	var err error
	if o.size, err = parseSize(*size); err != nil || o.size < 2 {
		problems = append(problems, fmt.Errorf("-size %q: want a size of at least 2 bytes", *size))
	}
	if o.readRate, err = parseSize(*rate); err != nil {
		problems = append(problems, fmt.Errorf("-read-rate %q: %w", *rate, err))
	}
	if o.mix, err = parseMix(*mixFlag); err != nil {
		problems = append(problems, fmt.Errorf("-mix: %w", err))
	}
	if _, err := usage.ParseMode(o.mode); err != nil {
		problems = append(problems, fmt.Errorf("-mode: %w", err))
	}
	if o.clients < 1 {
		problems = append(problems, errors.New("-clients: want at least 1"))
	}
	if o.duration <= 0 {
		problems = append(problems, errors.New("-duration: want more than 0"))
	}
	if o.videos < 1 {
		problems = append(problems, errors.New("-videos: want at least 1"))
	}
	if *videos != "" {
		o.videoUIDs = strings.Split(*videos, ",")
	}
	if o.gateway != "" {
		if o.token == "" || len(o.videoUIDs) == 0 {
			problems = append(problems, errors.New("-gateway needs -token and -video"))
		}
		if o.direct {
			problems = append(problems, errors.New("-direct and -gateway exclude each other"))
		}
	}
	if o.direct && o.mix[opLink] > 0 {
		problems = append(problems, errors.New("-direct: the emulator makes no links; use a -mix of full and resume"))
	}
	return o, errors.Join(problems...)
}

// parseSize reads "8MiB", "64KiB", "16MB", "1048576".
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{
		{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"kB", 1e3}, {"B", 1},
	}
	mult := int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return int64(f * float64(mult)), nil
}

type op int

const (
	opFull op = iota
	opResume
	opLink
	numOps
)

var opNames = [numOps]string{"full", "resume", "link"}

// mix is the weight of each operation.
type mix [numOps]int

func parseMix(s string) (mix, error) {
	var m mix
	total := 0
	for part := range strings.SplitSeq(s, ",") {
		name, w, ok := strings.Cut(strings.TrimSpace(part), "=")
		i := slices.Index(opNames[:], name)
		n, err := strconv.Atoi(w)
		if !ok || i < 0 || err != nil || n < 0 {
			return m, fmt.Errorf("%q: want name=weight with names full, resume and link", part)
		}
		m[i] = n
		total += n
	}
	if total == 0 {
		return m, errors.New("all weights are 0")
	}
	return m, nil
}

func (m mix) pick(r *rand.Rand) op {
	total := 0
	for _, w := range m {
		total += w
	}
	n := r.IntN(total)
	for i, w := range m {
		if n < w {
			return op(i)
		}
		n -= w
	}
	return opFull
}

func (m mix) String() string {
	var parts []string
	for i, w := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", opNames[i], w))
	}
	return strings.Join(parts, ",")
}

// target is where the clients send their requests.
type target struct {
	client    *http.Client
	download  []string // per video: the URL of a whole-file download
	links     []string // per video: where links are created; nil in -direct
	bearer    func(client int) (string, error)
	size      int64
	stack     *bench.Stack // nil with -gateway
	describes string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.pprof != "" {
		stopPprof, err := servePprof(o.pprof)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	tg, cleanup, err := newTarget(ctx, o)
	if err != nil {
		return err
	}
	defer cleanup()
	res, err := drive(ctx, o, tg)
	if err != nil {
		return err
	}
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	res.print(stdout)
	return nil
}

// servePprof serves the profiles of net/http/pprof on addr.
func servePprof(addr string) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}

func newTarget(ctx context.Context, o options) (*target, func(), error) {
	tg := &target{client: bench.NewClient(o.clients)}
	if o.gateway != "" {
		base := strings.TrimRight(o.gateway, "/")
		for _, uid := range o.videoUIDs {
			tg.download = append(tg.download, base+"/v1/videos/"+uid+"/downloads/default.mp4")
			tg.links = append(tg.links, base+"/v1/videos/"+uid+"/links")
		}
		tg.bearer = func(int) (string, error) { return o.token, nil }
		size, err := headSize(ctx, tg.client, tg.download[0], o.token)
		if err != nil {
			return nil, nil, err
		}
		tg.size = size
		tg.describes = "gateway " + base
		return tg, tg.client.CloseIdleConnections, nil
	}

	var logFile *os.File
	opts := bench.Options{
		Videos:      bench.DefaultVideos(o.videos, o.size, o.seconds),
		Mode:        usage.Mode(o.mode),
		ReadTimeout: o.readTimeout,
	}
	if o.readTimeout == 0 {
		opts.ReadTimeout = -1
	}
	if o.logPath != "" {
		f, err := os.Create(o.logPath)
		if err != nil {
			return nil, nil, err
		}
		logFile, opts.Log = f, f
	}
	st, err := bench.New(ctx, opts)
	if err != nil {
		return nil, nil, err
	}
	tg.stack, tg.size = st, o.size
	for _, v := range st.Videos {
		if o.direct {
			u, err := st.DirectURL(v.UID, o.duration+time.Hour)
			if err != nil {
				st.Close()
				return nil, nil, err
			}
			tg.download = append(tg.download, u)
			continue
		}
		tg.download = append(tg.download, st.DownloadURL(v.UID))
		tg.links = append(tg.links, st.LinksURL(v.UID))
	}
	tg.bearer = func(i int) (string, error) {
		if o.direct {
			return "", nil
		}
		return st.UserToken(fmt.Sprintf("user-%03d", i))
	}
	tg.describes = "in-process stack, through the gateway"
	if o.direct {
		tg.describes = "in-process stack, straight to the emulator (no gateway)"
	}
	return tg, func() {
		tg.client.CloseIdleConnections()
		st.Close()
		if logFile != nil {
			_ = logFile.Close()
		}
	}, nil
}

func headSize(ctx context.Context, c *http.Client, u, token string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength < 2 {
		return 0, fmt.Errorf("HEAD of the first video: status %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	return resp.ContentLength, nil
}

// kind is one kind of request a client makes; an operation makes one or two.
type kind int

const (
	kFull kind = iota
	kAbort
	kResume
	kLinkCreate
	kLinkDownload
	numKinds
)

var kindNames = [numKinds]string{"full", "resume: cut", "resume: rest", "link: create", "link: download"}

// sample is one finished request.
type sample struct {
	kind  kind
	ttfb  time.Duration
	total time.Duration
	bytes int64
	fail  string // "" when it went as expected
}

// recorder collects every client's samples.
type recorder struct {
	mu      sync.Mutex
	samples []sample
}

func (r *recorder) add(s sample) {
	r.mu.Lock()
	r.samples = append(r.samples, s)
	r.mu.Unlock()
}

// client is one simulated user.
type client struct {
	o        options
	tg       *target
	rec      *recorder
	rng      *rand.Rand
	bearer   string
	inflight *atomic.Int64
}

func (c *client) loop(ctx context.Context, until time.Time) {
	for ctx.Err() == nil && time.Now().Before(until) {
		v := c.rng.IntN(len(c.tg.download))
		switch c.o.mix.pick(c.rng) {
		case opFull:
			c.get(ctx, kFull, c.tg.download[v], c.bearer, "", -1, http.StatusOK, c.tg.size)
		case opResume:
			cut := 1 + c.rng.Int64N(c.tg.size-1)
			if c.get(ctx, kAbort, c.tg.download[v], c.bearer, "", cut, http.StatusOK, cut) {
				c.get(ctx, kResume, c.tg.download[v], c.bearer, fmt.Sprintf("bytes=%d-", cut), -1,
					http.StatusPartialContent, c.tg.size-cut)
			}
		case opLink:
			start := time.Now()
			c.inflight.Add(1)
			link, err := bench.CreateLink(ctx, c.tg.client, c.tg.links[v], c.bearer)
			c.inflight.Add(-1)
			s := sample{kind: kLinkCreate, total: time.Since(start), ttfb: time.Since(start)}
			if err != nil {
				s.fail = failure(err)
			}
			c.rec.add(s)
			if err == nil {
				c.get(ctx, kLinkDownload, link, "", "", -1, http.StatusOK, c.tg.size)
			}
		}
	}
}

// get makes one request and records it; it reports whether it went as expected.
func (c *client) get(ctx context.Context, k kind, u, bearer, rng string, limit int64, status int, want int64) bool {
	start := time.Now()
	c.inflight.Add(1)
	got, err := bench.Get{URL: u, Bearer: bearer, Range: rng, Limit: limit, Rate: c.o.readRate, Trace: true}.Do(ctx, c.tg.client)
	c.inflight.Add(-1)
	s := sample{kind: k, ttfb: got.TTFB, total: time.Since(start), bytes: got.Bytes}
	switch {
	case err != nil:
		s.fail = failure(err)
	case got.Status != status:
		s.fail = strconv.Itoa(got.Status)
	case got.Bytes != want:
		s.fail = "short body"
	}
	c.rec.add(s)
	return s.fail == ""
}

// failure names an error without the URL (which holds grants and tokens).
func failure(err error) string {
	var se *bench.StatusError
	if errors.As(err, &se) {
		return strconv.Itoa(se.Status)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.Canceled) {
		return "canceled"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}

// gauges are sampled while the clients run.
type gauges struct {
	HeapInUse      uint64 `json:"heap_in_use_bytes"`
	GoTotal        uint64 `json:"go_total_bytes"`
	RSS            uint64 `json:"rss_bytes"`
	Goroutines     int    `json:"goroutines"`
	ClientInFlight int64  `json:"client_in_flight"`
	GatewayFlight  int64  `json:"gateway_in_flight"`
	EmulatorFlight int64  `json:"emulator_in_flight"`
}

func (g *gauges) maxWith(o gauges) {
	g.HeapInUse = max(g.HeapInUse, o.HeapInUse)
	g.GoTotal = max(g.GoTotal, o.GoTotal)
	g.RSS = max(g.RSS, o.RSS)
	g.Goroutines = max(g.Goroutines, o.Goroutines)
	g.ClientInFlight = max(g.ClientInFlight, o.ClientInFlight)
	g.GatewayFlight = max(g.GatewayFlight, o.GatewayFlight)
	g.EmulatorFlight = max(g.EmulatorFlight, o.EmulatorFlight)
}

var metricNames = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/total:bytes",
	"/sched/goroutines:goroutines",
	"/gc/heap/allocs:bytes",
	"/gc/cycles/total:gc-cycles",
}

func readMetrics() []metrics.Sample {
	s := make([]metrics.Sample, len(metricNames))
	for i, n := range metricNames {
		s[i].Name = n
	}
	metrics.Read(s)
	return s
}

func measure(tg *target, inflight *atomic.Int64) gauges {
	m := readMetrics()
	g := gauges{
		HeapInUse:      m[0].Value.Uint64() + m[1].Value.Uint64(),
		GoTotal:        m[2].Value.Uint64(),
		Goroutines:     int(m[3].Value.Uint64()),
		ClientInFlight: inflight.Load(),
	}
	g.RSS, _ = procStatus("VmRSS")
	if tg.stack != nil {
		g.GatewayFlight = tg.stack.InFlight()
		g.EmulatorFlight = int64(tg.stack.Emulator.InFlight())
	}
	return g
}

// procStatus reads a kB field of /proc/self/status, in bytes.
func procStatus(field string) (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10, err == nil
		}
	}
	return 0, false
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// result is what a run measured.
type result struct {
	Target     string  `json:"target"`
	Clients    int     `json:"clients"`
	Duration   string  `json:"duration"`
	FileSize   int64   `json:"file_size_bytes"`
	Videos     int     `json:"videos"`
	Mix        string  `json:"mix"`
	Mode       string  `json:"metering_mode,omitempty"`
	ReadRate   int64   `json:"read_rate_bytes_per_second,omitempty"`
	GOMAXPROCS int     `json:"gomaxprocs"`
	Elapsed    float64 `json:"elapsed_seconds"`

	Requests    int            `json:"requests"`
	RequestsPS  float64        `json:"requests_per_second"`
	BodyBytes   int64          `json:"body_bytes"`
	MBPS        float64        `json:"mb_per_second"`
	Kinds       []kindStats    `json:"kinds"`
	Errors      map[string]int `json:"errors"`
	ErrorsTotal int            `json:"errors_total"`

	Start gauges `json:"start"`
	Peak  gauges `json:"peak"`
	// PeakRSS is VmHWM: the process's high-water mark, set-up included.
	PeakRSS          uint64  `json:"peak_rss_bytes"`
	GoroutinesAfter  int     `json:"goroutines_after"`
	GoroutinesSettle float64 `json:"goroutines_settle_seconds"`
	Leaked           string  `json:"leaked,omitempty"`
	GCCycles         uint64  `json:"gc_cycles"`
	AllocBytes       uint64  `json:"alloc_bytes"`
	CPUSeconds       float64 `json:"cpu_seconds"`

	Metering *metering    `json:"metering,omitempty"`
	Ledger   []ledgerCall `json:"ledger_calls,omitempty"`
}

type ledgerCall struct {
	Call  string  `json:"call"`
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

type kindStats struct {
	Kind   string    `json:"kind"`
	Count  int       `json:"count"`
	Errors int       `json:"errors"`
	Bytes  int64     `json:"bytes"`
	TTFB   quantiles `json:"ttfb_ms"`
	Total  quantiles `json:"total_ms"`
}

type quantiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

func quantilesOf(d []time.Duration) quantiles {
	if len(d) == 0 {
		return quantiles{}
	}
	slices.Sort(d)
	q := func(p float64) float64 {
		i := min(int(p*float64(len(d))), len(d)-1)
		return float64(d[i]) / float64(time.Millisecond)
	}
	return quantiles{P50: q(0.50), P90: q(0.90), P99: q(0.99)}
}

type metering struct {
	Mode string `json:"mode"`
	// LedgerMinutes is what users were billed; StreamMinutes what the ledger
	// counted Stream delivered, which EmulatorMinutes must agree with.
	LedgerMinutes   float64 `json:"ledger_minutes"`
	StreamMinutes   float64 `json:"stream_minutes"`
	EmulatorMinutes float64 `json:"emulator_minutes"`
	DiffPercent     float64 `json:"diff_percent"`
	Deliveries      int64   `json:"ledger_deliveries"`
	LedgerBytes     int64   `json:"ledger_bytes"`
	EmulatorBytes   int64   `json:"emulator_bytes"`
	ClientBytes     int64   `json:"client_bytes"`
}

// drive runs the clients and gathers the results.
func drive(ctx context.Context, o options, tg *target) (*result, error) {
	res := &result{
		Target: tg.describes, Clients: o.clients, Duration: o.duration.String(), FileSize: tg.size,
		Videos: len(tg.download), Mix: o.mix.String(), ReadRate: o.readRate, GOMAXPROCS: runtime.GOMAXPROCS(0),
		Errors: map[string]int{},
	}
	if tg.stack != nil && !o.direct {
		res.Mode = o.mode
	}
	clients := make([]*client, o.clients)
	var inflight atomic.Int64
	rec := &recorder{}
	for i := range clients {
		tok, err := tg.bearer(i)
		if err != nil {
			return nil, err
		}
		clients[i] = &client{o: o, tg: tg, rec: rec, bearer: tok, inflight: &inflight,
			rng: rand.New(rand.NewPCG(o.seed, uint64(i)))}
	}

	runtime.GC()
	baseline := runtime.NumGoroutine()
	res.Start = measure(tg, &inflight)
	m0, cpu0 := readMetrics(), cpuTime()
	res.Peak = res.Start

	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
				res.Peak.maxWith(measure(tg, &inflight))
			}
		}
	}()

	if tg.stack != nil {
		tg.stack.LedgerLatency() // from here on
	}
	start := time.Now()
	until := start.Add(o.duration)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { c.loop(ctx, until) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopSampling)
	<-sampled
	m1, cpu1 := readMetrics(), cpuTime()
	res.Elapsed = elapsed.Seconds()
	res.GCCycles = m1[5].Value.Uint64() - m0[5].Value.Uint64()
	res.AllocBytes = m1[4].Value.Uint64() - m0[4].Value.Uint64()
	res.CPUSeconds = (cpu1 - cpu0).Seconds()
	res.PeakRSS, _ = procStatus("VmHWM")

	res.summarize(rec.samples)

	// Everything settles, and every goroutine the run started ends.
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	tg.client.CloseIdleConnections()
	if tg.stack != nil {
		if err := tg.stack.Quiesce(qctx); err != nil {
			return nil, err
		}
		tg.stack.DropUpstreamConnections()
		if !o.direct {
			b, err := tg.stack.Billing(qctx, start, time.Now())
			if err != nil {
				return nil, err
			}
			res.Metering = newMetering(o.mode, b, res.BodyBytes)
			for _, l := range tg.stack.LedgerLatency() {
				res.Ledger = append(res.Ledger, ledgerCall{Call: l.Call, Count: l.Count, P50: ms(l.P50), P90: ms(l.P90), P99: ms(l.P99), Max: ms(l.Max)})
			}
		}
	}
	settle := time.Now()
	for runtime.NumGoroutine() > baseline && time.Since(settle) < 10*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	res.GoroutinesAfter = runtime.NumGoroutine()
	res.GoroutinesSettle = time.Since(settle).Seconds()
	res.Start.Goroutines = baseline
	if res.GoroutinesAfter > baseline {
		res.Leaked = leakedStacks()
	}
	return res, nil
}

func newMetering(mode string, b bench.Billing, clientBytes int64) *metering {
	m := &metering{
		Mode: mode, LedgerMinutes: b.LedgerMinutes, StreamMinutes: b.StreamMinutes, Deliveries: b.Deliveries,
		LedgerBytes: b.LedgerBytes, EmulatorBytes: b.Emulator.Bytes, ClientBytes: clientBytes,
		EmulatorMinutes: b.Emulator.ProportionalMinutes,
	}
	if m.EmulatorMinutes > 0 {
		m.DiffPercent = (m.StreamMinutes - m.EmulatorMinutes) / m.EmulatorMinutes * 100
	}
	return m
}

// leakedStacks is the goroutine dump, for a run whose goroutines did not end.
func leakedStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

func (r *result) summarize(samples []sample) {
	var ttfb, total [numKinds][]time.Duration
	var ks [numKinds]kindStats
	for _, s := range samples {
		k := &ks[s.kind]
		k.Count++
		k.Bytes += s.bytes
		r.BodyBytes += s.bytes
		if s.fail != "" {
			k.Errors++
			r.Errors[s.fail]++
			r.ErrorsTotal++
			continue
		}
		ttfb[s.kind] = append(ttfb[s.kind], s.ttfb)
		total[s.kind] = append(total[s.kind], s.total)
	}
	r.Requests = len(samples)
	r.RequestsPS = float64(r.Requests) / r.Elapsed
	r.MBPS = float64(r.BodyBytes) / 1e6 / r.Elapsed
	for i := range ks {
		if ks[i].Count == 0 {
			continue
		}
		ks[i].Kind = kindNames[i]
		ks[i].TTFB = quantilesOf(ttfb[i])
		ks[i].Total = quantilesOf(total[i])
		r.Kinds = append(r.Kinds, ks[i])
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func (r *result) print(w io.Writer) {
	fmt.Fprintf(w, "streamgate load: %s\n", r.Target)
	fmt.Fprintf(w, "  %d clients for %s, %d videos of %.1f MiB, mix %s", r.Clients, r.Duration, r.Videos, mib(uint64(r.FileSize)), r.Mix)
	if r.Mode != "" {
		fmt.Fprintf(w, ", metering %s", r.Mode)
	}
	if r.ReadRate > 0 {
		fmt.Fprintf(w, ", clients read at %.2f MiB/s", mib(uint64(r.ReadRate)))
	}
	fmt.Fprintf(w, ", GOMAXPROCS %d\n\n", r.GOMAXPROCS)
	fmt.Fprintf(w, "elapsed %.2fs  requests %d (%.1f/s)  body %.1f MB (%.1f MB/s)  errors %d\n\n",
		r.Elapsed, r.Requests, r.RequestsPS, float64(r.BodyBytes)/1e6, r.MBPS, r.ErrorsTotal)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "request\tcount\terrors\tMB\tTTFB p50\tp90\tp99\ttotal p50\tp90\tp99\t")
	for _, k := range r.Kinds {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\t\n", k.Kind, k.Count, k.Errors, float64(k.Bytes)/1e6,
			k.TTFB.P50, k.TTFB.P90, k.TTFB.P99, k.Total.P50, k.Total.P90, k.Total.P99)
	}
	tw.Flush()
	fmt.Fprintln(w, "  (milliseconds; percentiles over the requests that succeeded)")

	if r.ErrorsTotal > 0 {
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprint(w, "\nerrors by status:")
		for _, k := range keys {
			fmt.Fprintf(w, " %s: %d;", k, r.Errors[k])
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintf(w, "\nin flight (peak): clients %d, gateway %d, emulator %d\n",
		r.Peak.ClientInFlight, r.Peak.GatewayFlight, r.Peak.EmulatorFlight)
	fmt.Fprintf(w, "memory: heap in use %.1f MiB at start, %.1f MiB peak; Go total %.1f MiB peak; RSS %.1f MiB at start, %.1f MiB peak sampled, %.1f MiB VmHWM\n",
		mib(r.Start.HeapInUse), mib(r.Peak.HeapInUse), mib(r.Peak.GoTotal), mib(r.Start.RSS), mib(r.Peak.RSS), mib(r.PeakRSS))
	fmt.Fprintf(w, "allocation: %.1f MiB in %d GC cycles, %.1f KiB per request; CPU %.1fs (%.0f%% of %d cores)\n",
		mib(r.AllocBytes), r.GCCycles, float64(r.AllocBytes)/1024/float64(max(r.Requests, 1)),
		r.CPUSeconds, r.CPUSeconds/r.Elapsed/float64(r.GOMAXPROCS)*100, r.GOMAXPROCS)
	fmt.Fprintf(w, "goroutines: %d before, %d peak, %d after (%.2fs to settle)\n",
		r.Start.Goroutines, r.Peak.Goroutines, r.GoroutinesAfter, r.GoroutinesSettle)
	if r.Leaked != "" {
		fmt.Fprintf(w, "goroutines still running after the run:\n%s\n", r.Leaked)
	}
	if len(r.Ledger) > 0 {
		fmt.Fprintln(w, "ledger calls (ms, waiting included):")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "call\tcount\tp50\tp90\tp99\tmax\t")
		for _, l := range r.Ledger {
			fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.1f\t\n", l.Call, l.Count, l.P50, l.P90, l.P99, l.Max)
		}
		tw.Flush()
	}
	if m := r.Metering; m != nil {
		fmt.Fprintf(w, "metering (%s): billed %.4f min over %d deliveries; Stream minutes: ledger %.4f, emulator %.4f: %+.3f%%\n",
			m.Mode, m.LedgerMinutes, m.Deliveries, m.StreamMinutes, m.EmulatorMinutes, m.DiffPercent)
		fmt.Fprintf(w, "  bytes: ledger %d, emulator sent %d, clients read %d\n", m.LedgerBytes, m.EmulatorBytes, m.ClientBytes)
	}
}
