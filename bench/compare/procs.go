package main

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a server the harness started as a process of its own, so that its
// CPU time and memory can be read from /proc.
type proc struct {
	name string
	url  string
	cmd  *exec.Cmd
	// tree counts the process's children (nginx's workers) with it.
	tree bool
	// exited is closed once the one goroutine that waits for the process has.
	exited chan struct{}
	// admin is a streamgate process's admin listener (http://ADDR) and
	// adminToken its bearer token; "" for the other servers.
	admin, adminToken string
}

// stop ends the process and waits for it.
func (p *proc) stop() {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// pids is the process and, for a tree, its children.
func (p *proc) pids() []int {
	pid := p.cmd.Process.Pid
	out := []int{pid}
	if !p.tree {
		return out
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, err := parentOf(child); err == nil && ppid == pid {
			out = append(out, child)
		}
	}
	return out
}

// stat is the fields of /proc/PID/stat after the command name.
func stat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

func parentOf(pid int) (int, error) {
	f, err := stat(pid)
	if err != nil || len(f) < 2 {
		return 0, errors.New("no stat")
	}
	return strconv.Atoi(f[1])
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times; 100 on Linux.
const clockTick = 100

// cpu is the CPU time (user and system) the process, and for a tree its
// children, used so far.
func (p *proc) cpu() time.Duration {
	var ticks int64
	for _, pid := range p.pids() {
		f, err := stat(pid)
		if err != nil || len(f) < 13 {
			continue
		}
		// utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / clockTick
}

// rss is the resident memory of the process (and its children), in bytes.
func (p *proc) rss() int64 {
	var total int64
	for _, pid := range p.pids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

// freeAddr is a loopback address no one listens on right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitUp polls url until it answers at all.
func waitUp(ctx context.Context, u string, p *proc) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if p.cmd.ProcessState != nil {
			return fmt.Errorf("%s exited", p.name)
		}
		resp, err := c.Get(u)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not answer at %s within 30s", p.name, u)
}

// start runs cmd, logging its output to dir/name.log, and waits until base
// answers.
func start(ctx context.Context, dir, name, base string, tree bool, cmd *exec.Cmd) (*proc, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, url: base, cmd: cmd, tree: tree, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.exited) }()
	if err := waitUp(ctx, base+"/", p); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// startSelf runs this program again as one of its servers (-serve KIND).
func startSelf(ctx context.Context, dir, name string, args ...string) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, append([]string{"-listen", addr}, args...)...)
	return start(ctx, dir, name, "http://"+addr, false, cmd)
}

// bufferPool hands out buffers of one size to httputil.ReverseProxy.
type bufferPool struct {
	pool sync.Pool
}

func newBufferPool(size int) *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, size); return &b }}}
}

func (p *bufferPool) Get() []byte  { return *p.pool.Get().(*[]byte) }
func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }

// serveBare is the bare reverse proxy: every request forwarded to upstream
// as it is, the body copied through buffers of size bytes.
func serveBare(ln net.Listener, upstream string, size int) error {
	u, err := url.Parse(upstream)
	if err != nil {
		return err
	}
	rp := &httputil.ReverseProxy{
		Rewrite:    func(r *httputil.ProxyRequest) { r.SetURL(u) },
		BufferPool: newBufferPool(size),
		Transport: &http.Transport{
			MaxIdleConns:        512,
			MaxIdleConnsPerHost: 512,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
	return (&http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
}

// nginxConf is nginx proxying to the emulator without buffering responses,
// with its default buffer sizes and keep-alive connections upstream.
const nginxConf = `worker_processes auto;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	upstream emulator { server %[2]s; keepalive 256; }
	server {
		listen %[3]s;
		location / {
			proxy_pass http://emulator;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_buffering off;
		}
	}
}
`

// findNginx is nginx's path, installing Debian's package when it is missing
// and apt-get can.
func findNginx(log io.Writer) (string, error) {
	for _, p := range []string{"/usr/sbin/nginx"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	fmt.Fprintln(log, "nginx is missing: trying apt-get install nginx-light")
	cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "nginx-light")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get install nginx-light: %v: %s", err, lastLine(out))
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err != nil {
		return "", err
	}
	return "/usr/sbin/nginx", nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func startNginx(ctx context.Context, dir, bin, upstreamAddr string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	ndir := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(ndir, 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(ndir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, ndir, upstreamAddr, addr), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-p", ndir, "-c", conf, "-e", filepath.Join(ndir, "nginx-error.log"))
	return start(ctx, dir, "nginx", "http://"+addr, true, cmd)
}

// gatewayConf is streamgate's configuration for the harness: the emulator as
// Stream, limits and quotas too large to refuse anything, logs at info.
const gatewayConf = `listen: %[1]q
public_url: "http://%[1]s"
stream:
  account_id: %[2]q
  api_token: {value: %[3]q}
  api_url: "%[4]s/client/v4/"
  delivery_url: %[4]q
  signing_key_id: %[5]q
  signing_key: {value: %[6]q}
auth:
  algorithms: [HS256]
  hmac_secrets:
    - kid: ""
      secret: {value: %[7]q}
links:
  mode: %[8]s
  grant_keys:
    - id: k1
      secret: {value: %[7]q}
policy:
  ip_limit: {per_minute: 60000000, burst: 1000000}
default_plan: bench
plans:
  bench:
    minutes_per_month: -1
    links: {per_minute: 60000000, burst: 1000000}
    downloads: {per_minute: 60000000, burst: 1000000}
    max_concurrent: 0
ledger:
%[9]s
admin:
  listen: %[10]q
  token: {value: %[11]q}
log:
  level: info
  format: json
`

// gatewaySetup is what every streamgate process of a run shares.
type gatewaySetup struct {
	bin, account, apiToken, emulator, keyID string
	key                                     *rsa.PrivateKey
	secret                                  string
}

// startGateway runs streamgate serve with links in linkMode and the ledger
// ledgerConf describes (YAML lines under "ledger:").
func startGateway(ctx context.Context, dir, name string, g gatewaySetup, linkMode, ledgerConf string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adminToken := randomHex(24)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(g.key)})
	conf := filepath.Join(dir, name+".yaml")
	body := fmt.Sprintf(gatewayConf, addr, g.account, g.apiToken, g.emulator, g.keyID, string(keyPEM), g.secret,
		linkMode, ledgerConf, adminAddr, adminToken)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(g.bin, "serve", "--config", conf)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	p, err := start(ctx, dir, name, "http://"+addr, false, cmd)
	if err != nil {
		return nil, err
	}
	p.admin, p.adminToken = "http://"+adminAddr, adminToken
	return p, nil
}

// buildGateway builds cmd/streamgate into dir, as `make build` does.
func buildGateway(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "streamgate")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/streamgate")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/streamgate: %v\n%s", err, out)
	}
	return bin, nil
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the streamgate module")
	}
	return filepath.Dir(mod), nil
}

// withTrace calls first when the answer's first byte arrives.
func withTrace(ctx context.Context, first func()) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotFirstResponseByte: first})
}
