package stream

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// WebhookSignatureHeader is the header Stream signs its webhooks in:
// "time=T,sig1=HEX", where T is Unix seconds and HEX is the hex HMAC-SHA256 of
// "T." followed by the raw body, keyed with the webhook secret.
const WebhookSignatureHeader = "Webhook-Signature"

// Defaults of WebhookConfig.
const (
	DefaultWebhookMaxAge     = 5 * time.Minute
	DefaultWebhookMaxSkew    = time.Minute
	DefaultReplayCacheSize   = 10000
	maxWebhookSignatureBytes = 1024
)

// Webhook verification failures, for callers that count or log them apart. All
// of them mean: do not act on the body.
var (
	// ErrWebhookSignature: the header is missing or malformed, or no signature
	// in it matches the body under any configured secret.
	ErrWebhookSignature = errors.New("stream: webhook signature invalid")
	// ErrWebhookExpired: the signed time is older than MaxAge or further ahead
	// than MaxSkew.
	ErrWebhookExpired = errors.New("stream: webhook timestamp out of range")
	// ErrWebhookReplay: this exact signature was accepted before.
	ErrWebhookReplay = errors.New("stream: webhook replayed")
	// ErrReplayCacheFull: the replay cache holds as many unexpired signatures as
	// it may, so a replay could not be ruled out; the webhook is refused rather
	// than risk acting twice.
	ErrReplayCacheFull = errors.New("stream: webhook replay cache full")
)

// ReplayCache remembers the signatures of accepted webhooks until they expire,
// so a captured webhook cannot be sent again while its timestamp is still
// accepted. The in-memory MemoryReplayCache serves one process; replicas behind
// one URL need a shared one (Redis SET NX with an expiry has these semantics).
type ReplayCache interface {
	// Remember records key until expires and reports whether it was new; false
	// means it was recorded before and has not expired: a replay.
	Remember(ctx context.Context, key string, expires, now time.Time) (bool, error)
}

