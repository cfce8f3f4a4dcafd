package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/streamgate/policy"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
	"github.com/streamgate/streamgate/usage"
)

func fileSize(uid string, t stream.DownloadType) int64 {
	size := int64(sizePublic)
	if uid == uidPrivate {
		size = sizePrivate
	}
	if t == stream.Audio {
		size /= 8
	}
	return size
}

func duration(uid string) float64 {
	if uid == uidPrivate {
		return durPrivate
	}
	return durPublic
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-5 }

// checkBody compares a response body with the emulator's bytes at off.
func checkBody(t *testing.T, r result, uid string, typ stream.DownloadType, off, n int64) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("reading body: %v", r.err)
	}
	if int64(len(r.body)) != n {
		t.Fatalf("body is %d bytes, want %d", len(r.body), n)
	}
	if !bytes.Equal(r.body, streamtest.Content(uid, typ, off, n)) {
		t.Fatalf("body differs from streamtest.Content(%s, %s, %d, %d)", uid, typ, off, n)
	}
}

// checkDownloads fetches the whole file, a resume from its middle, and its HEAD
// through url (a gateway download URL, with any query) with the credentials in hdr.
func checkDownloads(t *testing.T, c *http.Client, rawURL string, hdr http.Header, uid string, typ stream.DownloadType, filename string) {
	t.Helper()
	size := fileSize(uid, typ)
	wantCD := `attachment; filename="` + uid + typ.Ext() + `"`
	if filename != "" {
		wantCD = `attachment; filename="` + filename + typ.Ext() + `"`
	}

	r := do(t, c, "GET", rawURL, hdr, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET: status %d, want 200: %s", r.status, r.body)
	}
	checkBody(t, r, uid, typ, 0, size)
	if got := r.header.Get("Content-Disposition"); got != wantCD {
		t.Errorf("Content-Disposition = %q, want %q", got, wantCD)
	}
	if got := r.header.Get("Content-Type"); got != typ.ContentType() {
		t.Errorf("Content-Type = %q, want %q", got, typ.ContentType())
	}
	if got := r.header.Get("Cache-Control"); got != "private, no-store" {
		t.Errorf("Cache-Control = %q, want private, no-store", got)
	}

	off := size/2 + 11
	r = do(t, c, "GET", rawURL, withRange(hdr, fmt.Sprintf("bytes=%d-", off)), nil)
	if r.status != http.StatusPartialContent {
		t.Fatalf("resume: status %d, want 206: %s", r.status, r.body)
	}
	if got, want := r.header.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", off, size-1, size); got != want {
		t.Errorf("resume: Content-Range = %q, want %q", got, want)
	}
	checkBody(t, r, uid, typ, off, size-off)

	r = do(t, c, "HEAD", rawURL, hdr, nil)
	if r.status != http.StatusOK {
		t.Fatalf("HEAD: status %d, want 200", r.status)
	}
	if len(r.body) != 0 {
		t.Errorf("HEAD: %d body bytes", len(r.body))
	}
	if got := r.header.Get("Content-Length"); got != strconv.FormatInt(size, 10) {
		t.Errorf("HEAD: Content-Length = %q, want %d", got, size)
	}
	if got := r.header.Get("Content-Disposition"); got != wantCD {
		t.Errorf("HEAD: Content-Disposition = %q, want %q", got, wantCD)
	}
}

// minutesFor is what a full file plus a resume from its middle bills, proportionally.
// minutesFor is what checkDownloads bills: the whole file once; its resume
// asks for bytes the download holds already.
func minutesFor(uid string, typ stream.DownloadType) float64 {
	return duration(uid) / 60
}

// streamMinutesFor is what Stream bills for checkDownloads' bytes.
func streamMinutesFor(uid string, typ stream.DownloadType) float64 {
	size := fileSize(uid, typ)
	off := size/2 + 11
	return duration(uid) / 60 * float64(size+size-off) / float64(size)
}

func TestAuthenticatedDownload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gb := e.client(addrGB)
	tests := []struct {
		name     string
		uid      string
		typ      stream.DownloadType
		cookie   bool
		filename string
	}{
		{"public mp4 bearer", uidPublic, stream.Default, false, ""},
		{"public m4a bearer filename", uidPublic, stream.Audio, false, "my-song_1"},
		{"private mp4 cookie filename", uidPrivate, stream.Default, true, "Holiday-2025"},
		{"private m4a cookie", uidPrivate, stream.Audio, true, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := fmt.Sprintf("user-%d", i)
			tok := e.jwt(user, "", nil)
			hdr := bearer(tok)
			if tt.cookie {
				hdr = http.Header{"Cookie": {cookieName + "=" + tok}}
			}
			u := e.gw.url + "/v1/videos/" + tt.uid + "/downloads/" + tt.typ.File()
			if tt.filename != "" {
				u += "?filename=" + tt.filename
			}
			checkDownloads(t, gb, u, hdr, tt.uid, tt.typ, tt.filename)

			got := e.settled(t, user)
			if want := minutesFor(tt.uid, tt.typ); !near(got.MinutesUsed, want) {
				t.Errorf("minutes used = %v, want %v", got.MinutesUsed, want)
			}
		})
	}
	e.quiet(t)
	for _, tt := range tests {
		// Stream sent the file and a half: what the operator pays for.
		st := e.emu.Stats(tt.uid, tt.typ)
		if want := streamMinutesFor(tt.uid, tt.typ); !near(st.ProportionalMinutes, want) {
			t.Errorf("%s: emulator proportional minutes = %v, want %v", tt.name, st.ProportionalMinutes, want)
		}
	}
	e.assertNoSecretsLogged(t)
}

