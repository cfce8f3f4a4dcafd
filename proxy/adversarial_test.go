package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamgate/streamgate/auth"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/usage"
)

// The adversarial suite: hostile requests against a running gateway and
// emulator over real sockets. Every refusal asserts its status, its problem
// body, that nothing reached the delivery host (and, where the refusal comes
// before any lookup, the API), and that the ledger did not change.

const portalOrigin = "https://portal.example"

// hardened is a gateway served the way cmd/streamgate serves it: the problem
// listener, a header limit and a header read timeout.
type hardened struct {
	e    *env
	srv  *Server
	url  string
	addr string
}

// adversarialHeaderLimit is the server's MaxHeaderBytes in the suite; net/http
// allows 4 KiB more before it answers 431.
const adversarialHeaderLimit = 8 << 10

func newHardened(t *testing.T) *hardened {
	t.Helper()
	e := newEnv(t, envOptions{})
	gw := e.gateway(func(c *Config, _ *Deps) { c.PortalOrigins = []string{portalOrigin} })
	ts := httptest.NewUnstartedServer(gw.srv)
	ts.Listener = ProblemListener(ts.Listener)
	ts.Config.MaxHeaderBytes = adversarialHeaderLimit
	ts.Config.ReadHeaderTimeout = 300 * time.Millisecond
	ts.Start()
	t.Cleanup(ts.Close)
	return &hardened{e: e, srv: gw.srv, url: ts.URL, addr: ts.Listener.Addr().String()}
}

// ledgerState is what a refused request must leave as it was: the month's report
// and the standing of the users the suite plays.
type ledgerState struct {
	Report []usage.ReportRow
	Usage  map[string]usage.Usage
}

var suiteUsers = []string{"alice", "mallory", "granted", "tiny-user"}

func (h *hardened) ledger(t *testing.T) ledgerState {
	t.Helper()
	ctx := context.Background()
	period := usage.Period(h.e.clock.Now())
	rep, err := h.e.ledger.Report(ctx, period)
	if err != nil {
		t.Fatalf("Report: %v", err)
	}
	st := ledgerState{Report: rep, Usage: map[string]usage.Usage{}}
	for _, u := range suiteUsers {
		if st.Usage[u], err = h.e.ledger.Usage(ctx, u, period); err != nil {
			t.Fatalf("Usage: %v", err)
		}
	}
	return st
}

// rawResult is one answer read off a raw connection, and whether the server
// closed the connection after it.
type rawResult struct {
	result
	closed bool
}

// raw writes req on a new connection from addrGB and reads one response, then
// checks whether the connection is closed: a second response would mean bytes
// after the first request ran as a request of their own.
func (h *hardened) raw(t *testing.T, req string) rawResult {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addrGB)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", h.addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write: %v", err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	out := rawResult{result: result{status: resp.StatusCode, header: resp.Header, body: body, err: err}}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	rest, err := br.ReadByte()
	switch {
	case err == io.EOF, errors.Is(err, syscall.ECONNRESET):
		// A reset is a close with request bytes left unread (431).
		out.closed = true
	case err == nil:
		t.Errorf("the server answered again after the refusal (%q...): a second request was read from the same bytes", rest)
	default:
		// Still open (deadline hit): closed stays false.
	}
	return out
}

// adversarialCase is one hostile request.
type adversarialCase struct {
	name string
	// Either send (raw bytes; {{HOST}} is replaced) or method, path, header and
	// body through an http.Client from from (default addrGB).
	send   string
	method string
	path   string
	header http.Header
	body   string
	from   string

	status  int
	problem string // the problem type, without its URN prefix
	// api is true where the refusal comes after a lookup in the Stream API
	// (country, quota): the delivery host must still see nothing.
	api bool
	// closes: the connection must be closed after the answer (raw only).
	closes bool
	// noLog: net/http answers by itself; no handler, no request log line.
	noLog bool
	check func(t *testing.T, r result)
}

