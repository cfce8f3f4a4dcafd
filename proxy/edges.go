package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Request edges: what the gateway refuses before any route runs, and what of a
// request may travel on to Stream. Every refusal here happens before a limit is
// spent or anything is reserved.

// forwardedHeaders are the only request headers that reach Stream: the range and
// the conditionals that make resumes and revalidation work. Everything else a
// client sends (Upgrade, TE, Via, True-Client-IP, CF-Connecting-IP, ...) stays
// behind.
var forwardedHeaders = []string{
	"Range", "If-Range",
	"If-None-Match", "If-Modified-Since",
	"If-Match", "If-Unmodified-Since",
}

// credentialHeaders are read by the gateway itself on the authenticated routes and
// removed again before the request is forwarded.
var credentialHeaders = []string{"Authorization", "Cookie"}

// reliedOnHeaders are the end-to-end headers the gateway reads or forwards: a
// Connection header naming one of them would make net/http's ReverseProxy drop it
// on the way to Stream after the gateway had acted on it (Connection: Range served,
// and billed, a whole file for a two-byte range).
var reliedOnHeaders = func() map[string]bool {
	m := map[string]bool{}
	for _, h := range slices.Concat(forwardedHeaders, credentialHeaders, []string{
		"Host", "Content-Type", "Content-Length", "Origin", "Referer",
		"Sec-Fetch-Site", "X-Request-Id", "X-Forwarded-For", "Forwarded",
	}) {
		m[textproto.CanonicalMIMEHeaderKey(h)] = true
	}
	return m
}()

// forwardHeaders makes out hold only the allowlisted headers of in
// (forwardedHeaders), whatever out held before.
func forwardHeaders(in, out http.Header) {
	clear(out)
	for _, h := range forwardedHeaders {
		if v := in.Values(h); len(v) > 0 {
			out[h] = slices.Clone(v)
		}
	}
}

// forwardRequest strips the outbound request of a ReverseProxy to what Stream may
// see from the client: the allowlisted headers of in and never a body.
func forwardRequest(in, out *http.Request) {
	forwardHeaders(in.Header, out.Header)
	out.Body = nil
	out.ContentLength = 0
	out.TransferEncoding = nil
	out.Trailer = nil
}

// connectionNamesReliedOn returns the first header a Connection header names that
// the gateway relies on, or "".
func connectionNamesReliedOn(h http.Header) string {
	for _, v := range h.Values("Connection") {
		for tok := range strings.SplitSeq(v, ",") {
			tok = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(tok))
			if reliedOnHeaders[tok] {
				return tok
			}
		}
	}
	return ""
}

// cleanPath is the canonical form of p that http.ServeMux redirects to: rooted,
// without empty, "." or ".." segments, keeping a trailing slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// serverMethods are the methods some route answers, for the Allow header of a
// CONNECT.
const serverMethods = "GET, HEAD, POST"

// checkEdges refuses requests whose framing, headers or target the gateway will
// not act on, each with a problem body:
//   - CONNECT (405): the gateway is not a proxy;
//   - a body framed by Transfer-Encoding (400, connection closed): net/http
//     drops a Content-Length sent beside it, so a request carrying both cannot be
//     told from one with Transfer-Encoding alone, and the gateway's only bodies
//     are small JSON documents that clients send with Content-Length;
//   - a body on GET or HEAD (400, connection closed);
//   - a Connection header naming a header the gateway relies on (400);
//   - a query that does not parse (400), such as ?filename=a;b;
//   - a path that is not canonical: the redirect http.ServeMux would send
//     (301 and Location), with a problem body.
func (s *Server) checkEdges(next http.Handler) http.Handler {
	return handler(func(w http.ResponseWriter, r *http.Request) error {
		if err := edgeError(r); err != nil {
			return err
		}
		next.ServeHTTP(w, r)
		return nil
	})
}

