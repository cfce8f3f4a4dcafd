// Package config is streamgate's configuration: a typed struct with defaults
// (Default), read from a YAML file decoded strictly (unknown keys fail), then
// overridden from the environment, then checked as a whole (Validate), which
// reports every problem at once, each naming its dotted key. Secrets come from a
// literal value, an environment variable or a file, and never print.
//
// config.example.yaml at the root of the module documents every key with its
// default.
package config

import (
	"time"

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/usage"
)

// Config is the whole of streamgate's configuration. Start from Default, or use
// Load or Parse, which return a validated Config with its secrets resolved.
type Config struct {
	// Listen is the host:port the HTTP server listens on. Default "127.0.0.1:8080".
	Listen string `yaml:"listen"`
	// PublicURL is the absolute http(s) URL end users reach streamgate at, the base
	// of proxy-mode link URLs. Default "http://127.0.0.1:8080".
	PublicURL string `yaml:"public_url"`
	// ShutdownGrace is how long in-flight requests get to finish on shutdown.
	// Default 30s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`

	Stream Stream `yaml:"stream"`
	Auth   Auth   `yaml:"auth"`
	Links  Links  `yaml:"links"`
	Policy Policy `yaml:"policy"`

	// DefaultPlan names the plan of users whose token carries no plan claim, or a
	// plan not in Plans. Default "free".
	DefaultPlan string `yaml:"default_plan"`
	// Plans are the quotas and limits per plan, by name. A plans key in the file
	// replaces the default set as a whole; inside a plan, keys left out take the
	// values of DefaultPlanSettings. Default: one plan, "free".
	Plans Plans `yaml:"plans"`

	Downloads Downloads `yaml:"downloads"`
	Metering  Metering  `yaml:"metering"`
	Ledger    Ledger    `yaml:"ledger"`
	Redis     Redis     `yaml:"redis"`
	Log       Log       `yaml:"log"`
	Admin     Admin     `yaml:"admin"`
}

// Stream is how streamgate reaches Cloudflare Stream and signs its tokens.
type Stream struct {
	// AccountID is the Cloudflare account that owns the videos. Required; no
	// default.
	AccountID string `yaml:"account_id"`
	// APIToken is a Cloudflare API token with Stream read access. Required.
	// Default {env: STREAM_API_TOKEN}.
	APIToken Secret `yaml:"api_token"`
	// APIURL is the base of the Cloudflare API.
	// Default "https://api.cloudflare.com/client/v4/".
	APIURL string `yaml:"api_url"`
	// DeliveryURL is the customer delivery origin, for example
	// https://customer-CODE.cloudflarestream.com. Required; no default.
	DeliveryURL string `yaml:"delivery_url"`
	// SigningKeyID is the ID of the Stream signing key, the tokens' kid.
	// Required; no default.
	SigningKeyID string `yaml:"signing_key_id"`
	// SigningKey is the Stream signing key's RSA private key, as Stream hands it
	// out (base64 of a PEM) or as PEM. Required. Default {env: STREAM_SIGNING_KEY}.
	SigningKey Secret `yaml:"signing_key"`
	// TokenTTL is the lifetime of the Stream tokens minted per request; at most
	// 24h. Default 5m.
	TokenTTL time.Duration `yaml:"token_ttl"`
	// VideoCacheTTL is how long video details (duration, readiness) from the
	// Stream API are cached. Default 30s.
	VideoCacheTTL time.Duration `yaml:"video_cache_ttl"`
	// WebhookSecrets verify Stream's video webhooks on POST /hooks/stream: the
	// secret PUT .../stream/webhook returned. A signature made with any of them
	// is accepted, so a secret rotates by adding the new one first. None keeps
	// the route off. Default none.
	WebhookSecrets []Secret `yaml:"webhook_secrets"`
	// EgressRules are the access rules put into proxy-mode tokens, which Stream
	// evaluates against streamgate's own egress address, not the end user's. At
	// most stream.MaxAccessRules. YAML keys: type, action, country, ip.
	// Default none.
	EgressRules []stream.AccessRule `yaml:"egress_rules"`
}

