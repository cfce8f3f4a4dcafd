package proxy

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Refusal is what refused one request, kept so that an operator can answer
// "why was this refused?" from its request ID (the X-Request-ID header and the
// problem body's request_id). It never holds a credential: no portal token,
// grant or Stream token, and the route pattern rather than the path.
type Refusal struct {
	RequestID string    `json:"request_id"`
	At        time.Time `json:"at"`
	Status    int       `json:"status"`
	// Type is the problem type, the rule that refused: quota_exceeded,
	// rate_limited, too_many_downloads, country_denied, unauthorized, ...
	Type string `json:"type"`
	// Reason is the policy that refused (quota, rate, concurrency, country,
	// auth); "" for a refusal of the request itself (bad input, a video not
	// ready).
	Reason   string `json:"reason,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Method   string `json:"method"`
	Route    string `json:"route"`
	User     string `json:"user,omitempty"`
	Video    string `json:"video,omitempty"`
	Country  string `json:"country,omitempty"`
	ClientIP string `json:"client_ip,omitempty"`
	// Figures are the numbers at that moment: the problem body's members
	// (minutes_remaining, minutes_needed, ... for a quota), the rate limit's
	// retry_after_seconds and rate_limit headers, a cap's limit.
	Figures map[string]any `json:"figures,omitempty"`
}

// RefusalStore keeps refusals for a bounded time. Put must not hold the
// request: a store that writes over the network does it in the background.
type RefusalStore interface {
	Put(r Refusal)
}

// refusal builds the record of a request answered with the problem pe.
func refusal(r *http.Request, ri *requestInfo, pe *Error, h http.Header, at time.Time) Refusal {
	rf := Refusal{
		RequestID: ri.id,
		At:        at.UTC(),
		Status:    pe.Status,
		Type:      pe.Type,
		Reason:    refusalReason(pe.Type),
		Detail:    pe.Detail,
		Method:    r.Method,
		Route:     ri.route,
		User:      ri.user,
		Video:     ri.video,
		Country:   ri.country,
		ClientIP:  addrString(ri.clientIP),
		Figures:   refusalFigures(pe.Extra, h),
	}
	return rf
}

// refusalFigures are the figures of a refusal: the problem's extra members
// (numbers, booleans and short texts only, so nothing large or secret is
// kept) and the rate limit's answer headers.
func refusalFigures(extra map[string]any, h http.Header) map[string]any {
	f := map[string]any{}
	for k, v := range extra {
		switch v := v.(type) {
		case int, int64, float64, bool:
			f[k] = v
		case string:
			if len(v) <= 64 {
				f[k] = redactText(v)
			}
		}
	}
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil {
		f["retry_after_seconds"] = s
	}
	if v := h.Get("RateLimit"); v != "" {
		f["rate_limit"] = v
	}
	if v := h.Get("RateLimit-Policy"); v != "" {
		f["rate_limit_policy"] = v
	}
	if len(f) == 0 {
		return nil
	}
	return f
}

// keepRefusal says which answers are refusals worth keeping: a client error
// (4xx) of a route. A 499 is the client leaving; unrouted requests (no such
// path, malformed framing) say nothing about a user.
func keepRefusal(ri *requestInfo, status int) bool {
	return ri.err != nil && status >= 400 && status < 500 && status != 499 &&
		ri.route != "" && ri.route != "/"
}

// MemoryRefusals keeps the last refusals in this process: at most a fixed
// number of them, each for ttl. Without Redis each replica keeps its own.
type MemoryRefusals struct {
	ttl time.Duration
	now func() time.Time

	mu   sync.Mutex
	byID map[string]*memRefusal
	ring []*memRefusal // in arrival order; the oldest is overwritten
	next int
}

type memRefusal struct {
	r    Refusal
	kept time.Time
}

// NewMemoryRefusals returns a store of at most n refusals kept for ttl;
// now is its clock (nil: time.Now).
func NewMemoryRefusals(n int, ttl time.Duration, now func() time.Time) *MemoryRefusals {
	if now == nil {
		now = time.Now
	}
	n = max(n, 1)
	return &MemoryRefusals{ttl: ttl, now: now, byID: map[string]*memRefusal{}, ring: make([]*memRefusal, n)}
}

// Put keeps r, forgetting the oldest refusal when the store is full. A later
// refusal with the same request ID replaces the earlier one.
func (m *MemoryRefusals) Put(r Refusal) {
	e := &memRefusal{r: r, kept: m.now()}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.ring[m.next]; old != nil && m.byID[old.r.RequestID] == old {
		delete(m.byID, old.r.RequestID)
	}
	m.ring[m.next] = e
	m.next = (m.next + 1) % len(m.ring)
	m.byID[r.RequestID] = e
}

// Get returns the refusal of request ID id, if it is still kept.
func (m *MemoryRefusals) Get(_ context.Context, id string) (Refusal, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.byID[id]
	if !ok || m.now().Sub(e.kept) >= m.ttl {
		return Refusal{}, false, nil
	}
	return e.r, true, nil
}

var _ RefusalStore = (*MemoryRefusals)(nil)
