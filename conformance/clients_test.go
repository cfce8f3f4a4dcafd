package conformance

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/streamgate/streamgate/acked"
	"github.com/streamgate/streamgate/streamtest"
)

// tool is a client binary and the Debian package that installs it.
type tool struct{ bin, pkg string }

var (
	curlTool     = tool{"curl", "curl"}
	wgetTool     = tool{"wget", "wget"}
	aria2Tool    = tool{"aria2c", "aria2"}
	ffmpegTool   = tool{"ffmpeg", "ffmpeg"}
	ffprobeTool  = tool{"ffprobe", "ffmpeg"}
	chromiumTool = tool{"chromium", "chromium"}
)

// requireTools skips t, naming the Debian package, when a client is missing.
func requireTools(t *testing.T, tools ...tool) {
	t.Helper()
	for _, tl := range tools {
		if _, err := exec.LookPath(tl.bin); err != nil {
			t.Skipf("%s is not installed: apt-get install %s (.ci/run does)", tl.bin, tl.pkg)
		}
	}
}

// route is how a client is let in: the authenticated route with the portal's
// JWT, or a link URL.
type route string

const (
	routeAuth route = "auth"
	routeLink route = "link"
)

// outcome is what a client ended with.
type outcome struct {
	// whole: the client ended with the whole file, checked against the
	// emulator's bytes.
	whole bool
	// received is, when not whole, what the client is known to have
	// received; -1 when only the bytes the emulator sent once bound it.
	received int64
}

// client is one download as one client program performs it; c gives it
// the URL and credentials of its route. It reports failures of the client
// itself with t.Errorf, and what it ended with.
type client func(t *testing.T, c *run) outcome

// scenario is a client the table names, with the file it fetches and
// the routes it can use.
type scenario struct {
	name   string // short, for the subtest
	client string // as the table names it
	video  videoSpec
	tools  []tool
	routes []route
	run    client
}

var bothRoutes = []route{routeAuth, routeLink}

func scenarios() []scenario {
	return []scenario{
		{"curl-resume", "curl, cut, then curl -C -", tenMinutes, []tool{curlTool}, bothRoutes, curlResume},
		{"wget-resume", "wget, killed, then wget -c", tenMinutes, []tool{wgetTool}, bothRoutes, wgetResume},
		{"aria2c-x8", "aria2c -x8 -s8 (48 MiB, 30 min)", thirtyMinutes, []tool{aria2Tool}, bothRoutes, aria2(nil)},
		{"aria2c-x8-k1M", "aria2c -x8 -s8 -k1M", tenMinutes, []tool{aria2Tool}, bothRoutes, aria2([]string{"--min-split-size=1M"})},
		{"aria2c-resume", "aria2c interrupted, then aria2c -c", tenMinutes, []tool{aria2Tool}, bothRoutes, aria2Resume},
		{"chromium-video", "Chromium <video>: play, three seeks", tenMinutesMoovAtEnd, []tool{chromiumTool}, bothRoutes, chromiumVideo},
		{"ffprobe", "ffprobe, moov at the end", tenMinutesMoovAtEnd, []tool{ffprobeTool}, bothRoutes, ffprobe},
		{"ffmpeg-copy", "ffmpeg -i URL -c copy", tenMinutesMoovAtEnd, []tool{ffmpegTool}, bothRoutes, ffmpegCopy},
		{"safari-probe", "bytes=0-1 probe, then the file", tenMinutes, []tool{curlTool}, bothRoutes, safariProbe},
		{"stalled", "stalls after 0 bytes, leaves", tenMinutes, nil, bothRoutes, stalled},
	}
}

// run is one scenario on one route in one mode: its own user and video.
type run struct {
	mode   string
	se     *streamEnv
	gw     *gateway
	tab    *table
	sc     scenario
	route  route
	user   string
	token  string
	uid    string
	video  videoSpec // Size is the served file's
	file   *streamtest.File
	url    string // the download URL of the route
	bearer string // "Authorization: Bearer JWT" on the auth route, "" on a link
	dir    string // the client's working directory
	home   string // HOME and TMPDIR of the client processes
}

// header returns flag, value for a client's header option on the auth route,
// nothing on a link.
func (c *run) header(flag string) []string {
	if c.bearer == "" {
		return nil
	}
	return []string{flag, c.bearer}
}

