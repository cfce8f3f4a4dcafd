package usage

import "context"

// CheckLink returns [ErrLinkRevoked] when l was revoked (by its ID, or by a
// revocation of user, or of user and video, made after it was issued), and nil
// otherwise, changing nothing. It is for requests that open no delivery (HEAD):
// [Ledger.Open] makes the same check in the transaction that opens one.
func (s *store) CheckLink(ctx context.Context, user, video string, l Link) error {
	if l.ID == "" {
		return nil
	}
	sqlTx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = sqlTx.Rollback() }()
	return tx{tx: sqlTx, s: s, ctx: ctx}.checkLink(OpenRequest{User: user, Video: video, Link: l})
}