func edgeError(r *http.Request) *Error {
	if r.Method == http.MethodConnect {
		return refused(http.StatusMethodNotAllowed, "method_not_allowed",
			"this server is not a proxy", http.Header{"Allow": {serverMethods}})
	}
	if len(r.TransferEncoding) > 0 {
		return refused(http.StatusBadRequest, "bad_framing",
			"a request body must be sent with Content-Length and without Transfer-Encoding",
			http.Header{"Connection": {"close"}})
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.ContentLength != 0 {
		return refused(http.StatusBadRequest, "body_not_allowed",
			"a GET or HEAD request cannot carry a body",
			http.Header{"Connection": {"close"}})
	}
	if h := connectionNamesReliedOn(r.Header); h != "" {
		return badRequest("bad_connection_header",
			"the Connection header may name hop-by-hop fields only, not "+h)
	}
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		return badRequest("bad_query",
			"the query string cannot be parsed; separate parameters with '&' and percent-encode the rest")
	}
	if p := cleanPath(r.URL.Path); p != r.URL.Path {
		u := &url.URL{Path: p, RawQuery: r.URL.RawQuery}
		return refused(http.StatusMovedPermanently, "non_canonical_path",
			"the path is not in canonical form; see Location",
			http.Header{"Location": {u.String()}})
	}
	return nil
}

// methodNotAllowed answers a request that no route matches: 405 with Allow when
// its path is a route's under other methods, 404 otherwise. mux holds the routes;
// its catch-all pattern is "/".
func methodNotAllowed(mux *http.ServeMux, r *http.Request) *Error {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		return refused(http.StatusNotFound, "not_found", "no such route", nil)
	}
	return refused(http.StatusMethodNotAllowed, "method_not_allowed",
		"the route does not answer "+r.Method, http.Header{"Allow": {strings.Join(allow, ", ")}})
}

// isZeroSuffixRange reports whether the request's one Range is bytes=-0, a
// suffix of no bytes, which no file can satisfy (RFC 9110 section 14.1.3). The
// reading follows the meter's (download.go billingRange), so what it would have
// passed on as a whole-file request is caught here.
func isZeroSuffixRange(h http.Header) bool {
	v := h.Values("Range")
	if len(v) != 1 {
		return false
	}
	spec, ok := strings.CutPrefix(v[0], "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return false
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok || first != "" {
		return false
	}
	// suffix-length is 1*DIGIT: no sign.
	if last == "" || strings.Trim(last, "0123456789") != "" {
		return false
	}
	n, err := strconv.ParseInt(last, 10, 64)
	return err == nil && n == 0
}

// downloadEdges guards the download routes. It answers 416 for bytes=-0, checks
// that a cookie-authenticated request comes from the portal (crossSite), and
// leaves the request only the headers the route reads, so that nothing else a
// client sends can reach Stream: forwardedHeaders, and on the authenticated route
// the credentials, which the reverse proxy removes before forwarding.
func (s *Server) downloadEdges(authenticated bool, next handler) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		if isZeroSuffixRange(r.Header) {
			return refused(http.StatusRequestedRangeNotSatisfiable, "range_not_satisfiable",
				"bytes=-0 asks for no bytes", nil)
		}
		if authenticated {
			if err := s.crossSite(r); err != nil {
				return err
			}
		}
		kept := http.Header{}
		forwardHeaders(r.Header, kept)
		if authenticated {
			for _, h := range credentialHeaders {
				if v := r.Header.Values(h); len(v) > 0 {
					kept[h] = v
				}
			}
		}
		r2 := *r
		r2.Header = kept
		return next(w, &r2)
	}
}

// portalEdges guards the other routes that take the portal credential.
func (s *Server) portalEdges(next handler) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.crossSite(r); err != nil {
			return err
		}
		return next(w, r)
	}
}

// crossSite refuses a request that would use the portal's cookie on another
// site's behalf. A browser that sends Sec-Fetch-Site says so itself; one that
// does not (older browsers) is judged by its Origin, else its Referer, against the
// portal origins and the gateway's own. With neither, or with a Bearer header
// (which no other site can make a browser add), or without a cookie, there is
// nothing to hold against the request here. A request marked cross-site is
// refused with or without a cookie, as authenticate does.
func (s *Server) crossSite(r *http.Request) *Error {
	if hasBearer(r) {
		return nil
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		if site == "cross-site" {
			return errCrossSite()
		}
		return nil
	}
	if r.Header.Get("Cookie") == "" {
		return nil
	}
	if o := r.Header.Get("Origin"); o != "" {
		if !s.portalOrigin(o) {
			return errCrossSite()
		}
		return nil
	}
	if ref := r.Header.Get("Referer"); ref != "" {
		if !s.portalOrigin(ref) {
			return errCrossSite()
		}
	}
	return nil
}