// command prepares a client process in c's directory.
func (c *run) command(ctx context.Context, name string, args ...string) (*exec.Cmd, *syncBuffer) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.dir
	cmd.Env = childEnv(c.home)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	return cmd, out
}

// clientDeadline bounds one client process, so that a hung client fails the
// scenario with its output instead of hanging the suite.
const clientDeadline = 3 * time.Minute

// runClient runs a client to its end; the error carries its output.
func (c *run) runClient(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), clientDeadline)
	defer cancel()
	cmd, out := c.command(ctx, name, args...)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, c.redact(strings.Join(args, " ")), err, c.redact(tail(out.String(), 4000)))
	}
	return nil
}

// cutWhen starts a client and sends it sig once cond holds, as a user who
// presses Ctrl-C or a connection that drops. It fails t if the client ended
// first (the cut must come mid-transfer) or cond never held.
func (c *run) cutWhen(t *testing.T, sig os.Signal, what string, cond func(out string) bool, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientDeadline)
	defer cancel()
	cmd, out := c.command(ctx, name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	ok := waitUntil(ctx, time.Minute, exited, func() bool { return cond(out.String()) })
	select {
	case <-exited:
		t.Fatalf("%s ended (%v) before it could be cut (waiting for %s); the cut must come mid-transfer:\n%s",
			name, waitErr, what, c.redact(tail(out.String(), 4000)))
	default:
	}
	_ = cmd.Process.Signal(sig)
	<-exited
	if !ok {
		t.Fatalf("%s: gave up waiting for %s:\n%s", name, what, c.redact(tail(out.String(), 4000)))
	}
}

// redact hides the credentials of c (the portal token, a link's grant) in a
// text that a failure prints.
func (c *run) redact(s string) string {
	s = strings.ReplaceAll(s, c.token, "[token]")
	if grant, ok := strings.CutPrefix(c.url, c.gw.base+"/dl/"); ok {
		grant, _, _ = strings.Cut(grant, "/")
		s = strings.ReplaceAll(s, grant, "[grant]")
	}
	return s
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// fileSHA256 is the SHA-256 of the video's file as the emulator serves it.
func (c *run) fileSHA256() string {
	h := sha256.New()
	_, _ = io.Copy(h, c.file.NewReader())
	return hex.EncodeToString(h.Sum(nil))
}

// verifyWhole checks that path holds the whole file, byte for byte.
func (c *run) verifyWhole(t *testing.T, path string) outcome {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("the client left no file: %v", err)
		return outcome{received: 0}
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), c.fileSHA256(); n != c.video.Size || got != want {
		t.Errorf("%s: %d bytes with sha256 %s, want the emulator's %d bytes with sha256 %s",
			filepath.Base(path), n, got, c.video.Size, want)
		return outcome{received: n}
	}
	return outcome{whole: true}
}

// verifyPrefix checks that the partial file at path is the file's first bytes.
func (c *run) verifyPrefix(t *testing.T, path string) int64 {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the cut client left no partial file: %v", err)
	}
	want := make([]byte, len(got))
	if _, err := io.ReadFull(c.file.NewReader(), want); err != nil {
		t.Fatalf("the partial file is longer (%d bytes) than the file", len(got))
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the partial file's %d bytes differ from the file's first bytes", len(got))
	}
	return int64(len(got))
}

// slowNetwork makes the download of c's video arrive at 4 MB/s, as over a
// real network, for as long as stop is not called. The cut scenarios pace the
// bytes at the source rather than with the client's own rate limit: a client
// that throttles itself lets its socket's receive buffer fill, and those bytes,
// acknowledged by its TCP but never read, are lost when it is killed; no
// gateway can tell them from bytes it kept.
func (c *run) slowNetwork() (stop func()) {
	c.se.emu.SetFault(c.uid, streamtest.Fault{BytesPerSecond: 4 << 20})
	return func() { c.se.emu.SetFault(c.uid, streamtest.Fault{}) }
}

