package auth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

var (
	// ErrNoCredentials means the request presented no token at all.
	ErrNoCredentials = errors.New("no credentials")
	// ErrInvalidToken is wrapped by every verification failure. The message says
	// why, never what the token was.
	ErrInvalidToken = errors.New("invalid token")
)

// MaxTokenSize is the largest token accepted; bigger ones are refused before
// any parsing.
const MaxTokenSize = 8 << 10

// Limits on the strings an identity carries into logs, ledgers and quota lookups.
const (
	// MaxUserIDLen is the longest user ID accepted, in bytes.
	MaxUserIDLen = 256
	// MaxPlanLen is the longest plan name accepted, in bytes.
	MaxPlanLen = 128
)

// jwksTimeout bounds one JWKS fetch, in the background and on an unknown kid.
const jwksTimeout = 10 * time.Second

// VerifierConfig says which portal JWTs a Verifier accepts.
type VerifierConfig struct {
	// Algorithms are the allowed "alg" values: HS256/384/512, RS256/384/512,
	// PS256/384/512, ES256/384/512 and EdDSA. Required; "none" is never allowed.
	// Every algorithm needs a key of its family (for RSA, ECDSA and EdDSA a
	// JWKSURL counts).
	Algorithms []string
	// HMACSecrets maps kid to secret (at least MinHMACSecret bytes) for the HS
	// algorithms; the "" entry serves tokens without a kid. HMAC tokens are
	// checked against these secrets only. Default none.
	HMACSecrets map[string][]byte
	// PublicKeys maps kid to an *rsa.PublicKey, *ecdsa.PublicKey or
	// ed25519.PublicKey (see LoadPublicKeys); the "" entry serves tokens without a
	// kid. Default none.
	PublicKeys map[string]crypto.PublicKey
	// JWKSURL is a JWK Set to fetch public keys from, by kid, refreshed every
	// JWKSRefresh and when a token names an unknown kid (at most once per five
	// minutes). A token without a kid, when PublicKeys has no "" entry, is tried
	// against every JWKS key that fits its algorithm. Must be https, except on a
	// loopback host or with JWKSInsecureHTTP. A failed first fetch does not fail
	// NewVerifier: the error goes to OnJWKSError and later fetches retry.
	// Default "" (no JWKS).
	JWKSURL string
	// JWKSRefresh is the background refresh interval. Default one hour.
	JWKSRefresh time.Duration
	// JWKSClient fetches JWKSURL. Default http.DefaultClient; each fetch is
	// bounded to ten seconds either way.
	JWKSClient *http.Client
	// JWKSInsecureHTTP allows a plain http JWKSURL on a non-loopback host.
	// Default false.
	JWKSInsecureHTTP bool
	// OnJWKSError receives failed JWKS fetches. Default: logged with log/slog.
	OnJWKSError func(error)
	// Issuer, when set, must equal the "iss" claim. Default "" (not checked).
	Issuer string
	// Audience, when set, must be among the "aud" claim. Default "" (not checked).
	Audience string
	// Leeway is the clock skew allowed on exp, nbf and iat. Default 30s.
	Leeway time.Duration
	// UserClaim names the claim that holds the user ID: a non-empty string of at
	// most MaxUserIDLen bytes, without control characters. Default "sub".
	UserClaim string
	// PlanClaim names the optional claim that holds the plan name, a string of at
	// most MaxPlanLen bytes. Default "plan".
	PlanClaim string
	// Cookie is the cookie to read the token from when the request has no
	// Authorization: Bearer header. Default "" (header only).
	Cookie string
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Verifier checks portal JWTs. It is safe for concurrent use.
type Verifier struct {
	parser    *jwt.Parser
	hmac      map[string][]byte
	public    map[string]crypto.PublicKey
	jwks      keyfunc.Keyfunc
	ctx       context.Context
	userClaim string
	planClaim string
	cookie    string
}

// NewVerifier checks cfg, reporting every problem at once, and starts the JWKS
// background refresh when JWKSURL is set; ctx ends that refresh.
func NewVerifier(ctx context.Context, cfg VerifierConfig) (*Verifier, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}

	v := &Verifier{
		hmac:      make(map[string][]byte, len(cfg.HMACSecrets)),
		public:    make(map[string]crypto.PublicKey, len(cfg.PublicKeys)),
		ctx:       ctx,
		userClaim: cfg.UserClaim,
		planClaim: cfg.PlanClaim,
		cookie:    cfg.Cookie,
	}
	for kid, s := range cfg.HMACSecrets {
		v.hmac[kid] = slices.Clone(s)
	}
	for kid, k := range cfg.PublicKeys {
		v.public[kid] = k
	}

	opts := []jwt.ParserOption{
		jwt.WithValidMethods(slices.Clone(cfg.Algorithms)),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)

	if cfg.JWKSURL != "" {
		override := keyfunc.Override{
			Client:          cfg.JWKSClient,
			HTTPTimeout:     jwksTimeout,
			RefreshInterval: cfg.JWKSRefresh,
		}
		if cfg.OnJWKSError != nil {
			onErr := cfg.OnJWKSError
			override.RefreshErrorHandlerFunc = func(string) func(context.Context, error) {
				return func(_ context.Context, err error) { onErr(fmt.Errorf("jwks fetch: %w", err)) }
			}
		}
		kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, override)
		if err != nil {
			return nil, fmt.Errorf("jwks url: %w", err)
		}
		v.jwks = kf
	}
	return v, nil
}

