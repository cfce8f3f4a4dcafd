package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/streamgate/streamgate/stream"
)

// tokenCache reuses a minted Stream token for identical claims while it is well
// inside its life (more than half left), so RSA signing is not paid per request.
type tokenCache struct {
	signer TokenSigner
	ttl    time.Duration
	now    func() time.Time
	// rec counts the hits; the signer counts its mints itself.
	rec Recorder

	mu      sync.Mutex
	entries map[string]cachedToken
}

type cachedToken struct {
	token   string
	expires time.Time
}

// maxCachedTokens bounds the cache; past it, expired and half-spent entries go.
const maxCachedTokens = 10000

// nbfSkew puts nbf a little in the past, for clocks that disagree with Stream's.
const nbfSkew = 30 * time.Second

func newTokenCache(s TokenSigner, ttl time.Duration, now func() time.Time, rec Recorder) *tokenCache {
	return &tokenCache{signer: s, ttl: ttl, now: now, rec: rec, entries: map[string]cachedToken{}}
}

func (c *tokenCache) token(video string, rules []stream.AccessRule) (string, error) {
	rk, err := json.Marshal(rules)
	if err != nil {
		return "", err
	}
	key := video + "|" + string(rk)
	now := c.now()
	c.mu.Lock()
	if e, ok := c.entries[key]; ok && e.expires.Sub(now) > c.ttl/2 {
		c.mu.Unlock()
		c.rec.TokenCacheHit()
		return e.token, nil
	}
	c.mu.Unlock()

	exp := now.Add(c.ttl)
	tok, err := c.signer.Mint(stream.Claims{
		Video:        video,
		NotBefore:    now.Add(-nbfSkew),
		ExpiresAt:    exp,
		Downloadable: true,
		AccessRules:  rules,
	}, now)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	if len(c.entries) >= maxCachedTokens {
		for k, e := range c.entries {
			if e.expires.Sub(now) <= c.ttl/2 {
				delete(c.entries, k)
			}
		}
	}
	if len(c.entries) < maxCachedTokens {
		c.entries[key] = cachedToken{token: tok, expires: exp}
	}
	c.mu.Unlock()
	return tok, nil
}

// videoCache keeps video details and download states briefly, and lets concurrent
// misses for one video share a single API call.
type videoCache struct {
	api StreamAPI
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*videoEntry
}

type videoInfo struct {
	Video     stream.Video
	Downloads stream.Downloads
}

// settled reports whether nothing about the video is still changing. A video
// with no download enabled is not: "not enabled" is asked about again soon, so
// a download enabled meanwhile is served promptly.
func (v videoInfo) settled() bool {
	if !v.Video.ReadyToStream || len(v.Downloads) == 0 {
		return false
	}
	for _, d := range v.Downloads {
		if d.Status != stream.DownloadReady {
			return false
		}
	}
	return true
}

type videoEntry struct {
	ready   chan struct{} // closed once info/err are set
	fetched time.Time
	info    videoInfo
	err     error
}

// negativeTTL is how long "no such video" is remembered.
const negativeTTL = 5 * time.Second

const maxCachedVideos = 10000

func newVideoCache(api StreamAPI, ttl time.Duration, now func() time.Time) *videoCache {
	return &videoCache{api: api, ttl: ttl, now: now, entries: map[string]*videoEntry{}}
}

func (c *videoCache) get(ctx context.Context, uid string) (videoInfo, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[uid]
	if ok {
		select {
		case <-e.ready:
			if c.fresh(e, now) {
				c.mu.Unlock()
				return e.info, e.err
			}
			ok = false
		default:
		}
	}
	if !ok {
		if len(c.entries) >= maxCachedVideos {
			c.sweep(now)
		}
		e = &videoEntry{ready: make(chan struct{})}
		c.entries[uid] = e
		c.mu.Unlock()
		// The fetch is not tied to one caller's context: others may wait on it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		e.info, e.err = c.fetch(fctx, uid)
		cancel()
		e.fetched = c.now()
		close(e.ready)
		if e.err != nil && !errors.Is(e.err, stream.ErrNotFound) {
			// Transient failures are not cached.
			c.mu.Lock()
			if c.entries[uid] == e {
				delete(c.entries, uid)
			}
			c.mu.Unlock()
		}
		return e.info, e.err
	}
	c.mu.Unlock()
	select {
	case <-e.ready:
		return e.info, e.err
	case <-ctx.Done():
		return videoInfo{}, ctx.Err()
	}
}

func (c *videoCache) fresh(e *videoEntry, now time.Time) bool {
	ttl := c.ttl
	if e.err != nil || !e.info.settled() {
		// Unknown videos and downloads still being generated are asked about
		// again soon, so a download that turns ready is served promptly.
		ttl = min(ttl, negativeTTL)
	}
	return now.Sub(e.fetched) < ttl
}

// sweep drops the stale entries; if that leaves the map full, it drops fetched
// ones until a tenth of it is free, so the map stays bounded whatever videos are
// asked for and a full scan is paid once per many misses (which entries go is
// left to map order: any is as good a choice).
func (c *videoCache) sweep(now time.Time) {
	for k, e := range c.entries {
		select {
		case <-e.ready:
			if !c.fresh(e, now) {
				delete(c.entries, k)
			}
		default:
		}
	}
	if len(c.entries) < maxCachedVideos {
		return
	}
	for k, e := range c.entries {
		if len(c.entries) <= maxCachedVideos*9/10 {
			return
		}
		select {
		case <-e.ready:
			delete(c.entries, k)
		default:
		}
	}
}

func (c *videoCache) fetch(ctx context.Context, uid string) (videoInfo, error) {
	v, err := c.api.Video(ctx, uid)
	if err != nil {
		return videoInfo{}, err
	}
	d, err := c.api.Downloads(ctx, uid)
	switch {
	case errors.Is(err, stream.ErrNotFound):
		// Stream may answer a video with no download enabled with NotFound
		// ("video or downloads not found") rather than {}. The video was just
		// found, so this is "none enabled": the gateway answers
		// download_not_enabled, and "no such video" is never cached for it.
		d = stream.Downloads{}
	case err != nil:
		return videoInfo{}, err
	}
	return videoInfo{Video: v, Downloads: d}, nil
}
