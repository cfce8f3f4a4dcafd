package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// measure is one figure taken of each variant in each round.
type measure struct {
	key, title, unit string
	// higher is true when more is better (rates), false for costs.
	higher bool
	// digits after the point.
	digits int
}

var measures = []measure{
	{"small1", "64 KiB downloads, 1 client", "req/s", true, 0},
	{"small16", "64 KiB downloads, 16 clients", "req/s", true, 0},
	{"lat1", "latency p50, 64 KiB, 1 client", "ms", false, 2},
	{"lat16", "latency p50, 64 KiB, 16 clients", "ms", false, 2},
	{"cpu1", "CPU per 64 KiB request, 1 client", "µs", false, 0},
	{"cpu16", "CPU per 64 KiB request, 16 clients", "µs", false, 0},
	{"large1", "large downloads, 1 client", "MB/s", true, 0},
	{"large8", "large downloads, 8 clients", "MB/s", true, 0},
	{"gb1", "CPU per GB proxied, 1 client", "CPU-s/GB", false, 2},
	{"gb8", "CPU per GB proxied, 8 clients", "CPU-s/GB", false, 2},
	{"slow", "RSS per slow download in flight", "KiB", false, 0},
	{"links", "links created, 16 clients", "links/s", true, 0},
}

// report is every figure of a run: measure → variant → one value per round.
type report struct {
	cfg      config
	values   map[string]map[string][]float64
	order    []string // variants, streamgate first
	skipped  []string
	load     [2]string // load average at the start and at the end
	machine  []string
	started  time.Time
	duration time.Duration
}

func (r *report) add(key, variant string, v float64) {
	if r.values[key] == nil {
		r.values[key] = map[string][]float64{}
	}
	r.values[key][variant] = append(r.values[key][variant], v)
	if !slices.Contains(r.order, variant) {
		r.order = append(r.order, variant)
	}
}

// measureAll starts everything, runs the rounds and stops everything.
func measureAll(ctx context.Context, cfg config, log io.Writer) (*report, error) {
	r := &report{cfg: cfg, values: map[string]map[string][]float64{}, started: time.Now()}
	r.load[0] = loadAverage()
	s, err := startAll(ctx, cfg, log)
	defer func() {
		if s != nil {
			s.close()
			os.RemoveAll(s.dir)
		}
	}()
	if err != nil {
		return nil, err
	}
	r.skipped = s.skipped
	r.order = append(r.order, "direct")
	for _, p := range s.proxies {
		r.order = append(r.order, p.name)
	}
	direct := &proc{name: "direct", url: s.emuURL, cmd: &exec.Cmd{Process: &os.Process{Pid: os.Getpid()}}}
	for round := range cfg.rounds {
		fmt.Fprintf(log, "round %d of %d (load %s)\n", round+1, cfg.rounds, loadAverage())
		order := rotate(s.proxies, round)
		for _, p := range append([]*proc{direct}, order...) {
			for _, clients := range []int{1, 16} {
				rt, err := s.small(ctx, p, clients, cfg.duration)
				if err != nil {
					return nil, err
				}
				r.add(fmt.Sprint("small", clients), p.name, rt.perSecond())
				r.add(fmt.Sprint("lat", clients), p.name, float64(rt.p50())/float64(time.Millisecond))
				if p != direct {
					r.add(fmt.Sprint("cpu", clients), p.name, float64(rt.cpu/time.Microsecond)/float64(rt.n))
				}
			}
		}
		for _, p := range order {
			for _, clients := range []int{1, 8} {
				l, err := s.large(ctx, p, clients)
				if err != nil {
					return nil, err
				}
				r.add(fmt.Sprint("large", clients), p.name, l.mbps)
				r.add(fmt.Sprint("gb", clients), p.name, l.cpuPerGB)
			}
		}
		for _, p := range order {
			kib, err := s.slow(ctx, p, cfg.slow, cfg.slowRate)
			if err != nil {
				return nil, err
			}
			r.add("slow", p.name, kib/1024)
		}
		linkPeers := rotate([]*proc{s.gateways["streamgate"], s.direct, s.signPeer}, round)
		for _, p := range linkPeers {
			rt, err := s.links(ctx, p, cfg.linkClients, cfg.duration)
			if err != nil {
				return nil, err
			}
			name := map[string]string{"streamgate": "streamgate (proxy links)", "streamgate-direct": "streamgate (direct links)",
				"sign": "JWT verify + RS256 sign"}[p.name]
			r.add("links", name, rt.perSecond())
		}
	}
	r.load[1] = loadAverage()
	r.machine = machine()
	r.duration = time.Since(r.started)
	return r, nil
}

