package proxy

import (
	"context"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/streamgate/streamgate/auth"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/usage"
)

// LinkRevoker keeps link revocations where every replica's ledger reads them
// ([usage.Revoker]).
type LinkRevoker interface {
	RevokeLinks(ctx context.Context, user, video string, before time.Time) error
	RevokeLink(ctx context.Context, id string, until time.Time) error
}

var _ LinkRevoker = usage.Revoker(nil)

// revokeKeep is how long past link_ttl a link revoked by its ID stays revoked:
// the ID alone does not say when its link expires, and a margin covers links
// made while link_ttl was longer.
const revokeKeep = 24 * time.Hour

type revokeRequest struct {
	User   string `json:"user"`
	Video  string `json:"video"`
	LinkID string `json:"link_id"`
}

type revokeResponse struct {
	// Revoked is "user", "user_video" or "link".
	Revoked string `json:"revoked"`
	User    string `json:"user,omitempty"`
	Video   string `json:"video,omitempty"`
	LinkID  string `json:"link_id,omitempty"`
	// IssuedBefore: the user's links issued before it are refused, links
	// issued from it on work (a whole second: links carry their issue time to
	// the second).
	IssuedBefore string `json:"issued_before,omitempty"`
	// Until is how long the revocation of a link ID is kept.
	Until string `json:"until,omitempty"`
}

// AdminLinks is the admin API's POST /v1/admin/links/revoke, for the admin
// listener to mount behind its token; it is never on the public routes. With
// {"user": U} it revokes every link of U issued before now, with {"user": U,
// "video": V} those of U for V, with {"link_id": ID} one link (the id a link
// request answered with). The revocation is written to the ledger, which every
// replica reads when a link's request opens.
func (s *Server) AdminLinks(rv LinkRevoker) http.Handler {
	return handler(func(w http.ResponseWriter, r *http.Request) error {
		if !isJSON(r.Header.Get("Content-Type")) {
			return refused(http.StatusUnsupportedMediaType, "bad_content_type", "the body must be application/json", nil)
		}
		var req revokeRequest
		if err := decodeJSON(r, &req); err != nil {
			return err
		}
		resp, err := s.revoke(r.Context(), rv, req)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, resp)
		return nil
	})
}

// revoke checks req and writes its revocation.
func (s *Server) revoke(ctx context.Context, rv LinkRevoker, req revokeRequest) (revokeResponse, error) {
	now := s.now()
	switch {
	case req.LinkID != "" && (req.User != "" || req.Video != ""):
		return revokeResponse{}, badRequest("bad_revocation", "give either link_id, or user with an optional video, not both")
	case req.LinkID != "":
		if len(req.LinkID) > auth.MaxSessionLen || !stream.URLSafe(req.LinkID) {
			return revokeResponse{}, badRequest("bad_link_id", "link_id must be the id a link request answered with")
		}
		until := now.Add(s.cfg.LinkTTL + revokeKeep)
		if err := rv.RevokeLink(ctx, req.LinkID, until); err != nil {
			return revokeResponse{}, ledgerUnavailable("the revocation could not be recorded; retry", err)
		}
		s.log.Info("link revoked", zap.String("link_id", req.LinkID))
		return revokeResponse{Revoked: "link", LinkID: req.LinkID, Until: until.UTC().Format(time.RFC3339)}, nil
	case req.User == "":
		return revokeResponse{}, badRequest("bad_revocation", "give link_id, or user with an optional video")
	case len(req.User) > auth.MaxUserIDLen || !utf8.ValidString(req.User) || strings.IndexFunc(req.User, unicode.IsControl) >= 0:
		return revokeResponse{}, badRequest("bad_user", "user must be a user ID as the portal's tokens name it")
	case req.Video != "" && !stream.ValidUID(req.Video):
		return revokeResponse{}, errBadVideo()
	}
	if err := rv.RevokeLinks(ctx, req.User, req.Video, now); err != nil {
		return revokeResponse{}, ledgerUnavailable("the revocation could not be recorded; retry", err)
	}
	s.log.Info("links revoked", zap.String("user", req.User), zap.String("video", req.Video))
	resp := revokeResponse{Revoked: "user", User: req.User, Video: req.Video,
		IssuedBefore: usage.RevokedBefore(now).Format(time.RFC3339)}
	if req.Video != "" {
		resp.Revoked = "user_video"
	}
	return resp, nil
}
