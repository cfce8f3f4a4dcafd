package proxy

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/streamgate/streamgate/usage"
)

// handleUsage serves GET /v1/me/usage.
func (s *Server) handleUsage(w http.ResponseWriter, r *http.Request) error {
	id, err := s.authenticate(r)
	if err != nil {
		return err
	}
	name, plan := s.plan(id.Plan)
	u, err := s.Meter.Usage(r.Context(), id.UserID, name, plan.MinutesPerMonth)
	if err != nil {
		return ledgerUnavailable("usage could not be read; retry later", err)
	}
	writeJSON(w, http.StatusOK, usageBody(u))
	return nil
}

// quotaError is the refusal of a reservation: 403 with the usage figures and
// the minutes needed when the quota cannot cover it, else 503.
func (s *Server) quotaError(err error) error {
	var qe *usage.QuotaError
	if errors.As(err, &qe) {
		u := qe.Usage
		body := usageBody(u)
		body["minutes_needed"] = qe.Requested
		return forbidden("quota_exceeded",
			fmt.Sprintf("this download needs %.2f minutes and %.2f of the monthly quota remain", qe.Requested, u.MinutesRemaining),
			body)
	}
	return ledgerUnavailable("usage could not be recorded; retry later", err)
}

func usageBody(u usage.Usage) map[string]any {
	return map[string]any{
		"period":            u.Period,
		"plan":              u.Plan,
		"minutes_limit":     u.MinutesLimit,
		"minutes_used":      u.MinutesUsed,
		"minutes_reserved":  u.MinutesReserved,
		"minutes_remaining": u.MinutesRemaining,
		"stream_minutes":    u.StreamMinutes,
		"deliveries_open":   u.DeliveriesOpen,
	}
}