// curlResume: curl, on a slow network, cut by SIGKILL at a quarter of the
// file, then `curl -C -` to finish.
func curlResume(t *testing.T, c *run) outcome {
	out := filepath.Join(c.dir, "out.mp4")
	args := append([]string{"-sS", "-f", "-o", out}, c.header("-H")...)
	quarter := c.video.Size / 4
	fast := c.slowNetwork()
	c.cutWhen(t, syscall.SIGKILL, "a quarter of the file", func(string) bool { return fileSize(out) >= quarter },
		"curl", append(args, c.url)...)
	fast()
	c.checkStage(t, "cut", outcome{received: c.verifyPrefix(t, out)})
	if err := c.runClient("curl", append(append([]string{"-C", "-"}, args...), c.url)...); err != nil {
		t.Errorf("resume: %v", err)
		return outcome{received: fileSize(out)}
	}
	return c.verifyWhole(t, out)
}

// wgetResume: wget, on a slow network, killed at a quarter of the file, then
// `wget -c` in the same directory.
func wgetResume(t *testing.T, c *run) outcome {
	// wget names the file after the URL's last segment: default.mp4 on both routes.
	out := filepath.Join(c.dir, "default.mp4")
	args := append([]string{"-nv", "--no-hsts"}, c.header("--header")...)
	quarter := c.video.Size / 4
	fast := c.slowNetwork()
	c.cutWhen(t, syscall.SIGKILL, "a quarter of the file", func(string) bool { return fileSize(out) >= quarter },
		"wget", append(args, c.url)...)
	fast()
	c.checkStage(t, "cut", outcome{received: c.verifyPrefix(t, out)})
	if err := c.runClient("wget", append(append([]string{"-c"}, args...), c.url)...); err != nil {
		t.Errorf("resume: %v", err)
		return outcome{received: fileSize(out)}
	}
	return c.verifyWhole(t, out)
}

// aria2Args are aria2c's options for a download into c.dir/out.mp4, without
// a configuration file of the user's.
func (c *run) aria2Args(extra ...string) []string {
	args := []string{"--no-conf", "--dir=" + c.dir, "--out=out.mp4", "--console-log-level=warn",
		"--file-allocation=none", "--auto-file-renaming=false", "--max-connection-per-server=8", "--split=8"}
	if c.bearer != "" {
		args = append(args, "--header="+c.bearer)
	}
	args = append(args, extra...)
	return append(args, c.url)
}

// aria2 runs `aria2c -x8 -s8` with extra options to the end.
func aria2(extra []string) client {
	return func(t *testing.T, c *run) outcome {
		out := filepath.Join(c.dir, "out.mp4")
		if err := c.runClient("aria2c", c.aria2Args(append([]string{"--summary-interval=0"}, extra...)...)...); err != nil {
			t.Errorf("%v", err)
			return outcome{received: -1}
		}
		return c.verifyWhole(t, out)
	}
}

// aria2Progress is the percentage in aria2c's progress readout, e.g.
// "[#2089b0 6.0MiB/24MiB(25%) CN:8 DL:4.0MiB]".
var aria2Progress = regexp.MustCompile(`\((\d+)%\)`)

// aria2Resume: `aria2c -x8 -s8 -k1M`, slowed, interrupted with SIGINT (which
// saves its control file) past a quarter of the file, then `aria2c -c`.
func aria2Resume(t *testing.T, c *run) outcome {
	out := filepath.Join(c.dir, "out.mp4")
	pastQuarter := func(log string) bool {
		m := aria2Progress.FindAllStringSubmatch(log, -1)
		if len(m) == 0 {
			return false
		}
		pct, _ := strconv.Atoi(m[len(m)-1][1])
		return pct >= 25
	}
	c.cutWhen(t, os.Interrupt, "aria2c's readout to pass 25%", pastQuarter,
		"aria2c", c.aria2Args("--min-split-size=1M", "--max-overall-download-limit=4M", "--summary-interval=1")...)
	if fileSize(out+".aria2") == 0 {
		t.Fatalf("aria2c left no control file %s.aria2 after the interruption: nothing to resume", filepath.Base(out))
	}
	c.checkStage(t, "cut", outcome{received: -1})
	if err := c.runClient("aria2c", c.aria2Args("--continue=true", "--min-split-size=1M", "--summary-interval=0")...); err != nil {
		t.Errorf("resume: %v", err)
		return outcome{received: -1}
	}
	return c.verifyWhole(t, out)
}

