package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/streamgate/streamgate/metrics"
)

// adminServer is the operators' listener, kept off the public port: /metrics for
// Prometheus, open to whoever reaches the listener (bind it to a private
// address), and the admin API, whose routes all require admin.token as a bearer
// token. It answers with JSON problem bodies like the public routes.
type adminServer struct {
	mux *http.ServeMux
	hs  *http.Server
	log *zap.Logger
	// tokenHash is SHA-256 of admin.token; nil when no token is set, which
	// turns the admin API off (every protected route answers 403).
	tokenHash []byte
}

// adminOptions configures newAdmin.
type adminOptions struct {
	// Token is the admin API's bearer token (admin.token); empty turns the
	// admin API off.
	Token []byte
	// Log receives refused admin calls and server errors. Default zap.NewNop().
	Log *zap.Logger
}

// newAdmin builds the admin server: /metrics from m, and the protected routes
// later added with Handle.
func newAdmin(m *metrics.Metrics, opts adminOptions) *adminServer {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	a := &adminServer{mux: http.NewServeMux(), log: opts.Log}
	if len(opts.Token) > 0 {
		h := sha256.Sum256(opts.Token)
		a.tokenHash = h[:]
	}
	a.mux.Handle("GET /metrics", m.Handler())
	// Go's profiles, for operators measuring a live replica. They carry no
	// request data but do reveal the code's layout and load, so they sit
	// behind the admin token like the rest of the admin API.
	a.Handle("GET /debug/pprof/", http.HandlerFunc(pprof.Index))
	a.Handle("GET /debug/pprof/profile", http.HandlerFunc(pprof.Profile))
	a.Handle("GET /debug/pprof/trace", http.HandlerFunc(pprof.Trace))
	a.Handle("GET /debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, http.StatusNotFound, "not_found", "no such admin route", nil)
	})
	a.hs = &http.Server{
		Handler:           a.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// Admin answers are small, so a whole-response deadline is safe here,
		// unlike on the download routes.
		WriteTimeout:   30 * time.Second,
		IdleTimeout:    60 * time.Second,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       zap.NewStdLog(opts.Log.Named("admin_http")),
	}
	return a
}

// Handle adds an admin API route that requires the bearer token. pattern is a
// ServeMux pattern, e.g. "POST /v1/admin/links/revoke".
func (a *adminServer) Handle(pattern string, h http.Handler) {
	a.mux.Handle(pattern, a.requireToken(h))
}

// ServeHTTP serves the admin routes; tests and other listeners can use it directly.
func (a *adminServer) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// Serve answers on ln until Shutdown, then returns nil.
func (a *adminServer) Serve(ln net.Listener) error {
	a.log.Info("admin listening", zap.String("addr", ln.Addr().String()))
	if err := a.hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops the admin server, letting answers in progress finish until
// ctx ends. The gateway shuts it down after the public server has drained, so
// a scrape during the drain still sees the last downloads settle.
func (a *adminServer) Shutdown(ctx context.Context) error {
	if err := a.hs.Shutdown(ctx); err != nil {
		_ = a.hs.Close()
		return err
	}
	return nil
}

// requireToken lets a request through only with "Authorization: Bearer TOKEN"
// matching admin.token, compared in constant time.
func (a *adminServer) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.tokenHash == nil {
			writeProblem(w, r, http.StatusForbidden, "admin_disabled",
				"the admin API is off: set admin.token to turn it on", nil)
			return
		}
		tok, ok := bearerToken(r.Header.Get("Authorization"))
		if !ok {
			writeProblem(w, r, http.StatusUnauthorized, "unauthorized",
				"send the admin token as Authorization: Bearer TOKEN",
				http.Header{"WWW-Authenticate": {`Bearer realm="streamgate-admin"`}})
			return
		}
		got := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(got[:], a.tokenHash) != 1 {
			a.log.Warn("admin call with a wrong token",
				zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
			writeProblem(w, r, http.StatusUnauthorized, "unauthorized", "the admin token is not valid",
				http.Header{"WWW-Authenticate": {`Bearer realm="streamgate-admin", error="invalid_token"`}})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearerToken is the token of an Authorization header of the Bearer scheme
// (the scheme's name is case-insensitive).
func bearerToken(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// writeProblem writes a JSON problem body in the public routes' format
// (type urn:streamgate:problem:TYPE, title, status, detail).
func writeProblem(w http.ResponseWriter, r *http.Request, status int, typ, detail string, h http.Header) {
	for k, vs := range h {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type":   "urn:streamgate:problem:" + typ,
		"title":  http.StatusText(status),
		"status": status,
		"detail": detail,
	})
}