type linkBody struct {
	URL       string `json:"url"`
	ExpiresAt string `json:"expires_at"`
	Type      string `json:"type"`
	Filename  string `json:"filename"`
	Mode      string `json:"mode"`
}

// createLink posts a link request from c and decodes the 201 answer.
func (e *env) createLink(t *testing.T, gw *gateway, c *http.Client, tok, uid, body string) linkBody {
	t.Helper()
	h := bearer(tok)
	h.Set("Content-Type", "application/json")
	r := do(t, c, "POST", gw.url+"/v1/videos/"+uid+"/links", h, strings.NewReader(body))
	if r.status != http.StatusCreated {
		t.Fatalf("POST links: status %d, want 201: %s", r.status, r.body)
	}
	var lb linkBody
	if err := json.Unmarshal(r.body, &lb); err != nil {
		t.Fatalf("link body: %v", err)
	}
	if lb.Mode == "proxy" {
		if u, err := url.Parse(lb.URL); err == nil {
			if segs := strings.Split(u.Path, "/"); len(segs) == 4 {
				e.remember(segs[2])
			}
		}
	}
	return lb
}

func TestLinkDownload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gb, us := e.client(addrGB), e.client(addrUS)
	tests := []struct {
		name     string
		uid      string
		typ      stream.DownloadType
		filename string
	}{
		{"public mp4", uidPublic, stream.Default, ""},
		{"private m4a filename", uidPrivate, stream.Audio, "podcast-ep_7"},
		{"private mp4 filename", uidPrivate, stream.Default, "clip"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := fmt.Sprintf("linker-%d", i)
			tok := e.jwt(user, "", nil)
			body := fmt.Sprintf(`{"type":%q,"filename":%q}`, tt.typ, tt.filename)
			lb := e.createLink(t, e.gw, gb, tok, tt.uid, body)
			if lb.Mode != "proxy" || lb.Type != string(tt.typ) || lb.Filename != tt.filename {
				t.Errorf("link = %+v", lb)
			}
			exp, err := time.Parse(time.RFC3339, lb.ExpiresAt)
			if err != nil || !exp.Equal(t0.Add(15*time.Minute)) {
				t.Errorf("expires_at = %q, want %v", lb.ExpiresAt, t0.Add(15*time.Minute))
			}
			if !strings.HasPrefix(lb.URL, e.gw.url+"/dl/") || !strings.Contains(lb.URL, "/"+tt.typ.File()) {
				t.Fatalf("link URL %q is not a gateway /dl/ URL", lb.URL)
			}
			// The link is the only credential, and works from anywhere allowed.
			checkDownloads(t, us, lb.URL, nil, tt.uid, tt.typ, tt.filename)
			got := e.settled(t, user)
			if want := minutesFor(tt.uid, tt.typ); !near(got.MinutesUsed, want) {
				t.Errorf("minutes used = %v, want %v", got.MinutesUsed, want)
			}
		})
	}
	t.Run("filename cannot change", func(t *testing.T) {
		lb := e.createLink(t, e.gw, gb, e.jwt("linker-x", "", nil), uidPublic, `{"filename":"fixed"}`)
		u, _ := url.Parse(lb.URL)
		u.RawQuery = "filename=other"
		r := do(t, gb, "GET", u.String(), nil, nil)
		if r.status != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", r.status)
		}
		r.problem(t)
		u.RawQuery = ""
		r = do(t, gb, "HEAD", u.String(), nil, nil)
		if r.status != http.StatusOK || r.header.Get("Content-Disposition") != `attachment; filename="fixed.mp4"` {
			t.Errorf("without the query: %d %q", r.status, r.header.Get("Content-Disposition"))
		}
	})
	t.Run("bad link requests", func(t *testing.T) {
		tok := e.jwt("linker-y", "", nil)
		for _, body := range []string{`{"type":"hls"}`, `{"filename":"a.b"}`, `{"unknown":1}`, `{"type":"audio"}{}`, `[`} {
			h := bearer(tok)
			r := do(t, gb, "POST", e.gw.url+"/v1/videos/"+uidPublic+"/links", h, strings.NewReader(body))
			if r.status != http.StatusBadRequest {
				t.Errorf("%s: status %d, want 400", body, r.status)
				continue
			}
			r.problem(t)
		}
	})
	e.assertNoSecretsLogged(t)
}

func TestProxyLinkBoundToAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gw := e.gateway(func(c *Config, _ *Deps) { c.BindIP = true })
	lb := e.createLink(t, gw, e.client(addrGB), e.jwt("bound", "", nil), uidPublic, "")
	if r := do(t, e.client(addrGB), "HEAD", lb.URL, nil, nil); r.status != http.StatusOK {
		t.Errorf("from the binding address: status %d, want 200", r.status)
	}
	r := do(t, e.client(addrDE), "GET", lb.URL, nil, nil)
	if r.status != http.StatusForbidden {
		t.Fatalf("from another address: status %d, want 403", r.status)
	}
	if p := r.problem(t); p["type"] != "urn:streamgate:problem:link_address" {
		t.Errorf("problem type = %v", p["type"])
	}
}

