package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// profileAll is the -profile mode: instead of the rounds, it runs each
// workload on the SQLite streamgate for cfg.duration while its admin listener
// records a profile, and writes the profiles into dir with a summary of the
// system calls each workload made (/proc/PID/io). Read them with
// `go tool pprof BINARY DIR/cpu-large.pb`; the binary is DIR/streamgate.
func profileAll(ctx context.Context, cfg config, dir string, log io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if cfg.gatewayBin == "" {
		bin, err := buildGateway(dir)
		if err != nil {
			return err
		}
		cfg.gatewayBin = bin
	}
	cfg.nginx = false
	cfg.postgres = ""
	s, err := startAll(ctx, cfg, log)
	if s != nil {
		defer func() { s.close(); os.RemoveAll(s.dir) }()
	}
	if err != nil {
		return err
	}
	p := s.gateways["streamgate"]
	secs := max(int(cfg.duration/time.Second), 1)
	window := time.Duration(secs) * time.Second
	var summary strings.Builder
	fmt.Fprintf(&summary, "streamgate %s, %d s per workload\n", cfg.gatewayBin, secs)

	workloads := []struct {
		name string
		run  func(ctx context.Context) (bytes int64, err error)
	}{
		{"small", func(ctx context.Context) (int64, error) {
			rt, err := s.small(ctx, p, 16, window)
			return rt.n * s.smallVideo.Size, err
		}},
		{"large", func(ctx context.Context) (int64, error) { return s.largeFor(ctx, p, window) }},
	}
	for _, w := range workloads {
		fmt.Fprintf(log, "profiling %s\n", w.name)
		io0 := p.io()
		cpu0 := p.cpu()
		got := make(chan error, 1)
		go func() {
			got <- fetchProfile(ctx, p, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), filepath.Join(dir, "cpu-"+w.name+".pb"))
		}()
		n, err := w.run(ctx)
		if perr := <-got; err == nil {
			err = perr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", w.name, err)
		}
		costLine(&summary, w.name, n, p.cpu()-cpu0, p.io().minus(io0))
	}

	// The same large downloads through the bare proxies, for their system calls.
	for _, peer := range s.proxies {
		if _, ok := s.gateways[peer.name]; ok {
			continue
		}
		io0, cpu0 := peer.io(), peer.cpu()
		n, err := s.largeFor(ctx, peer, window)
		if err != nil {
			return err
		}
		costLine(&summary, "large through "+peer.name, n, peer.cpu()-cpu0, peer.io().minus(io0))
	}

	// Memory: the heap and goroutines while the slow downloads are in flight.
	fmt.Fprintln(log, "profiling slow downloads")
	s.whileSlow = func() error {
		for _, f := range []struct{ path, file string }{
			{"/debug/pprof/heap", "heap-slow.pb"},
			{"/debug/pprof/goroutine", "goroutine-slow.pb"},
			{"/debug/pprof/goroutine?debug=1", "goroutine-slow.txt"},
			{"/metrics", "metrics-slow.txt"},
		} {
			if err := fetchProfile(ctx, p, f.path, filepath.Join(dir, f.file)); err != nil {
				return err
			}
		}
		return nil
	}
	kib, err := s.slow(ctx, p, cfg.slow, cfg.slowRate)
	if err != nil {
		return err
	}
	fmt.Fprintf(&summary, "slow: %d downloads at %d B/s, %.0f KiB of RSS each\n", cfg.slow, cfg.slowRate, kib/1024)
	fmt.Fprint(log, summary.String())
	return os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(summary.String()), 0o644)
}

// largeFor downloads the large file through p, one client, again and again
// for d, and returns the bytes downloaded.
func (s *setup) largeFor(ctx context.Context, p *proc, d time.Duration) (int64, error) {
	var n int64
	for end := time.Now().Add(d); time.Now().Before(end); n += s.largeVideo.Size {
		if _, err := s.large(ctx, p, 1); err != nil {
			return n, err
		}
	}
	return n, nil
}

// costLine writes what moving n bytes cost a process: CPU and system calls.
func costLine(w io.Writer, name string, n int64, cpu time.Duration, d ioCounts) {
	fmt.Fprintf(w, "%s: %.1f MB, CPU %.2f s (%.2f CPU-s/GB); read %d calls (%.1f KiB each), write %d calls (%.1f KiB each)\n",
		name, float64(n)/1e6, cpu.Seconds(), cpu.Seconds()/(float64(n)/1e9),
		d.syscr, kibPer(d.rchar, d.syscr), d.syscw, kibPer(d.wchar, d.syscw))
}

func kibPer(bytes, calls int64) float64 {
	if calls == 0 {
		return 0
	}
	return float64(bytes) / float64(calls) / 1024
}

// fetchProfile saves what the admin listener of p answers at path into file.
func fetchProfile(ctx context.Context, p *proc, path, file string) error {
	if p.admin == "" {
		return errors.New(p.name + " has no admin listener")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.admin+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+p.adminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("%s: %d %s", path, res.StatusCode, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ioCounts is /proc/PID/io: bytes and calls of read and write system calls.
type ioCounts struct{ rchar, wchar, syscr, syscw int64 }

func (a ioCounts) minus(b ioCounts) ioCounts {
	return ioCounts{a.rchar - b.rchar, a.wchar - b.wchar, a.syscr - b.syscr, a.syscw - b.syscw}
}

// io reads the process's I/O counters (zero when they cannot be read).
func (p *proc) io() ioCounts {
	var c ioCounts
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", p.cmd.Process.Pid))
	if err != nil {
		return c
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "rchar":
			c.rchar = n
		case "wchar":
			c.wchar = n
		case "syscr":
			c.syscr = n
		case "syscw":
			c.syscw = n
		}
	}
	return c
}
