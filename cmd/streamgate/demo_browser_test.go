package main

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/streamgate/streamgate/stream"
)

// findChromium returns the path of a Chromium, or skips t when there is none
// and CI is unset; in CI a missing browser fails the test.
func findChromium(t *testing.T) string {
	t.Helper()
	// Debian's package installs /usr/bin/chromium, also when PATH leaves it out.
	for _, name := range []string{"chromium", "chromium-browser", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium found (chromium, chromium-browser on PATH, /usr/bin/chromium), and CI is set: apt-get install chromium (.ci/run does)")
	}
	t.Skip("no Chromium found (chromium, chromium-browser on PATH, /usr/bin/chromium): apt-get install chromium to run the demo page in a browser")
	return ""
}

// browserEnv is the environment of the browser process: HOME, TMPDIR and the
// XDG directories in dir, and no proxy.
func browserEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "STREAMGATE_"), name == "HOME", name == "TMPDIR", strings.HasPrefix(name, "XDG_"),
			strings.EqualFold(name, "http_proxy"), strings.EqualFold(name, "https_proxy"), strings.EqualFold(name, "all_proxy"):
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+dir, "TMPDIR="+dir, "XDG_CONFIG_HOME="+dir, "XDG_CACHE_HOME="+dir, "XDG_DATA_HOME="+dir,
		"no_proxy=*", "NO_PROXY=*")
}

// startBrowser starts headless Chromium for the rest of t and returns its tab's
// context, with what the browser printed for failure messages.
func startBrowser(t *testing.T, chromium string) (context.Context, *syncBuffer) {
	t.Helper()
	// Chromium puts a UNIX socket in TMPDIR, and a socket path is at most 107
	// bytes: a test's own TempDir is too deep.
	home, err := os.MkdirTemp("", "cr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	out := &syncBuffer{}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(filepath.Join(home, "profile")),
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
		chromedp.Env(browserEnv(home)...),
		chromedp.CombinedOutput(out),
	)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		// Closing the browser closes its connections before the demo stops.
		if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("chromium: close: %v", err)
		}
		cancel()
		cancelAlloc()
	})
	return ctx, out
}

// recordViolations collects the page's Content-Security-Policy violations in
// window.cspViolations, so the test can show that the page's policy blocks
// nothing it needs.
const recordViolations = `window.cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
true`

// untilPlaying resolves once the player has played a second and a half of the
// video, or rejects with what went wrong.
const untilPlaying = `new Promise((resolve, reject) => {
  const v = document.getElementById('player');
  const t0 = performance.now();
  const tick = () => {
    if (v.error) return reject(new Error('media error ' + v.error.code + ' (' + v.error.message + ')'));
    if (v.readyState >= 2 && v.currentTime >= 1.5 && !v.paused) {
      return resolve(JSON.stringify({currentTime: v.currentTime, readyState: v.readyState, duration: v.duration}));
    }
    if (performance.now() - t0 > 90000) {
      return reject(new Error('not playing: readyState ' + v.readyState + ', networkState ' + v.networkState +
        ', currentTime ' + v.currentTime + ', paused ' + v.paused + '; status: ' + document.getElementById('status').textContent));
    }
    setTimeout(tick, 50);
  };
  tick();
})`

