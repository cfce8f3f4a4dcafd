package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
)

// curlCmd is one curl command line of the demo's help, as far as the demo uses
// curl: -H, -d, -o, -D, -w, -s and a URL.
type curlCmd struct {
	line    string
	method  string
	headers http.Header
	body    string
	url     string
	repeat  int
}

// parseDemoHelp finds the exported tokens and the curl commands (a `for i in 1 2
// 3; do curl ...; done` loop repeats its command) in the demo's help text.
func parseDemoHelp(t *testing.T, help string) []curlCmd {
	t.Helper()
	vars := map[string]string{}
	var cmds []curlCmd
	for _, line := range strings.Split(help, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "export "); ok {
			name, value, _ := strings.Cut(rest, "=")
			vars[name] = value
			continue
		}
		repeat := 1
		if rest, ok := strings.CutPrefix(line, "for i in "); ok {
			list, loop, ok := strings.Cut(rest, "; do ")
			if !ok {
				t.Fatalf("cannot read loop %q", line)
			}
			repeat = len(strings.Fields(list))
			line = strings.TrimSuffix(strings.TrimSpace(loop), "; done")
		}
		if !strings.HasPrefix(line, "curl ") {
			continue
		}
		words := shellWords(t, line, vars)
		c := curlCmd{line: line, method: http.MethodGet, headers: http.Header{}, repeat: repeat}
		for i := 1; i < len(words); i++ {
			switch w := words[i]; w {
			case "-s":
			case "-H":
				i++
				k, v, _ := strings.Cut(words[i], ":")
				c.headers.Add(strings.TrimSpace(k), strings.TrimSpace(v))
			case "-d":
				i++
				c.body, c.method = words[i], http.MethodPost
			case "-o", "-D", "-w":
				i++
			default:
				if strings.HasPrefix(w, "-") {
					t.Fatalf("curl option %s in %q is not understood", w, line)
				}
				c.url = w
			}
		}
		cmds = append(cmds, c)
	}
	return cmds
}

// shellWords splits a command line as sh would for the quoting the demo uses:
// single quotes, double quotes and $NAME expansion outside single quotes.
func shellWords(t *testing.T, s string, vars map[string]string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				t.Fatalf("unterminated ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			j := strings.IndexByte(s[i+1:], '"')
			if j < 0 {
				t.Fatalf("unterminated \" in %q", s)
			}
			cur.WriteString(expand(s[i+1:i+1+j], vars))
			i += j + 1
			inWord = true
		default:
			j := strings.IndexAny(s[i:], ` '"`)
			if j < 0 {
				j = len(s) - i
			}
			cur.WriteString(expand(s[i:i+j], vars))
			i += j - 1
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func expand(s string, vars map[string]string) string {
	for name, v := range vars {
		s = strings.ReplaceAll(s, "$"+name, v)
	}
	return s
}

// startDemo runs the demo in-process until t ends, and returns its description
// and its stdout. The demo's log is shown when t fails.
func startDemo(t *testing.T) (demoInfo, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	ready := make(chan demoInfo, 1)
	done := make(chan error, 1)
	go func() {
		done <- runDemo(ctx, env{getenv: noEnv, stdout: stdout, stderr: stderr}, "127.0.0.1:0", "127.0.0.1:0", "proportional",
			func(d demoInfo) { ready <- d })
	}()
	var info demoInfo
	select {
	case info = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("demo stopped: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("demo did not start")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo returned %v", err)
		}
		if t.Failed() {
			t.Logf("demo log:\n%s", stderr.String())
		}
	})
	return info, stdout
}

