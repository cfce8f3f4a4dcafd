package proxy

import "net/http"

// routes is the whole HTTP surface.
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

	handle("GET /v1/videos/{uid}/downloads", s.handleListDownloads)
	handle("POST /v1/videos/{uid}/links", s.handleCreateLink)
	// GET patterns match HEAD too.
	handle("GET /v1/videos/{uid}/downloads/{file}", s.handleAuthDownload)
	handle("GET /dl/{grant}/{file}", s.handleLinkDownload)

	handle("GET /v1/me/usage", s.handleUsage)

	handle("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, errorf(http.StatusNotFound, "not_found", "no such route"))
	})
	return mux
}
