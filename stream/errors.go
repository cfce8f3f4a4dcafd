package stream

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Sentinels that callers branch on. An *APIError matches them with errors.Is.
var (
	// ErrNotFound: the video (or the download, or the key) does not exist (HTTP 404).
	ErrNotFound = errors.New("stream: not found")
	// ErrUnauthorized: the API token is invalid, expired or lacks Stream permission
	// for the account (HTTP 401 or 403).
	ErrUnauthorized = errors.New("stream: unauthorized")
	// ErrRateLimited: the API token is over Stream's rate limit (HTTP 429).
	// APIError.RetryAfter says how long Stream asked to wait.
	ErrRateLimited = errors.New("stream: rate limited")
	// ErrNotReady: the video is not ready to stream, so downloads cannot be enabled
	// yet and its duration is not final.
	ErrNotReady = errors.New("stream: video not ready")
	// ErrDownloadFailed: Stream reported status "error" for a download.
	ErrDownloadFailed = errors.New("stream: download generation failed")
)

// APIError is a failed Stream API call: the HTTP status and the first error of
// the response envelope. It never holds the API token, the request or its headers.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is Stream's error code from the envelope; 0 when there was none.
	Code int
	// Message is Stream's error message (several are joined with "; "); the HTTP
	// status text when the envelope had none.
	Message string
	// RetryAfter is the wait Stream asked for with Retry-After; 0 when absent.
	RetryAfter time.Duration

	// notReady is set when the failure was traced to a video not ready to stream.
	notReady bool
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cloudflare api: HTTP %d", e.Status)
	if e.Code != 0 {
		fmt.Fprintf(&b, " (code %d)", e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Is maps the status to the package's sentinels: 404 is ErrNotFound, 401 and 403
// are ErrUnauthorized, 429 is ErrRateLimited, and a refusal traced to a video that
// is not ready to stream is ErrNotReady.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
	case ErrRateLimited:
		return e.Status == http.StatusTooManyRequests
	case ErrNotReady:
		return e.notReady
	}
	return false
}

// Temporary reports whether the same call may succeed later unchanged: rate
// limits and server-side failures.
func (e *APIError) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// errorMessage is one entry of the envelope's errors array.
type errorMessage struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// newAPIError builds an APIError from a status, the response headers (for
// Retry-After) and the envelope's errors.
func newAPIError(status int, h http.Header, errs []errorMessage, now time.Time) *APIError {
	e := &APIError{Status: status}
	var msgs []string
	for _, m := range errs {
		if e.Code == 0 && m.Code != 0 {
			e.Code = m.Code
		}
		if m.Message != "" {
			msgs = append(msgs, m.Message)
		}
	}
	e.Message = strings.Join(msgs, "; ")
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	if h != nil {
		if d, ok := retryAfter(h, now); ok {
			e.RetryAfter = d
		}
	}
	e.notReady = looksNotReady(status, e.Message)
	return e
}

// looksNotReady reads a client error's message for the one refusal Stream gives
// when downloads are asked of a video still processing. The exact wording is
// undocumented, so EnableDownload also confirms with the video's readyToStream.
func looksNotReady(status int, msg string) bool {
	if status < 400 || status >= 500 || status == http.StatusNotFound ||
		status == http.StatusUnauthorized || status == http.StatusForbidden ||
		status == http.StatusTooManyRequests {
		return false
	}
	m := strings.ToLower(msg)
	return strings.Contains(m, "not ready") || strings.Contains(m, "readytostream") ||
		strings.Contains(m, "ready to stream") || strings.Contains(m, "still processing")
}

// retryAfter parses Retry-After (seconds or an HTTP date) relative to now.
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now)), true
	}
	return 0, false
}