// TestDemo starts the demo in-process, reads its description and runs the curl
// commands it prints, in Go, checking each answer.
func TestDemo(t *testing.T) {
	info, stdout := startDemo(t)
	out := stdout.String()
	first, help, _ := strings.Cut(out, "\n")
	var line struct {
		Gateway  string `json:"gateway"`
		Emulator string `json:"emulator"`
		Videos   []struct {
			UID      string  `json:"uid"`
			Duration float64 `json:"duration"`
			Private  bool    `json:"private"`
		} `json:"videos"`
		Users []struct {
			ID              string  `json:"id"`
			Token           string  `json:"token"`
			Plan            string  `json:"plan"`
			MinutesPerMonth float64 `json:"minutes_per_month"`
		} `json:"users"`
	}
	if err := json.Unmarshal([]byte(first), &line); err != nil {
		t.Fatalf("first line is not a JSON object: %v: %q", err, first)
	}
	if line.Gateway != info.Gateway || !strings.HasPrefix(line.Gateway, "http://127.0.0.1:") || !strings.HasPrefix(line.Emulator, "http://127.0.0.1:") {
		t.Errorf("first line gateway %q emulator %q", line.Gateway, line.Emulator)
	}
	if len(line.Videos) != 3 || len(line.Users) != 2 {
		t.Fatalf("first line has %d videos and %d users, want 3 and 2", len(line.Videos), len(line.Users))
	}
	for _, v := range line.Videos {
		if !stream.ValidUID(v.UID) || v.Duration <= 0 {
			t.Errorf("video %+v", v)
		}
	}
	for _, u := range line.Users {
		if u.ID == "" || u.Token == "" || u.Plan == "" || u.MinutesPerMonth <= 0 {
			t.Errorf("user %+v", u)
		}
	}
	pub, priv := line.Videos[0], line.Videos[1]
	if pub.Private || !priv.Private {
		t.Errorf("videos[0].private = %v, videos[1].private = %v; want a public then a private video", pub.Private, priv.Private)
	}

	cmds := parseDemoHelp(t, help)
	if len(cmds) != 9 {
		t.Fatalf("found %d curl commands in the help, want 9:\n%s", len(cmds), help)
	}
	c := clientFrom(t, ipLocal)
	send := func(cmd curlCmd) *http.Response {
		t.Helper()
		var body io.Reader
		if cmd.body != "" {
			body = strings.NewReader(cmd.body)
		}
		req, err := http.NewRequest(cmd.method, cmd.url, body)
		if err != nil {
			t.Fatalf("%s: %v", cmd.line, err)
		}
		req.Header = cmd.headers.Clone()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", cmd.line, err)
		}
		return resp
	}
	const privSize, pubSize = 48 << 20, 24 << 20

	steps := []struct {
		name   string
		status int
		check  func(t *testing.T, resp *http.Response)
	}{
		{"list downloads", http.StatusOK, func(t *testing.T, resp *http.Response) {
			var m struct {
				Video     string                    `json:"video"`
				Downloads map[string]map[string]any `json:"downloads"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
				t.Fatal(err)
			}
			if m.Video != priv.UID || m.Downloads["default"]["status"] != "ready" || m.Downloads["audio"]["status"] != "ready" {
				t.Errorf("downloads = %+v", m)
			}
		}},
		{"private MP4 named lecture", http.StatusOK, func(t *testing.T, resp *http.Response) {
			if cd := resp.Header.Get("Content-Disposition"); cd != `attachment; filename="lecture.mp4"` {
				t.Errorf("Content-Disposition %q, want lecture.mp4", cd)
			}
			checkStream(t, resp.Body, priv.UID, stream.Default, 0, privSize)
		}},
		{"audio", http.StatusOK, func(t *testing.T, resp *http.Response) {
			if ct := resp.Header.Get("Content-Type"); ct != stream.Audio.ContentType() {
				t.Errorf("Content-Type %q", ct)
			}
			checkStream(t, resp.Body, priv.UID, stream.Audio, 0, privSize/8)
		}},
		{"resume the second half", http.StatusPartialContent, func(t *testing.T, resp *http.Response) {
			if cr := resp.Header.Get("Content-Range"); cr != "bytes 25165824-50331647/50331648" {
				t.Errorf("Content-Range %q", cr)
			}
			checkStream(t, resp.Body, priv.UID, stream.Default, 25165824, privSize-25165824)
		}},
		{"link", http.StatusCreated, func(t *testing.T, resp *http.Response) {
			var l struct {
				URL string `json:"url"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(l.URL, info.Gateway+"/dl/") {
				t.Fatalf("link %q is not the gateway's", l.URL)
			}
			got, err := c.Get(l.URL) // no credential but the link
			if err != nil {
				t.Fatal(err)
			}
			defer got.Body.Close()
			if got.StatusCode != http.StatusOK {
				t.Fatalf("link download: status %d", got.StatusCode)
			}
			if cd := got.Header.Get("Content-Disposition"); cd != `attachment; filename="Welcome.mp4"` {
				t.Errorf("link Content-Disposition %q", cd)
			}
			checkStream(t, got.Body, pub.UID, stream.Default, 0, pubSize)
		}},
		{"usage", http.StatusOK, func(t *testing.T, resp *http.Response) {
			var u usageFigures
			if err := json.NewDecoder(resp.Body).Decode(&u); err != nil {
				t.Fatal(err)
			}
			// 30 (the MP4) + 30 (the audio file, whole) + 10 (the link's
			// download of the first video); the second half of the MP4 was
			// delivered in its download already, so the resume is free.
			want := 30.0 + 30 + 10
			if u.Plan != "pro" || u.MinutesReserved != 0 || !near(u.MinutesUsed, want, 0.01) {
				t.Errorf("alice's usage = %+v, want %.2f minutes used", u, want)
			}
		}},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			resp := send(cmds[i])
			defer resp.Body.Close()
			if resp.StatusCode != st.status {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("%s: status %d, want %d: %s", cmds[i].line, resp.StatusCode, st.status, b)
			}
			st.check(t, resp)
		})
	}

	t.Run("bob's lecture is refused", func(t *testing.T) {
		loop := cmds[6]
		if loop.repeat != 2 {
			t.Fatalf("bob's loop repeats %d times, want 2", loop.repeat)
		}
		for i := range loop.repeat {
			resp := send(loop)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("bob's download %d: status %d, want 200", i+1, resp.StatusCode)
			}
		}
		resp := send(cmds[7])
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("bob's lecture: status %d, want 403: %.300s", resp.StatusCode, b)
		}
		var p map[string]any
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatalf("refusal body: %v: %s", err, b)
		}
		if p["minutes_limit"] != 25.0 || !near(p["minutes_used"].(float64), 10, 1e-6) ||
			!near(p["minutes_remaining"].(float64), 15, 1e-6) || !near(p["minutes_needed"].(float64), 30, 1e-6) {
			t.Errorf("refusal body = %v, want limit 25, used 10, remaining 15, needed 30", p)
		}
		// The admin API, with the demo's admin token, says why.
		id, _ := p["request_id"].(string)
		req, _ := http.NewRequest(http.MethodGet, info.Admin+"/v1/admin/refusals/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+info.AdminToken)
		lookup, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		lb, _ := io.ReadAll(lookup.Body)
		lookup.Body.Close()
		if lookup.StatusCode != http.StatusOK || !strings.Contains(string(lb), "quota") {
			t.Errorf("refusal lookup of %q: status %d: %.300s; want 200 naming the quota", id, lookup.StatusCode, lb)
		}
	})

	t.Run("metrics count what the ledger billed", func(t *testing.T) {
		if !strings.HasPrefix(cmds[8].url, info.Admin+"/") || info.Admin == info.Gateway {
			t.Fatalf("metrics at %q, want the admin listener %q, not the gateway's", cmds[8].url, info.Admin)
		}
		// 70 minutes for alice, 10 for bob; settlements are counted as they land.
		var billed float64
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp := send(cmds[8])
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("metrics: status %d: %.300s", resp.StatusCode, b)
			}
			billed = sumMetric(t, string(b), "streamgate_billed_minutes_total")
			if near(billed, 80, 0.02) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !near(billed, 80, 0.02) {
			t.Errorf("streamgate_billed_minutes_total sums to %.4f, want 80 (what the ledger billed)", billed)
		}
	})
}

