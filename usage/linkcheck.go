package usage

import "context"

// CheckLink returns [ErrLinkRevoked] when l was revoked (by its ID, or by a
// revocation of user, or of user and video, made after it was issued), and nil
// otherwise, changing nothing. It is for requests that open no delivery (HEAD):
// [Ledger.Open] makes the same check in the transaction that opens one. It is
// one read outside any transaction, so it never waits for SQLite's writer.
func (s *store) CheckLink(ctx context.Context, user, video string, l Link) error {
	if l.ID == "" {
		return nil
	}
	return linkRevoked(s.db.QueryRowContext(ctx, s.q(linkRevokedQuery), user, video, l.issued(), l.ID))
}
