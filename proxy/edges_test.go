package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestIsZeroSuffixRange(t *testing.T) {
	tests := []struct {
		name   string
		ranges []string
		want   bool
	}{
		{"none", nil, false},
		{"bytes=-0", []string{"bytes=-0"}, true},
		{"bytes=-000", []string{"bytes=-000"}, true},
		{"spaces", []string{"bytes= -0 "}, true},
		{"suffix of one", []string{"bytes=-1"}, false},
		{"from zero", []string{"bytes=0-"}, false},
		{"0-0", []string{"bytes=0-0"}, false},
		{"multipart with -0", []string{"bytes=0-1,-0"}, false},
		{"two lines", []string{"bytes=-0", "bytes=-0"}, false},
		{"other unit", []string{"items=-0"}, false},
		{"negative", []string{"bytes=--0"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isZeroSuffixRange(http.Header{"Range": tt.ranges}); got != tt.want {
				t.Errorf("isZeroSuffixRange(%q) = %v, want %v", tt.ranges, got, tt.want)
			}
		})
	}
}

func TestConnectionNamesReliedOn(t *testing.T) {
	tests := []struct {
		conn []string
		want string
	}{
		{nil, ""},
		{[]string{"keep-alive"}, ""},
		{[]string{"close"}, ""},
		{[]string{"Upgrade, HTTP2-Settings"}, ""},
		{[]string{"X-Custom"}, ""},
		{[]string{"range"}, "Range"},
		{[]string{"keep-alive , if-range"}, "If-Range"},
		{[]string{"close", "Authorization"}, "Authorization"},
		{[]string{"cookie"}, "Cookie"},
		{[]string{"If-None-Match"}, "If-None-Match"},
		{[]string{"x-forwarded-for"}, "X-Forwarded-For"},
		{[]string{"Sec-Fetch-Site"}, "Sec-Fetch-Site"},
	}
	for _, tt := range tests {
		if got := connectionNamesReliedOn(http.Header{"Connection": tt.conn}); got != tt.want {
			t.Errorf("Connection %q: got %q, want %q", tt.conn, got, tt.want)
		}
	}
}

