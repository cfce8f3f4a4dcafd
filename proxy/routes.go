package proxy

import "net/http"

// routes is the whole HTTP surface. Every request first passes checkEdges
// (edges.go); the download routes and the other portal routes add their own
// edge checks (downloadEdges, portalEdges).
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, h handler) {
		mux.Handle(pattern, handler(func(w http.ResponseWriter, r *http.Request) error {
			if ri := infoFrom(r.Context()); ri != nil {
				ri.route = r.Pattern
			}
			return h(w, r)
		}))
	}

	// health.go
	handle("GET /healthz", s.handleHealthz)
	handle("GET /readyz", s.handleReadyz)

	// list.go, links.go
	handle("GET /v1/videos/{uid}/downloads", s.portalEdges(s.handleListDownloads))
	handle("POST /v1/videos/{uid}/links", s.portalEdges(s.handleCreateLink))
	// download.go; GET patterns match HEAD too.
	handle("GET /v1/videos/{uid}/downloads/{file}", s.downloadEdges(true, s.handleAuthDownload))
	handle("GET /dl/{grant}/{file}", s.downloadEdges(false, s.handleLinkDownload))

	// usage.go
	handle("GET /v1/me/usage", s.portalEdges(s.handleUsage))

	// hooks.go: Stream calls it, signed; no portal credential, no portal edges.
	if s.Webhooks != nil {
		handle("POST /hooks/stream", s.handleStreamHook)
	}

	// No route matched: a known path under another method is 405 with Allow.
	handle("/", func(w http.ResponseWriter, r *http.Request) error {
		return methodNotAllowed(mux, r)
	})
	return mux
}

// handler is a handler that returns its failure instead of writing it: the
// adapter writes the problem body, once, so no handler can forget to return
// after answering. A handler that has written a response returns nil.
type handler func(w http.ResponseWriter, r *http.Request) error

func (h handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h(w, r); err != nil {
		writeError(w, r, err)
	}
}