func TestDirectLinks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	direct := e.gateway(func(c *Config, _ *Deps) { c.LinkMode = "direct" })
	bound := e.gateway(func(c *Config, _ *Deps) { c.LinkMode = "direct"; c.BindIP = true })
	gb, us, de := e.client(addrGB), e.client(addrUS), e.client(addrDE)

	for _, tt := range []struct {
		name  string
		gw    *gateway
		uid   string
		typ   stream.DownloadType
		allow []*http.Client
		deny  []*http.Client
	}{
		{"country pinned private mp4", direct, uidPrivate, stream.Default, []*http.Client{gb}, []*http.Client{us, de}},
		{"country pinned public m4a", direct, uidPublic, stream.Audio, []*http.Client{gb}, []*http.Client{us}},
		{"address pinned", bound, uidPrivate, stream.Audio, []*http.Client{gb}, []*http.Client{de, us}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			user := "direct-" + strings.ReplaceAll(tt.name, " ", "-")
			tok := e.jwt(user, "", nil)
			lb := e.createLink(t, tt.gw, gb, tok, tt.uid, fmt.Sprintf(`{"type":%q,"filename":"direct-file"}`, tt.typ))
			if lb.Mode != "direct" {
				t.Errorf("mode = %q, want direct", lb.Mode)
			}
			u, err := url.Parse(lb.URL)
			if err != nil || u.Scheme+"://"+u.Host != e.emuSrv.URL {
				t.Fatalf("direct URL %q does not point at the emulator %s", lb.URL, e.emuSrv.URL)
			}
			segs := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
			if len(segs) != 3 || stream.ValidUID(segs[0]) || strings.Count(segs[0], ".") != 2 {
				t.Fatalf("direct URL %q carries no token", lb.URL)
			}
			for _, c := range tt.allow {
				r := do(t, c, "GET", lb.URL, nil, nil)
				if r.status != http.StatusOK {
					t.Fatalf("allowed client: status %d: %s", r.status, r.body)
				}
				checkBody(t, r, tt.uid, tt.typ, 0, fileSize(tt.uid, tt.typ))
				if got := r.header.Get("Content-Disposition"); got != `attachment; filename="direct-file`+tt.typ.Ext()+`"` {
					t.Errorf("Content-Disposition = %q", got)
				}
			}
			for _, c := range tt.deny {
				r := do(t, c, "GET", lb.URL, nil, nil)
				if r.status != http.StatusForbidden && r.status != http.StatusUnauthorized {
					t.Errorf("denied client: status %d, want 403 or 401 from the emulator", r.status)
				}
			}
			// Direct links are billed in full when handed out.
			got := e.settled(t, user)
			if want := duration(tt.uid) / 60; !near(got.MinutesUsed, want) {
				t.Errorf("minutes used = %v, want %v", got.MinutesUsed, want)
			}
		})
	}
	e.assertNoSecretsLogged(t)
}