// Auth is how end users prove who they are: portal JWTs.
type Auth struct {
	// Algorithms are the JWT algorithms accepted; others are refused. Default [HS256].
	Algorithms []string `yaml:"algorithms"`
	// HMACSecrets verify HS256, HS384 and HS512 tokens. Default none.
	HMACSecrets []HMACSecret `yaml:"hmac_secrets"`
	// PublicKeysFile is a PEM file of RSA, ECDSA or Ed25519 public keys. Default "".
	PublicKeysFile string `yaml:"public_keys_file"`
	// JWKSURL is a JWKS endpoint of the portal. Default "".
	JWKSURL string `yaml:"jwks_url"`
	// Issuer, when set, must equal the tokens' iss. Default "".
	Issuer string `yaml:"issuer"`
	// Audience, when set, must be among the tokens' aud. Default "".
	Audience string `yaml:"audience"`
	// Leeway is the clock skew allowed on exp, nbf and iat. Default 30s.
	Leeway time.Duration `yaml:"leeway"`
	// UserClaim is the claim that names the user. Default "sub".
	UserClaim string `yaml:"user_claim"`
	// PlanClaim is the claim that names the user's plan. Default "plan".
	PlanClaim string `yaml:"plan_claim"`
	// Cookie is the name of a cookie carrying the JWT; "" means the
	// Authorization header only. Default "".
	Cookie string `yaml:"cookie"`
	// PortalOrigins are the origins (scheme://host[:port]) of the portal pages
	// that send the cookie. A cookie request from a browser that sends no
	// Sec-Fetch-Site is refused (403) when its Origin, or else its Referer, is
	// neither one of these nor public_url's origin. Default none.
	PortalOrigins []string `yaml:"portal_origins"`
}

// HMACSecret is one shared secret for HS* tokens.
type HMACSecret struct {
	// KID selects this secret by the token's kid header; "" matches tokens
	// without one.
	KID    string `yaml:"kid"`
	Secret Secret `yaml:"secret"`
}

// Links is how downloads are handed out.
type Links struct {
	// Mode is "proxy" (bytes flow through streamgate, which meters them) or
	// "direct" (the user gets a signed Stream delivery URL). Default "proxy".
	Mode string `yaml:"mode"`
	// TTL is how long a link stays valid; at most 24h in direct mode, where it is
	// the Stream token's lifetime. Default 15m.
	TTL time.Duration `yaml:"ttl"`
	// BindIP pins links to the address of the client that asked for them: in
	// direct mode through an ip.src rule in the Stream token, in proxy mode
	// through the grant (other addresses get 403). Default false.
	BindIP bool `yaml:"bind_ip"`
	// GrantKeys sign and verify link grants: the first signs, all verify, so keys
	// rotate by prepending. Required in proxy mode. Default none.
	GrantKeys []GrantKey `yaml:"grant_keys"`
}

// GrantKey is one HMAC key for link grants.
type GrantKey struct {
	// ID names the key inside grants: 1 to 64 of A-Za-z0-9_-, unique.
	ID string `yaml:"id"`
	// Secret is at least 32 bytes.
	Secret Secret `yaml:"secret"`
}

// Policy decides who may download from where, and how often.
type Policy struct {
	// TrustedProxies are the addresses or CIDRs whose X-Forwarded-For is believed.
	// Default none.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// GeoIPDB is the path of a GeoIP2 or GeoLite2 Country or City database; ""
	// leaves every country unknown. Default "".
	GeoIPDB string `yaml:"geoip_db"`
	// UnknownCountry is what happens to a client whose country is unknown:
	// "allow" or "deny". Default "allow".
	UnknownCountry string `yaml:"unknown_country"`
	// Countries are the global country rules; a plan may override them. Its
	// unknown_country must stay empty: UnknownCountry above is the global one.
	// Default none.
	Countries CountryRules `yaml:"countries"`
	// IPLimit limits unauthenticated and failed-auth requests per client IP.
	// Default {per_minute: 60, burst: 20}.
	IPLimit Rate `yaml:"ip_limit"`
	// MaxLimiterKeys caps how many clients the in-memory limiters track.
	// Default 100000.
	MaxLimiterKeys int `yaml:"max_limiter_keys"`
}

// CountryRules allow or block ISO 3166-1 alpha-2 country codes.
type CountryRules struct {
	// Allow, when not empty, is the only countries allowed.
	Allow []string `yaml:"allow"`
	// Block are countries refused.
	Block []string `yaml:"block"`
	// UnknownCountry is "allow", "deny", or "" to inherit the global setting.
	UnknownCountry string `yaml:"unknown_country"`
}

// Rate is a token bucket: a sustained rate and a burst.
type Rate struct {
	// PerMinute is the sustained rate; more than 0.
	PerMinute float64 `yaml:"per_minute"`
	// Burst is how many events may come at once; more than 0.
	Burst int `yaml:"burst"`
}

// PerSecond is the sustained rate in events per second, as rate.Limit wants it.
func (r Rate) PerSecond() float64 { return r.PerMinute / 60 }

// Plans are the plans by name.
type Plans map[string]Plan

// UnmarshalYAML replaces the plans as a whole rather than merging the file's
// plans into the defaults, so a plan left out of the file does not exist.
func (p *Plans) UnmarshalYAML(unmarshal func(any) error) error {
	m := map[string]Plan{}
	if err := unmarshal(&m); err != nil {
		return err
	}
	*p = m
	return nil
}

