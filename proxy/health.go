package proxy

import (
	"context"
	"net/http"
	"sync"
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
	mu     sync.Mutex
	at     time.Time
	status int
	checks map[string]string
}

// handleReadyz checks that the Stream API and the ledger answer.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) error {
	s.ready.mu.Lock()
	defer s.ready.mu.Unlock()
	if now := time.Now(); s.ready.checks == nil || now.Sub(s.ready.at) >= readinessTTL {
		s.ready.status, s.ready.checks = s.runChecks(r.Context())
		s.ready.at = now
	}
	writeJSON(w, s.ready.status, map[string]any{"status": http.StatusText(s.ready.status), "checks": s.ready.checks})
	return nil
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
