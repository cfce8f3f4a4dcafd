package proxy

import "net/http"

// routes is the whole HTTP surface. Every request first passes checkEdges
// (edges.go); the download routes and the other portal routes add their own
// edge checks (downloadEdges, portalEdges).
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ri := infoFrom(r.Context()); ri != nil {
				ri.route = r.Pattern
			}
			h(w, r)
		}))
	}

	handle("GET /healthz", s.handleHealthz)
	handle("GET /readyz", s.handleReadyz)

	handle("GET /v1/videos/{uid}/downloads", s.portalEdges(s.handleListDownloads))
	handle("POST /v1/videos/{uid}/links", s.portalEdges(s.handleCreateLink))
	// GET patterns match HEAD too.
	handle("GET /v1/videos/{uid}/downloads/{file}", s.downloadEdges(true, s.handleAuthDownload))
	handle("GET /dl/{grant}/{file}", s.downloadEdges(false, s.handleLinkDownload))

	handle("GET /v1/me/usage", s.portalEdges(s.handleUsage))

	// No route matched: a known path under another method is 405 with Allow.
	handle("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, methodNotAllowed(mux, r))
	})
	return mux
}
