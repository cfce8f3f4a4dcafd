// Command soak runs mixed load against an in-process streamgate for a long
// time (ten minutes by default) and fails if the process's resident memory,
// goroutines or open files grow without bound, or if the ledger does not add
// up at the end.
//
//	go run ./bench/soak                       # ten minutes
//	SOAK_DURATION=90s go run ./bench/soak     # or -duration 90s
//
// The stack is bench.New's: the Stream emulator and the gateway on loopback
// sockets with a SQLite ledger, all in this process, with the load clients
// beside them. The figures sampled are therefore the whole process's: the
// gateway's, the emulator's and the clients'. Goroutines are
// runtime.NumGoroutine, resident memory is VmRSS of /proc/self/status and open
// files are the entries of /proc/self/fd, sampled every -interval (10s).
//
// Each client is one user repeating an operation drawn at random: a whole
// download, a download given up part way then resumed with Range, a file
// fetched in four concurrent ranges as aria2c does, a link created then
// downloaded, or a bad request (a forged portal JWT, a forged link grant,
// Range: bytes=-0, a range past the end, headers beyond the size limit).
//
// The verdict (see growth): after the warm-up, the samples are cut in
// thirds; each figure's median over the last third must not exceed its median
// over the first third by more than its tolerance. After the load, with every
// request finished and idle connections closed, the goroutines must come back
// to within a few of what they were before it. At the end, for every user, the
// quota's used minutes must equal the sum billed by the user's settled
// deliveries, and nothing may be reserved or open.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/streamgate/streamgate/bench"
	"github.com/streamgate/streamgate/usage"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	duration time.Duration
	interval time.Duration
	warmup   time.Duration
	clients  int
	videos   int
	size     int64
	readRate int64
	seed     uint64
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	def := 10 * time.Minute
	if s := getenv("SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return o, fmt.Errorf("SOAK_DURATION %q: want a positive duration such as 90s or 10m", s)
		}
		def = d
	}
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.duration, "duration", def, "how long the load runs (default from SOAK_DURATION, else 10m)")
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "time between two samples")
	fs.DurationVar(&o.warmup, "warmup", 0, "samples left out of the verdict at the start (default: a tenth of -duration, at most 1m)")
	fs.IntVar(&o.clients, "clients", 8, "concurrent clients, one user each")
	fs.IntVar(&o.videos, "videos", 4, "videos the emulator serves")
	size := fs.Int64("size-kib", 4096, "size of each video, KiB")
	rate := fs.Int64("read-rate-kib", 4096, "each client's body read rate, KiB a second (0: as fast as it comes)")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.size, o.readRate = *size<<10, *rate<<10
	if o.warmup == 0 {
		o.warmup = min(o.duration/10, time.Minute)
	}
	switch {
	case o.duration <= 0 || o.interval <= 0:
		return o, errors.New("-duration and -interval must be positive")
	case o.duration < 3*o.interval+o.warmup:
		return o, fmt.Errorf("-duration %s leaves fewer than three samples after the %s warm-up", o.duration, o.warmup)
	case o.clients < 1 || o.videos < 1 || o.size < 64<<10:
		return o, errors.New("-clients and -videos must be at least 1, -size-kib at least 64")
	}
	return o, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	st, err := bench.New(ctx, bench.Options{Videos: bench.DefaultVideos(o.videos, o.size, 600)})
	if err != nil {
		return err
	}
	defer st.Close()
	c := bench.NewClient(o.clients * 4)
	defer c.CloseIdleConnections()

	before := settledGoroutines(0)
	load := newLoad(st, c, o)
	fmt.Fprintf(stdout, "soak: %s of mixed load, %d clients, %d videos of %d KiB, read at %d KiB/s, sampled every %s (load average %s)\n",
		o.duration, o.clients, o.videos, o.size>>10, o.readRate>>10, o.interval, loadAvg())

	lctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			load.client(lctx, i)
		}()
	}
	var samples []sample
	tick := time.NewTicker(o.interval)
	for done := false; !done; {
		select {
		case <-lctx.Done():
			done = true
		case <-tick.C:
			s := take(time.Since(start), load)
			samples = append(samples, s)
			fmt.Fprintln(stderr, s.line())
		}
	}
	tick.Stop()
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	// Every request has ended; what the load left behind should go with its
	// connections.
	qctx, qcancel := context.WithTimeout(context.Background(), time.Minute)
	defer qcancel()
	if err := st.Quiesce(qctx); err != nil {
		return err
	}
	c.CloseIdleConnections()
	st.DropUpstreamConnections()
	after := settledGoroutines(before + goroutineSlack)

	r := report{o: o, samples: samples, before: before, after: after, counts: load.counts(), loadEnd: loadAvg()}
	r.verdicts = growth(samples, o.warmup)
	r.ledger, err = checkLedger(ctx, st, load.users, start)
	if err != nil {
		return err
	}
	r.print(stdout)
	if !r.ok() {
		return errors.New("the soak failed: see the verdict above")
	}
	return nil
}