func (cfg VerifierConfig) withDefaults() VerifierConfig {
	if cfg.Leeway == 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.UserClaim == "" {
		cfg.UserClaim = "sub"
	}
	if cfg.PlanClaim == "" {
		cfg.PlanClaim = "plan"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.JWKSRefresh == 0 {
		cfg.JWKSRefresh = time.Hour
	}
	return cfg
}

func (cfg VerifierConfig) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(cfg.Algorithms) == 0 {
		add("algorithms: at least one is required")
	}
	for kid, s := range cfg.HMACSecrets {
		if len(s) < MinHMACSecret {
			add("hmac secret %q: %d bytes is too short (want at least %d)", kid, len(s), MinHMACSecret)
		}
	}
	for kid, k := range cfg.PublicKeys {
		if _, err := publicKeyFamily(k); err != nil {
			add("public key %q: %v", kid, err)
		}
	}
	for _, alg := range cfg.Algorithms {
		fam, ok := algFamilies[alg]
		if !ok {
			if strings.EqualFold(alg, "none") {
				add("algorithms: %q is never allowed", alg)
			} else {
				add("algorithms: unknown algorithm %q", alg)
			}
			continue
		}
		switch {
		case fam == familyHMAC:
			if len(cfg.HMACSecrets) == 0 {
				add("algorithms: %s needs an HMAC secret", alg)
			}
		case cfg.JWKSURL != "":
		default:
			fits := false
			for _, k := range cfg.PublicKeys {
				fits = fits || keyFits(alg, k)
			}
			if !fits {
				add("algorithms: %s needs a %s public key or a JWKS URL", alg, fam)
			}
		}
	}
	if cfg.JWKSURL != "" {
		if err := checkJWKSURL(cfg.JWKSURL, cfg.JWKSInsecureHTTP); err != nil {
			add("jwks url: %v", err)
		}
	}
	if cfg.JWKSRefresh < 0 {
		add("jwks refresh: %v is negative", cfg.JWKSRefresh)
	}
	if cfg.Leeway < 0 {
		add("leeway: %v is negative", cfg.Leeway)
	}
	if cfg.Cookie != "" && !validCookieName(cfg.Cookie) {
		add("cookie: %q is not a valid cookie name", cfg.Cookie)
	}
	if cfg.UserClaim == cfg.PlanClaim {
		add("user claim and plan claim are both %q", cfg.UserClaim)
	}
	return errors.Join(errs...)
}

func checkJWKSURL(raw string, insecure bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if insecure || isLoopback(u.Hostname()) {
			return nil
		}
		return errors.New("plain http is only allowed on a loopback host (or with jwks insecure http)")
	}
	return fmt.Errorf("scheme %q is not http or https", u.Scheme)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validCookieName(name string) bool {
	for _, r := range name {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r) {
			return false
		}
	}
	return true
}

