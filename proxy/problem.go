package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/streamgate/streamgate/stream"
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

// The constructors below are the only ways an *Error is built: each names a kind
// of refusal, so a reader finds every status the gateway answers with here.

// badRequest is a 400 for a request the gateway cannot act on.
func badRequest(typ, detail string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: typ, Detail: detail}
}

// forbidden is a 403: the caller is known, the request is not allowed.
func forbidden(typ, detail string, extra map[string]any) *Error {
	return &Error{Status: http.StatusForbidden, Type: typ, Detail: detail, Extra: extra}
}

// notReady is a 409: the video or its download cannot be served yet.
func notReady(typ, detail string, extra map[string]any) *Error {
	return &Error{Status: http.StatusConflict, Type: typ, Detail: detail, Extra: extra}
}

// tooMany is a 429; h carries Retry-After or the limiter's headers.
func tooMany(typ, detail string, h http.Header, cause error) *Error {
	return &Error{Status: http.StatusTooManyRequests, Type: typ, Detail: detail, Header: h, Cause: cause}
}

// refused is any other status with a fixed header set (405 Allow, 301 Location,
// 400 Connection: close, 416).
func refused(status int, typ, detail string, h http.Header) *Error {
	return &Error{Status: status, Type: typ, Detail: detail, Header: h}
}

// internal is a 500 whose cause only the log sees.
func internal(cause error) *Error {
	return &Error{Status: http.StatusInternalServerError, Type: "internal", Detail: "internal error", Cause: cause}
}

// clientGone is not an error of the gateway: the status 499 is for the log only.
func clientGone(cause error) *Error {
	return &Error{Status: 499, Type: "client_gone", Detail: "client closed the request", Cause: cause}
}

// ledgerUnavailable is a 503: the ledger did not answer, nothing was decided.
func ledgerUnavailable(detail string, cause error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: "ledger_unavailable", Detail: detail, Cause: cause}
}

func errBadVideo() *Error {
	return badRequest("bad_video", "the video ID must be 32 lowercase hexadecimal characters")
}

func errBadType() *Error {
	return badRequest("bad_type", "the file must be default.mp4 or audio.m4a")
}

func errBadFilename() *Error {
	return badRequest("bad_filename", fmt.Sprintf(
		"filename must be 1 to %d characters of A-Z, a-z, 0-9, '-' and '_'; the extension is added", stream.MaxFilenameLen))
}

func errCrossSite() *Error {
	return forbidden("cross_site", "a request from another site cannot use the portal's cookie", nil)
}

// upstreamService names the Stream service a failed call went to, in the words a
// client reads, and the problem type of its failures that have no better name.
type upstreamService struct {
	name, failedType string
	// refusedType is the type of a refused connection; "" files it with the
	// other failures.
	refusedType string
}

var (
	streamAPI      = upstreamService{name: "the Stream API", failedType: "upstream_error"}
	streamDelivery = upstreamService{name: "the video delivery service", failedType: "upstream_failed", refusedType: "upstream_unavailable"}
)

// upstreamFailure maps a failed call to Stream on purpose, in one place: no
// such video or download 404, not ready 409, an answer refusing the request
// 502, the client gone 499 (not an error), a timeout 504, anything else 502.
// ctx is the request's.
func upstreamFailure(ctx context.Context, svc upstreamService, err error) *Error {
	var se statusError
	var ne net.Error
	switch {
	case errors.Is(err, stream.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Type: "video_not_found", Detail: "no such video", Cause: err}
	case errors.Is(err, stream.ErrNotReady):
		return &Error{Status: http.StatusConflict, Type: "video_not_ready", Detail: "the video is still processing", Cause: err}
	case errors.As(err, &se) && se.status == http.StatusNotFound:
		return &Error{Status: http.StatusNotFound, Type: "download_not_found", Detail: "Stream has no such download", Cause: err}
	case errors.As(err, &se):
		return &Error{Status: http.StatusBadGateway, Type: "upstream_refused", Detail: svc.name + " refused the request", Cause: err}
	case ctx.Err() != nil, errors.Is(err, context.Canceled):
		return clientGone(err)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return &Error{Status: http.StatusGatewayTimeout, Type: "upstream_timeout", Detail: svc.name + " did not answer in time", Cause: err}
	case svc.refusedType != "" && errors.Is(err, syscall.ECONNREFUSED):
		return &Error{Status: http.StatusBadGateway, Type: svc.refusedType, Detail: svc.name + " is unreachable", Cause: err}
	}
	return &Error{Status: http.StatusBadGateway, Type: svc.failedType, Detail: svc.name + " failed", Cause: err}
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
// Only the handler adapter (routes.go) calls it.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var pe *Error
	if !errors.As(err, &pe) {
		pe = internal(err)
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

// unauthorized is a 401; h carries WWW-Authenticate.
func unauthorized(detail string, h http.Header, cause error) *Error {
	return &Error{Status: http.StatusUnauthorized, Type: "unauthorized", Detail: detail, Header: h, Cause: cause}
}
