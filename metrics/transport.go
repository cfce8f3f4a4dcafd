package metrics

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

// StreamAPITransport returns base (http.DefaultTransport when nil) counting
// every call into streamgate_stream_api_calls_total. It sits under the SDK's
// retries, so each attempt counts: that is what Stream's rate limit counts too.
// Give it to stream.ClientConfig.HTTPClient.
func (m *Metrics) StreamAPITransport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	if m == nil {
		return base
	}
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		res, err := base.RoundTrip(r)
		m.StreamAPICall(apiOperation(r.Method, r.URL.Path), apiOutcome(res, err))
		return res, err
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// apiOperation names a Stream API call from its method and path
// (.../accounts/ID/stream/...), never from IDs, so the label stays bounded.
func apiOperation(method, path string) string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	rest := []string(nil)
	for i := 0; i+2 < len(segs); i++ {
		if segs[i] == "accounts" && segs[i+2] == "stream" {
			rest = segs[i+3:]
			break
		}
	}
	if rest == nil {
		return "other"
	}
	switch {
	case len(rest) == 0 && method == http.MethodGet:
		return "list_videos"
	case len(rest) == 1 && rest[0] == "keys" && method == http.MethodGet:
		return "list_keys"
	case len(rest) == 1 && rest[0] == "keys" && method == http.MethodPost:
		return "create_key"
	case len(rest) == 2 && rest[0] == "keys" && method == http.MethodDelete:
		return "revoke_key"
	case len(rest) == 1 && method == http.MethodGet:
		return "video"
	case len(rest) >= 2 && rest[1] == "downloads":
		switch method {
		case http.MethodGet:
			return "downloads"
		case http.MethodPost:
			return "enable_download"
		case http.MethodDelete:
			return "delete_download"
		}
	}
	return "other"
}

// apiOutcome classifies an API answer: ok, denied (401, 403), not_found,
// rate_limited, client_error (other 4xx), server_error (5xx), timeout,
// canceled (the caller gave up) or error (no answer).
func apiOutcome(res *http.Response, err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case err != nil || res == nil:
		return "error"
	case res.StatusCode < 400:
		return "ok"
	case res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden:
		return "denied"
	case res.StatusCode == http.StatusNotFound:
		return "not_found"
	case res.StatusCode == http.StatusTooManyRequests:
		return "rate_limited"
	case res.StatusCode < 500:
		return "client_error"
	default:
		return "server_error"
	}
}
