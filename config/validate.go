package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/streamgate/streamgate/auth"
	"github.com/streamgate/streamgate/stream"
)

// FieldError is one problem with one key.
type FieldError struct {
	// Key is the dotted path of the key, e.g. "stream.signing_key" or
	// "links.grant_keys[1].id".
	Key string
	Err error
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

// Errors are all the problems found in a configuration, in the order of the keys.
type Errors []*FieldError

func (es Errors) Error() string {
	if len(es) == 1 {
		return es[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d problems:", len(es))
	for _, e := range es {
		b.WriteString("\n  ")
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the problems, for errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Keys returns the key of each problem.
func (es Errors) Keys() []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Key
	}
	return out
}

// problems collects FieldErrors as Validate walks the keys.
type problems struct{ list Errors }

func (p *problems) add(key string, err error) {
	p.list = append(p.list, &FieldError{Key: key, Err: err})
}

func (p *problems) addf(key, format string, args ...any) {
	p.add(key, fmt.Errorf(format, args...))
}

// Validate checks the whole configuration and resolves its secrets (getenv looks
// up env secrets; nil means os.Getenv). It reports every problem at once, as
// Errors.
func (c *Config) Validate(getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	p := &problems{}

	p.hostPort("listen", c.Listen)
	p.httpURL("public_url", c.PublicURL)
	p.positive("shutdown_grace", c.ShutdownGrace)

	c.validateStream(p, getenv)
	c.validateAuth(p, getenv)
	c.validateLinks(p, getenv)
	c.validatePolicy(p)
	c.validatePlans(p)
	c.validateDownloads(p, getenv)

	p.oneOf("metering.mode", c.Metering.Mode, meteringModes)
	p.positive("metering.resume_window", c.Metering.ResumeWindow)
	if c.Metering.CopiesPerCharge < 1 {
		p.addf("metering.copies_per_charge", "must be at least 1")
	}
	p.positive("metering.checkpoint_every", c.Metering.CheckpointEvery)

	c.validateLedger(p, getenv)
	c.validateRedis(p, getenv)

	p.oneOf("log.level", c.Log.Level, logLevels)
	p.oneOf("log.format", c.Log.Format, logFormats)
	c.validateAdmin(p, getenv)

	if len(p.list) > 0 {
		return p.list
	}
	return nil
}

// validateDownloads checks auto_enable and resolves the webhook secrets it
// depends on.
func (c *Config) validateDownloads(p *problems, getenv func(string) string) {
	for i := range c.Stream.WebhookSecrets {
		p.secret(index("stream.webhook_secrets", i), &c.Stream.WebhookSecrets[i], getenv)
	}
	seen := map[string]bool{}
	for i, t := range c.Downloads.AutoEnable {
		key := index("downloads.auto_enable", i)
		switch _, err := stream.ParseDownloadType(t); {
		case err != nil:
			p.addf(key, "%q: want default or audio", t)
		case seen[t]:
			p.addf(key, "%q given twice", t)
		}
		seen[t] = true
	}
	if len(c.Downloads.AutoEnable) > 0 && len(c.Stream.WebhookSecrets) == 0 {
		p.addf("downloads.auto_enable", "needs stream.webhook_secrets: only a signed webhook enables downloads")
	}
}

func (c *Config) validateLedger(p *problems, getenv func(string) string) {
	l := &c.Ledger
	if !p.oneOf("ledger.driver", l.Driver, ledgerDrivers) {
		return
	}
	switch l.Driver {
	case "sqlite":
		p.required("ledger.path", l.Path)
	case "postgres":
		if p.secret("ledger.dsn", &l.DSN, getenv) {
			// pgx's message hides the password it can find; the DSN is a secret.
			if _, err := pgxpool.ParseConfig(string(l.DSN.Bytes())); err != nil {
				p.add("ledger.dsn", err)
			}
		}
		p.positive("ledger.stale_after", l.StaleAfter)
	}
}

func (c *Config) validateRedis(p *problems, getenv func(string) string) {
	r := &c.Redis
	if r.Addr == "" {
		if r.Password.IsSet() || r.DB != 0 {
			p.addf("redis.addr", "password and db are set but addr is empty")
		}
		return
	}
	p.hostPort("redis.addr", r.Addr)
	if r.Password.IsSet() {
		p.secret("redis.password", &r.Password, getenv)
	}
	if r.DB < 0 {
		p.addf("redis.db", "%d: must be 0 or more", r.DB)
	}
	p.required("redis.key_prefix", r.KeyPrefix)
	if p.positive("redis.slot_lease", r.SlotLease) && r.SlotLease < time.Second {
		p.addf("redis.slot_lease", "%s: must be at least 1s, as it is renewed every third of it", r.SlotLease)
	}
}

// MinAdminTokenLen is the fewest bytes the admin API's token may have.
const MinAdminTokenLen = 32

func (c *Config) validateAdmin(p *problems, getenv func(string) string) {
	a := &c.Admin
	if a.Listen == "" {
		if a.Token.IsSet() {
			p.addf("admin.listen", "admin.token is set but admin.listen is empty: the admin API would not be served")
		}
		return
	}
	p.hostPort("admin.listen", a.Listen)
	// Port 0 picks a free port for each, so only fixed ports can collide.
	if _, ap, err := net.SplitHostPort(a.Listen); err == nil && ap != "0" {
		if _, lp, err := net.SplitHostPort(c.Listen); err == nil && lp == ap {
			p.addf("admin.listen", "%q: must differ from listen's port: the admin port is kept off the public one", a.Listen)
		}
	}
	if a.Token.IsSet() && p.secret("admin.token", &a.Token, getenv) && len(a.Token.Bytes()) < MinAdminTokenLen {
		p.addf("admin.token", "%d bytes: want at least %d", len(a.Token.Bytes()), MinAdminTokenLen)
	}
}

func (c *Config) validateStream(p *problems, getenv func(string) string) {
	s := &c.Stream
	p.required("stream.account_id", s.AccountID)
	p.secret("stream.api_token", &s.APIToken, getenv)
	p.httpURL("stream.api_url", s.APIURL)
	p.httpURL("stream.delivery_url", s.DeliveryURL)
	p.required("stream.signing_key_id", s.SigningKeyID)
	if p.secret("stream.signing_key", &s.SigningKey, getenv) {
		if err := checkSigningKey(s.SigningKey.Bytes()); err != nil {
			p.add("stream.signing_key", err)
		}
	}
	if p.positive("stream.token_ttl", s.TokenTTL) && s.TokenTTL > stream.MaxTokenLifetime {
		p.addf("stream.token_ttl", "%s is more than Stream's %s", s.TokenTTL, stream.MaxTokenLifetime)
	}
	p.positive("stream.video_cache_ttl", s.VideoCacheTTL)
	if len(s.EgressRules) > stream.MaxAccessRules {
		p.addf("stream.egress_rules", "%d rules, at most %d allowed", len(s.EgressRules), stream.MaxAccessRules)
	}
	for i, r := range s.EgressRules {
		if err := r.Validate(); err != nil {
			p.add(index("stream.egress_rules", i), err)
		}
	}
}

// checkSigningKey parses the key as stream.NewSigner would, without keeping it.
func checkSigningKey(b []byte) error {
	k, err := stream.ParsePrivateKey(b)
	if err == nil {
		_, err = stream.NewSignerFromKey("check", k)
	}
	if err != nil {
		// stream's messages name the key already; the key path says it here.
		return unprefixed{err, "stream signing key"}
	}
	return nil
}

// unprefixed drops a prefix from err's message but keeps err in the chain.
type unprefixed struct {
	err    error
	prefix string
}

func (u unprefixed) Error() string {
	msg := strings.TrimPrefix(u.err.Error(), u.prefix)
	return strings.TrimSpace(strings.TrimPrefix(msg, ":"))
}
func (u unprefixed) Unwrap() error { return u.err }

func isHMAC(alg string) bool { return strings.HasPrefix(alg, "HS") }

func (c *Config) validateAuth(p *problems, getenv func(string) string) {
	a := &c.Auth
	var hmac, public []string // the algorithms of each kind
	if len(a.Algorithms) == 0 {
		p.addf("auth.algorithms", "give at least one of %s", strings.Join(algorithms, " "))
	}
	for i, alg := range a.Algorithms {
		switch {
		case !slices.Contains(algorithms, alg):
			p.addf(index("auth.algorithms", i), "%q: want one of %s", alg, strings.Join(algorithms, " "))
		case isHMAC(alg):
			hmac = append(hmac, alg)
		default:
			public = append(public, alg)
		}
	}

	kids := map[string]int{}
	for i := range a.HMACSecrets {
		h := &a.HMACSecrets[i]
		key := index("auth.hmac_secrets", i)
		if j, dup := kids[h.KID]; dup {
			p.addf(key+".kid", "%q already used by auth.hmac_secrets[%d]", h.KID, j)
		} else {
			kids[h.KID] = i
		}
		if p.secret(key+".secret", &h.Secret, getenv) && len(h.Secret.Bytes()) < auth.MinHMACSecret {
			p.addf(key+".secret", "%d bytes is too short: want at least %d", len(h.Secret.Bytes()), auth.MinHMACSecret)
		}
	}
	if a.PublicKeysFile != "" {
		p.file("auth.public_keys_file", a.PublicKeysFile)
		if b, err := os.ReadFile(a.PublicKeysFile); err == nil {
			if _, err := auth.LoadPublicKeys(b); err != nil {
				p.add("auth.public_keys_file", err)
			}
		}
	}
	if a.JWKSURL != "" {
		p.httpURL("auth.jwks_url", a.JWKSURL)
	}

	hasHMAC := len(a.HMACSecrets) > 0
	hasPublic := a.PublicKeysFile != "" || a.JWKSURL != ""
	switch {
	case !hasHMAC && !hasPublic:
		p.addf("auth", "no key source: give hmac_secrets, public_keys_file or jwks_url")
	default:
		if len(hmac) > 0 && !hasHMAC {
			p.addf("auth.hmac_secrets", "required by %s in auth.algorithms", strings.Join(hmac, ", "))
		}
		if len(public) > 0 && !hasPublic {
			p.addf("auth.public_keys_file", "this or auth.jwks_url is required by %s in auth.algorithms", strings.Join(public, ", "))
		}
		if hasHMAC && len(hmac) == 0 && len(a.Algorithms) > 0 {
			p.addf("auth.hmac_secrets", "never used: auth.algorithms has no HS algorithm")
		}
		if hasPublic && len(public) == 0 && len(a.Algorithms) > 0 {
			p.addf("auth.algorithms", "has no RS, PS, ES or EdDSA algorithm for the keys of auth.public_keys_file or auth.jwks_url")
		}
	}

	if a.Leeway < 0 {
		p.addf("auth.leeway", "%s is negative", a.Leeway)
	}
	p.required("auth.user_claim", a.UserClaim)
	p.required("auth.plan_claim", a.PlanClaim)
	if a.Cookie != "" {
		if err := (&http.Cookie{Name: a.Cookie, Value: "x"}).Valid(); err != nil {
			p.addf("auth.cookie", "%q is not a valid cookie name", a.Cookie)
		}
	}
	for i, o := range a.PortalOrigins {
		p.origin(index("auth.portal_origins", i), o)
	}
}

// origin checks that v is an origin: an http(s) scheme and a host, optionally a
// port, and nothing else.
func (p *problems) origin(key, v string) {
	u, err := url.Parse(v)
	switch {
	case err != nil:
		p.addf(key, "%q: %v", v, errors.Unwrap(err))
	case u.Scheme != "http" && u.Scheme != "https":
		p.addf(key, "%q: want an origin such as https://portal.example", v)
	case u.Host == "":
		p.addf(key, "%q: has no host", v)
	case u.User != nil, u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "", u.Opaque != "":
		p.addf(key, "%q: an origin is scheme://host[:port] only", v)
	}
}

// MinBytesPerSecond is the slowest pace a plan may set: a slower one is taken
// for a mistake in the unit (bits, kilobytes) rather than meant.
const MinBytesPerSecond = 1024

// MinGrantKeyLen is the fewest bytes a grant key's secret may have.
const MinGrantKeyLen = 32

// maxGrantKeyID is the longest grant key ID; IDs travel inside every link.
const maxGrantKeyID = 64

func (c *Config) validateLinks(p *problems, getenv func(string) string) {
	l := &c.Links
	p.oneOf("links.mode", l.Mode, linkModes)
	if p.positive("links.ttl", l.TTL) && l.Mode == "direct" && l.TTL > stream.MaxTokenLifetime {
		p.addf("links.ttl", "%s is more than Stream's %s token lifetime (direct mode links are Stream tokens)", l.TTL, stream.MaxTokenLifetime)
	}
	if l.Mode == "proxy" && len(l.GrantKeys) == 0 {
		p.addf("links.grant_keys", "required in proxy mode: give at least one {id, secret}")
	}
	ids := map[string]int{}
	for i := range l.GrantKeys {
		g := &l.GrantKeys[i]
		key := index("links.grant_keys", i)
		switch {
		case g.ID == "":
			p.addf(key+".id", "required")
		case len(g.ID) > maxGrantKeyID || strings.IndexFunc(g.ID, notIDRune) >= 0:
			p.addf(key+".id", "%q: want 1 to %d of A-Za-z0-9_-", g.ID, maxGrantKeyID)
		default:
			if j, dup := ids[g.ID]; dup {
				p.addf(key+".id", "%q already used by links.grant_keys[%d]", g.ID, j)
			} else {
				ids[g.ID] = i
			}
		}
		if p.secret(key+".secret", &g.Secret, getenv) && len(g.Secret.Bytes()) < MinGrantKeyLen {
			p.addf(key+".secret", "%d bytes, want at least %d", len(g.Secret.Bytes()), MinGrantKeyLen)
		}
	}
}

func notIDRune(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-')
}

func (c *Config) validatePolicy(p *problems) {
	pol := &c.Policy
	for i, s := range pol.TrustedProxies {
		if _, err := stream.ParseIPOrPrefix(s); err != nil {
			p.addf(index("policy.trusted_proxies", i), "%q is neither an IP address nor a CIDR", s)
		}
	}
	if pol.GeoIPDB != "" {
		p.file("policy.geoip_db", pol.GeoIPDB)
	}
	p.oneOf("policy.unknown_country", pol.UnknownCountry, unknownModes)
	p.countries("policy.countries", pol.Countries)
	if pol.Countries.UnknownCountry != "" {
		p.addf("policy.countries.unknown_country", "not used here: set policy.unknown_country")
	}
	p.rate("policy.ip_limit", pol.IPLimit)
	if pol.MaxLimiterKeys <= 0 {
		p.addf("policy.max_limiter_keys", "%d: must be more than 0", pol.MaxLimiterKeys)
	}

	// Without a GeoIP database every country is unknown: country rules would
	// silently let everyone through, or deny everyone.
	if pol.GeoIPDB == "" {
		var users []string
		if pol.UnknownCountry == "deny" || hasCountryRules(pol.Countries) {
			users = append(users, "policy")
		}
		for _, name := range c.planNames() {
			if r := c.Plans[name].Countries; r != nil && (r.UnknownCountry == "deny" || hasCountryRules(*r)) {
				users = append(users, "plans."+name+".countries")
			}
		}
		if len(users) > 0 {
			p.addf("policy.geoip_db", "required by the country rules of %s", strings.Join(users, ", "))
		}
	}
}

func hasCountryRules(r CountryRules) bool { return len(r.Allow) > 0 || len(r.Block) > 0 }

func (c *Config) planNames() []string {
	names := make([]string, 0, len(c.Plans))
	for name := range c.Plans {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func (c *Config) validatePlans(p *problems) {
	switch {
	case c.DefaultPlan == "":
		p.addf("default_plan", "required")
	case len(c.Plans) > 0:
		if _, ok := c.Plans[c.DefaultPlan]; !ok {
			p.addf("default_plan", "%q is not in plans (have %s)", c.DefaultPlan, strings.Join(c.planNames(), ", "))
		}
	}
	if len(c.Plans) == 0 {
		p.addf("plans", "give at least one plan")
	}
	for _, name := range c.planNames() {
		pl := c.Plans[name]
		key := "plans." + name
		if strings.TrimSpace(name) == "" {
			p.addf("plans", "a plan has an empty name")
			continue
		}
		if math.IsNaN(pl.MinutesPerMonth) || math.IsInf(pl.MinutesPerMonth, 0) {
			p.addf(key+".minutes_per_month", "%v: want a number (below 0 for unlimited)", pl.MinutesPerMonth)
		}
		p.rate(key+".links", pl.Links)
		p.rate(key+".downloads", pl.Downloads)
		if pl.MaxConcurrent < 0 {
			p.addf(key+".max_concurrent", "%d: want 0 (unlimited) or more", pl.MaxConcurrent)
		}
		if b := pl.MaxBytesPerSecond; b != 0 && b < MinBytesPerSecond {
			p.addf(key+".max_bytes_per_second", "%d: want 0 (unpaced) or at least %d", b, MinBytesPerSecond)
		}
		if pl.Countries != nil {
			p.countries(key+".countries", *pl.Countries)
			if u := pl.Countries.UnknownCountry; u != "" {
				p.oneOf(key+".countries.unknown_country", u, unknownModes)
			}
		}
	}
}

// The checks below report at key and return whether the value passed.

func (p *problems) required(key, v string) bool {
	if strings.TrimSpace(v) == "" {
		p.addf(key, "required")
		return false
	}
	return true
}

func (p *problems) oneOf(key, v string, set []string) bool {
	if !slices.Contains(set, v) {
		p.addf(key, "%q: want %s", v, strings.Join(set, " or "))
		return false
	}
	return true
}

func (p *problems) positive(key string, d time.Duration) bool {
	if d <= 0 {
		p.addf(key, "%s: must be more than 0", d)
		return false
	}
	return true
}

func (p *problems) rate(key string, r Rate) {
	if !(r.PerMinute > 0) || math.IsInf(r.PerMinute, 0) {
		p.addf(key+".per_minute", "%v: must be more than 0", r.PerMinute)
	}
	if r.Burst <= 0 {
		p.addf(key+".burst", "%d: must be more than 0", r.Burst)
	}
}

func (p *problems) countries(key string, r CountryRules) {
	for i, cc := range r.Allow {
		if !stream.ValidCountry(cc) {
			p.addf(index(key+".allow", i), "%q: want two uppercase letters (ISO 3166-1 alpha-2)", cc)
		}
	}
	for i, cc := range r.Block {
		switch {
		case !stream.ValidCountry(cc):
			p.addf(index(key+".block", i), "%q: want two uppercase letters (ISO 3166-1 alpha-2)", cc)
		case slices.Contains(r.Allow, cc):
			p.addf(index(key+".block", i), "%s is also in %s.allow", cc, key)
		}
	}
}

func (p *problems) hostPort(key, v string) {
	_, port, err := net.SplitHostPort(v) // an empty host listens on every interface
	if err != nil {
		p.addf(key, "%q: want host:port, e.g. 127.0.0.1:8080", v)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.addf(key, "%q: port must be a number from 0 to 65535", v)
	}
}

func (p *problems) httpURL(key, v string) {
	if v == "" {
		p.addf(key, "required")
		return
	}
	u, err := url.Parse(v)
	switch {
	case err != nil:
		p.addf(key, "%q: %v", v, errors.Unwrap(err))
	case u.Scheme != "http" && u.Scheme != "https":
		p.addf(key, "%q: want an absolute http or https URL", v)
	case u.Host == "":
		p.addf(key, "%q: has no host", v)
	case u.User != nil:
		p.addf(key, "%q: must not carry user information", v)
	case u.RawQuery != "" || u.Fragment != "":
		p.addf(key, "%q: must not have a query or fragment", v)
	}
}

func (p *problems) file(key, path string) {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		p.add(key, err)
	case fi.IsDir():
		p.addf(key, "%s is a directory", path)
	}
}

// secret resolves s, reporting why it could not be.
func (p *problems) secret(key string, s *Secret, getenv func(string) string) bool {
	if err := s.resolve(getenv); err != nil {
		p.add(key, err)
		return false
	}
	return true
}

func index(key string, i int) string { return key + "[" + strconv.Itoa(i) + "]" }
