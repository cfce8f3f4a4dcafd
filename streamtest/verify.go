package streamtest

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenClaims is the payload the emulator reads from a Stream token. It is
// deliberately separate from the signer's own types. exp and nbf are read as JSON
// numbers or as strings holding one (Cloudflare's examples write both); fields
// it does not know are ignored.
type tokenClaims struct {
	jwt.RegisteredClaims
	KeyID        string       `json:"kid,omitempty"`
	Downloadable bool         `json:"downloadable,omitempty"`
	AccessRules  []accessRule `json:"accessRules,omitempty"`
}

// accessRule is one entry of accessRules. Fields that do not belong to the rule's
// type (a country list on an ip.src rule, say) and unknown fields are ignored.
type accessRule struct {
	Type    string   `json:"type"`
	Action  string   `json:"action"`
	Country []string `json:"country,omitempty"`
	IP      []string `json:"ip,omitempty"`
}

// compiled is a checked access rule, ready to be matched.
type compiled struct {
	allow     bool
	any       bool
	countries []string
	prefixes  []netip.Prefix
}

// refusal is why a delivery request is turned away.
type refusal struct {
	status int
	reason string
}

func (r *refusal) Error() string { return r.reason }

func unauthorized(format string, a ...any) *refusal {
	return &refusal{401, fmt.Sprintf(format, a...)}
}

func forbidden(format string, a ...any) *refusal {
	return &refusal{403, fmt.Sprintf(format, a...)}
}

// verify checks token's signature, key and times, and returns its claims and
// checked rules. It does not judge what the token grants.
func (e *Emulator) verify(token string) (*tokenClaims, []compiled, *refusal) {
	now := e.now()
	var headerKid string
	keyfunc := func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("kid header missing")
		}
		headerKid = kid
		e.mu.Lock()
		defer e.mu.Unlock()
		if k := e.keys[kid]; k != nil {
			return k.pub, nil
		}
		if tk := e.tokenKey; tk != nil && tk.id == kid {
			return &tk.key.PublicKey, nil
		}
		return nil, fmt.Errorf("unknown or revoked key %q", kid)
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithLeeway(e.leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithExpirationRequired(),
	)
	var c tokenClaims
	if _, err := p.ParseWithClaims(token, &c, keyfunc); err != nil {
		switch {
		case errors.Is(err, jwt.ErrTokenMalformed):
			return nil, nil, unauthorized("malformed token")
		case errors.Is(err, jwt.ErrTokenExpired):
			return nil, nil, unauthorized("token expired")
		case errors.Is(err, jwt.ErrTokenNotValidYet):
			return nil, nil, unauthorized("token not valid yet")
		case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
			return nil, nil, unauthorized("token exp missing")
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			return nil, nil, unauthorized("bad token signature")
		}
		return nil, nil, unauthorized("invalid token: %v", err)
	}
	if c.KeyID != "" && c.KeyID != headerKid {
		return nil, nil, unauthorized("kid claim does not match kid header")
	}
	if c.ExpiresAt.Sub(now) > maxTokenLifetime+e.leeway {
		return nil, nil, unauthorized("token exp more than %s ahead", maxTokenLifetime)
	}
	// The token stands in the path where the video UID would be, so sub is the
	// only thing naming the video: a token without one names nothing.
	if c.Subject == "" {
		return nil, nil, unauthorized("token sub missing")
	}
	if !isUID(c.Subject) {
		return nil, nil, unauthorized("token sub is not a video uid")
	}
	rules, err := compileRules(c.AccessRules)
	if err != nil {
		return nil, nil, unauthorized("invalid access rules: %v", err)
	}
	return &c, rules, nil
}

// compileRules checks every rule before any is evaluated.
func compileRules(rules []accessRule) ([]compiled, error) {
	if len(rules) > maxAccessRules {
		return nil, fmt.Errorf("%d rules, at most %d allowed", len(rules), maxAccessRules)
	}
	out := make([]compiled, 0, len(rules))
	for i, r := range rules {
		var c compiled
		switch r.Action {
		case "allow":
			c.allow = true
		case "block":
		default:
			return nil, fmt.Errorf("rule %d: action %q", i, r.Action)
		}
		switch r.Type {
		case "any":
			c.any = true
		case "ip.geoip.country":
			if len(r.Country) == 0 {
				return nil, fmt.Errorf("rule %d: country rule without countries", i)
			}
			for _, cc := range r.Country {
				if !isCountry(cc) {
					return nil, fmt.Errorf("rule %d: country %q", i, cc)
				}
			}
			c.countries = r.Country
		case "ip.src":
			if len(r.IP) == 0 {
				return nil, fmt.Errorf("rule %d: ip.src rule without addresses", i)
			}
			for _, s := range r.IP {
				p, err := ruleIP(s)
				if err != nil {
					return nil, fmt.Errorf("rule %d: ip %q", i, s)
				}
				c.prefixes = append(c.prefixes, p)
			}
		default:
			return nil, fmt.Errorf("rule %d: type %q", i, r.Type)
		}
		out = append(out, c)
	}
	return out, nil
}

// allowed evaluates rules first to last against the client; no match allows.
func allowed(rules []compiled, client netip.Addr, country string) (bool, int) {
	for i, r := range rules {
		match := r.any
		if !match && country != "" && slices.Contains(r.countries, country) {
			match = true
		}
		if !match {
			for _, p := range r.prefixes {
				if p.Contains(client) {
					match = true
					break
				}
			}
		}
		if match {
			return r.allow, i
		}
	}
	return true, -1
}

// ruleIP parses an ip.src entry, an address or a CIDR. An IPv4-mapped IPv6 entry
// stays IPv6: it never matches an IPv4 viewer, as Stream keeps the families apart.
func ruleIP(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid address %q", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
