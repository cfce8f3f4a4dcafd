package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/streamgate/streamgate/stream"
)

// A grant token is three dot-separated fields, all URL-path-safe:
//
//	base64url(payload JSON) "." key ID "." base64url(HMAC-SHA256)
//
// The MAC covers a version label, the encoded payload and the key ID, so the key
// ID cannot be swapped. Payload and MAC use unpadded base64url (A-Z a-z 0-9 - _)
// and key IDs the same characters, so a token never contains '/', '%', or a
// lone "." or ".." segment.
const grantMACLabel = "streamgate grant v1\x00"

// MaxGrantSize is the largest grant token accepted; bigger ones are refused
// before any decoding.
const MaxGrantSize = 2 << 10

// MaxSessionLen is the longest grant session ID accepted.
const MaxSessionLen = 64

// maxKeyIDLen is the longest grant key ID accepted.
const maxKeyIDLen = 32

// GrantKey is one grant signing key.
type GrantKey struct {
	// ID names the key inside tokens: 1 to 32 characters of A-Z a-z 0-9 - _.
	ID string
	// Secret is the HMAC-SHA256 key, at least 32 bytes.
	Secret []byte
}

// Grant is a link that lets its holder download one video as one user.
type Grant struct {
	// User is the user the download is billed to. Required.
	User string
	// Plan is the user's plan when the grant was signed; "" = none.
	Plan string
	// Video is the Stream video UID. Required.
	Video string
	// Type is the download type. Required.
	Type stream.DownloadType
	// Filename is the download's filename without extension; "" = none.
	Filename string
	// ExpiresAt is when the grant stops working, kept to the second. Required.
	ExpiresAt time.Time
	// Session ties resumes of one link together; Sign fills a random ID when
	// empty. At most MaxSessionLen characters of A-Z a-z 0-9 - _.
	Session string
	// IP binds the grant to one client address; the zero Addr = not bound.
	IP netip.Addr
	// IssuedAt is when the grant was signed, kept to the second; Sign fills
	// the current time when zero. A grant signed before the field existed
	// verifies with the zero time: issued at an unknown time, so before any
	// revocation of its user.
	IssuedAt time.Time
	// MaxUses is how many downloads the link may start; 0 = unlimited. At
	// most MaxGrantUses.
	MaxUses int
}

// MaxGrantUses is the largest MaxUses a grant may carry.
const MaxGrantUses = 1 << 20

// ID identifies the link the grant is: its session, random unless given.
// It names the link in use counts and revocations.
func (g Grant) ID() string { return g.Session }

// Allows reports whether the grant covers a download of video as type t.
func (g Grant) Allows(video string, t stream.DownloadType) bool {
	return g.Video == video && g.Type == t
}

// AllowsIP reports whether a client at ip may use the grant: always when the
// grant is not bound, else when ip is the bound address (IPv4-mapped IPv6 and
// IPv4 forms match each other; zones are ignored).
func (g Grant) AllowsIP(ip netip.Addr) bool {
	if !g.IP.IsValid() {
		return true
	}
	return g.IP.Unmap().WithZone("") == ip.Unmap().WithZone("")
}

// Identity is the identity of the grant's holder.
func (g Grant) Identity() Identity {
	return Identity{UserID: g.User, Plan: g.Plan, Source: SourceGrant, Grant: &g}
}

// Grants signs and verifies link grants. It is safe for concurrent use.
type Grants struct {
	signer grantKey
	keys   map[string][]byte
	now    func() time.Time
}

type grantKey struct {
	id     string
	secret []byte
}

// NewGrants returns Grants that sign with keys[0] and verify with any of keys,
// so a new key can be put first while links signed with the old one still work.
// Duplicate or malformed IDs and secrets under 32 bytes are errors. now
// defaults to time.Now.
func NewGrants(keys []GrantKey, now func() time.Time) (*Grants, error) {
	if len(keys) == 0 {
		return nil, errors.New("grant keys: at least one is required")
	}
	if now == nil {
		now = time.Now
	}
	g := &Grants{keys: make(map[string][]byte, len(keys)), now: now}
	var errs []error
	for i, k := range keys {
		if !validKeyID(k.ID) {
			errs = append(errs, fmt.Errorf("grant key %d: id %q is not 1 to %d characters of A-Za-z0-9-_", i, k.ID, maxKeyIDLen))
			continue
		}
		if _, dup := g.keys[k.ID]; dup {
			errs = append(errs, fmt.Errorf("grant key %d: duplicate id %q", i, k.ID))
			continue
		}
		if len(k.Secret) < MinHMACSecret {
			errs = append(errs, fmt.Errorf("grant key %q: secret of %d bytes is too short (want at least %d)", k.ID, len(k.Secret), MinHMACSecret))
		}
		g.keys[k.ID] = slices.Clone(k.Secret)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	g.signer = grantKey{id: keys[0].ID, secret: g.keys[keys[0].ID]}
	return g, nil
}

// grantPayload is the signed content of a grant token. Short names keep links short.
type grantPayload struct {
	User     string `json:"u"`
	Plan     string `json:"p,omitempty"`
	Video    string `json:"v"`
	Type     string `json:"t"`
	Filename string `json:"f,omitempty"`
	Expires  int64  `json:"e"`
	Session  string `json:"s"`
	IP       string `json:"ip,omitempty"`
	Issued   int64  `json:"i,omitempty"`
	MaxUses  int    `json:"n,omitempty"`
}

// Sign returns a token for gr, filling gr.Session with a random ID when empty.
// The grant must name a user, a valid video UID and type, a valid filename or
// none, and an expiry in the future.
func (g *Grants) Sign(gr Grant) (string, error) {
	if gr.Session == "" {
		gr.Session = rand.Text()
	}
	gr.ExpiresAt = time.Unix(gr.ExpiresAt.Unix(), 0).UTC()
	if gr.IssuedAt.IsZero() {
		gr.IssuedAt = g.now()
	}
	gr.IssuedAt = time.Unix(gr.IssuedAt.Unix(), 0).UTC()
	if err := gr.validate(); err != nil {
		return "", fmt.Errorf("sign grant: %w", err)
	}
	if !gr.ExpiresAt.After(g.now()) {
		return "", errors.New("sign grant: expiry is not in the future")
	}
	p := grantPayload{
		User:     gr.User,
		Plan:     gr.Plan,
		Video:    gr.Video,
		Type:     string(gr.Type),
		Filename: gr.Filename,
		Expires:  gr.ExpiresAt.Unix(),
		Session:  gr.Session,
		Issued:   gr.IssuedAt.Unix(),
		MaxUses:  gr.MaxUses,
	}
	if gr.IP.IsValid() {
		p.IP = gr.IP.String()
	}
	js, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("sign grant: %w", err)
	}
	body := base64.RawURLEncoding.EncodeToString(js) + "." + g.signer.id
	mac := grantMAC(g.signer.secret, body)
	return body + "." + base64.RawURLEncoding.EncodeToString(mac), nil
}