// Plan is the quota and limits of one plan.
type Plan struct {
	// MinutesPerMonth is the billable minutes a user may download per calendar
	// month (UTC); below 0 is unlimited. Default 600.
	MinutesPerMonth float64 `yaml:"minutes_per_month"`
	// Links limits link requests per user. Default {per_minute: 30, burst: 10}.
	Links Rate `yaml:"links"`
	// Downloads limits download requests per user. Default {per_minute: 30, burst: 10}.
	Downloads Rate `yaml:"downloads"`
	// MaxConcurrent caps a user's simultaneous downloads; 0 is unlimited. Default 2.
	MaxConcurrent int `yaml:"max_concurrent"`
	// MaxBytesPerSecond paces a user's downloads together to this many bytes
	// per second, per replica; 0 is unpaced. Default 0.
	MaxBytesPerSecond int64 `yaml:"max_bytes_per_second"`
	// Countries, when set, replace the global allow and block lists for this
	// plan; its unknown_country "" inherits the global one. Default nil.
	Countries *CountryRules `yaml:"countries"`
}

// UnmarshalYAML starts each plan from DefaultPlanSettings, so keys left out of a
// plan keep their defaults rather than becoming zero.
func (p *Plan) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Plan
	v := plain(DefaultPlanSettings())
	if err := unmarshal(&v); err != nil {
		return err
	}
	*p = Plan(v)
	return nil
}

// Downloads is what the gateway does to videos' downloads by itself.
type Downloads struct {
	// AutoEnable are the download types (default, audio) enabled through the
	// Stream API when a signed webhook says a video is ready; needs
	// stream.webhook_secrets. Default none.
	AutoEnable []string `yaml:"auto_enable"`
}

// Metering is how downloads are billed.
type Metering struct {
	// Mode is "proportional" (duration x new bytes / file size) or
	// "per-download" (the full duration once per download, and once more per
	// copies_per_charge copies it sends). Default "proportional".
	Mode string `yaml:"mode"`
	// ResumeWindow is how long after its last request a download stays open
	// for the next request of the same user, video and type, on either route:
	// resumes, parallel segments, probes and seeks join it and pay only for
	// bytes it did not deliver yet. Default 1h.
	ResumeWindow time.Duration `yaml:"resume_window"`
	// CopiesPerCharge is, in per-download mode, how many copies of the file
	// one charge covers, repeats included. Default 2.
	CopiesPerCharge int `yaml:"copies_per_charge"`
	// CheckpointEvery is how often progress is written while bytes flow.
	// Default 2s.
	CheckpointEvery time.Duration `yaml:"checkpoint_every"`
}

// Ledger is where deliveries, downloads and quota periods are stored.
type Ledger struct {
	// Driver is "sqlite" (one process) or "postgres" (several replicas sharing
	// one ledger). Default "sqlite".
	Driver string `yaml:"driver"`
	// Path is the SQLite database file, for driver sqlite. Default
	// "streamgate.db".
	Path string `yaml:"path"`
	// DSN is the PostgreSQL connection string (a postgres:// URL or key=value
	// pairs, as pgx reads them), for driver postgres. It is a secret, as it may
	// hold a password. Default {env: STREAMGATE_LEDGER_DSN}.
	DSN Secret `yaml:"dsn"`
	// StaleAfter is how long, with driver postgres, an open delivery may go
	// unrecorded before the other replicas take its replica for gone and settle it
	// from its last checkpoint. Keep it well above the clock skew between
	// replicas. Default 2m.
	StaleAfter time.Duration `yaml:"stale_after"`
}

// Redis, when Addr is set, holds the rate limits (GCRA) and the max_concurrent
// slots every replica shares; without it each process limits and caps on its own.
// A Redis outage falls back to the per-process limits and caps rather than
// failing requests.
type Redis struct {
	// Addr is host:port of the Redis server; "" keeps rate limits in memory.
	// Default "".
	Addr string `yaml:"addr"`
	// Password is the Redis AUTH password; optional. Default none.
	Password Secret `yaml:"password"`
	// DB is the Redis database number. Default 0.
	DB int `yaml:"db"`
	// KeyPrefix starts every key streamgate writes. Default "streamgate:".
	KeyPrefix string `yaml:"key_prefix"`
	// SlotLease is how long a download's slot of a plan's max_concurrent lives in
	// Redis unless renewed; the replica running the download renews it every third
	// of the lease, so the slots of a replica that died free up one lease later.
	// Default 30s.
	SlotLease time.Duration `yaml:"slot_lease"`
}