func TestMeteringMatchesEmulator(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gb := e.client(addrGB)
	tok := e.jwt("meter-user", "", nil)
	u := e.gw.url + "/v1/videos/" + uidPrivate + "/downloads/default.mp4"

	r := do(t, gb, "GET", u, bearer(tok), nil)
	checkBody(t, r, uidPrivate, stream.Default, 0, sizePrivate)
	e.settled(t, "meter-user")
	got := e.usageOf(t, e.gw, tok)
	if !near(got.MinutesUsed, durPrivate/60) || got.MinutesReserved != 0 {
		t.Errorf("after one download: used %v reserved %v, want %v and 0", got.MinutesUsed, got.MinutesReserved, durPrivate/60)
	}
	if got.MinutesLimit != 1000 || !near(got.MinutesRemaining, 1000-durPrivate/60) || got.Plan != "basic" {
		t.Errorf("usage = %+v", got)
	}

	// Ranges: a middle slice and an overlapping tail pay for what they fetch.
	for _, spec := range []string{"bytes=1000-1048575", "bytes=500000-", "bytes=-4096"} {
		r := do(t, gb, "GET", u, withRange(bearer(tok), spec), nil)
		if r.status != http.StatusPartialContent {
			t.Fatalf("%s: status %d", spec, r.status)
		}
	}
	e.settled(t, "meter-user")
	e.quiet(t)
	st := e.emu.Stats(uidPrivate, stream.Default)
	rows, err := e.ledger.Report(t.Context(), usage.Period(t0))
	if err != nil || len(rows) != 1 {
		t.Fatalf("Report: %v %+v", err, rows)
	}
	// Stream bills the operator for every byte it sent; the user pays for the
	// file once, as every range asked for bytes the download held already.
	if !near(rows[0].StreamMinutes, st.ProportionalMinutes) {
		t.Errorf("ledger Stream minutes %v, emulator proportional minutes %v", rows[0].StreamMinutes, st.ProportionalMinutes)
	}
	if rows[0].StreamBytes != st.Bytes || rows[0].Bytes != st.Bytes || rows[0].Deliveries != 4 || rows[0].Downloads != 1 {
		t.Errorf("ledger %d bytes (%d from Stream) in %d deliveries of %d downloads, emulator %d bytes",
			rows[0].Bytes, rows[0].StreamBytes, rows[0].Deliveries, rows[0].Downloads, st.Bytes)
	}
	wantStream := durPrivate / 60 * float64(sizePrivate+(1048575-1000+1)+(sizePrivate-500000)+4096) / sizePrivate
	if !near(rows[0].StreamMinutes, wantStream) || !near(rows[0].Minutes, durPrivate/60) {
		t.Errorf("ledger minutes %v (Stream %v), want %v (Stream %v)", rows[0].Minutes, rows[0].StreamMinutes, durPrivate/60, wantStream)
	}
	var lines []map[string]any
	// Each line follows its ledger row, perhaps after the usage read above.
	eventually(t, "four billable download lines", func() bool {
		lines = e.logs.lines(t, "billable download")
		return len(lines) >= 4
	})
	if len(lines) != 4 {
		t.Fatalf("%d billable download lines, want 4", len(lines))
	}
	for _, l := range lines {
		if l["user"] != "meter-user" || l["video"] != uidPrivate || l["type"] != "default" || l["status"] != "complete" || l["country"] != "GB" {
			t.Errorf("billable download line: %v", l)
		}
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tok := e.jwt("errors-user", "", nil)
	auth := bearer(tok)
	dl := func(uid, file string) string { return e.gw.url + "/v1/videos/" + uid + "/downloads/" + file }
	tests := []struct {
		name   string
		method string
		url    string
		hdr    http.Header
		from   string
		status int
		typ    string
		extra  map[string]any
	}{
		{"unknown video", "GET", dl(uidUnknown, "default.mp4"), auth, addrGB, 404, "video_not_found", nil},
		{"unknown video links", "POST", e.gw.url + "/v1/videos/" + uidUnknown + "/links", auth, addrGB, 404, "video_not_found", nil},
		{"filename with a dot", "GET", dl(uidPublic, "default.mp4") + "?filename=a.b", auth, addrGB, 400, "bad_filename", nil},
		{"filename too long", "GET", dl(uidPublic, "default.mp4") + "?filename=" + strings.Repeat("x", 121), auth, addrGB, 400, "bad_filename", nil},
		{"filename path", "GET", dl(uidPublic, "default.mp4") + "?filename=../x", auth, addrGB, 400, "bad_filename", nil},
		{"filename empty", "GET", dl(uidPublic, "default.mp4") + "?filename=", auth, addrGB, 400, "bad_filename", nil},
		{"filename twice", "GET", dl(uidPublic, "default.mp4") + "?filename=a&filename=b", auth, addrGB, 400, "bad_filename", nil},
		{"uid uppercase", "GET", dl(strings.ToUpper(uidPublic), "default.mp4"), auth, addrGB, 400, "bad_video", nil},
		{"uid short", "GET", dl("abc", "default.mp4"), auth, addrGB, 400, "bad_video", nil},
		{"bad file", "GET", dl(uidPublic, "default.webm"), auth, addrGB, 400, "bad_type", nil},
		{"bad link file", "GET", e.gw.url + "/dl/x.y.z/video.mp4", nil, addrGB, 400, "bad_type", nil},
		{"download generating", "GET", dl(uidPending, "default.mp4"), auth, addrGB, 409, "download_not_ready",
			map[string]any{"download_status": "inprogress", "percentComplete": 0.0}},
		{"download not enabled", "GET", dl(uidPending, "audio.m4a"), auth, addrGB, 409, "download_not_enabled",
			map[string]any{"download_status": "none"}},
		{"video not ready to stream", "GET", dl(uidNoStream, "default.mp4"), auth, addrGB, 409, "video_not_ready", nil},
		{"country blocked", "GET", dl(uidPublic, "default.mp4"), auth, addrFR, 403, "country_denied",
			map[string]any{"reason": "country_blocked"}},
		{"no credentials", "GET", dl(uidPublic, "default.mp4"), nil, addrGB, 401, "unauthorized", nil},
		{"no route", "GET", e.gw.url + "/v2/nothing", nil, addrGB, 404, "not_found", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, e.client(tt.from), tt.method, tt.url, tt.hdr, nil)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			p := r.problem(t)
			if p["type"] != "urn:streamgate:problem:"+tt.typ {
				t.Errorf("type = %v, want %s", p["type"], tt.typ)
			}
			for k, v := range tt.extra {
				if p[k] != v {
					t.Errorf("%s = %v, want %v", k, p[k], v)
				}
			}
		})
	}
	if r := do(t, e.client(addrGB), "GET", dl(uidPublic, "default.mp4"), nil, nil); r.header.Get("WWW-Authenticate") != "Bearer" {
		t.Errorf("no credentials: WWW-Authenticate = %q, want Bearer", r.header.Get("WWW-Authenticate"))
	}
	// Nothing above reached the ledger.
	if u := e.settled(t, "errors-user"); u.MinutesUsed != 0 {
		t.Errorf("minutes used = %v, want 0", u.MinutesUsed)
	}
	e.assertNoSecretsLogged(t)
}