// goroutineSlack is how many goroutines more than before the load may remain
// after it: timers and pools the runtime and net/http start once.
const goroutineSlack = 10

// settledGoroutines waits up to 10 s for the goroutine count to fall to want or
// below, and returns it; want 0 waits for it to stop moving.
func settledGoroutines(want int) int {
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		m := runtime.NumGoroutine()
		if (want > 0 && m <= want) || (want == 0 && m == n) {
			return m
		}
		n = m
	}
	return n
}

// sample is the process's figures at one instant.
type sample struct {
	at         time.Duration
	rss        int64 // bytes
	goroutines int
	files      int
	heap       uint64 // bytes of heap in use
	ops        int64  // operations finished so far
	load       string // the machine's 1-minute load average
}

func take(at time.Duration, l *load) sample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return sample{
		at: at, rss: rss(), goroutines: runtime.NumGoroutine(), files: openFiles(),
		heap: ms.HeapInuse, ops: l.ops.Load(), load: strings.Fields(loadAvg() + " ?")[0],
	}
}

func (s sample) line() string {
	return fmt.Sprintf("%7s  rss %6.1f MiB  goroutines %5d  open files %4d  heap %6.1f MiB  ops %6d  load %s",
		s.at.Round(time.Second), mib(s.rss), s.goroutines, s.files, mib(int64(s.heap)), s.ops, s.load)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// rss is the process's resident set, from /proc/self/status; -1 when unknown.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				return n << 10
			}
		}
	}
	return -1
}

// openFiles counts the process's file descriptors; -1 when unknown.
func openFiles() int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(es)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// figure is one sampled quantity and the growth it is allowed.
type figure struct {
	name string
	get  func(sample) float64
	// The last third's median may be at most first × (1 + ratio) + abs.
	ratio, abs float64
	unit       string
}

// figures are what the soak watches. The tolerances allow for the load's own
// noise (how many downloads happen to be in flight at a sample) and for the
// heap's growth to its working size, not for anything that keeps climbing.
var figures = []figure{
	{name: "resident memory", get: func(s sample) float64 { return mib(s.rss) }, ratio: 0.25, abs: 16, unit: "MiB"},
	{name: "goroutines", get: func(s sample) float64 { return float64(s.goroutines) }, ratio: 0.25, abs: 20},
	{name: "open files", get: func(s sample) float64 { return float64(s.files) }, ratio: 0.25, abs: 10},
}

// verdict is one figure's growth between the first and last thirds.
type verdict struct {
	figure
	first, last, limit float64
	n                  int
}

func (v verdict) ok() bool { return v.last <= v.limit }

// growth applies the criterion to samples after warmup: each figure's median
// over the last third of them must not exceed its median over the first third
// by more than its tolerance. A leak of a goroutine, a descriptor or a buffer
// per request grows with the requests served, which are spread evenly over
// the run, so it shows between the thirds; a working set that settles does not.
func growth(samples []sample, warmup time.Duration) []verdict {
	var kept []sample
	for _, s := range samples {
		if s.at > warmup {
			kept = append(kept, s)
		}
	}
	third := len(kept) / 3
	var out []verdict
	for _, f := range figures {
		first, last := median(kept[:third], f.get), median(kept[len(kept)-third:], f.get)
		out = append(out, verdict{figure: f, first: first, last: last, limit: first*(1+f.ratio) + f.abs, n: third})
	}
	return out
}

