package stream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cloudflare/cloudflare-go/v6/option"
	cfstream "github.com/cloudflare/cloudflare-go/v6/stream"
)

// KeyInfo is a signing key as Stream lists it: the key material is shown only
// once, when the key is created.
type KeyInfo struct {
	ID      string
	Created time.Time
}

// SigningKeys lists the account's signing keys (GET .../stream/keys), oldest
// first as Stream returns them.
func (c *Client) SigningKeys(ctx context.Context) ([]KeyInfo, error) {
	const op = "list signing keys"
	var p cfstream.KeyGetParams
	p.AccountID.Value, p.AccountID.Present = c.account, true
	var res *http.Response
	page, err := c.api.Keys.Get(ctx, p, option.WithResponseInto(&res))
	if err != nil {
		return nil, failed(op, err, res)
	}
	keys := make([]KeyInfo, 0, len(page.Result))
	for _, k := range page.Result {
		if k.ID == "" {
			return nil, fmt.Errorf("stream: %s: a key without id", op)
		}
		keys = append(keys, KeyInfo{ID: k.ID, Created: k.Created})
	}
	return keys, nil
}

// RevokeSigningKey deletes the signing key id (DELETE .../stream/keys/{id}):
// every token signed with it stops working at once. An unknown id matches
// ErrNotFound.
func (c *Client) RevokeSigningKey(ctx context.Context, id string) error {
	op := "revoke signing key " + id
	if id == "" || !validPathSegment(id) {
		// The value is not echoed: a key in the wrong place would reach the logs.
		return errors.New("stream: revoke signing key: invalid key id: want letters, digits, '-' and '_' only")
	}
	var p cfstream.KeyDeleteParams
	p.AccountID.Value, p.AccountID.Present = c.account, true
	var (
		res  *http.Response
		body []byte
	)
	// The body is taken raw, as for DeleteDownload: only the envelope's verdict
	// matters, and Stream's result string is not worth a typed decode.
	_, err := c.api.Keys.Delete(ctx, id, p, option.WithResponseInto(&res), option.WithResponseBodyInto(&body))
	if err != nil {
		return failed(op, err, res)
	}
	if _, err := parseEnvelope(res, body); err != nil {
		return fmt.Errorf("stream: %s: %w", op, err)
	}
	return nil
}