func TestDownloadTurnsReady(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gb := e.client(addrGB)
	tok := e.jwt("patient", "", nil)
	u := e.gw.url + "/v1/videos/" + uidPending + "/downloads/default.mp4"

	e.clock.Advance(readyAfter / 2)
	r := do(t, gb, "GET", u, bearer(tok), nil)
	if r.status != http.StatusConflict {
		t.Fatalf("half way: status %d, want 409", r.status)
	}
	if p := r.problem(t); p["percentComplete"] != 50.0 || p["download_status"] != "inprogress" {
		t.Errorf("half way: %v", p)
	}
	r = do(t, gb, "GET", e.gw.url+"/v1/videos/"+uidPending+"/downloads", bearer(tok), nil)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"inprogress"`) {
		t.Errorf("list downloads: %d %s", r.status, r.body)
	}

	e.clock.Advance(readyAfter/2 + time.Minute) // past ReadyAfter and any cache
	tok = e.jwt("patient", "", nil)
	r = do(t, gb, "GET", u, bearer(tok), nil)
	if r.status != http.StatusOK {
		t.Fatalf("when ready: status %d: %s", r.status, r.body)
	}
	checkBody(t, r, uidPending, stream.Default, 0, 1<<20)
}

func TestUpstreamDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	down := e.gateway(func(c *Config, _ *Deps) { c.DeliveryURL = closedURL(t) })
	tok := e.jwt("stranded", "", nil)
	r := do(t, e.client(addrGB), "GET", down.url+"/v1/videos/"+uidPublic+"/downloads/default.mp4", bearer(tok), nil)
	if r.status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502: %s", r.status, r.body)
	}
	if p := r.problem(t); p["type"] != "urn:streamgate:problem:upstream_unavailable" {
		t.Errorf("type = %v", p["type"])
	}
	if u := e.settled(t, "stranded"); u.MinutesUsed != 0 {
		t.Errorf("a failure before the first byte billed %v minutes", u.MinutesUsed)
	}
	e.assertNoSecretsLogged(t)
}

func TestFaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	impatient := e.gateway(func(c *Config, _ *Deps) {
		c.ResponseHeaderTimeout = 200 * time.Millisecond
		c.UpstreamIdleTimeout = 200 * time.Millisecond
	})
	gb := e.client(addrGB)
	u := func(gw *gateway, uid string) string { return gw.url + "/v1/videos/" + uid + "/downloads/default.mp4" }

	t.Run("status 500 is 502", func(t *testing.T) {
		e.emu.SetFault(uidPublic, streamtest.Fault{Status: 500})
		defer e.emu.SetFault(uidPublic, streamtest.Fault{})
		tok := e.jwt("fault-500", "", nil)
		r := do(t, gb, "GET", u(e.gw, uidPublic), bearer(tok), nil)
		if r.status != http.StatusBadGateway {
			t.Fatalf("status %d, want 502", r.status)
		}
		if p := r.problem(t); p["type"] != "urn:streamgate:problem:upstream_refused" {
			t.Errorf("type = %v", p["type"])
		}
		if got := e.settled(t, "fault-500"); got.MinutesUsed != 0 {
			t.Errorf("billed %v minutes", got.MinutesUsed)
		}
	})
	t.Run("a body that stalls is cut off and billed what it delivered", func(t *testing.T) {
		// One byte a second: the emulator sends a first chunk, then waits.
		e.emu.SetFault(uidPublic, streamtest.Fault{BytesPerSecond: 1})
		defer e.emu.SetFault(uidPublic, streamtest.Fault{})
		tok := e.jwt("fault-stall", "", nil)
		r := do(t, gb, "GET", u(impatient, uidPublic), bearer(tok), nil)
		if r.status != http.StatusOK || r.err == nil || len(r.body) == 0 || len(r.body) >= sizePublic {
			t.Fatalf("status %d, %d bytes, err %v: want a body cut short", r.status, len(r.body), r.err)
		}
		// The gateway cut it (upstream_failed), not the client giving up.
		eventually(t, "the stalled delivery's billable line", func() bool {
			for _, l := range e.logs.lines(t, "billable download") {
				if l["user"] == "fault-stall" {
					if l["status"] != "upstream_failed" {
						t.Fatalf("stalled delivery settled as %v, want upstream_failed", l["status"])
					}
					return true
				}
			}
			return false
		})
		got := e.settled(t, "fault-stall")
		if want := durPublic / 60 * float64(len(r.body)) / sizePublic; !near(got.MinutesUsed, want) {
			t.Errorf("billed %v minutes, want %v for %d bytes", got.MinutesUsed, want, len(r.body))
		}
	})
	t.Run("slow headers are 504", func(t *testing.T) {
		e.emu.SetFault(uidPrivate, streamtest.Fault{Delay: 3 * time.Second})
		defer e.emu.SetFault(uidPrivate, streamtest.Fault{})
		tok := e.jwt("fault-slow", "", nil)
		start := time.Now()
		r := do(t, gb, "GET", u(impatient, uidPrivate), bearer(tok), nil)
		if r.status != http.StatusGatewayTimeout {
			t.Fatalf("status %d, want 504", r.status)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("took %v; the header timeout is 200ms", el)
		}
		if p := r.problem(t); p["type"] != "urn:streamgate:problem:upstream_timeout" {
			t.Errorf("type = %v", p["type"])
		}
		if got := e.settled(t, "fault-slow"); got.MinutesUsed != 0 {
			t.Errorf("billed %v minutes", got.MinutesUsed)
		}
	})
	t.Run("cut mid-body bills what was delivered", func(t *testing.T) {
		const cut = 700_000
		e.emu.SetFault(uidPublic, streamtest.Fault{ResetAfter: cut})
		defer e.emu.SetFault(uidPublic, streamtest.Fault{})
		tok := e.jwt("fault-cut", "", nil)
		before := e.emu.Stats(uidPublic, stream.Default)
		r := do(t, gb, "GET", u(e.gw, uidPublic), bearer(tok), nil)
		if r.status != http.StatusOK {
			t.Fatalf("status %d, want 200 before the cut", r.status)
		}
		if r.err == nil {
			t.Fatalf("read %d bytes without error; want a truncated body", len(r.body))
		}
		if int64(len(r.body)) > cut || !bytes.Equal(r.body, streamtest.Content(uidPublic, stream.Default, 0, int64(len(r.body)))) {
			t.Errorf("truncated body: %d bytes, or wrong bytes", len(r.body))
		}
		got := e.settled(t, "fault-cut")
		want := durPublic / 60 * cut / sizePublic
		if !near(got.MinutesUsed, want) {
			t.Errorf("billed %v minutes, want %v (%d of %d bytes)", got.MinutesUsed, want, cut, sizePublic)
		}
		e.quiet(t)
		after := e.emu.Stats(uidPublic, stream.Default)
		if d := after.ProportionalMinutes - before.ProportionalMinutes; !near(got.MinutesUsed, d) {
			t.Errorf("billed %v minutes, emulator delivered %v", got.MinutesUsed, d)
		}
		var line map[string]any
		eventually(t, "the billable download line of the cut delivery", func() bool {
			for _, l := range e.logs.lines(t, "billable download") {
				if l["user"] == "fault-cut" {
					line = l
					return true
				}
			}
			return false
		})
		if line["status"] != "upstream_failed" || line["bytes"] != float64(cut) {
			t.Errorf("billable download line: %v", line)
		}
	})
	e.assertNoSecretsLogged(t)
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	burst := 3
	e := newEnv(t, envOptions{ipLimit: limitPtr(burst)})
	gb, us := e.client(addrGB), e.client(addrUS)

	t.Run("downloads bucket", func(t *testing.T) {
		tok := e.jwt("busy", "limited", nil)
		u := e.gw.url + "/v1/videos/" + uidPublic + "/downloads/audio.m4a"
		for i := range 2 {
			if r := do(t, gb, "HEAD", u, bearer(tok), nil); r.status != http.StatusOK {
				t.Fatalf("download %d: status %d", i+1, r.status)
			}
		}
		r := do(t, gb, "GET", u, bearer(tok), nil)
		if r.status != http.StatusTooManyRequests {
			t.Fatalf("third download: status %d, want 429", r.status)
		}
		r.problem(t)
		if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("Retry-After = %q", r.header.Get("Retry-After"))
		}
		if p := r.header.Get("RateLimit-Policy"); !strings.Contains(p, `"downloads"`) {
			t.Errorf("RateLimit-Policy = %q", p)
		}
		// Another user of the plan has a bucket of their own.
		if r := do(t, gb, "HEAD", u, bearer(e.jwt("calm", "limited", nil)), nil); r.status != http.StatusOK {
			t.Errorf("another user: status %d", r.status)
		}
	})
	t.Run("links bucket", func(t *testing.T) {
		tok := e.jwt("linky", "limited", nil)
		e.createLink(t, e.gw, gb, tok, uidPublic, "")
		r := do(t, gb, "POST", e.gw.url+"/v1/videos/"+uidPublic+"/links", bearer(tok), nil)
		if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
			t.Fatalf("second link: status %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
		}
	})
	t.Run("listing spends the links bucket", func(t *testing.T) {
		// Each unknown video is a Stream API call: a user cannot spend the
		// account's API limit by listing made-up videos.
		tok := e.jwt("lister", "limited", nil)
		list := func(uid string) result {
			return do(t, gb, "GET", e.gw.url+"/v1/videos/"+uid+"/downloads", bearer(tok), nil)
		}
		if r := list(uidPublic); r.status != http.StatusOK {
			t.Fatalf("first listing: status %d", r.status)
		}
		if r := list("f00df00df00df00df00df00df00df00d"); r.status != http.StatusTooManyRequests {
			t.Fatalf("second listing: status %d, want 429", r.status)
		}
	})
	t.Run("failed auth per address", func(t *testing.T) {
		u := e.gw.url + "/v1/videos/" + uidPublic + "/downloads/default.mp4"
		bad := bearer("garbage-token-value")
		for i := range burst {
			if r := do(t, us, "GET", u, bad, nil); r.status != http.StatusUnauthorized {
				t.Fatalf("failure %d: status %d, want 401", i+1, r.status)
			}
		}
		r := do(t, us, "GET", u, bad, nil)
		if r.status != http.StatusTooManyRequests {
			t.Fatalf("past the bucket: status %d, want 429", r.status)
		}
		r.problem(t)
		if r.header.Get("Retry-After") == "" || r.header.Get("RateLimit-Policy") == "" {
			t.Errorf("headers: %v", r.header)
		}
		// Grants spend the same bucket.
		if r := do(t, us, "GET", e.gw.url+"/dl/a.b.c/default.mp4", nil, nil); r.status != http.StatusTooManyRequests {
			t.Errorf("bad grant from the same address: status %d, want 429", r.status)
		}
		// Another address is not affected.
		if r := do(t, gb, "GET", u, bad, nil); r.status != http.StatusUnauthorized {
			t.Errorf("another address: status %d, want 401", r.status)
		}
	})
}

func TestQuota(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gb := e.client(addrGB)
	tok := e.jwt("frugal", "tiny", nil)
	for _, u := range []string{
		e.gw.url + "/v1/videos/" + uidPublic + "/downloads/default.mp4",
		e.gw.url + "/v1/videos/" + uidPrivate + "/downloads/audio.m4a",
	} {
		r := do(t, gb, "GET", u, bearer(tok), nil)
		if r.status != http.StatusForbidden {
			t.Fatalf("status %d, want 403: %s", r.status, r.body)
		}
		p := r.problem(t)
		want := map[string]any{
			"type": "urn:streamgate:problem:quota_exceeded", "plan": "tiny", "period": "2025-03",
			"minutes_limit": 0.5, "minutes_used": 0.0, "minutes_reserved": 0.0, "minutes_remaining": 0.5,
		}
		for k, v := range want {
			if p[k] != v {
				t.Errorf("%s = %v, want %v", k, p[k], v)
			}
		}
	}
	e.quiet(t)
	if st := e.emu.TotalStats(); st.Requests != 0 {
		t.Errorf("the emulator served %d deliveries to a user without quota", st.Requests)
	}

	// Once the file's size is known, a small range reserves only its share...
	if r := do(t, gb, "GET", e.gw.url+"/v1/videos/"+uidPublic+"/downloads/audio.m4a", bearer(e.jwt("rich", "", nil)), nil); r.status != http.StatusOK {
		t.Fatalf("full download: status %d", r.status)
	}
	audio := e.gw.url + "/v1/videos/" + uidPublic + "/downloads/audio.m4a"
	r := do(t, gb, "GET", audio, withRange(bearer(tok), "bytes=0-999"), nil)
	if r.status != http.StatusPartialContent {
		t.Fatalf("small range: status %d: %s", r.status, r.body)
	}
	checkBody(t, r, uidPublic, stream.Audio, 0, 1000)
	// ...but a range that Stream answers in full (If-Range does not match) costs
	// the full file, which the quota does not cover: no byte is sent.
	h := withRange(bearer(tok), "bytes=0-999")
	h.Set("If-Range", `"not-the-etag"`)
	r = do(t, gb, "GET", audio, h, nil)
	if r.status != http.StatusForbidden {
		t.Fatalf("range answered in full: status %d, want 403", r.status)
	}
	r.problem(t)
	got := e.settled(t, "frugal")
	if want := durPublic / 60 * 1000 / (sizePublic / 8); !near(got.MinutesUsed, want) {
		t.Errorf("billed %v minutes, want %v", got.MinutesUsed, want)
	}

	// A direct link the quota cannot cover is not handed out either.
	direct := e.gateway(func(c *Config, _ *Deps) { c.LinkMode = "direct" })
	r = do(t, gb, "POST", direct.url+"/v1/videos/"+uidPublic+"/links", bearer(tok), nil)
	if r.status != http.StatusForbidden {
		t.Errorf("direct link: status %d, want 403", r.status)
	}
	e.assertNoSecretsLogged(t)
}

func TestStreamTokenReuse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gb := e.client(addrGB)
	u := e.gw.url + "/v1/videos/" + uidPrivate + "/downloads/audio.m4a"
	get := func(user string) {
		t.Helper()
		r := do(t, gb, "GET", u, bearer(e.jwt(user, "", nil)), nil)
		if r.status != http.StatusOK {
			t.Fatalf("status %d", r.status)
		}
	}
	get("reuse-a")
	// A minute later a fresh token would differ (its exp and nbf move with the
	// clock; RS256 signs the same claims the same way): the same token means
	// the first was reused.
	e.clock.Advance(time.Minute)
	get("reuse-b")
	if toks := e.rec.streamTokens(); len(toks) != 1 {
		t.Fatalf("%d distinct Stream tokens for two downloads, want 1", len(toks))
	}
	// Past half the token's life (5m by default) a fresh one is minted.
	e.clock.Advance(2 * time.Minute)
	get("reuse-a")
	if toks := e.rec.streamTokens(); len(toks) != 2 {
		t.Fatalf("%d distinct Stream tokens after 3 minutes, want 2", len(toks))
	}
	// The token never reaches the client.
	r := do(t, gb, "HEAD", u, bearer(e.jwt("reuse-a", "", nil)), nil)
	for k, vs := range r.header {
		for _, v := range vs {
			for _, tok := range e.rec.streamTokens() {
				if strings.Contains(v, tok) {
					t.Errorf("response header %s carries the Stream token", k)
				}
			}
		}
	}
	e.assertNoSecretsLogged(t)
}

func TestHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	deadAPI := e.newAPI(closedURL(t))
	down := e.gateway(func(_ *Config, d *Deps) {
		d.API = deadAPI
		d.Checks = map[string]Check{"stream_api": deadAPI.Ping, "ledger": e.ledger.Ping}
	})
	c := e.client(addrGB)
	for _, tt := range []struct {
		gw     *gateway
		path   string
		status int
	}{
		{e.gw, "/healthz", 200},
		{e.gw, "/readyz", 200},
		{down, "/healthz", 200},
		{down, "/readyz", 503},
	} {
		r := do(t, c, "GET", tt.gw.url+tt.path, nil, nil)
		if r.status != tt.status {
			t.Errorf("%s: status %d, want %d: %s", tt.path, r.status, tt.status, r.body)
		}
	}
	r := do(t, c, "GET", down.url+"/readyz", nil, nil)
	var body struct {
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || body.Checks["stream_api"] != "unavailable" || body.Checks["ledger"] != "ok" {
		t.Errorf("readyz body: %s", r.body)
	}
	// With the API down a download fails cleanly too.
	r = do(t, c, "GET", down.url+"/v1/videos/"+uidPublic+"/downloads/default.mp4", bearer(e.jwt("h", "", nil)), nil)
	if r.status != http.StatusBadGateway {
		t.Errorf("download with the API down: status %d, want 502", r.status)
	}
	r.problem(t)
}

func TestClientGoneAndConcurrency(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gb := e.client(addrGB)
	// A slow upstream keeps the first download open while the second is tried.
	e.emu.SetFault(uidPrivate, streamtest.Fault{BytesPerSecond: 2 << 20})
	tok := e.jwt("leaver", "single", nil)
	u := e.gw.url + "/v1/videos/" + uidPrivate + "/downloads/default.mp4"

	req, _ := http.NewRequest("GET", u, nil)
	req.Header = bearer(tok)
	resp, err := gb.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("first download: %v %v", err, resp)
	}
	buf := make([]byte, 64<<10)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatalf("reading the first bytes: %v", err)
	}
	r := do(t, e.client(addrUS), "GET", u, bearer(tok), nil)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("second concurrent download: status %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	if p := r.problem(t); p["type"] != "urn:streamgate:problem:too_many_downloads" {
		t.Errorf("type = %v", p["type"])
	}
	resp.Body.Close()
	gb.Transport.(*http.Transport).CloseIdleConnections()

	got := e.settled(t, "leaver")
	if got.MinutesUsed <= 0 || got.MinutesUsed >= durPrivate/60 {
		t.Errorf("billed %v minutes for a download left early, want between 0 and %v", got.MinutesUsed, durPrivate/60)
	}
	var line map[string]any
	eventually(t, "the billable download line", func() bool {
		for _, l := range e.logs.lines(t, "billable download") {
			if l["user"] == "leaver" {
				line = l
				return true
			}
		}
		return false
	})
	if line["status"] != "client_gone" {
		t.Errorf("status = %v, want client_gone", line["status"])
	}
	if b := line["bytes"].(float64); !near(got.MinutesUsed, durPrivate/60*b/sizePrivate) {
		t.Errorf("billed %v minutes for %v bytes", got.MinutesUsed, b)
	}
	// Once it has ended, the slot is free again.
	e.emu.SetFault(uidPrivate, streamtest.Fault{})
	if r := do(t, gb, "HEAD", u, bearer(tok), nil); r.status != http.StatusOK {
		t.Errorf("after the first ended: status %d", r.status)
	}
}

func TestPerDownloadMetering(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{mode: usage.PerDownload})
	gb := e.client(addrGB)
	tok := e.jwt("whole", "", nil)
	u := e.gw.url + "/v1/videos/" + uidPublic + "/downloads/default.mp4"
	get := func(u, spec string, h http.Header) {
		t.Helper()
		if spec != "" {
			h = withRange(h, spec)
		}
		if r := do(t, gb, "GET", u, h, nil); r.status/100 != 2 {
			t.Fatalf("%q: status %d", spec, r.status)
		}
	}
	want := func(charges int) {
		t.Helper()
		if got := e.settled(t, "whole"); !near(got.MinutesUsed, float64(charges)*durPublic/60) {
			t.Errorf("billed %v minutes, want %d durations", got.MinutesUsed, charges)
		}
	}
	// A probe-sized first part, then the rest: one copy, one charge.
	get(u, "bytes=0-99999", bearer(tok))
	get(u, "bytes=100000-", bearer(tok))
	want(1)
	// The whole file again: two copies sent, still one charge.
	get(u, "", bearer(tok))
	want(1)
	// A link of the same user joins the same download: past two copies, a
	// second charge.
	lb := e.createLink(t, e.gw, gb, tok, uidPublic, "")
	get(lb.URL, "bytes=5-", nil)
	want(2)
	// A re-download loop keeps paying, one duration per two copies.
	get(lb.URL, "", nil)
	want(2)
	get(lb.URL, "bytes=9-", nil)
	want(3)
}

func TestDirectLinkNotMintedIsNotBilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	// Stream refuses tokens that live longer than a day, so no link can be made.
	gw := e.gateway(func(c *Config, _ *Deps) { c.LinkMode = "direct"; c.LinkTTL = 25 * time.Hour })
	tok := e.jwt("unlucky", "", nil)
	r := do(t, e.client(addrGB), "POST", gw.url+"/v1/videos/"+uidPublic+"/links", bearer(tok), nil)
	if r.status != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500: %s", r.status, r.body)
	}
	if p := r.problem(t); p["detail"] != "internal error" {
		t.Errorf("detail = %v", p["detail"])
	}
	if u := e.settled(t, "unlucky"); u.MinutesUsed != 0 {
		t.Errorf("billed %v minutes for a link never handed out", u.MinutesUsed)
	}
}

func TestUnsatisfiableRange(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tok := e.jwt("overshoot", "", nil)
	u := e.gw.url + "/v1/videos/" + uidPublic + "/downloads/default.mp4"
	r := do(t, e.client(addrGB), "GET", u, withRange(bearer(tok), "bytes=99999999-"), nil)
	if r.status != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("status %d, want 416", r.status)
	}
	if got, want := r.header.Get("Content-Range"), fmt.Sprintf("bytes */%d", sizePublic); got != want {
		t.Errorf("Content-Range = %q, want %q", got, want)
	}
	if u := e.settled(t, "overshoot"); u.MinutesUsed != 0 {
		t.Errorf("a 416 billed %v minutes", u.MinutesUsed)
	}
}

func TestClientIPBehindProxy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gw := e.gateway(func(_ *Config, d *Deps) {
		ips, err := policy.NewClientIP([]string{"127.0.0.1/32"})
		if err != nil {
			t.Fatal(err)
		}
		d.ClientIP = ips
	})
	tok := e.jwt("forwarded", "", nil)
	u := gw.url + "/v1/videos/" + uidPublic + "/downloads/audio.m4a"
	tests := []struct {
		name    string
		from    string
		xff     string
		status  int
		ip      string
		country string
	}{
		{"trusted proxy, French client", "127.0.0.1", "203.0.113.9, " + addrFR, 403, addrFR, "FR"},
		{"trusted proxy, German client", "127.0.0.1", addrDE, 200, addrDE, "DE"},
		{"untrusted peer cannot claim an address", addrGB, addrFR, 200, addrGB, "GB"},
	}
	for _, tt := range tests {
		h := bearer(tok)
		h.Set("X-Forwarded-For", tt.xff)
		r := do(t, e.client(tt.from), "HEAD", u, h, nil)
		if r.status != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, r.status, tt.status)
			continue
		}
		line := e.requestLine(t, r)
		want := map[string]any{"client_ip": tt.ip, "country": tt.country, "user": "forwarded", "video": uidPublic,
			"status": float64(tt.status), "method": "HEAD", "route": "GET /v1/videos/{uid}/downloads/{file}"}
		for k, v := range want {
			if line[k] != v {
				t.Errorf("%s: log %s = %v, want %v", tt.name, k, line[k], v)
			}
		}
	}
}
