package proxy

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// handleHealthz answers as long as the process serves HTTP.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// readinessTTL is how long a readiness answer is reused: the Stream API limits
// requests per token, and a load balancer may probe every second.
const readinessTTL = 5 * time.Second

type readiness struct {
	// draining is set once the server is shutting down: /readyz answers 503
	// and new requests are refused from then on.
	draining atomic.Bool

	mu     sync.Mutex
	at     time.Time
	status int
	checks map[string]string
}

// Drain starts the shutdown: from now on /readyz answers 503, so the load
// balancer takes the replica out, and every new request except the probes is
// refused with 503 and Connection: close, so clients retry elsewhere. Requests
// already running go on.
func (s *Server) Drain() { s.ready.draining.Store(true) }

// Draining reports whether Drain was called.
func (s *Server) Draining() bool { return s.ready.draining.Load() }

// handleReadyz checks that the Stream API and the ledger answer.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) error {
	if s.Draining() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{
			"status": "draining", "checks": map[string]string{"shutdown": "draining"},
		})
		return nil
	}
	s.ready.mu.Lock()
	defer s.ready.mu.Unlock()
	if now := time.Now(); s.ready.checks == nil || now.Sub(s.ready.at) >= readinessTTL {
		s.ready.status, s.ready.checks = s.runChecks(r.Context())
		s.ready.at = now
	}
	writeJSON(w, s.ready.status, map[string]any{"status": http.StatusText(s.ready.status), "checks": s.ready.checks})
	return nil
}

// refuseWhileDraining refuses every request but the health probes once the
// server drains: a download that started now might not finish within the
// grace period, and the load balancer has another replica.
func (s *Server) refuseWhileDraining(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Draining() && r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
			handler(func(http.ResponseWriter, *http.Request) error {
				return refused(http.StatusServiceUnavailable, "shutting_down",
					"this server is shutting down; retry, another one will answer",
					http.Header{"Connection": {"close"}, "Retry-After": {"1"}})
			}).ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) runChecks(ctx context.Context) (int, map[string]string) {
	// The answer is cached for every prober: a prober that hangs up must not
	// make it a failure.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	checks := map[string]string{"config": "ok"}
	status := http.StatusOK
	for name, check := range s.Checks {
		checks[name] = "ok"
		if err := check(ctx); err != nil {
			checks[name] = "unavailable"
			status = http.StatusServiceUnavailable
			s.log.Warn("not ready", zap.String("check", name), errField(err))
		}
	}
	return status, checks
}