func rotate[T any](s []T, n int) []T {
	n %= len(s)
	return append(slices.Clone(s[n:]), s[:n]...)
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// machine describes the host: CPU, cores, memory, kernel, Go and nginx.
func machine() []string {
	var model, mem string
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	out := []string{
		fmt.Sprintf("%d CPUs (%s), %s RAM, Linux %s", runtime.NumCPU(), model, mem, strings.TrimSpace(string(kernel))),
		fmt.Sprintf("%s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH),
	}
	if v, err := exec.Command("/usr/sbin/nginx", "-v").CombinedOutput(); err == nil {
		out = append(out, strings.TrimSpace(string(v)))
	}
	return out
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func format(v float64, digits int) string { return strconv.FormatFloat(v, 'f', digits, 64) }

// span is "median (min–max)".
func span(v []float64, digits int) string {
	lo, hi := slices.Min(v), slices.Max(v)
	if len(v) == 1 {
		return format(v[0], digits)
	}
	return fmt.Sprintf("%s (%s–%s)", format(median(v), digits), format(lo, digits), format(hi, digits))
}

// ratios is streamgate's value over the variant's, round by round.
func ratios(sg, other []float64) []float64 {
	var out []float64
	for i := range min(len(sg), len(other)) {
		if other[i] > 0 {
			out = append(out, sg[i]/other[i])
		}
	}
	return out
}

// Markers delimit the section of docs/benchmarks.md the harness rewrites.
const (
	beginMarker = "<!-- bench-compare:begin (written by `make bench-compare`; edits inside are lost) -->"
	endMarker   = "<!-- bench-compare:end -->"
)

// markdown is the report as the marked section of docs/benchmarks.md.
func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintln(&b, beginMarker)
	fmt.Fprintf(&b, "### Side by side (%s, %d rounds, %s)\n\n", r.started.UTC().Format("2006-01-02 15:04 MST"),
		r.cfg.rounds, r.duration.Round(time.Second))
	for _, m := range r.machine {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	fmt.Fprintf(&b, "- load average (1, 5, 15 min) at the start: %s; at the end: %s\n", r.load[0], r.load[1])
	fmt.Fprintf(&b, "- small file %s, large file %s, %d slow downloads reading %s/s each, %s per rate measurement\n",
		sizeText(r.cfg.smallSize), sizeText(r.cfg.largeSize), r.cfg.slow, sizeText(r.cfg.slowRate), r.cfg.duration)
	for _, s := range r.skipped {
		fmt.Fprintf(&b, "- skipped %s\n", s)
	}
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "Each cell is the median over the rounds with the range; \"streamgate ÷ it\" is streamgate's value over the")
	fmt.Fprintln(&b, "variant's in the same round, median and range (above 1 is more for streamgate: better for rates,")
	fmt.Fprintln(&b, "worse for costs). `direct` is the emulator without a proxy.")
	for _, m := range measures {
		vs := r.values[m.key]
		if len(vs) == 0 {
			continue
		}
		sgName := "streamgate"
		if m.key == "links" {
			sgName = "streamgate (direct links)"
		}
		fmt.Fprintf(&b, "\n#### %s (%s)\n\n", m.title, m.unit)
		fmt.Fprintln(&b, "| variant | median (range) | streamgate ÷ it |")
		fmt.Fprintln(&b, "|---|---:|---:|")
		names := slices.Clone(r.order)
		for n := range vs {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		for _, n := range names {
			v, ok := vs[n]
			if !ok {
				continue
			}
			ratio := ""
			if n != sgName && len(vs[sgName]) > 0 {
				if rs := ratios(vs[sgName], v); len(rs) > 0 {
					ratio = span(rs, 2)
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", n, span(v, m.digits), ratio)
		}
	}
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, endMarker)
	return b.String()
}

func sizeText(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// writeSection replaces the marked section of the Markdown file at path
// with section, or appends it when the file has none.
func writeSection(path, section string) error {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(b)
	i := strings.Index(doc, beginMarker)
	j := strings.Index(doc, endMarker)
	switch {
	case i >= 0 && j > i:
		doc = doc[:i] + section + strings.TrimPrefix(doc[j+len(endMarker):], "\n")
	default:
		if doc != "" && !strings.HasSuffix(doc, "\n\n") {
			doc = strings.TrimRight(doc, "\n") + "\n\n"
		}
		doc += section
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}