func TestNormalizeOrigin(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"https://portal.example", "https://portal.example", true},
		{"HTTPS://Portal.Example:443/", "https://portal.example", true},
		{"http://portal.example:80/page?q#f", "http://portal.example", true},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080", true},
		{"http://[::1]:8080/x", "http://[::1]:8080", true},
		{"https://portal.example:8443", "https://portal.example:8443", true},
		{"null", "", false},
		{"", "", false},
		{"portal.example", "", false},
		{"ftp://portal.example", "", false},
		{"https://user@portal.example", "", false},
		{"javascript:alert(1)", "", false},
	}
	for _, tt := range tests {
		got, ok := normalizeOrigin(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("normalizeOrigin(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"":            "/",
		"/":           "/",
		"/a/b":        "/a/b",
		"//a":         "/a",
		"/a/./b":      "/a/b",
		"/a/../b":     "/b",
		"/../../x":    "/x",
		"/a/b/":       "/a/b/",
		"a":           "/a",
		"/dl/g/../..": "/",
	} {
		if got := cleanPath(in); got != want {
			t.Errorf("cleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestForwardRequest(t *testing.T) {
	in, _ := http.NewRequest("GET", "http://gw/x", strings.NewReader("body"))
	in.Header = http.Header{
		"Range": {"bytes=0-1"}, "If-Range": {`"e"`}, "If-None-Match": {`"a"`, `"b"`},
		"If-Modified-Since": {"x"}, "If-Match": {"*"}, "If-Unmodified-Since": {"y"},
		"Upgrade": {"h2c"}, "Connection": {"Upgrade"}, "Te": {"trailers"}, "Via": {"1.1 x"},
		"True-Client-Ip": {"1.2.3.4"}, "Cf-Connecting-Ip": {"1.2.3.4"}, "Authorization": {"Bearer x"},
		"Cookie": {"a=b"}, "Accept-Encoding": {"gzip"},
	}
	out := in.Clone(in.Context())
	out.TransferEncoding = []string{"chunked"}
	out.Trailer = http.Header{"X": nil}
	forwardRequest(in, out)
	if len(out.Header) != len(forwardedHeaders) {
		t.Errorf("forwarded %v, want only %v", out.Header, forwardedHeaders)
	}
	for _, h := range forwardedHeaders {
		if !slicesEqual(out.Header.Values(h), in.Header.Values(h)) {
			t.Errorf("%s = %q, want %q", h, out.Header.Values(h), in.Header.Values(h))
		}
	}
	if out.Body != nil || out.ContentLength != 0 || out.TransferEncoding != nil || out.Trailer != nil {
		t.Errorf("a body is forwarded: body %v, length %d, TE %v, trailer %v", out.Body, out.ContentLength, out.TransferEncoding, out.Trailer)
	}
	// The outbound header is its own: changing it leaves the inbound alone.
	out.Header["If-None-Match"][0] = "changed"
	if in.Header.Get("If-None-Match") != `"a"` {
		t.Error("forwardRequest shares value slices with the inbound request")
	}
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

func TestProblemFromCanned(t *testing.T) {
	const hdrs = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	tests := []struct {
		name   string
		in     string
		status int
		typ    string
	}{
		{"431", "HTTP/1.1 431 Request Header Fields Too Large" + hdrs + "431 Request Header Fields Too Large", 431, "headers_too_large"},
		{"400", "HTTP/1.1 400 Bad Request" + hdrs + "400 Bad Request", 400, "bad_request"},
		{"400 with reason", "HTTP/1.1 400 Bad Request: missing required Host header" + hdrs + "400 Bad Request: missing required Host header", 400, "bad_request"},
		{"501", "HTTP/1.1 501 Not Implemented" + hdrs + "Unsupported transfer encoding", 501, "bad_framing"},
		{"505", "HTTP/1.1 505 HTTP Version Not Supported: unsupported protocol version" + hdrs + "505", 505, "http_version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ok := problemFromCanned([]byte(tt.in))
			if !ok {
				t.Fatal("not recognised")
			}
			resp, err := http.ReadResponse(bufioReader(string(out)), nil)
			if err != nil {
				t.Fatalf("rewritten answer does not parse: %v\n%s", err, out)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/problem+json" || !resp.Close {
				t.Errorf("status %d, type %q, close %v", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Close)
			}
			if !strings.Contains(string(body), `"type":"urn:streamgate:problem:`+tt.typ+`"`) {
				t.Errorf("body %s, want type %s", body, tt.typ)
			}
		})
	}
	// A handler's own answers pass unchanged: net/http sorts their headers and
	// adds a Date.
	for _, s := range []string{
		"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nDate: x\r\n\r\n",
		"HTTP/1.1 200 OK" + hdrs + "ok",
		"partial body bytes",
	} {
		if _, ok := problemFromCanned([]byte(s)); ok {
			t.Errorf("rewrote %q", s)
		}
	}
}

// TestProblemConnWrite: the connection rewrites a canned answer written in one
// short write, and passes everything else on byte for byte, even a long body
// write that happens to begin like one.
func TestProblemConnWrite(t *testing.T) {
	const canned = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request"
	long := canned + strings.Repeat("x", 32<<10)
	tests := []struct {
		name    string
		in      string
		rewrite bool
	}{
		{"canned answer", canned, true},
		{"body write beginning like one", long, false},
		{"body bytes", strings.Repeat("y", 32<<10), false},
		{"handler's header", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got recordConn
			n, err := (&problemConn{Conn: &got}).Write([]byte(tt.in))
			if err != nil || n != len(tt.in) {
				t.Fatalf("Write: %d, %v; want %d, nil", n, err, len(tt.in))
			}
			rewritten := got.String() != tt.in
			if rewritten != tt.rewrite {
				t.Errorf("rewritten %v, want %v: %.120q", rewritten, tt.rewrite, got.String())
			}
			if tt.rewrite && !strings.Contains(got.String(), "application/problem+json") {
				t.Errorf("rewritten answer is not a problem: %.200q", got.String())
			}
		})
	}
}

// recordConn is a net.Conn that keeps what is written to it.
type recordConn struct {
	net.Conn
	strings.Builder
}

func (c *recordConn) Write(b []byte) (int, error) { return c.Builder.Write(b) }

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

// FuzzProblemFromCanned: whatever bytes net/http writes, a rewritten answer is a
// well-formed problem response, and nothing but a canned error is rewritten.
func FuzzProblemFromCanned(f *testing.F) {
	const hdrs = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	for _, s := range []string{
		"HTTP/1.1 431 Request Header Fields Too Large" + hdrs + "431 Request Header Fields Too Large",
		"HTTP/1.1 400 Bad Request: invalid method" + hdrs + "x",
		"HTTP/1.1 200 OK\r\nDate: x\r\n\r\n",
		"HTTP/1.1 999 X" + hdrs,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, ok := problemFromCanned([]byte(s))
		if !ok {
			return
		}
		if !strings.HasPrefix(s, "HTTP/1.1 4") && !strings.HasPrefix(s, "HTTP/1.1 5") {
			t.Fatalf("rewrote a non-error %q", s)
		}
		resp, err := http.ReadResponse(bufioReader(string(out)), nil)
		if err != nil {
			t.Fatalf("rewritten %q does not parse: %v", s, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(body), `"status":`) {
			t.Fatalf("rewritten %q: %v %q %s", s, err, resp.Header.Get("Content-Type"), body)
		}
	})
}