// safariProbe: a bytes=0-1 probe, then bytes=0-(size-1), as Safari starts.
func safariProbe(t *testing.T, c *run) outcome {
	probe, out := filepath.Join(c.dir, "probe"), filepath.Join(c.dir, "out.mp4")
	args := append([]string{"-sS", "-f"}, c.header("-H")...)
	if err := c.runClient("curl", append(append([]string{"-r", "0-1", "-o", probe}, args...), c.url)...); err != nil {
		t.Errorf("probe: %v", err)
		return outcome{received: fileSize(probe)}
	}
	if got := c.verifyPrefix(t, probe); got != 2 {
		t.Errorf("the probe bytes=0-1 got %d bytes, want 2", got)
	}
	last := strconv.FormatInt(c.video.Size-1, 10)
	if err := c.runClient("curl", append(append([]string{"-r", "0-" + last, "-o", out}, args...), c.url)...); err != nil {
		t.Errorf("%v", err)
		return outcome{received: fileSize(out)}
	}
	return c.verifyWhole(t, out)
}

// stalled: a raw HTTP client that sends its request, reads nothing, and
// closes once the gateway has been sending for a while (its socket buffers
// are filling).
func stalled(t *testing.T, c *run) outcome {
	u, err := url.Parse(c.url)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	auth := ""
	if c.bearer != "" {
		auth = c.bearer + "\r\n"
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: stalled/1\r\n%s\r\n", u.RequestURI(), u.Host, auth); err != nil {
		t.Fatal(err)
	}
	// 1 MiB out of the emulator, and the answer in this client's socket: the
	// gateway is streaming into buffers that nobody reads. (A busy machine can
	// take longer to pass the answer on than the emulator takes to send a
	// megabyte; leaving before anything arrived is another scenario.)
	if !waitUntil(context.Background(), 30*time.Second, nil, func() bool {
		n, _ := acked.Unread(conn)
		return c.se.rec.liveBytes(c.uid) >= 1<<20 && n > 0
	}) {
		n, _ := acked.Unread(conn)
		t.Fatalf("in 30s the emulator sent %d bytes of %s to the gateway, and %d bytes reached the client", c.se.rec.liveBytes(c.uid), c.uid, n)
	}
	return outcome{received: 0}
}

// ffprobe reads the duration of an MP4 whose index is at its end.
func ffprobe(t *testing.T, c *run) outcome {
	args := []string{"-v", "error", "-show_entries", "format=duration", "-of", "default=noprint_wrappers=1:nokey=1"}
	if c.bearer != "" {
		args = append(args, "-headers", c.bearer+"\r\n")
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientDeadline)
	defer cancel()
	cmd, out := c.command(ctx, "ffprobe", append(args, c.url)...)
	cmd.Stderr = &bytes.Buffer{}
	err := cmd.Run()
	if err != nil {
		t.Errorf("ffprobe: %v: %s", err, c.redact(tail(cmd.Stderr.(*bytes.Buffer).String(), 2000)))
		return outcome{received: -1}
	}
	d, err := strconv.ParseFloat(strings.TrimSpace(out.String()), 64)
	if err != nil || math.Abs(d-c.video.Duration) > 1 {
		t.Errorf("ffprobe reports duration %q, want %.0f s", strings.TrimSpace(out.String()), c.video.Duration)
	}
	return outcome{received: -1}
}

// ffmpegCopy remuxes the file with `ffmpeg -i URL -c copy`, then compares
// its packets with the emulator's file's.
func ffmpegCopy(t *testing.T, c *run) outcome {
	out := filepath.Join(c.dir, "out.mp4")
	args := []string{"-nostdin", "-v", "error"}
	if c.bearer != "" {
		args = append(args, "-headers", c.bearer+"\r\n")
	}
	if err := c.runClient("ffmpeg", append(args, "-i", c.url, "-c", "copy", "-y", out)...); err != nil {
		t.Errorf("%v", err)
		return outcome{received: -1}
	}
	ref := filepath.Join(c.dir, "reference.mp4")
	f, err := os.Create(ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, c.file.NewReader()); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := c.packets(out)
	if err != nil {
		t.Errorf("%v", err)
		return outcome{received: -1}
	}
	want, err := c.packets(ref)
	if err != nil {
		t.Errorf("%v", err)
		return outcome{received: -1}
	}
	if len(got) == 0 || !slicesEqual(got, want) {
		t.Errorf("ffmpeg's copy has %d packets, the emulator's file %d, and they differ: the proxy did not pass the media through",
			len(got), len(want))
		return outcome{received: -1}
	}
	return outcome{whole: true}
}

