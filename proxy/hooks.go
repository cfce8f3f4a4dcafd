package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"

	"go.uber.org/zap"

	"github.com/streamgate/streamgate/stream"
)

// WebhookVerifier checks a Stream webhook's signature, age and novelty, and
// reads its body ([stream.WebhookVerifier]).
type WebhookVerifier interface {
	Verify(ctx context.Context, header string, body []byte) (stream.VideoEvent, error)
}

// DownloadEnabler asks Stream to generate a video's download of one type
// ([stream.Client]).
type DownloadEnabler interface {
	EnableDownload(ctx context.Context, uid string, t stream.DownloadType) (stream.Download, error)
}

var (
	_ WebhookVerifier = (*stream.WebhookVerifier)(nil)
	_ DownloadEnabler = (*stream.Client)(nil)
)

// maxWebhookBody bounds a webhook's body: a video's details are a few KiB.
const maxWebhookBody = 64 << 10

// hookResponse is the answer to an accepted webhook.
type hookResponse struct {
	Video string `json:"video"`
	// Enabled are the download types asked for; none when the video is not
	// ready or auto_enable is empty.
	Enabled []string `json:"enabled"`
}

// handleStreamHook serves POST /hooks/stream: Stream's video webhook. Nothing
// is done unless the signature verifies, is recent and was not seen before;
// then, for a video that is ready, the download types of AutoEnable are
// enabled through the API. The webhook carries no portal credential: its
// signature is its only one.
func (s *Server) handleStreamHook(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return refused(http.StatusRequestEntityTooLarge, "body_too_large", "the webhook body is larger than the gateway reads", nil)
		}
		return clientGone(err)
	}
	ev, err := s.Webhooks.Verify(r.Context(), r.Header.Get(stream.WebhookSignatureHeader), body)
	if err != nil {
		return s.webhookRefused(r, err)
	}
	infoFrom(r.Context()).video = ev.UID
	res := hookResponse{Video: ev.UID, Enabled: []string{}}
	if ev.Ready() {
		for _, t := range s.cfg.AutoEnable {
			if _, err := s.Enabler.EnableDownload(r.Context(), ev.UID, t); err != nil {
				return upstreamFailure(r.Context(), streamAPI, err)
			}
			res.Enabled = append(res.Enabled, string(t))
		}
		if len(res.Enabled) > 0 {
			s.log.Info("downloads enabled", zap.String("request_id", infoFrom(r.Context()).id),
				zap.String("video", ev.UID), zap.Strings("types", res.Enabled))
		}
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// webhookRefused maps a verification failure: a signature that does not
// verify is 401, a stale or replayed one 400, a full replay cache 503 (retry
// later), a body that is not a video event 400. A failure spends a token of
// the client address's bucket, as a failed portal credential does.
func (s *Server) webhookRefused(r *http.Request, err error) error {
	if pe := s.ipLimited(r, err); pe != nil {
		return pe
	}
	var pe *Error
	switch {
	case errors.Is(err, stream.ErrWebhookSignature):
		pe = unauthorized("the webhook signature is missing or does not verify", nil, err)
	case errors.Is(err, stream.ErrWebhookExpired):
		pe = badRequest("webhook_expired", "the webhook's signed time is too old or too far ahead")
	case errors.Is(err, stream.ErrWebhookReplay):
		pe = badRequest("webhook_replayed", "this webhook was received before")
	case errors.Is(err, stream.ErrReplayCacheFull):
		pe = refused(http.StatusServiceUnavailable, "webhook_busy", "too many webhooks at once; retry later", retryAfter(0))
	default:
		pe = badRequest("bad_body", "the webhook body is not a video event")
	}
	pe.Cause = err
	return pe
}