// WebhookConfig configures a WebhookVerifier.
type WebhookConfig struct {
	// Secrets are the webhook signing secrets, as Stream returns them from PUT
	// .../stream/webhook; a signature made with any of them is accepted, so a
	// secret can be replaced without dropping webhooks in between. Required.
	Secrets [][]byte
	// MaxAge is how old a signed time may be; default 5m.
	MaxAge time.Duration
	// MaxSkew is how far ahead of the local clock a signed time may be;
	// default 1m.
	MaxSkew time.Duration
	// Replay remembers accepted signatures; default a MemoryReplayCache of
	// DefaultReplayCacheSize entries.
	Replay ReplayCache
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// WebhookVerifier checks Stream's webhooks. It is safe for concurrent use.
type WebhookVerifier struct {
	secrets [][]byte
	maxAge  time.Duration
	maxSkew time.Duration
	replay  ReplayCache
	now     func() time.Time
}

// NewWebhookVerifier checks cfg and builds the verifier.
func NewWebhookVerifier(cfg WebhookConfig) (*WebhookVerifier, error) {
	if len(cfg.Secrets) == 0 {
		return nil, errors.New("stream webhook: no secret")
	}
	v := &WebhookVerifier{maxAge: cfg.MaxAge, maxSkew: cfg.MaxSkew, replay: cfg.Replay, now: cfg.Now}
	for i, s := range cfg.Secrets {
		if len(s) == 0 {
			return nil, fmt.Errorf("stream webhook: secret %d is empty", i)
		}
		v.secrets = append(v.secrets, append([]byte(nil), s...))
	}
	if v.maxAge < 0 || v.maxSkew < 0 {
		return nil, errors.New("stream webhook: max age and max skew must not be negative")
	}
	if v.maxAge == 0 {
		v.maxAge = DefaultWebhookMaxAge
	}
	if v.maxSkew == 0 {
		v.maxSkew = DefaultWebhookMaxSkew
	}
	if v.replay == nil {
		v.replay = NewMemoryReplayCache(DefaultReplayCacheSize)
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Verify checks the Webhook-Signature header value against the raw body, now:
// signature first, then the time window, then replays (only a genuine
// signature is remembered, so forged requests cannot fill the cache). It then
// parses the body. Errors match ErrWebhookSignature, ErrWebhookExpired,
// ErrWebhookReplay or ErrReplayCacheFull, or are the replay cache's own.
func (v *WebhookVerifier) Verify(ctx context.Context, header string, body []byte) (VideoEvent, error) {
	return v.VerifyAt(ctx, header, body, v.now())
}

// VerifyAt is Verify judged at now.
func (v *WebhookVerifier) VerifyAt(ctx context.Context, header string, body []byte, now time.Time) (VideoEvent, error) {
	sig, err := ParseWebhookSignature(header)
	if err != nil {
		return VideoEvent{}, err
	}
	macs := make([][]byte, len(v.secrets))
	for i, secret := range v.secrets {
		macs[i] = webhookMAC(secret, sig.Time, body)
	}
	matched := ""
	for _, s := range sig.Sigs {
		for _, mac := range macs {
			if hmac.Equal(s, mac) {
				matched = hex.EncodeToString(s)
			}
		}
	}
	if matched == "" {
		return VideoEvent{}, fmt.Errorf("%w: no signature matches", ErrWebhookSignature)
	}
	signed := time.Unix(sig.Time, 0)
	if age := now.Sub(signed); age > v.maxAge {
		return VideoEvent{}, fmt.Errorf("%w: signed %s ago, more than %s", ErrWebhookExpired, age.Truncate(time.Second), v.maxAge)
	} else if -age > v.maxSkew {
		return VideoEvent{}, fmt.Errorf("%w: signed %s ahead, more than %s", ErrWebhookExpired, (-age).Truncate(time.Second), v.maxSkew)
	}
	// The signature is accepted until signed+maxAge; it must be remembered as
	// long.
	fresh, err := v.replay.Remember(ctx, matched, signed.Add(v.maxAge), now)
	if err != nil {
		return VideoEvent{}, fmt.Errorf("stream webhook: replay check: %w", err)
	}
	if !fresh {
		return VideoEvent{}, ErrWebhookReplay
	}
	return ParseVideoEvent(body)
}

// webhookMAC is HMAC-SHA256(secret, "T." + body).
func webhookMAC(secret []byte, t int64, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strconv.FormatInt(t, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// WebhookSignature is a parsed Webhook-Signature header.
type WebhookSignature struct {
	// Time is the signed time, Unix seconds.
	Time int64
	// Sigs are the sig1 values, decoded; at least one.
	Sigs [][]byte
}

// ParseWebhookSignature reads "time=T,sig1=HEX[,sig1=HEX...]". Several sig1
// values are accepted (any may match); other keys are ignored, so a scheme
// Stream adds later does not break verification. Errors match
// ErrWebhookSignature.
func ParseWebhookSignature(h string) (WebhookSignature, error) {
	var s WebhookSignature
	if h == "" {
		return s, fmt.Errorf("%w: no %s header", ErrWebhookSignature, WebhookSignatureHeader)
	}
	if len(h) > maxWebhookSignatureBytes {
		return s, fmt.Errorf("%w: header longer than %d bytes", ErrWebhookSignature, maxWebhookSignatureBytes)
	}
	haveTime := false
	for _, part := range strings.Split(h, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return WebhookSignature{}, fmt.Errorf("%w: element without '='", ErrWebhookSignature)
		}
		switch k {
		case "time":
			if haveTime {
				return WebhookSignature{}, fmt.Errorf("%w: time given twice", ErrWebhookSignature)
			}
			t, err := strconv.ParseInt(val, 10, 64)
			if err != nil || t <= 0 || len(val) > 12 || val[0] == '+' || val[0] == '0' {
				return WebhookSignature{}, fmt.Errorf("%w: time is not Unix seconds", ErrWebhookSignature)
			}
			s.Time, haveTime = t, true
		case "sig1":
			b, err := hex.DecodeString(val)
			if err != nil || len(b) != sha256.Size {
				return WebhookSignature{}, fmt.Errorf("%w: sig1 is not a hex SHA-256 HMAC", ErrWebhookSignature)
			}
			s.Sigs = append(s.Sigs, b)
		}
	}
	switch {
	case !haveTime:
		return WebhookSignature{}, fmt.Errorf("%w: no time", ErrWebhookSignature)
	case len(s.Sigs) == 0:
		return WebhookSignature{}, fmt.Errorf("%w: no sig1", ErrWebhookSignature)
	}
	return s, nil
}

// VideoEvent is what a video webhook says: Stream posts the video's details when
// it finishes processing (ready) or fails (error).
type VideoEvent struct {
	// UID is the video's ID.
	UID string
	// ReadyToStream is true once the video plays.
	ReadyToStream bool
	// State is status.state: ready or error (or, in principle, any state
	// Video.State lists).
	State string
	// ErrorReasonCode and ErrorReasonText are status.errorReasonCode and
	// errorReasonText when State is error.
	ErrorReasonCode string
	ErrorReasonText string
}

// Ready reports whether the event says the video is ready to stream, the
// moment its downloads can be enabled.
func (e VideoEvent) Ready() bool { return e.ReadyToStream && e.State == "ready" }

// wireVideoEvent is the part of a webhook body the gateway reads.
type wireVideoEvent struct {
	UID           string `json:"uid"`
	ReadyToStream bool   `json:"readyToStream"`
	Status        struct {
		State           string `json:"state"`
		ErrorReasonCode string `json:"errorReasonCode"`
		ErrorReasonText string `json:"errorReasonText"`
	} `json:"status"`
}

// ParseVideoEvent reads a video webhook's body: a JSON object with a valid uid
// and a status.state; other fields are ignored.
func ParseVideoEvent(body []byte) (VideoEvent, error) {
	var w wireVideoEvent
	if err := json.Unmarshal(body, &w); err != nil {
		return VideoEvent{}, fmt.Errorf("stream webhook: body: %w", err)
	}
	if !ValidUID(w.UID) {
		return VideoEvent{}, errors.New("stream webhook: body: uid is not a video uid")
	}
	if w.Status.State == "" {
		return VideoEvent{}, errors.New("stream webhook: body: no status.state")
	}
	return VideoEvent{
		UID:             w.UID,
		ReadyToStream:   w.ReadyToStream,
		State:           w.Status.State,
		ErrorReasonCode: w.Status.ErrorReasonCode,
		ErrorReasonText: w.Status.ErrorReasonText,
	}, nil
}

// MemoryReplayCache is a ReplayCache in process memory holding at most a fixed
// number of unexpired entries. It is safe for concurrent use.
type MemoryReplayCache struct {
	max int

	mu      sync.Mutex
	expires map[string]time.Time
}

var _ ReplayCache = (*MemoryReplayCache)(nil)

// NewMemoryReplayCache holds up to max entries (DefaultReplayCacheSize when
// max <= 0). Entries enter only once a signature verified, so only genuine
// webhooks fill it: max bounds the webhooks accepted within one MaxAge.
func NewMemoryReplayCache(max int) *MemoryReplayCache {
	if max <= 0 {
		max = DefaultReplayCacheSize
	}
	return &MemoryReplayCache{max: max, expires: map[string]time.Time{}}
}

// Remember implements ReplayCache. When the cache is full of unexpired entries
// it fails with ErrReplayCacheFull rather than forget one that may be replayed.
func (c *MemoryReplayCache) Remember(_ context.Context, key string, expires, now time.Time) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.expires[key]; ok && now.Before(exp) {
		return false, nil
	}
	if len(c.expires) >= c.max {
		c.prune(now)
	}
	if len(c.expires) >= c.max {
		return false, ErrReplayCacheFull
	}
	c.expires[key] = expires
	return true, nil
}

// prune drops every expired entry. The caller holds c.mu.
func (c *MemoryReplayCache) prune(now time.Time) {
	for k, exp := range c.expires {
		if !now.Before(exp) {
			delete(c.expires, k)
		}
	}
}

// Len is the number of entries held, expired ones not yet pruned included.
func (c *MemoryReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.expires)
}
