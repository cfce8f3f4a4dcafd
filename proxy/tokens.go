package proxy

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/streamgate/streamgate/stream"
)

// linkTokens mints the Stream tokens of direct-mode links. Such a token names
// no user: its claims are the video, the access rules and the times. So every
// link with the same video, type and rules whose expiry falls in one bucket
// gets one token, and an RSA signature is paid once per bucket rather than
// once per link.
//
// A link's expiry is rounded up to the end of its bucket (on a grid of Unix
// time, so every replica draws the same buckets), and its nbf is the earliest
// any link of the bucket may need, so the claims depend on the key alone: the
// signature being deterministic (RS256), replicas mint the very same token. A
// token thus lives up to one bucket longer than the link's TTL, never more
// than Stream's 24 hours (a link that rounding would take past them gets a
// token of its own).
type linkTokens struct {
	signer TokenSigner
	ttl    time.Duration // the links' TTL
	bucket time.Duration
	max    int // entries held at most; 0 caches nothing

	mu      sync.Mutex
	entries map[linkTokenKey]cachedToken
}

// linkTokenKey is what a direct link's token depends on.
type linkTokenKey struct {
	video string
	typ   stream.DownloadType
	rules string // the access rules as JSON
	end   int64  // the bucket's end, Unix seconds
}

// maxLinkTokens bounds the cache; past it, tokens of buckets no new link can
// fall in go, and if none can, the new token is not kept.
const maxLinkTokens = 10000

func newLinkTokens(s TokenSigner, ttl time.Duration, max int) *linkTokens {
	return &linkTokens{signer: s, ttl: ttl, bucket: linkBucket(ttl), max: max, entries: map[linkTokenKey]cachedToken{}}
}

// linkBucket is the width of an expiry bucket for links living ttl: a
// sixteenth of it in whole seconds, at least one second. A link then outlives
// its TTL by at most about 6%.
func linkBucket(ttl time.Duration) time.Duration {
	return max((ttl / 16).Truncate(time.Second), time.Second)
}

// token returns the token for a link of video, type typ and rules that must
// be valid until exp, asked for at now, and when the token expires (exp or
// up to one bucket later).
func (c *linkTokens) token(video string, typ stream.DownloadType, rules []stream.AccessRule, exp, now time.Time) (string, time.Time, error) {
	rk, err := json.Marshal(rules)
	if err != nil {
		return "", time.Time{}, err
	}
	b := int64(c.bucket / time.Second)
	end := (exp.Unix() + b - 1) / b * b
	key := linkTokenKey{video: video, typ: typ, rules: string(rk), end: end}
	// Every link of the bucket was asked for after the bucket's earliest
	// expiry less the TTL; nbf is before that, and before any clock skew.
	nbf := time.Unix(end-b, 0).Add(-c.ttl - nbfSkew)
	expires := time.Unix(end, 0)
	if expires.Sub(now) > stream.MaxTokenLifetime {
		// Rounding up would pass Stream's limit: this link gets a token of
		// its own, exactly as asked (which Mint refuses if exp is past it).
		tok, err := c.signer.Mint(stream.Claims{
			Video: video, NotBefore: now.Add(-nbfSkew), ExpiresAt: exp, Downloadable: true, AccessRules: rules,
		}, now)
		return tok, exp, err
	}

	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok {
		return e.token, e.expires, nil
	}
	tok, err := c.signer.Mint(stream.Claims{
		Video: video, NotBefore: nbf, ExpiresAt: expires, Downloadable: true, AccessRules: rules,
	}, now)
	if err != nil {
		return "", time.Time{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		c.sweep(now)
	}
	if len(c.entries) < c.max {
		c.entries[key] = cachedToken{token: tok, expires: expires}
	}
	return tok, expires, nil
}

// sweep drops the tokens of buckets no new link can fall in: those ending
// before a link asked for now would expire. The caller holds c.mu.
func (c *linkTokens) sweep(now time.Time) {
	earliest := now.Add(c.ttl).Unix()
	for k := range c.entries {
		if k.end < earliest {
			delete(c.entries, k)
		}
	}
}

// size is the number of tokens held.
func (c *linkTokens) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