// packets lists stream, size and MD5 of every packet of an MP4 file.
func (c *run) packets(path string) ([]string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-i", path, "-map", "0", "-c", "copy", "-f", "framemd5", "-")
	cmd.Env = childEnv(c.home)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("framemd5 of %s: %v: %s", filepath.Base(path), err, tail(stderr.String(), 2000))
	}
	var out []string
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) < 6 {
			continue
		}
		out = append(out, strings.TrimSpace(f[0])+","+strings.TrimSpace(f[4])+","+strings.TrimSpace(f[5]))
	}
	return out, nil
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// videoPage is the test's page: one <video preload=auto>.
const videoPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>conformance</title></head>
<body><video id="v" preload="auto" muted playsinline src="%s"></video></body></html>`

// playAndSeek plays the video, seeks three times (playing on each time) and
// lets go of it, resolving to a JSON summary or rejecting with what failed.
const playAndSeek = `(async () => {
  const v = document.getElementById('v');
  const state = () => 'readyState ' + v.readyState + ', networkState ' + v.networkState + ', currentTime ' + v.currentTime;
  const until = (what, cond, ms) => new Promise((resolve, reject) => {
    const t0 = performance.now();
    const tick = () => {
      if (v.error) return reject(new Error('media error ' + v.error.code + ' (' + v.error.message + ') waiting for ' + what));
      if (cond()) return resolve();
      if (performance.now() - t0 > ms) return reject(new Error('timed out waiting for ' + what + ': ' + state()));
      setTimeout(tick, 50);
    };
    tick();
  });
  await until('metadata', () => v.readyState >= 1, 30000);
  const duration = v.duration;
  await v.play();
  await until('playback', () => v.currentTime >= 1, 30000);
  const seeks = [];
  for (const f of [0.3, 0.6, 0.85]) {
    const to = duration * f;
    v.currentTime = to;
    await until('playback after a seek to ' + to, () => !v.seeking && v.currentTime >= to + 0.5, 30000);
    seeks.push(v.currentTime);
  }
  v.pause();
  const buffered = [];
  for (let i = 0; i < v.buffered.length; i++) buffered.push([v.buffered.start(i), v.buffered.end(i)]);
  v.removeAttribute('src');
  v.load();
  return JSON.stringify({duration, seeks, buffered});
})()`

// chromiumVideo plays the file in headless Chromium's <video preload=auto>
// and seeks three times. On the auth route the page's origin sets the
// portal's cookie, as a portal would: <video> cannot send a Bearer header.
func chromiumVideo(t *testing.T, c *run) outcome {
	chromium, _ := exec.LookPath("chromium")
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		if c.route == routeAuth {
			http.SetCookie(w, &http.Cookie{Name: portalCookie, Value: c.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, videoPage, html.EscapeString(c.url))
	}))
	defer page.Close()

	// Chromium puts a UNIX socket in TMPDIR, and a socket path is at most 107
	// bytes: a test's own TempDir is too deep, so TMPDIR is a short directory,
	// removed when t ends.
	tmp, err := os.MkdirTemp("", "cr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	env := append(childEnv(c.home), "TMPDIR="+tmp)
	browserLog := &syncBuffer{}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(filepath.Join(c.home, "chromium")),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.NoInheritEnv,
		chromedp.Env(env...),
		chromedp.CombinedOutput(browserLog),
	)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(page.URL+"/")); err != nil {
		t.Fatalf("chromium: navigate: %v\n%s", err, c.redact(tail(browserLog.String(), 4000)))
	}
	evalCtx, cancelEval := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelEval()
	res, err := chromedp.Run(evalCtx, chromedp.Evaluate[string](playAndSeek, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Errorf("chromium: play and seek: %v", c.redact(err.Error()))
	} else {
		var r struct {
			Duration float64     `json:"duration"`
			Seeks    []float64   `json:"seeks"`
			Buffered [][]float64 `json:"buffered"`
		}
		if err := json.Unmarshal([]byte(res), &r); err != nil {
			t.Errorf("chromium: %v: %s", err, res)
		}
		if math.Abs(r.Duration-c.video.Duration) > 1 || len(r.Seeks) != 3 {
			t.Errorf("chromium played %s, want a duration of %.0f s and three seeks", res, c.video.Duration)
		}
		t.Logf("chromium: %s", res)
	}
	// Closing the browser closes its connections.
	if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Logf("chromium: close: %v", err)
	}
	return outcome{received: -1}
}
