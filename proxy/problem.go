package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// Error is a failure with the status and the public message a client sees. Cause is
// logged and never sent.
type Error struct {
	Status int
	// Type is a short machine-readable reason, sent as the problem type
	// ("urn:streamgate:problem:TYPE").
	Type   string
	Detail string
	Cause  error
	// Extra members of the problem body (quota figures, percentComplete, ...).
	Extra map[string]any
	// Header is set on the response before the body (Retry-After, WWW-Authenticate).
	Header http.Header
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Status, e.Type, e.Detail, e.Cause)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Detail)
}

func (e *Error) Unwrap() error { return e.Cause }

func errorf(status int, typ, format string, args ...any) *Error {
	return &Error{Status: status, Type: typ, Detail: fmt.Sprintf(format, args...)}
}

// problem is the RFC 9457 body every error response carries.
type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// writeError answers with err as a problem body. An error that is not an *Error is
// an internal failure: the client sees a generic 500 and the cause is logged.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var pe *Error
	if !errors.As(err, &pe) {
		pe = &Error{Status: http.StatusInternalServerError, Type: "internal", Detail: "internal error", Cause: err}
	}
	info := infoFrom(r.Context())
	if info != nil {
		info.err = pe
	}
	for k, vs := range pe.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	body := map[string]any{}
	for k, v := range pe.Extra {
		body[k] = v
	}
	p := problem{
		Type:   "urn:streamgate:problem:" + pe.Type,
		Title:  http.StatusText(pe.Status),
		Status: pe.Status,
		Detail: pe.Detail,
	}
	if info != nil {
		p.RequestID = info.id
	}
	body["type"], body["title"], body["status"] = p.Type, p.Title, p.Status
	if p.Detail != "" {
		body["detail"] = p.Detail
	}
	if p.RequestID != "" {
		body["request_id"] = p.RequestID
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Del("Content-Length")
	w.Header().Del("Content-Range")
	w.Header().Del("Content-Disposition")
	w.WriteHeader(pe.Status)
	if r.Method != http.MethodHead {
		_ = json.NewEncoder(w).Encode(body)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func retryAfter(d time.Duration) http.Header {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return http.Header{"Retry-After": {strconv.FormatInt(s, 10)}}
}

func errField(err error) zap.Field { return zap.String("error", redactText(err.Error())) }