// sumMetric adds up the samples of one metric in a Prometheus text exposition.
func sumMetric(t *testing.T, text, name string) float64 {
	t.Helper()
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// TestDemoBinary does what the README's quick start does: it runs the demo as a
// process, reads its first line, asks /healthz, and stops it with SIGTERM.
func TestDemoBinary(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "demo", "--listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type firstLine struct {
		line string
		err  error
	}
	lines := make(chan firstLine, 1)
	exited := make(chan error, 1)
	go func() {
		// Drain stdout after the first line, so the demo never blocks on it.
		r := bufio.NewReader(stdout)
		first, err := r.ReadString('\n')
		lines <- firstLine{first, err}
		_, _ = io.Copy(io.Discard, r)
		exited <- cmd.Wait()
	}()
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	var fl firstLine
	select {
	case fl = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatalf("no first line from the demo; stderr:\n%s", stderr.String())
	}
	if fl.err != nil {
		t.Fatalf("reading the first line: %v; stderr:\n%s", fl.err, stderr.String())
	}
	var info demoInfo
	if err := json.Unmarshal([]byte(fl.line), &info); err != nil {
		t.Fatalf("first line is not JSON: %v: %q", err, fl.line)
	}
	resp, err := http.Get(info.Gateway + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: status %d", resp.StatusCode)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		waited = true
		if err != nil {
			t.Errorf("demo exited with %v after SIGTERM, want a clean exit; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("demo did not exit after SIGTERM")
	}
	if !strings.Contains(stderr.String(), `"msg":"shutting down"`) {
		t.Errorf("no shutting down log line:\n%s", stderr.String())
	}
}

// TestDemoPage checks the demo page's routes beside the gateway's: the page
// and its files, the demo-only users and videos, problem bodies for what it
// does not serve, and every other path still the gateway's.
func TestDemoPage(t *testing.T) {
	info, _ := startDemo(t)
	c := clientFrom(t, ipLocal)
	get := func(method, path, token string) response {
		t.Helper()
		return do(t, c, method, info.Gateway+path, token, nil)
	}

	t.Run("page", func(t *testing.T) {
		r := get(http.MethodGet, "/", "")
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Fatalf("GET /: status %d, Content-Type %q", r.status, r.header.Get("Content-Type"))
		}
		csp := r.header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "media-src 'self' " + info.Gateway} {
			if !strings.Contains(csp, want) {
				t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
			}
		}
		if r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("X-Content-Type-Options %q", r.header.Get("X-Content-Type-Options"))
		}
		for _, want := range []string{`<video id="player"`, "Demo only", `src="/demo/demo.js"`, `href="/demo/demo.css"`} {
			if !bytes.Contains(r.body, []byte(want)) {
				t.Errorf("the page lacks %q", want)
			}
		}
		if h := get(http.MethodHead, "/", ""); h.status != http.StatusOK || len(h.body) != 0 {
			t.Errorf("HEAD /: status %d, %d body bytes", h.status, len(h.body))
		}
	})

	t.Run("files", func(t *testing.T) {
		for path, ct := range map[string]string{"/demo/demo.js": "text/javascript; charset=utf-8", "/demo/demo.css": "text/css; charset=utf-8"} {
			r := get(http.MethodGet, path, "")
			if r.status != http.StatusOK || r.header.Get("Content-Type") != ct || len(r.body) == 0 {
				t.Errorf("GET %s: status %d, Content-Type %q, %d bytes; want 200 and %s", path, r.status, r.header.Get("Content-Type"), len(r.body), ct)
			}
		}
	})

	t.Run("users", func(t *testing.T) {
		r := get(http.MethodGet, "/demo/users", "")
		if r.status != http.StatusOK || r.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("GET /demo/users: status %d, Cache-Control %q; want 200, no-store", r.status, r.header.Get("Cache-Control"))
		}
		var body struct{ Users []demoUser }
		if err := json.Unmarshal(r.body, &body); err != nil {
			t.Fatal(err)
		}
		if len(body.Users) != len(info.Users) {
			t.Fatalf("%d users, want %d", len(body.Users), len(info.Users))
		}
		for i, u := range body.Users {
			if u != info.Users[i] {
				t.Errorf("user %d = %+v, want %+v", i, u, info.Users[i])
			}
			// The token is the user's credential on the gateway's own routes.
			if got := getUsage(t, c, info.Gateway, u.Token); got.Plan != u.Plan || got.MinutesLimit != u.MinutesPerMonth {
				t.Errorf("usage with %s's token = %+v, want plan %s and %v minutes", u.ID, got, u.Plan, u.MinutesPerMonth)
			}
		}
	})

	t.Run("videos", func(t *testing.T) {
		r := get(http.MethodGet, "/demo/videos", "")
		var body struct{ Videos []demoPageVideo }
		if err := json.Unmarshal(r.body, &body); err != nil || r.status != http.StatusOK {
			t.Fatalf("GET /demo/videos: status %d: %v: %s", r.status, err, r.body)
		}
		if len(body.Videos) != len(info.Videos) {
			t.Fatalf("%d videos, want %d", len(body.Videos), len(info.Videos))
		}
		for i, v := range body.Videos {
			want := info.Videos[i]
			if v.UID != want.UID || v.Name != want.Name || v.Duration != want.Duration || v.Private != want.Private || !stream.ValidFilename(v.Filename) {
				t.Errorf("video %d = %+v, want %+v with a valid filename", i, v, want)
			}
		}
	})

	problems := []struct {
		name, method, path string
		status             int
		typ, allow         string
	}{
		{"page by POST", http.MethodPost, "/", http.StatusMethodNotAllowed, "method_not_allowed", "GET, HEAD"},
		{"users by DELETE", http.MethodDelete, "/demo/users", http.StatusMethodNotAllowed, "method_not_allowed", "GET, HEAD"},
		{"unknown demo file", http.MethodGet, "/demo/nope", http.StatusNotFound, "not_found", ""},
		{"demo directory", http.MethodGet, "/demo/", http.StatusNotFound, "not_found", ""},
		// Outside / and /demo/ the gateway answers, with its request ID.
		{"gateway's own 404", http.MethodGet, "/nope", http.StatusNotFound, "not_found", ""},
	}
	for _, tc := range problems {
		t.Run(tc.name, func(t *testing.T) {
			r := get(tc.method, tc.path, "")
			if r.status != tc.status || r.header.Get("Content-Type") != "application/problem+json" || r.header.Get("Allow") != tc.allow {
				t.Fatalf("%s %s: status %d, Content-Type %q, Allow %q; want %d, a problem body, Allow %q",
					tc.method, tc.path, r.status, r.header.Get("Content-Type"), r.header.Get("Allow"), tc.status, tc.allow)
			}
			p := r.json(t)
			if p["type"] != "urn:streamgate:problem:"+tc.typ || p["status"] != float64(tc.status) {
				t.Errorf("problem %v, want type %s", p, tc.typ)
			}
		})
	}
	if r := get(http.MethodGet, "/nope", ""); r.header.Get("X-Request-Id") == "" {
		t.Errorf("GET /nope has no X-Request-Id: the gateway did not answer it")
	}
	if r := get(http.MethodGet, "/healthz", ""); r.status != http.StatusOK {
		t.Errorf("GET /healthz: status %d", r.status)
	}
}

func TestDemoFilename(t *testing.T) {
	long := strings.Repeat("a", 130)
	tests := []struct{ name, in, want string }{
		{"plain", "Welcome", "Welcome"},
		{"spaces", "Members-only lecture", "Members-only-lecture"},
		{"dots and accents", "Café v1.2", "Caf--v1-2"},
		{"edges trimmed", " (intro) ", "intro"},
		{"nothing left", "...", "video"},
		{"too long", long, long[:120]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := demoFilename(tc.in)
			if got != tc.want {
				t.Errorf("demoFilename(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if !stream.ValidFilename(got) {
				t.Errorf("demoFilename(%q) = %q, which Stream refuses", tc.in, got)
			}
		})
	}
}