// Admin is the operators' listener, apart from the public one.
type Admin struct {
	// Listen is host:port of the admin server (GET /metrics, without
	// authentication, and the admin API); "" runs none. Default "".
	Listen string `yaml:"listen"`
	// Token is the admin API's bearer token, a secret of at least 32 bytes;
	// unset turns the API off (403) while /metrics still answers. Default none.
	Token Secret `yaml:"token"`
}

// Log is the process log.
type Log struct {
	// Level is "debug", "info", "warn" or "error". Default "info".
	Level string `yaml:"level"`
	// Format is "json" or "console". Default "json".
	Format string `yaml:"format"`
}

// Allowed values, in the order error messages list them.
var (
	algorithms = []string{
		"HS256", "HS384", "HS512",
		"RS256", "RS384", "RS512",
		"PS256", "PS384", "PS512",
		"ES256", "ES384", "ES512",
		"EdDSA",
	}
	linkModes     = []string{"proxy", "direct"}
	unknownModes  = []string{"allow", "deny"}
	meteringModes = []string{"proportional", "per-download"}
	logLevels     = []string{"debug", "info", "warn", "error"}
	logFormats    = []string{"json", "console"}
	ledgerDrivers = []string{"sqlite", "postgres"}
)

// Default returns the configuration with every default set. It does not validate:
// the required keys (stream.account_id, stream.delivery_url,
// stream.signing_key_id, the secrets and, in proxy mode, links.grant_keys) have no
// usable default.
func Default() Config {
	return Config{
		Listen:        "127.0.0.1:8080",
		PublicURL:     "http://127.0.0.1:8080",
		ShutdownGrace: 30 * time.Second,
		Stream: Stream{
			APIToken:      Secret{Env: "STREAM_API_TOKEN"},
			APIURL:        "https://api.cloudflare.com/client/v4/",
			SigningKey:    Secret{Env: "STREAM_SIGNING_KEY"},
			TokenTTL:      5 * time.Minute,
			VideoCacheTTL: 30 * time.Second,
		},
		Auth: Auth{
			Algorithms: []string{"HS256"},
			Leeway:     30 * time.Second,
			UserClaim:  "sub",
			PlanClaim:  "plan",
		},
		Links: Links{
			Mode: "proxy",
			TTL:  15 * time.Minute,
		},
		Policy: Policy{
			UnknownCountry: "allow",
			IPLimit:        Rate{PerMinute: 60, Burst: 20},
			MaxLimiterKeys: 100000,
		},
		DefaultPlan: "free",
		Plans:       Plans{"free": DefaultPlanSettings()},
		// The billing rule's defaults are the billing package's, the meter's
		// the usage package's.
		Metering: Metering{
			Mode:            string(billing.Proportional),
			ResumeWindow:    billing.DefaultWindow,
			CopiesPerCharge: billing.DefaultCopiesPerCharge,
			CheckpointEvery: usage.DefaultCheckpointEvery,
		},
		Ledger: Ledger{
			Driver:     "sqlite",
			Path:       "streamgate.db",
			DSN:        Secret{Env: "STREAMGATE_LEDGER_DSN"},
			StaleAfter: 2 * time.Minute,
		},
		Redis: Redis{KeyPrefix: "streamgate:", SlotLease: 30 * time.Second},
		Log:   Log{Level: "info", Format: "json"},
	}
}

// DefaultPlanSettings are the settings of the default "free" plan, and what any
// plan starts from.
func DefaultPlanSettings() Plan {
	return Plan{
		MinutesPerMonth: 600,
		Links:           Rate{PerMinute: 30, Burst: 10},
		Downloads:       Rate{PerMinute: 30, Burst: 10},
		MaxConcurrent:   2,
	}
}

// Notes are what an operator should know about a valid configuration that its
// keys do not say by themselves: where the concurrency cap holds, and what
// guards the portal's cookie. `streamgate config check` prints them.
func (c *Config) Notes() []string {
	var notes []string
	if c.Redis.Addr == "" {
		notes = append(notes, "max_concurrent is per replica: without redis.addr each process counts its own downloads, so n replicas let a user run n times the cap")
	} else {
		notes = append(notes, "max_concurrent holds across replicas through Redis (slots leased for "+c.Redis.SlotLease.String()+"); while Redis is unreachable each replica caps on its own")
	}
	for _, name := range c.planNames() {
		if c.Plans[name].MaxBytesPerSecond > 0 {
			notes = append(notes, "max_bytes_per_second is per replica: each process paces a user's downloads on its own, so n replicas serving one user let it n times the rate")
			break
		}
	}
	if c.Auth.Cookie != "" && len(c.Auth.PortalOrigins) == 0 {
		notes = append(notes, "auth.portal_origins is empty: cookie requests from browsers without Sec-Fetch-Site are accepted only from public_url's origin, or with no Origin and no Referer")
	}
	return notes
}