func (h *hardened) run(t *testing.T, tc adversarialCase) {
	t.Helper()
	e := h.e
	before := h.ledger(t)
	reqsBefore, delBefore := len(e.rec.all()), len(e.rec.deliveries())

	var r result
	if tc.send != "" {
		rr := h.raw(t, strings.ReplaceAll(tc.send, "{{HOST}}", h.addr))
		r = rr.result
		if tc.closes && !rr.closed {
			t.Errorf("connection left open after %d", r.status)
		}
	} else {
		from := tc.from
		if from == "" {
			from = addrGB
		}
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		method := tc.method
		if method == "" {
			method = "GET"
		}
		r = do(t, e.client(from), method, h.url+tc.path, tc.header, body)
	}

	if r.status != tc.status {
		t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
	}
	if tc.problem != "" {
		if tc.noLog {
			// net/http's own answers: no request ID header of the handler's
			// making, but the same problem body.
			m := map[string]any{}
			if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("Content-Type = %q, want application/problem+json: %s", ct, r.body)
			}
			if err := json.Unmarshal(r.body, &m); err != nil {
				t.Fatalf("problem body: %v: %s", err, r.body)
			}
			if m["type"] != "urn:streamgate:problem:"+tc.problem || int(m["status"].(float64)) != tc.status {
				t.Errorf("problem = %v, want type %s status %d", m, tc.problem, tc.status)
			}
		} else if m := r.problem(t); m["type"] != "urn:streamgate:problem:"+tc.problem {
			t.Errorf("problem type = %v, want %s", m["type"], tc.problem)
		}
	}
	if tc.check != nil {
		tc.check(t, r)
	}
	if !tc.noLog && r.header.Get("X-Request-ID") != "" {
		// The handler has returned once its log line is written: whatever it
		// reserved or settled is in the ledger by then.
		e.requestLine(t, r)
	}
	if got := len(e.rec.deliveries()); got != delBefore {
		t.Errorf("the delivery host received %d request(s); want none", got-delBefore)
	}
	if !tc.api {
		if got := len(e.rec.all()); got != reqsBefore {
			t.Errorf("Stream received %d request(s); want none", got-reqsBefore)
		}
	}
	if after := h.ledger(t); !reflect.DeepEqual(after, before) {
		t.Errorf("the ledger changed:\nbefore %+v\nafter  %+v", before, after)
	}
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func withHeader(h http.Header, kv ...string) http.Header {
	h = h.Clone()
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestAdversarial(t *testing.T) {
	h := newHardened(t)
	e := h.e
	alice := e.jwt("alice", "", nil)
	tiny := e.jwt("tiny-user", "tiny", nil)
	asAlice := bearer(alice)
	cookie := hdr("Cookie", cookieName+"="+alice)
	dl := "/v1/videos/" + uidPublic + "/downloads/default.mp4"

	link := e.createLink(t, e.gw, e.client(addrGB), alice, uidPublic, `{"type":"default","filename":"talk"}`)
	lu, err := url.Parse(link.URL)
	if err != nil {
		t.Fatal(err)
	}
	linkPath := lu.Path
	grant := strings.Split(linkPath, "/")[2]
	audio := e.createLink(t, e.gw, e.client(addrGB), alice, uidPublic, `{"type":"audio"}`)
	audioGrant := strings.Split(mustPath(t, audio.URL), "/")[2]
	forger, err := auth.NewGrants([]auth.GrantKey{{ID: grantKeyID, Secret: []byte("forged-grant-secret-of-32-bytes-or-more")}}, e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := forger.Sign(auth.Grant{User: "mallory", Video: uidPublic, Type: stream.Default, ExpiresAt: e.clock.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	e.remember(forged)

	allow := func(want string) func(*testing.T, result) {
		return func(t *testing.T, r result) {
			if got := r.header.Get("Allow"); got != want {
				t.Errorf("Allow = %q, want %q", got, want)
			}
		}
	}
	location := func(want string) func(*testing.T, result) {
		return func(t *testing.T, r result) {
			if got := r.header.Get("Location"); got != want {
				t.Errorf("Location = %q, want %q", got, want)
			}
		}
	}
	authLine := "Authorization: Bearer " + alice + "\r\n"
	// A HEAD answer has no body: its headers say it is a problem.
	problemType := func(t *testing.T, r result) {
		if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("Content-Type = %q, want application/problem+json", ct)
		}
	}

	cases := []adversarialCase{
		// HTTP framing (item 5).
		{name: "CL and TE chunked smuggle a second request", status: 400, problem: "bad_framing", closes: true,
			send: "GET " + dl + " HTTP/1.1\r\nHost: {{HOST}}\r\n" + authLine + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET " + dl + " HTTP/1.1\r\nHost: {{HOST}}\r\n" + authLine + "\r\n"},
		{name: "CL and TE chunked on POST links", status: 400, problem: "bad_framing", closes: true,
			send: "POST /v1/videos/" + uidPublic + "/links HTTP/1.1\r\nHost: {{HOST}}\r\n" + authLine + "Content-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"},
		{name: "chunked body on GET", status: 400, problem: "bad_framing", closes: true,
			send: "GET " + dl + " HTTP/1.1\r\nHost: {{HOST}}\r\n" + authLine + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{name: "Content-Length body on GET", status: 400, problem: "body_not_allowed", closes: true,
			send: "GET " + dl + " HTTP/1.1\r\nHost: {{HOST}}\r\n" + authLine + "Content-Length: 5\r\n\r\nhello"},
		{name: "body on HEAD", status: 400, closes: true, check: problemType,
			send: "HEAD " + dl + " HTTP/1.1\r\nHost: {{HOST}}\r\n" + authLine + "Content-Length: 3\r\n\r\nabc"},
		{name: "body on link GET", status: 400, problem: "body_not_allowed", closes: true,
			send: "GET " + linkPath + " HTTP/1.1\r\nHost: {{HOST}}\r\nContent-Length: 3\r\n\r\nabc"},
		{name: "unknown transfer coding", status: 501, problem: "bad_framing", closes: true, noLog: true,
			send: "GET " + dl + " HTTP/1.1\r\nHost: {{HOST}}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
		{name: "two different Content-Lengths", status: 400, problem: "bad_request", closes: true, noLog: true,
			send: "POST /v1/videos/" + uidPublic + "/links HTTP/1.1\r\nHost: {{HOST}}\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"},
		{name: "no Host header", status: 400, problem: "bad_request", closes: true, noLog: true,
			send: "GET " + dl + " HTTP/1.1\r\n" + authLine + "\r\n"},
		{name: "HTTP/2.5", status: 505, problem: "http_version", closes: true, noLog: true,
			send: "GET " + dl + " HTTP/2.5\r\nHost: {{HOST}}\r\n\r\n"},
		{name: "oversized headers", status: 431, problem: "headers_too_large", closes: true, noLog: true,
			send: "GET " + dl + " HTTP/1.1\r\nHost: {{HOST}}\r\nX-Pad: " + strings.Repeat("a", adversarialHeaderLimit+8<<10) + "\r\n\r\n"},
		{name: "oversized request line", status: 431, problem: "headers_too_large", closes: true, noLog: true,
			send: "GET " + dl + "?x=" + strings.Repeat("b", adversarialHeaderLimit+8<<10) + " HTTP/1.1\r\nHost: {{HOST}}\r\n\r\n"},
		{name: "CONNECT", status: 405, problem: "method_not_allowed", check: allow(serverMethods),
			send: "CONNECT upstream.example:443 HTTP/1.1\r\nHost: upstream.example:443\r\n\r\n"},

		// Connection naming relied-on headers (item 4).
		{name: "Connection: Range", status: 400, problem: "bad_connection_header", header: withHeader(asAlice, "Range", "bytes=0-1", "Connection", "Range"), path: dl},
		{name: "Connection: keep-alive, If-Range", status: 400, problem: "bad_connection_header", header: withHeader(asAlice, "Range", "bytes=0-1", "If-Range", `"x"`, "Connection", "keep-alive, If-Range"), path: dl},
		{name: "Connection: Authorization", status: 400, problem: "bad_connection_header", header: withHeader(asAlice, "Connection", "authorization"), path: dl},
		{name: "Connection: Range on a link", status: 400, problem: "bad_connection_header", header: hdr("Range", "bytes=0-1", "Connection", "Range"), path: linkPath},
		{name: "Connection: Cookie on usage", status: 400, problem: "bad_connection_header", header: withHeader(cookie, "Connection", "Cookie"), path: "/v1/me/usage"},
		{name: "Connection: X-Forwarded-For", status: 400, problem: "bad_connection_header", header: withHeader(asAlice, "Connection", "X-Forwarded-For"), path: dl},

		// Queries and ranges (items 6, 7).
		{name: "semicolon in query", status: 400, problem: "bad_query", header: asAlice, path: dl + "?filename=a;b"},
		{name: "bad escape in query", status: 400, problem: "bad_query", header: asAlice, path: dl + "?filename=%zz"},
		{name: "semicolon in link query", status: 400, problem: "bad_query", path: linkPath + "?filename=talk;x=1"},
		{name: "bytes=-0", status: 416, problem: "range_not_satisfiable", header: withRange(asAlice, "bytes=-0"), path: dl},
		{name: "bytes=-00 on a link", status: 416, problem: "range_not_satisfiable", header: hdr("Range", "bytes=-00"), path: linkPath},
		{name: "HEAD bytes=-0", status: 416, method: "HEAD", header: withRange(asAlice, "bytes=-0"), path: dl},

		// Routes and methods (item 8).
		{name: "DELETE a download", method: "DELETE", status: 405, problem: "method_not_allowed", header: asAlice, path: dl, check: allow("GET, HEAD")},
		{name: "POST usage", method: "POST", status: 405, problem: "method_not_allowed", header: asAlice, path: "/v1/me/usage", check: allow("GET, HEAD")},
		{name: "GET links", status: 405, problem: "method_not_allowed", header: asAlice, path: "/v1/videos/" + uidPublic + "/links", check: allow("POST")},
		{name: "PUT a link", method: "PUT", status: 405, problem: "method_not_allowed", path: linkPath, check: allow("GET, HEAD")},
		{name: "unknown route", status: 404, problem: "not_found", path: "/admin"},
		{name: "double slash", status: 301, problem: "non_canonical_path", header: asAlice, path: "//v1/me/usage", check: location("/v1/me/usage")},
		{name: "dot segment in a download", status: 301, problem: "non_canonical_path", header: asAlice, path: "/v1/videos/" + uidPublic + "/downloads/./default.mp4", check: location(dl)},

		// Traversal.
		{name: "dot-dot out of a link", status: 301, problem: "non_canonical_path", path: "/dl/" + grant + "/../../v1/me/usage", check: location("/v1/me/usage")},
		{name: "encoded dot-dot in the video", status: 301, problem: "non_canonical_path", header: asAlice, path: "/v1/videos/..%2f..%2fetc/downloads/default.mp4", check: location("/etc/downloads/default.mp4")},
		{name: "encoded dot-dot in the file", status: 301, problem: "non_canonical_path", header: asAlice, path: "/v1/videos/" + uidPublic + "/downloads/..%2fdefault.mp4", check: location("/v1/videos/" + uidPublic + "/default.mp4")},
		{name: "encoded slash in the video", status: 400, problem: "bad_video", header: asAlice, path: "/v1/videos/" + uidPublic + "%2fx/downloads/default.mp4"},
		{name: "NUL in the file", status: 400, problem: "bad_type", header: asAlice, path: dl + "%00"},
		{name: "another file of the delivery host", status: 400, problem: "bad_type", path: "/dl/" + grant + "/manifest.m3u8"},

		// Filename injection.
		{name: "CRLF in filename", status: 400, problem: "bad_filename", header: asAlice, path: dl + "?filename=a%0d%0aSet-Cookie:x=1"},
		{name: "path in filename", status: 400, problem: "bad_filename", header: asAlice, path: dl + "?filename=..%2f..%2fx"},
		{name: "quote in filename", status: 400, problem: "bad_filename", header: asAlice, path: dl + "?filename=a%22b"},
		{name: "two filenames", status: 400, problem: "bad_filename", header: asAlice, path: dl + "?filename=a&filename=b"},
		{name: "overlong filename", status: 400, problem: "bad_filename", header: asAlice, path: dl + "?filename=" + strings.Repeat("f", stream.MaxFilenameLen+1)},
		{name: "link filename changed", status: 400, problem: "bad_filename", path: linkPath + "?filename=other"},

		// Grants.
		{name: "tampered grant", status: 401, problem: "unauthorized", path: "/dl/" + grant[:len(grant)-2] + "xx/default.mp4"},
		{name: "forged grant, known key ID", status: 401, problem: "unauthorized", path: "/dl/" + forged + "/default.mp4"},
		{name: "audio grant on the MP4", status: 401, problem: "unauthorized", path: "/dl/" + audioGrant + "/default.mp4"},
		{name: "garbage grant", status: 401, problem: "unauthorized", path: "/dl/x.y.z/default.mp4"},
		{name: "portal JWT as a grant", status: 401, problem: "unauthorized", path: "/dl/" + alice + "/default.mp4"},
		{name: "grant as a Bearer token", status: 401, problem: "unauthorized", header: bearer(grant), path: dl},

		// Spoofed forwarding headers: no trusted proxies, so the peer decides.
		{name: "X-Forwarded-For from a blocked country", status: 403, problem: "country_denied", from: addrFR, header: withHeader(asAlice, "X-Forwarded-For", addrUS), path: dl},
		{name: "Forwarded from a blocked country", status: 403, problem: "country_denied", from: addrFR, header: withHeader(asAlice, "Forwarded", "for="+addrUS), path: dl},
		{name: "X-Real-IP and True-Client-IP", status: 403, problem: "country_denied", from: addrFR, header: withHeader(asAlice, "X-Real-IP", addrUS, "True-Client-IP", addrUS, "CF-Connecting-IP", addrUS), path: dl},

		// Cross-site use of the portal's cookie (item 9).
		{name: "cookie, Sec-Fetch-Site cross-site", status: 403, problem: "cross_site", header: withHeader(cookie, "Sec-Fetch-Site", "cross-site"), path: dl},
		{name: "cookie, no Sec-Fetch-Site, foreign Origin", status: 403, problem: "cross_site", header: withHeader(cookie, "Origin", "https://evil.example"), path: dl},
		{name: "cookie, no Sec-Fetch-Site, foreign Referer", status: 403, problem: "cross_site", header: withHeader(cookie, "Referer", "https://evil.example/page?x"), path: dl},
		{name: "cookie, Origin null", status: 403, problem: "cross_site", header: withHeader(cookie, "Origin", "null"), path: dl},
		{name: "cookie, look-alike Origin", status: 403, problem: "cross_site", header: withHeader(cookie, "Origin", portalOrigin+".evil.example"), path: dl},
		{name: "cookie, portal Origin over http", status: 403, problem: "cross_site", header: withHeader(cookie, "Origin", "http://portal.example"), path: dl},
		{name: "cookie, foreign Origin on links", method: "POST", status: 403, problem: "cross_site",
			header: withHeader(cookie, "Origin", "https://evil.example", "Content-Type", "application/json"), body: `{}`, path: "/v1/videos/" + uidPublic + "/links"},
		{name: "cookie, foreign Referer on usage", status: 403, problem: "cross_site", header: withHeader(cookie, "Referer", "https://evil.example/"), path: "/v1/me/usage"},
		{name: "cookie, foreign Referer on the list", status: 403, problem: "cross_site", header: withHeader(cookie, "Referer", "https://evil.example/"), path: "/v1/videos/" + uidPublic + "/downloads"},
		{name: "cookie, form without Sec-Fetch-Site", method: "POST", status: 415, problem: "bad_content_type",
			header: withHeader(cookie, "Content-Type", "application/x-www-form-urlencoded"), body: "a=1", path: "/v1/videos/" + uidPublic + "/links"},

		// Quota: the tiny plan cannot afford a 2-minute video.
		{name: "quota exhausted", status: 403, problem: "quota_exceeded", api: true, header: bearer(tiny), path: dl},
	}
	for name, bt := range badTokens(t, e) {
		e.remember(bt.tok)
		cases = append(cases,
			adversarialCase{name: "JWT " + name, status: 401, problem: "unauthorized", header: bearer(bt.tok), path: dl},
			adversarialCase{name: "JWT cookie " + name, status: 401, problem: "unauthorized", header: hdr("Cookie", cookieName+"="+bt.tok), path: "/v1/me/usage"})
	}
	if len(cases) < 60 {
		t.Fatalf("%d cases; the suite promises at least 60", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { h.run(t, tc) })
	}
	e.assertNoSecretsLogged(t)
}

func mustPath(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Path
}

// TestAdversarialAllowed: what the checks must let through, and what then
// reaches Stream: the allowlisted headers only, never a body.
func TestAdversarialAllowed(t *testing.T) {
	h := newHardened(t)
	e := h.e
	alice := e.jwt("alice", "", nil)
	dl := "/v1/videos/" + uidPublic + "/downloads/default.mp4"
	gb := e.client(addrGB)
	cookie := hdr("Cookie", cookieName+"="+alice)

	tests := []struct {
		name   string
		method string
		header http.Header
		status int
	}{
		{"portal Origin without Sec-Fetch-Site", "HEAD", withHeader(cookie, "Origin", portalOrigin), 200},
		{"portal Referer without Sec-Fetch-Site", "HEAD", withHeader(cookie, "Referer", portalOrigin+"/videos/1"), 200},
		{"gateway's own Origin", "HEAD", withHeader(cookie, "Origin", h.srv.cfg.PublicURL), 200},
		{"cookie with neither Origin nor Referer", "HEAD", cookie, 200},
		{"Connection: keep-alive, Upgrade", "HEAD", withHeader(bearer(alice), "Connection", "keep-alive, Upgrade", "Upgrade", "h2c"), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, gb, tt.method, h.url+dl, tt.header, nil)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
		})
	}

	t.Run("only the allowlist reaches Stream", func(t *testing.T) {
		before := len(e.rec.deliveries())
		hh := withHeader(bearer(alice),
			"Range", "bytes=0-1", "If-Range", `"nope"`,
			"Upgrade", "h2c", "Connection", "Upgrade, HTTP2-Settings", "HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA",
			"TE", "trailers", "Via", "1.1 evil", "True-Client-IP", "10.1.1.1", "CF-Connecting-IP", "10.1.1.1",
			"X-Forwarded-For", "10.1.1.1", "Forwarded", "for=10.1.1.1", "X-Real-IP", "10.1.1.1",
			"Referer", "https://evil.example/", "Accept-Encoding", "gzip", "X-Custom", "1",
			"Sec-Fetch-Site", "same-site", "Cookie", "a=b")
		r := do(t, gb, "GET", h.url+dl, hh, nil)
		if r.status != http.StatusOK && r.status != http.StatusPartialContent {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		dels := e.rec.deliveries()[before:]
		if len(dels) != 1 {
			t.Fatalf("%d deliveries, want 1", len(dels))
		}
		var names []string
		for k := range dels[0].Header {
			names = append(names, k)
		}
		slices.Sort(names)
		allowed := append(slices.Clone(forwardedHeaders), "User-Agent")
		for _, n := range names {
			if !slices.Contains(allowed, n) {
				t.Errorf("%s reached Stream (got %v)", n, names)
			}
		}
		if dels[0].Header.Get("Range") != "bytes=0-1" || dels[0].Header.Get("If-Range") != `"nope"` {
			t.Errorf("Range and If-Range did not reach Stream: %v", dels[0].Header)
		}
		e.settled(t, "alice")
	})
}

// TestAdversarialSlowloris: headers trickled past the read-header timeout close
// the connection; nothing reaches Stream and nothing is reserved.
func TestAdversarialSlowloris(t *testing.T) {
	h := newHardened(t)
	e := h.e
	before := h.ledger(t)
	reqs := len(e.rec.all())
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addrGB)}}
	c, err := d.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /v1/videos/"+uidPublic+"/downloads/default.mp4 HTTP/1.1\r\nHost: x\r\n")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Trickle a header byte now and then; the server must give up on its own.
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				if _, err := io.WriteString(c, "X"); err != nil {
					return
				}
			}
		}
	})
	_, err = io.ReadAll(c)
	close(done)
	wg.Wait()
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the server kept a trickling client's connection open")
	}
	if got := len(e.rec.all()); got != reqs {
		t.Errorf("Stream received %d request(s)", got-reqs)
	}
	if after := h.ledger(t); !reflect.DeepEqual(after, before) {
		t.Errorf("the ledger changed: %+v -> %+v", before, after)
	}
}

// TestAdversarialQuotaRace: many parallel downloads of a user whose quota covers
// one cannot be billed beyond it.
func TestAdversarialQuotaRace(t *testing.T) {
	h := newHardened(t)
	e := h.e
	// The "tiny" plan has 0.5 minutes, less than the 2-minute video: eight
	// downloads at once must all be refused, none reserved past the quota.
	tok := e.jwt("tiny-user", "tiny", nil)
	var wg sync.WaitGroup
	statuses := make([]int, 8)
	for i := range statuses {
		wg.Go(func() {
			r := do(t, e.client(addrGB), "GET", h.url+"/v1/videos/"+uidPublic+"/downloads/default.mp4", bearer(tok), nil)
			statuses[i] = r.status
		})
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusForbidden {
			t.Errorf("request %d: status %d, want 403", i, s)
		}
	}
	u := e.settled(t, "tiny-user")
	if u.MinutesUsed != 0 {
		t.Errorf("minutes used = %v, want 0", u.MinutesUsed)
	}
	if n := len(e.rec.deliveries()); n != 0 {
		t.Errorf("%d deliveries reached Stream", n)
	}
}