// TestDemoPageInBrowser drives the demo page in headless Chromium: it picks a
// user, downloads a video through the page's button (the file arrives with the
// name and the bytes of the emulator's file), plays another, and checks that
// the minutes the page shows drop by what the ledger billed each time.
func TestDemoPageInBrowser(t *testing.T) {
	chromium := findChromium(t)
	info, _ := startDemo(t)
	ctx, browserOut := startBrowser(t, chromium)
	c := clientFrom(t, ipLocal)
	alice := info.Users[0]
	welcome, lecture, disabled := info.Videos[0], info.Videos[1], info.Videos[2]
	if alice.ID != "alice" || welcome.Name != "Welcome" || lecture.Duration != 1800 {
		t.Fatalf("the demo's users and videos changed: %+v %+v", alice, info.Videos)
	}
	const welcomeSize = 24 << 20

	// The first action starts the browser: no timeout on it (see chromedp.Run).
	if err := chromedp.Do(ctx, chromedp.Navigate(info.Gateway+"/")); err != nil {
		t.Fatalf("chromium: navigate: %v\n%s", err, tail(browserOut.String(), 4000))
	}
	run := func(what string, a chromedp.Action[chromedp.Void]) {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if _, err := chromedp.Run(actx, a); err != nil {
			t.Fatalf("chromium: %s: %v\npage status: %s", what, err, pageText(ctx, "#status"))
		}
	}
	evalBool(t, ctx, recordViolations)

	downloads := t.TempDir()
	run("set the download directory", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		events := true
		_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior:      browser.SetDownloadBehaviorBehaviorAllow,
			DownloadPath:  downloads,
			EventsEnabled: &events,
		})
		return err
	}))

	// Pick alice; the page shows her minutes and the videos' download status.
	run("pick alice", chromedp.Click(chromedp.CSS(`#users button[data-user="alice"]`)))
	downloadButton := fmt.Sprintf(`button[data-action="download"][data-uid=%q][data-type="default"]`, welcome.UID)
	playButton := fmt.Sprintf(`button[data-action="play"][data-uid=%q]`, lecture.UID)
	run("wait for the videos' status", chromedp.WaitEnabled(chromedp.CSS(downloadButton)))
	run("wait for the minutes", chromedp.WaitEnabled(chromedp.CSS(playButton)))
	for _, st := range []struct {
		uid, typ, want string
	}{
		{welcome.UID, "default", "ready"}, {welcome.UID, "audio", "ready"},
		{lecture.UID, "default", "ready"}, {disabled.UID, "default", "not enabled"},
	} {
		if got := pageText(ctx, fmt.Sprintf(`tr[data-uid=%q] td[data-type=%q]`, st.uid, st.typ)); got != st.want {
			t.Errorf("status of %s/%s shown as %q, want %q", st.uid, st.typ, got, st.want)
		}
	}
	disabledButton := fmt.Sprintf(`button[data-action="play"][data-uid=%q]`, disabled.UID)
	if !evalBool(t, ctx, fmt.Sprintf(`document.querySelector(%q).disabled`, disabledButton)) {
		t.Errorf("the video without downloads can be played from the page")
	}

	before := settledUsage(t, c, info.Gateway, alice.Token)
	shownBefore := waitShown(t, ctx, before)
	if before.MinutesUsed != 0 || shownBefore != alice.MinutesPerMonth {
		t.Errorf("before any download: ledger %+v, page shows %v remaining; want nothing used and %v remaining",
			before, shownBefore, alice.MinutesPerMonth)
	}

	// Download through the button: the browser saves Welcome.mp4.
	begins := eventQueue(ctx, chromedp.Events(ctx, browser.DownloadWillBegin))
	progress := eventQueue(ctx, chromedp.Events(ctx, browser.DownloadProgress))
	run("click download", chromedp.Click(chromedp.CSS(downloadButton)))
	began := nextEvent(t, begins, "the download to begin")
	if began.SuggestedFilename != "Welcome.mp4" || !strings.HasPrefix(began.URL, info.Gateway+"/dl/") {
		t.Errorf("download of %s suggested as %q; want Welcome.mp4 from a gateway link", redactGrant(began.URL), began.SuggestedFilename)
	}
	for {
		ev := nextEvent(t, progress, "the download to complete")
		if ev.GUID != began.GUID {
			continue
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatalf("the browser cancelled the download after %.0f of %.0f bytes", ev.ReceivedBytes, ev.TotalBytes)
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			break
		}
	}
	saved := filepath.Join(downloads, "Welcome.mp4")
	waitFor(t, 10*time.Second, "Welcome.mp4 in the download directory", func() bool {
		fi, err := os.Stat(saved)
		return err == nil && fi.Size() == welcomeSize
	})
	f, err := os.Open(saved)
	if err != nil {
		t.Fatal(err)
	}
	checkStream(t, f, welcome.UID, stream.Default, 0, welcomeSize)
	f.Close()

	// The page shows the minutes the ledger billed: the whole file of a
	// ten-minute video, ten minutes.
	afterDownload := settledUsage(t, c, info.Gateway, alice.Token)
	billed := afterDownload.MinutesUsed - before.MinutesUsed
	if !near(billed, welcome.Duration/60, 1e-9) {
		t.Errorf("the ledger billed %v minutes for the download, want %v", billed, welcome.Duration/60)
	}
	shown := waitShown(t, ctx, afterDownload)
	if drop := shownBefore - shown; !near(drop, billed, 1e-9) {
		t.Errorf("the page's minutes dropped by %v for the download; the ledger billed %v", drop, billed)
	}

	// Play the lecture through the page's link: playback starts; stopping it
	// ends the deliveries, and the page shows what they cost.
	run("click play", chromedp.Click(chromedp.CSS(playButton)))
	actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	playing, err := chromedp.Run(actx, chromedp.Evaluate[string](untilPlaying, chromedp.EvalAwaitPromise))
	cancel()
	if err != nil {
		t.Fatalf("chromium: playback: %v", err)
	}
	t.Logf("playing: %s", playing)
	if d := evalFloat(t, ctx, `document.getElementById('player').duration`); !near(d, lecture.Duration, 1) {
		t.Errorf("the player reads a duration of %v s, want %v", d, lecture.Duration)
	}
	run("click stop", chromedp.Click(chromedp.CSS("#stop")))
	afterPlay := settledUsage(t, c, info.Gateway, alice.Token)
	billedPlay := afterPlay.MinutesUsed - afterDownload.MinutesUsed
	if billedPlay <= 0 || billedPlay > lecture.Duration/60+1e-9 {
		t.Errorf("the ledger billed %v minutes for playing the lecture, want more than 0 and at most %v", billedPlay, lecture.Duration/60)
	}
	t.Logf("the ledger billed %.4f minutes for the download and %.4f for playing", billed, billedPlay)
	shownAfterPlay := waitShown(t, ctx, afterPlay)
	if drop := shown - shownAfterPlay; !near(drop, billedPlay, 1e-9) {
		t.Errorf("the page's minutes dropped by %v for playing; the ledger billed %v", drop, billedPlay)
	}

	violations, err := evalIn[[]string](ctx, `window.cspViolations`)
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if len(violations) > 0 {
		t.Errorf("the page's Content-Security-Policy blocked %v", violations)
	}
	if evalBool(t, ctx, `document.getElementById('status').className === 'error'`) {
		t.Errorf("the page reports a failure: %q", pageText(ctx, "#status"))
	}

	// bob's 25 minutes cannot cover the 30-minute lecture: the gateway refuses
	// the player's request, the page says so, and nothing is billed.
	bob := info.Users[1]
	run("pick bob", chromedp.Click(chromedp.CSS(`#users button[data-user="bob"]`)))
	bobBefore := settledUsage(t, c, info.Gateway, bob.Token)
	waitShown(t, ctx, bobBefore)
	run("wait for bob's videos", chromedp.WaitEnabled(chromedp.CSS(playButton)))
	run("click play as bob", chromedp.Click(chromedp.CSS(playButton)))
	run("wait for the refusal", chromedp.Poll[chromedp.Void](
		`document.getElementById('status').className === 'error' && document.getElementById('status').textContent.includes('could not be played')`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(time.Minute)))
	if got := settledUsage(t, c, info.Gateway, bob.Token); got.MinutesUsed != bobBefore.MinutesUsed {
		t.Errorf("bob's refused playback was billed: usage %+v, before %+v", got, bobBefore)
	}
}