// portalOrigin reports whether the origin of raw (an Origin value or a Referer
// URL) is one of the portal's or the gateway's own.
func (s *Server) portalOrigin(raw string) bool {
	o, ok := normalizeOrigin(raw)
	return ok && s.origins[o]
}

// normalizeOrigin returns scheme://host[:port] of an absolute http(s) URL,
// lowercased and without a default port; ok is false for anything else,
// including the opaque origin "null".
func normalizeOrigin(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	switch {
	case scheme == "http" && (port == "" || port == "80"), scheme == "https" && (port == "" || port == "443"):
		port = ""
	case scheme != "http" && scheme != "https":
		return "", false
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		return scheme + "://" + host + ":" + port, true
	}
	return scheme + "://" + host, true
}

// ProblemListener wraps ln so that the answers net/http writes by itself, for
// requests it could not read (431 for oversized headers, 400 for malformed
// requests, 501 for unknown transfer codings, 505), carry a JSON problem body like
// every other error. Those answers never reach a handler: the server writes them
// straight to the connection in one write, as a text/plain response with exactly
// the header block below, which no handler's response can share, since net/http
// writes a handler's headers sorted (Connection before Content-Type) and with a
// Date.
func ProblemListener(ln net.Listener) net.Listener { return problemListener{ln} }

type problemListener struct{ net.Listener }

func (l problemListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &problemConn{Conn: c}, nil
}

type problemConn struct{ net.Conn }

// NetConn is the connection beneath, for those that look through wrappers
// (package acked).
func (c *problemConn) NetConn() net.Conn { return c.Conn }

// maxCanned is more than any answer net/http writes itself takes: a status
// line with a short reason, cannedHeaders and the status line again.
const maxCanned = 1 << 10

// cannedHeaders follow the status line of every answer net/http writes itself.
const cannedHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// CloseWrite lets net/http half-close the connection after a 431, as it does on
// the bare TCP connection.
func (c *problemConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *problemConn) Write(b []byte) (int, error) {
	// net/http writes its own answers in one short write; a body's writes are
	// passed on without a look, or a copy.
	if len(b) > maxCanned || !bytes.HasPrefix(b, []byte("HTTP/1.1 ")) {
		return c.Conn.Write(b)
	}
	if out, ok := problemFromCanned(b); ok {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// problemFromCanned rewrites one of net/http's own error answers as a problem
// response; ok is false for anything else.
func problemFromCanned(b []byte) ([]byte, bool) {
	s, ok := strings.CutPrefix(string(b), "HTTP/1.1 ")
	if !ok {
		return nil, false
	}
	statusLine, _, ok := strings.Cut(s, cannedHeaders)
	if !ok || strings.Contains(statusLine, "\r\n") || len(statusLine) < 3 {
		return nil, false
	}
	code, err := strconv.Atoi(statusLine[:3])
	if err != nil || code < 400 || code > 599 {
		return nil, false
	}
	typ := "bad_request"
	detail := "the request could not be read"
	switch code {
	case http.StatusRequestHeaderFieldsTooLarge:
		typ, detail = "headers_too_large", "the request headers are too large"
	case http.StatusNotImplemented:
		typ, detail = "bad_framing", "the request uses a transfer coding the server does not accept"
	case http.StatusHTTPVersionNotSupported:
		typ, detail = "http_version", "the HTTP version is not supported"
	}
	// net/http's own reasons ("missing required Host header", "invalid method")
	// are fixed strings, safe to pass on.
	if _, reason, ok := strings.Cut(statusLine, ": "); ok && code == http.StatusBadRequest {
		detail = "the request could not be read: " + reason
	}
	id := newRequestID()
	body, _ := json.Marshal(map[string]any{
		"type":       "urn:streamgate:problem:" + typ,
		"title":      http.StatusText(code),
		"status":     code,
		"detail":     detail,
		"request_id": id,
	})
	body = append(body, '\n')
	var out strings.Builder
	fmt.Fprintf(&out, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	out.WriteString("Content-Type: application/problem+json\r\nCache-Control: no-store\r\nConnection: close\r\n")
	fmt.Fprintf(&out, "Content-Length: %d\r\nX-Request-Id: %s\r\n\r\n", len(body), id)
	out.Write(body)
	return []byte(out.String()), true
}