func median(ss []sample, get func(sample) float64) float64 {
	if len(ss) == 0 {
		return math.NaN()
	}
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = get(s)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// load is the clients' shared state.
type load struct {
	st     *bench.Stack
	c      *http.Client
	o      options
	users  []string
	tokens []string
	forged string
	ops    atomic.Int64

	mu       sync.Mutex
	outcomes map[string]int // "operation: outcome" → count
}

func newLoad(st *bench.Stack, c *http.Client, o options) *load {
	l := &load{st: st, c: c, o: o, outcomes: map[string]int{}}
	for i := range o.clients {
		user := fmt.Sprintf("soak-%02d", i)
		tok, err := st.UserToken(user)
		if err != nil {
			panic(err) // HMAC signing of a fixed claim set does not fail
		}
		l.users, l.tokens = append(l.users, user), append(l.tokens, tok)
	}
	// A portal JWT for a real user, signed with a key the gateway does not have.
	l.forged, _ = jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": l.users[0], "plan": bench.Plan, "exp": time.Now().Add(24 * time.Hour).Unix(),
	}).SignedString([]byte("not-the-portal-secret-0123456789abcdef"))
	return l
}

func (l *load) record(op, outcome string) {
	l.mu.Lock()
	l.outcomes[op+": "+outcome]++
	l.mu.Unlock()
}

func (l *load) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.outcomes)
}

// Operation weights, out of 100.
var mix = []struct {
	name   string
	weight int
}{{"whole", 30}, {"resume", 20}, {"segments", 15}, {"link", 15}, {"bad", 20}}

func (l *load) client(ctx context.Context, i int) {
	rng := rand.New(rand.NewPCG(l.o.seed, uint64(i)))
	for ctx.Err() == nil {
		uid := l.st.Videos[rng.IntN(len(l.st.Videos))].UID
		w := rng.IntN(100)
		op := mix[len(mix)-1].name
		for _, m := range mix {
			if w < m.weight {
				op = m.name
				break
			}
			w -= m.weight
		}
		var outcome string
		switch op {
		case "whole":
			outcome = l.get(ctx, bench.Get{URL: l.st.DownloadURL(uid), Bearer: l.tokens[i], Limit: -1}, http.StatusOK, l.o.size)
		case "resume":
			cut := 1 + rng.Int64N(l.o.size-1)
			outcome = l.get(ctx, bench.Get{URL: l.st.DownloadURL(uid), Bearer: l.tokens[i], Limit: cut}, http.StatusOK, cut)
			if outcome == "ok" {
				outcome = l.get(ctx, bench.Get{URL: l.st.DownloadURL(uid), Bearer: l.tokens[i], Limit: -1,
					Range: fmt.Sprintf("bytes=%d-", cut)}, http.StatusPartialContent, l.o.size-cut)
			}
		case "segments":
			outcome = l.segments(ctx, uid, l.tokens[i])
		case "link":
			link, err := bench.CreateLink(ctx, l.c, l.st.LinksURL(uid), l.tokens[i])
			outcome = describe(err)
			if err == nil {
				outcome = l.get(ctx, bench.Get{URL: link, Limit: -1}, http.StatusOK, l.o.size)
			}
		case "bad":
			op, outcome = l.bad(ctx, rng, uid, l.tokens[i])
		}
		if ctx.Err() != nil {
			return // cut by the end of the run: not an outcome
		}
		l.record(op, outcome)
		l.ops.Add(1)
	}
}

