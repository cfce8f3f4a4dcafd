package stream

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Access rule types and actions Stream understands.
const (
	RuleAny     = "any"
	RuleIPSrc   = "ip.src"
	RuleCountry = "ip.geoip.country"

	ActionAllow = "allow"
	ActionBlock = "block"
)

// MaxAccessRules is the most rules Stream accepts in one token.
const MaxAccessRules = 5

// MaxTokenLifetime is the furthest ahead of signing a token may expire.
const MaxTokenLifetime = 24 * time.Hour

// AccessRule is one entry of a token's accessRules, evaluated by Stream first to
// last against the connecting IP; the first rule that matches decides.
type AccessRule struct {
	Type    string   `json:"type"`
	Action  string   `json:"action"`
	Country []string `json:"country,omitempty"`
	IP      []string `json:"ip,omitempty"`
}

// Validate reports what Stream would refuse in the rule.
func (r AccessRule) Validate() error {
	if r.Action != ActionAllow && r.Action != ActionBlock {
		return fmt.Errorf("access rule action %q: want allow or block", r.Action)
	}
	switch r.Type {
	case RuleAny:
		if len(r.Country) > 0 || len(r.IP) > 0 {
			return errors.New("access rule any: takes no country or ip")
		}
	case RuleCountry:
		if len(r.Country) == 0 || len(r.IP) > 0 {
			return errors.New("access rule ip.geoip.country: needs countries and no ip")
		}
		for _, c := range r.Country {
			if !ValidCountry(c) {
				return fmt.Errorf("access rule country %q: want two uppercase letters", c)
			}
		}
	case RuleIPSrc:
		if len(r.IP) == 0 || len(r.Country) > 0 {
			return errors.New("access rule ip.src: needs addresses and no country")
		}
		for _, ip := range r.IP {
			if _, err := ParseIPOrPrefix(ip); err != nil {
				return fmt.Errorf("access rule ip %q: %w", ip, err)
			}
		}
	default:
		return fmt.Errorf("access rule type %q: want any, ip.src or ip.geoip.country", r.Type)
	}
	return nil
}

// ValidCountry reports whether c is two uppercase ASCII letters.
func ValidCountry(c string) bool {
	return len(c) == 2 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z'
}

// ParseIPOrPrefix accepts an address or a CIDR and returns it as a prefix (an
// address becomes a /32 or /128).
func ParseIPOrPrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Claims is what a Stream token grants.
type Claims struct {
	// Video is the video UID, the token's sub.
	Video        string
	NotBefore    time.Time
	ExpiresAt    time.Time
	Downloadable bool
	AccessRules  []AccessRule
}

// Validate reports what Stream would refuse, judged at now.
func (c Claims) Validate(now time.Time) error {
	if !ValidUID(c.Video) {
		return fmt.Errorf("token sub %q: not a video uid", c.Video)
	}
	if c.ExpiresAt.IsZero() {
		return errors.New("token exp is required")
	}
	if !c.ExpiresAt.After(c.NotBefore) {
		return errors.New("token exp must be after nbf")
	}
	if c.ExpiresAt.Sub(now) > MaxTokenLifetime {
		return fmt.Errorf("token exp more than %s ahead", MaxTokenLifetime)
	}
	if !c.ExpiresAt.After(now) {
		return errors.New("token exp is in the past")
	}
	if len(c.AccessRules) > MaxAccessRules {
		return fmt.Errorf("token has %d access rules, at most %d allowed", len(c.AccessRules), MaxAccessRules)
	}
	for i, r := range c.AccessRules {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("rule %d: %w", i, err)
		}
	}
	return nil
}

// tokenClaims is the JWT payload Stream reads.
type tokenClaims struct {
	Subject      string       `json:"sub"`
	KeyID        string       `json:"kid"`
	ExpiresAt    int64        `json:"exp"`
	NotBefore    int64        `json:"nbf,omitempty"`
	Downloadable bool         `json:"downloadable,omitempty"`
	AccessRules  []AccessRule `json:"accessRules,omitempty"`
}

func (c tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.ExpiresAt, 0)), nil
}
func (c tokenClaims) GetIssuedAt() (*jwt.NumericDate, error) { return nil, nil }
func (c tokenClaims) GetNotBefore() (*jwt.NumericDate, error) {
	if c.NotBefore == 0 {
		return nil, nil
	}
	return jwt.NewNumericDate(time.Unix(c.NotBefore, 0)), nil
}
func (c tokenClaims) GetIssuer() (string, error)             { return "", nil }
func (c tokenClaims) GetSubject() (string, error)            { return c.Subject, nil }
func (c tokenClaims) GetAudience() (jwt.ClaimStrings, error) { return nil, nil }

// Signer mints Stream tokens with one signing key. It is safe for concurrent use.
type Signer struct {
	keyID string
	key   *rsa.PrivateKey
}

// NewSigner parses key (see ParsePrivateKey) and precomputes it for signing.
func NewSigner(keyID string, key []byte) (*Signer, error) {
	if strings.TrimSpace(keyID) == "" {
		return nil, errors.New("stream signing key id is empty")
	}
	k, err := ParsePrivateKey(key)
	if err != nil {
		return nil, err
	}
	return NewSignerFromKey(keyID, k)
}

// NewSignerFromKey wraps an already parsed key.
func NewSignerFromKey(keyID string, k *rsa.PrivateKey) (*Signer, error) {
	if k.N.BitLen() < 2048 {
		return nil, fmt.Errorf("stream signing key is %d bits, want at least 2048", k.N.BitLen())
	}
	if err := k.Validate(); err != nil {
		return nil, fmt.Errorf("stream signing key: %w", err)
	}
	k.Precompute()
	return &Signer{keyID: keyID, key: k}, nil
}

// ParsePrivateKey accepts an RSA private key as Stream hands it out (base64 of a
// PKCS#1 PEM) or as a plain PEM block (PKCS#1 or PKCS#8).
func ParsePrivateKey(b []byte) (*rsa.PrivateKey, error) {
	s := strings.TrimSpace(string(b))
	if !strings.HasPrefix(s, "-----BEGIN") {
		dec, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			return nil, errors.New("stream signing key: neither PEM nor base64 of a PEM")
		}
		s = strings.TrimSpace(string(dec))
	}
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil, errors.New("stream signing key: no PEM block found")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("stream signing key: %w", err)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("stream signing key: %w", err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("stream signing key: %T is not an RSA key", k)
		}
		return rk, nil
	}
	return nil, fmt.Errorf("stream signing key: unexpected PEM block %q", block.Type)
}

// KeyID is the signing key's ID, the token's kid.
func (s *Signer) KeyID() string { return s.keyID }

// PublicKey is the key Stream verifies with.
func (s *Signer) PublicKey() *rsa.PublicKey { return &s.key.PublicKey }

// Mint signs c, refusing what Stream would refuse (judged at now).
func (s *Signer) Mint(c Claims, now time.Time) (string, error) {
	if err := c.Validate(now); err != nil {
		return "", err
	}
	tc := tokenClaims{
		Subject:      c.Video,
		KeyID:        s.keyID,
		ExpiresAt:    c.ExpiresAt.Unix(),
		Downloadable: c.Downloadable,
		AccessRules:  c.AccessRules,
	}
	if !c.NotBefore.IsZero() {
		tc.NotBefore = c.NotBefore.Unix()
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, tc)
	t.Header["kid"] = s.keyID
	return t.SignedString(s.key)
}
