package main

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/streamgate/streamgate/stream"
)

// The demo page: plain HTML, CSS and JavaScript in demopage/, embedded in the
// binary, served by `streamgate demo` beside the gateway's routes. The page calls
// the gateway's own routes (GET /v1/me/usage, GET /v1/videos/{uid}/downloads,
// POST /v1/videos/{uid}/links) with `Authorization: Bearer`, from the same
// origin as the gateway.
//
// DEMO ONLY: GET /demo/users hands the demo users' portal tokens to whoever asks.
// A real portal signs its users in and never publishes their tokens; `streamgate
// serve` has no such page and no such route. The demo listens on loopback, and
// its users exist only in front of the emulator.
//
//go:embed demopage
var demoFiles embed.FS

// demoPage serves / and /demo/...; every other path goes to the gateway.
type demoPage struct {
	files  fs.FS
	users  []demoUser
	videos []demoPageVideo
	// csp is the page's Content-Security-Policy: its own scripts and styles, its
	// own origin for API calls, and the gateway's public origin for the links a
	// <video> plays (the public URL may name another host than the one in the
	// browser's address bar, 127.0.0.1 against localhost).
	csp string
}

// demoPageVideo is a video as GET /demo/videos lists it: Filename is the name
// the page asks the gateway to give a download, Name reduced to what Stream
// accepts (stream.ValidFilename).
type demoPageVideo struct {
	UID      string  `json:"uid"`
	Name     string  `json:"name"`
	Filename string  `json:"filename"`
	Duration float64 `json:"duration"`
	Private  bool    `json:"private"`
}

func newDemoPage(info demoInfo) *demoPage {
	files, err := fs.Sub(demoFiles, "demopage")
	if err != nil {
		panic(err) // the directory is embedded: it is there
	}
	p := &demoPage{files: files, users: info.Users, csp: demoCSP(info.Gateway)}
	for _, v := range info.Videos {
		p.videos = append(p.videos, demoPageVideo{
			UID: v.UID, Name: v.Name, Filename: demoFilename(v.Name), Duration: v.Duration, Private: v.Private,
		})
	}
	return p
}

// wrap sends / and /demo/... to the page and everything else to the gateway.
func (p *demoPage) wrap(gateway http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/demo/") {
			p.ServeHTTP(w, r)
			return
		}
		gateway.ServeHTTP(w, r)
	})
}

// ServeHTTP is the page's whole surface.
func (p *demoPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		writeProblem(w, r, http.StatusMethodNotAllowed, "method_not_allowed", "the demo page answers GET and HEAD only", nil)
		return
	}
	switch r.URL.Path {
	case "/":
		h.Set("Content-Security-Policy", p.csp)
		p.file(w, r, "index.html")
	case "/demo/demo.js", "/demo/demo.css":
		p.file(w, r, strings.TrimPrefix(r.URL.Path, "/demo/"))
	case "/demo/users":
		// The tokens are credentials: never cached.
		h.Set("Cache-Control", "no-store")
		demoJSON(w, map[string]any{"users": p.users})
	case "/demo/videos":
		demoJSON(w, map[string]any{"videos": p.videos})
	default:
		writeProblem(w, r, http.StatusNotFound, "not_found", "the demo page has no such file", nil)
	}
}

func (p *demoPage) file(w http.ResponseWriter, r *http.Request, name string) {
	// The files change with the binary: a browser revalidates them each time.
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeFileFS(w, r, p.files, name)
}

// demoCSP allows the page its own origin and the gateway's public one, where
// the links it plays point.
func demoCSP(publicURL string) string {
	media := "'self'"
	if u, err := url.Parse(publicURL); err == nil && u.Host != "" {
		media += " " + u.Scheme + "://" + u.Host
	}
	return strings.Join([]string{
		"default-src 'none'",
		"script-src 'self'",
		"style-src 'self'",
		"connect-src 'self'",
		"img-src 'self' data:",
		"media-src " + media,
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
}

// demoFilename turns a video's name into a download name Stream accepts:
// letters, digits, '-' and '_', at most 120 characters ("Members-only lecture"
// becomes "Members-only-lecture").
func demoFilename(name string) string {
	var b strings.Builder
	for _, c := range name {
		if c < utf8.RuneSelf && stream.URLSafeByte(byte(c)) {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > stream.MaxFilenameLen {
		s = s[:stream.MaxFilenameLen]
	}
	if s == "" {
		s = "video"
	}
	return s
}

func demoJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