// get runs g and names the outcome: "ok" when the status and the body's length
// are as expected.
func (l *load) get(ctx context.Context, g bench.Get, status int, want int64) string {
	g.Rate = l.o.readRate
	got, err := g.Do(ctx, l.c)
	switch {
	case err != nil:
		return describe(err)
	case got.Status != status:
		return "status " + strconv.Itoa(got.Status)
	case got.Bytes != want:
		return "short body"
	}
	return "ok"
}

// segments fetches the file in four ranges at once, as aria2c -x4 does.
func (l *load) segments(ctx context.Context, uid, token string) string {
	const n = 4
	seg := l.o.size / n
	out := make([]string, n)
	var wg sync.WaitGroup
	for k := range n {
		first, last := int64(k)*seg, int64(k+1)*seg-1
		rng := fmt.Sprintf("bytes=%d-%d", first, last)
		if k == n-1 {
			last = l.o.size - 1
			rng = fmt.Sprintf("bytes=%d-", first)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[k] = l.get(ctx, bench.Get{URL: l.st.DownloadURL(uid), Bearer: token, Limit: -1, Range: rng},
				http.StatusPartialContent, last-first+1)
		}()
	}
	wg.Wait()
	for _, o := range out {
		if o != "ok" {
			return o
		}
	}
	return "ok"
}

// bad sends one request the gateway must refuse with a 4xx, and names it and
// its outcome.
func (l *load) bad(ctx context.Context, rng *rand.Rand, uid, token string) (string, string) {
	kinds := []struct {
		name   string
		url    string
		bearer string
		hdr    [2]string
		status int
	}{
		{"bad: forged JWT", l.st.DownloadURL(uid), l.forged, [2]string{}, http.StatusUnauthorized},
		{"bad: forged grant", l.st.GatewayURL + "/dl/" + strings.Repeat("A", 80) + "/default.mp4", "", [2]string{}, http.StatusUnauthorized},
		{"bad: bytes=-0", l.st.DownloadURL(uid), token, [2]string{"Range", "bytes=-0"}, http.StatusRequestedRangeNotSatisfiable},
		{"bad: range past the end", l.st.DownloadURL(uid), token, [2]string{"Range", fmt.Sprintf("bytes=%d-", l.o.size+1)}, http.StatusRequestedRangeNotSatisfiable},
		{"bad: oversized headers", l.st.DownloadURL(uid), token, [2]string{"X-Padding", strings.Repeat("x", 128<<10)}, http.StatusRequestHeaderFieldsTooLarge},
	}
	k := kinds[rng.IntN(len(kinds))]
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return k.name, describe(err)
	}
	if k.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+k.bearer)
	}
	if k.hdr[0] != "" {
		req.Header.Set(k.hdr[0], k.hdr[1])
	}
	resp, err := l.c.Do(req)
	if err != nil {
		return k.name, describe(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != k.status {
		return k.name, "status " + strconv.Itoa(resp.StatusCode)
	}
	return k.name, "ok"
}

// describe names an error without its URL (which may hold a grant).
func describe(err error) string {
	var se *bench.StatusError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &se):
		return "status " + strconv.Itoa(se.Status)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "body cut short"
	}
	return "transport error"
}

// ledgerCheck is what the ledger holds for the soak's users at the end.
type ledgerCheck struct {
	users, deliveries   int64
	billed, used        float64 // minutes
	reserved            float64
	open                int64
	mismatched          []string
	ledgerMin, streamMi float64
}

func (c ledgerCheck) ok() bool {
	return len(c.mismatched) == 0 && c.open == 0 && c.reserved == 0
}