// Verify checks a portal JWT: size, algorithm, key, signature, exp (required),
// nbf, iat, issuer and audience, then the user and plan claims.
func (v *Verifier) Verify(token string) (Identity, error) {
	if token == "" {
		return Identity{}, invalid("empty token")
	}
	if len(token) > MaxTokenSize {
		return Identity{}, invalid(fmt.Sprintf("token of %d bytes is over the %d byte limit", len(token), MaxTokenSize))
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(token, claims, v.key); err != nil {
		return Identity{}, invalid(reason(err))
	}
	user, ok, err := stringClaim(claims, v.userClaim, MaxUserIDLen)
	if err != nil {
		return Identity{}, invalid(err.Error())
	}
	if !ok || user == "" {
		return Identity{}, invalid(fmt.Sprintf("user claim %q is missing or empty", v.userClaim))
	}
	plan, _, err := stringClaim(claims, v.planClaim, MaxPlanLen)
	if err != nil {
		return Identity{}, invalid(err.Error())
	}
	return Identity{UserID: user, Plan: plan, Source: SourceJWT}, nil
}

// TokenFromRequest returns the bearer token of the Authorization header or,
// when there is none and a cookie is configured, the cookie's value. A header
// with another scheme (say Basic) is ignored. It returns ErrNoCredentials when
// the request carries no token, and an ErrInvalidToken error for an empty
// bearer token or more than one Authorization header.
func (v *Verifier) TokenFromRequest(r *http.Request) (string, error) {
	if vals := r.Header.Values("Authorization"); len(vals) > 0 {
		if len(vals) > 1 {
			return "", invalid("more than one Authorization header")
		}
		h := strings.TrimSpace(vals[0])
		scheme, tok, _ := strings.Cut(h, " ")
		if strings.EqualFold(scheme, "Bearer") {
			tok = strings.TrimSpace(tok)
			if tok == "" {
				return "", invalid("empty bearer token")
			}
			return tok, nil
		}
	}
	if v.cookie != "" {
		if c, err := r.Cookie(v.cookie); err == nil && c.Value != "" {
			return c.Value, nil
		}
	}
	return "", ErrNoCredentials
}

// Authenticate finds the request's token and verifies it.
func (v *Verifier) Authenticate(r *http.Request) (Identity, error) {
	tok, err := v.TokenFromRequest(r)
	if err != nil {
		return Identity{}, err
	}
	return v.Verify(tok)
}

// keyError is a refusal from key selection; its text is safe to show.
type keyError struct{ reason string }

func (e *keyError) Error() string { return e.reason }

// key picks the verification key for t by its algorithm family and kid. The
// parser has already checked that the algorithm is allowed.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	kid := ""
	if raw, ok := t.Header["kid"]; ok {
		s, ok := raw.(string)
		if !ok {
			return nil, &keyError{"kid header is not a string"}
		}
		kid = s
	}
	unknown := func() error {
		if kid == "" {
			return &keyError{fmt.Sprintf("no default key for %s", alg)}
		}
		return &keyError{fmt.Sprintf("unknown key id %s for %s", quoteShort(kid), alg)}
	}

	fam := algFamilies[alg]
	if fam == familyHMAC {
		if s, ok := v.hmac[kid]; ok {
			return s, nil
		}
		return nil, unknown()
	}
	if fam == 0 {
		return nil, &keyError{fmt.Sprintf("algorithm %s is not supported", alg)}
	}
	if k, ok := v.public[kid]; ok {
		if !keyFits(alg, k) {
			return nil, &keyError{fmt.Sprintf("key %s does not fit %s", quoteShort(kid), alg)}
		}
		return k, nil
	}
	if v.jwks == nil {
		return nil, unknown()
	}
	ctx, cancel := context.WithTimeout(v.ctx, jwksTimeout)
	defer cancel()
	got, err := v.jwks.KeyfuncCtx(ctx)(t)
	if err != nil {
		return nil, unknown()
	}
	if set, ok := got.(jwt.VerificationKeySet); ok {
		var fit jwt.VerificationKeySet
		for _, k := range set.Keys {
			if keyFits(alg, k) {
				fit.Keys = append(fit.Keys, k)
			}
		}
		if len(fit.Keys) == 0 {
			return nil, unknown()
		}
		return fit, nil
	}
	if !keyFits(alg, got) {
		return nil, &keyError{fmt.Sprintf("key %s does not fit %s", quoteShort(kid), alg)}
	}
	return got, nil
}

// reason turns a parser error into a message without token material. The
// parser's own messages are fixed text or registered algorithm names, except
// for malformed tokens, whose decoder errors may quote decoded bytes.
func reason(err error) string {
	var ke *keyError
	switch {
	case errors.As(err, &ke):
		return ke.reason
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	}
	return err.Error()
}

func invalid(why string) error {
	return fmt.Errorf("%w: %s", ErrInvalidToken, why)
}

// stringClaim reads an optional string claim. A JSON null counts as absent; a
// value of another type, too long, or with control characters is an error.
func stringClaim(claims jwt.MapClaims, name string, maxLen int) (string, bool, error) {
	raw, ok := claims[name]
	if !ok || raw == nil {
		return "", false, nil
	}
	s, ok := raw.(string)
	if !ok {
		return "", false, fmt.Errorf("claim %q is not a string", name)
	}
	if len(s) > maxLen {
		return "", false, fmt.Errorf("claim %q is longer than %d bytes", name, maxLen)
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return "", false, fmt.Errorf("claim %q has invalid characters", name)
	}
	return s, true, nil
}

// quoteShort quotes an untrusted header value for an error message, cut to 32 bytes.
func quoteShort(s string) string {
	if len(s) > 32 {
		return fmt.Sprintf("%q...", s[:32])
	}
	return fmt.Sprintf("%q", s)
}