// waitShown waits until the page shows the remaining minutes of u, exactly as
// the usage route gives them and rounded to hundredths in the text, and
// returns them.
func waitShown(t *testing.T, ctx context.Context, u usageFigures) float64 {
	t.Helper()
	var shown float64
	var raw, text string
	deadline := time.Now().Add(30 * time.Second)
	for {
		raw = pageAttr(ctx, "#remaining", "minutes")
		text = pageText(ctx, "#remaining")
		if v, err := strconv.ParseFloat(raw, 64); err == nil {
			shown = v
			if v == u.MinutesRemaining && text == strconv.FormatFloat(u.MinutesRemaining, 'f', 2, 64) {
				return shown
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page shows %q (%s) remaining minutes; the ledger has %v (%+v)", text, raw, u.MinutesRemaining, u)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventQueue delivers the events of a chromedp.Events iterator on a channel:
// ranging over the iterator a second time would miss what came in between.
func eventQueue[E any](ctx context.Context, events iter.Seq2[E, error]) <-chan E {
	ch := make(chan E, 64)
	go func() {
		defer close(ch)
		for ev, err := range events {
			if err != nil {
				return
			}
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

// nextEvent waits for the next event of q.
func nextEvent[E any](t *testing.T, q <-chan E, what string) E {
	t.Helper()
	select {
	case ev, ok := <-q:
		if !ok {
			t.Fatalf("waiting for %s: the browser's events ended", what)
		}
		return ev
	case <-time.After(2 * time.Minute):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

func pageText(ctx context.Context, sel string) string {
	s, _ := evalIn[string](ctx, fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ''`, sel))
	return strings.TrimSpace(s)
}

func pageAttr(ctx context.Context, sel, data string) string {
	s, _ := evalIn[string](ctx, fmt.Sprintf(`(document.querySelector(%q) || {dataset: {}}).dataset[%q] || ''`, sel, data))
	return s
}

func evalBool(t *testing.T, ctx context.Context, expr string) bool {
	t.Helper()
	v, err := evalIn[bool](ctx, expr)
	if err != nil {
		t.Fatalf("chromium: %s: %v", expr, err)
	}
	return v
}

func evalFloat(t *testing.T, ctx context.Context, expr string) float64 {
	t.Helper()
	v, err := evalIn[float64](ctx, expr)
	if err != nil {
		t.Fatalf("chromium: %s: %v", expr, err)
	}
	return v
}

func evalIn[T any](ctx context.Context, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// redactGrant hides the grant of a link URL in a failure message.
func redactGrant(u string) string {
	if i := strings.Index(u, "/dl/"); i >= 0 {
		rest := u[i+len("/dl/"):]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			return u[:i] + "/dl/[grant]" + rest[j:]
		}
	}
	return u
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