// checkLedger compares, for every user, the quota's used minutes with the sum
// billed by the user's settled deliveries, and looks for anything left reserved
// or open.
func checkLedger(ctx context.Context, st *bench.Stack, users []string, start time.Time) (ledgerCheck, error) {
	var c ledgerCheck
	billed := map[string]float64{}
	periods := []string{usage.Period(start)}
	if p := usage.Period(time.Now()); p != periods[0] {
		periods = append(periods, p)
	}
	for _, p := range periods {
		rows, err := st.Ledger.Report(ctx, p)
		if err != nil {
			return c, err
		}
		for _, r := range rows {
			billed[r.User] += r.Minutes
			c.deliveries += r.Deliveries
			c.ledgerMin += r.Minutes
			c.streamMi += r.StreamMinutes
		}
	}
	for _, user := range users {
		var used float64
		for _, p := range periods {
			u, err := st.Ledger.Usage(ctx, user, p)
			if err != nil {
				return c, err
			}
			used += u.MinutesUsed
			c.reserved += u.MinutesReserved
			c.open += u.DeliveriesOpen
		}
		c.users++
		c.used += used
		c.billed += billed[user]
		// Both sides are sums of whole micro-minutes.
		if math.Abs(used-billed[user]) > 0.5e-6 {
			c.mismatched = append(c.mismatched, fmt.Sprintf("%s: quota used %.6f, deliveries billed %.6f", user, used, billed[user]))
		}
	}
	return c, nil
}

// report is the run's outcome.
type report struct {
	o             options
	samples       []sample
	verdicts      []verdict
	before, after int
	counts        map[string]int
	ledger        ledgerCheck
	loadEnd       string
}

func (r report) goroutinesBack() bool { return r.after <= r.before+goroutineSlack }

func (r report) failedRequests() int {
	n := 0
	for k, v := range r.counts {
		if !strings.HasSuffix(k, ": ok") {
			n += v
		}
	}
	return n
}

func (r report) ok() bool {
	for _, v := range r.verdicts {
		if !v.ok() {
			return false
		}
	}
	return r.goroutinesBack() && r.ledger.ok() && r.failedRequests() == 0
}

// print writes the samples and the verdict as Markdown.
func (r report) print(w io.Writer) {
	fmt.Fprintf(w, "\n| t | RSS MiB | goroutines | open files | heap in use MiB | operations | load (1 min) |\n|---|---|---|---|---|---|---|\n")
	for _, s := range r.samples {
		mark := ""
		if s.at <= r.o.warmup {
			mark = " (warm-up)"
		}
		fmt.Fprintf(w, "| %s%s | %.1f | %d | %d | %.1f | %d | %s |\n",
			s.at.Round(time.Second), mark, mib(s.rss), s.goroutines, s.files, mib(int64(s.heap)), s.ops, s.load)
	}
	fmt.Fprintf(w, "\n| figure | first third (median) | last third (median) | limit | verdict |\n|---|---|---|---|---|\n")
	for _, v := range r.verdicts {
		fmt.Fprintf(w, "| %s | %.1f %s | %.1f %s | %.1f %s | %s |\n", v.name, v.first, v.unit, v.last, v.unit, v.limit, v.unit, pass(v.ok()))
	}
	fmt.Fprintf(w, "\nGoroutines before the load %d, after it (requests done, idle connections closed) %d: %s\n",
		r.before, r.after, pass(r.goroutinesBack()))

	names := make([]string, 0, len(r.counts))
	total := 0
	for k, v := range r.counts {
		names = append(names, k)
		total += v
	}
	slices.Sort(names)
	fmt.Fprintf(w, "\n| operation: outcome | count |\n|---|---|\n")
	for _, k := range names {
		fmt.Fprintf(w, "| %s | %d |\n", k, r.counts[k])
	}
	fmt.Fprintf(w, "\n%d operations, %d not as expected: %s\n", total, r.failedRequests(), pass(r.failedRequests() == 0))

	l := r.ledger
	fmt.Fprintf(w, "\nLedger: %d users, %d settled deliveries with bytes, %.3f minutes billed, %.3f used in the quotas, "+
		"%.6f reserved, %d open, Stream minutes %.3f: %s\n", l.users, l.deliveries, l.billed, l.used, l.reserved, l.open, l.streamMi, pass(l.ok()))
	for _, m := range l.mismatched {
		fmt.Fprintf(w, "  %s\n", m)
	}
	fmt.Fprintf(w, "\nLoad average at the end: %s\n\nVerdict: %s\n", r.loadEnd, pass(r.ok()))
}

func pass(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}