// Verify checks a grant token's key, signature (in constant time), content and
// expiry. Every failure wraps ErrInvalidToken.
func (g *Grants) Verify(token string) (Grant, error) {
	if token == "" {
		return Grant{}, invalid("empty grant")
	}
	if len(token) > MaxGrantSize {
		return Grant{}, invalid(fmt.Sprintf("grant of %d bytes is over the %d byte limit", len(token), MaxGrantSize))
	}
	i := strings.LastIndexByte(token, '.')
	if i < 0 {
		return Grant{}, invalid("malformed grant")
	}
	body, macB64 := token[:i], token[i+1:]
	payloadB64, kid, ok := strings.Cut(body, ".")
	if !ok || payloadB64 == "" || strings.IndexByte(kid, '.') >= 0 || !validKeyID(kid) {
		return Grant{}, invalid("malformed grant")
	}
	secret, ok := g.keys[kid]
	if !ok {
		return Grant{}, invalid(fmt.Sprintf("unknown grant key %q", kid))
	}
	mac, err := base64.RawURLEncoding.Strict().DecodeString(macB64)
	if err != nil || len(mac) != sha256.Size {
		return Grant{}, invalid("malformed grant signature")
	}
	if !hmac.Equal(mac, grantMAC(secret, body)) {
		return Grant{}, invalid("bad grant signature")
	}

	js, err := base64.RawURLEncoding.Strict().DecodeString(payloadB64)
	if err != nil {
		return Grant{}, invalid("malformed grant payload")
	}
	var p grantPayload
	if err := json.Unmarshal(js, &p); err != nil {
		return Grant{}, invalid("malformed grant payload")
	}
	gr := Grant{
		User:      p.User,
		Plan:      p.Plan,
		Video:     p.Video,
		Type:      stream.DownloadType(p.Type),
		Filename:  p.Filename,
		ExpiresAt: time.Unix(p.Expires, 0).UTC(),
		Session:   p.Session,
		MaxUses:   p.MaxUses,
	}
	if p.Issued != 0 {
		gr.IssuedAt = time.Unix(p.Issued, 0).UTC()
	}
	if p.IP != "" {
		if gr.IP, err = netip.ParseAddr(p.IP); err != nil {
			return Grant{}, invalid("grant has a malformed IP")
		}
	}
	if err := gr.validate(); err != nil {
		return Grant{}, invalid(err.Error())
	}
	if !g.now().Before(gr.ExpiresAt) {
		return Grant{}, invalid("grant expired")
	}
	return gr, nil
}

func grantMAC(secret []byte, body string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(grantMACLabel))
	m.Write([]byte(body))
	return m.Sum(nil)
}

func (gr *Grant) validate() error {
	switch {
	case gr.User == "":
		return errors.New("grant has no user")
	case len(gr.User) > MaxUserIDLen || !printable(gr.User):
		return errors.New("grant has an invalid user")
	case len(gr.Plan) > MaxPlanLen || !printable(gr.Plan):
		return errors.New("grant has an invalid plan")
	case !stream.ValidUID(gr.Video):
		return errors.New("grant has an invalid video uid")
	case gr.Type != stream.Default && gr.Type != stream.Audio:
		return errors.New("grant has an invalid download type")
	case gr.Filename != "" && !stream.ValidFilename(gr.Filename):
		return errors.New("grant has an invalid filename")
	case gr.ExpiresAt.Unix() <= 0:
		return errors.New("grant has no expiry")
	case !urlSafe(gr.Session, MaxSessionLen):
		return errors.New("grant has a missing or invalid session")
	case !gr.IssuedAt.IsZero() && (gr.IssuedAt.Unix() <= 0 || gr.IssuedAt.After(gr.ExpiresAt)):
		return errors.New("grant has an invalid issue time")
	case gr.MaxUses < 0 || gr.MaxUses > MaxGrantUses:
		return errors.New("grant has an invalid number of uses")
	}
	return nil
}

func printable(s string) bool {
	return utf8.ValidString(s) && strings.IndexFunc(s, unicode.IsControl) < 0
}

func validKeyID(s string) bool { return urlSafe(s, maxKeyIDLen) }

// urlSafe reports whether s is 1 to max characters of the base64url alphabet.
func urlSafe(s string, max int) bool {
	return s != "" && len(s) <= max && stream.URLSafe(s)
}
