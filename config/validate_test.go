package config

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/streamgate/streamgate/policy"
	"github.com/streamgate/streamgate/stream"
)

func TestValidateReportsEveryProblem(t *testing.T) {
	yml := `
listen: localhost
public_url: /relative
shutdown_grace: -1s
stream:
  account_id: ""
  api_url: ftp://api
  delivery_url: https://customer-abc.cloudflarestream.com?x=1
  signing_key_id: kid
  token_ttl: 25h
  video_cache_ttl: 0s
  egress_rules:
    - {type: ip.geoip.country, action: allow, country: [us]}
    - {type: any, action: maybe}
auth:
  algorithms: [HS256, RS256, none]
  hmac_secrets:
    - {kid: a, secret: {value: x}}
    - {kid: a, secret: {value: y}}
  jwks_url: "jwks.example.com"
  leeway: -1s
  user_claim: ""
  cookie: "bad cookie"
links:
  mode: sideways
  ttl: 0s
  grant_keys:
    - {id: "k/1", secret: {value: 0123456789abcdef0123456789abcdef}}
    - {id: "", secret: {value: 0123456789abcdef0123456789abcdef}}
policy:
  trusted_proxies: [10.0.0.0/8, 10.0.0.300]
  unknown_country: maybe
  countries: {allow: [FR, de], block: [FR], unknown_country: deny}
  ip_limit: {per_minute: 0, burst: -1}
  max_limiter_keys: 0
default_plan: gold
plans:
  free:
    minutes_per_month: .nan
    links: {per_minute: -1}
    max_concurrent: -1
    countries: {allow: [XXX], unknown_country: sometimes}
metering:
  mode: per-byte
  resume_window: 0s
  checkpoint_every: -2s
ledger:
  driver: postgres
  path: ""
  stale_after: 0s
log:
  level: loud
  format: xml
`
	_, err := Parse([]byte(yml), goodEnv().get)
	want := []string{
		"listen",
		"public_url",
		"shutdown_grace",
		"stream.account_id",
		"stream.api_url",
		"stream.delivery_url",
		"stream.token_ttl",
		"stream.video_cache_ttl",
		"stream.egress_rules[0]",
		"stream.egress_rules[1]",
		"auth.algorithms[2]",
		"auth.hmac_secrets[0].secret",
		"auth.hmac_secrets[1].kid",
		"auth.hmac_secrets[1].secret",
		"auth.jwks_url",
		"auth.leeway",
		"auth.user_claim",
		"auth.cookie",
		"links.mode",
		"links.ttl",
		"links.grant_keys[0].id",
		"links.grant_keys[1].id",
		"policy.trusted_proxies[1]",
		"policy.unknown_country",
		"policy.countries.allow[1]",
		"policy.countries.block[0]",
		"policy.countries.unknown_country",
		"policy.ip_limit.per_minute",
		"policy.ip_limit.burst",
		"policy.max_limiter_keys",
		"policy.geoip_db",
		"default_plan",
		"plans.free.minutes_per_month",
		"plans.free.links.per_minute",
		"plans.free.max_concurrent",
		"plans.free.countries.allow[0]",
		"plans.free.countries.unknown_country",
		"metering.mode",
		"metering.resume_window",
		"metering.checkpoint_every",
		"ledger.dsn",
		"ledger.stale_after",
		"log.level",
		"log.format",
	}
	if got := problemKeys(t, err); !slices.Equal(got, want) {
		t.Errorf("problems at\n%q\nwant\n%q\n%v", got, want, err)
	}
	for _, msg := range []string{
		"ledger.dsn: environment variable STREAMGATE_LEDGER_DSN is empty or unset",
		`default_plan: "gold" is not in plans (have free)`,
		"policy.countries.block[0]: FR is also in policy.countries.allow",
		`links.grant_keys[0].id: "k/1": want 1 to 64 of A-Za-z0-9_-`,
	} {
		if !strings.Contains(err.Error(), msg) {
			t.Errorf("error lacks %q", msg)
		}
	}
	if !strings.HasPrefix(err.Error(), "44 problems:\n  listen: ") {
		t.Errorf("error starts %q", strings.SplitN(err.Error(), "\n", 3)[:2])
	}
}

func TestValidateLedger(t *testing.T) {
	tests := []struct {
		name   string
		ledger string
		env    map[string]string
		want   []string
		msg    string
	}{
		{name: "sqlite", ledger: "{driver: sqlite, path: /var/lib/streamgate/ledger.db}"},
		{name: "sqlite needs a path", ledger: `{driver: sqlite, path: ""}`, want: []string{"ledger.path"}},
		{name: "sqlite ignores the dsn", ledger: "{driver: sqlite, dsn: {env: NOT_SET}}"},
		{name: "postgres", ledger: `{driver: postgres, path: "", dsn: {value: "postgres://sg:pw@db:5432/sg?sslmode=require"}}`},
		{name: "postgres key=value dsn", ledger: `{driver: postgres, dsn: {value: "host=db user=sg dbname=sg"}, stale_after: 5m}`},
		{
			name: "postgres dsn from the default variable", ledger: "{driver: postgres}",
			env: map[string]string{"STREAMGATE_LEDGER_DSN": "postgres://sg@db/sg"},
		},
		{
			name: "postgres needs a dsn", ledger: "{driver: postgres}", want: []string{"ledger.dsn"},
			msg: "ledger.dsn: environment variable STREAMGATE_LEDGER_DSN is empty or unset",
		},
		{
			name: "postgres dsn that does not parse", ledger: `{driver: postgres, dsn: {value: "postgres://sg:hunter2@db:notaport/sg"}}`,
			want: []string{"ledger.dsn"}, msg: "ledger.dsn: cannot parse",
		},
		{name: "postgres stale_after", ledger: `{driver: postgres, dsn: {value: "postgres://db/sg"}, stale_after: 0s}`, want: []string{"ledger.stale_after"}},
		{name: "unknown driver", ledger: "{driver: mysql}", want: []string{"ledger.driver"}, msg: `ledger.driver: "mysql": want sqlite or postgres`},
		{name: "postgres spelled otherwise", ledger: "{driver: postgresql}", want: []string{"ledger.driver"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := goodEnv()
			for k, v := range tt.env {
				e[k] = v
			}
			c, err := Parse([]byte(minimalYAML+"ledger: "+tt.ledger+"\n"), e.get)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if c.Ledger.Driver == "postgres" && len(c.Ledger.DSN.Bytes()) == 0 {
					t.Error("ledger.dsn is not resolved")
				}
				return
			}
			if got := problemKeys(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("problems at %q, want %q: %v", got, tt.want, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("got %v, want %q", err, tt.msg)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error shows the dsn's password: %v", err)
			}
		})
	}
}

func TestValidateSigningKey(t *testing.T) {
	good := testKeyPEM()
	k1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	small := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k1024)})
	tests := []struct {
		name    string
		key     []byte
		wantErr string
	}{
		{name: "PEM", key: good},
		{name: "base64 of PEM, as Stream hands it out", key: []byte(base64.StdEncoding.EncodeToString(good))},
		{name: "garbage", key: []byte("not a key"), wantErr: "stream.signing_key: neither PEM nor base64 of a PEM"},
		{name: "wrong block", key: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), wantErr: `stream.signing_key: unexpected PEM block "CERTIFICATE"`},
		{name: "too small", key: small, wantErr: "stream.signing_key: is 1024 bits, want at least 2048"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "key.pem", tt.key)
			yml := strings.Replace(minimalYAML, "stream:\n", "stream:\n  signing_key: {file: "+strconv.Quote(path)+"}\n", 1)
			c, err := Parse([]byte(yml), goodEnv().get)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(c.Stream.SigningKey.Bytes(), []byte(strings.TrimRight(string(tt.key), "\n"))) {
					t.Error("stream.signing_key bytes differ from the file")
				}
				return
			}
			if got := problemKeys(t, err); !slices.Equal(got, []string{"stream.signing_key"}) {
				t.Errorf("problems at %q, want [stream.signing_key]: %v", got, err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidateAuthKeySources(t *testing.T) {
	k, err := stream.ParsePrivateKey(testKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := writeFile(t, "keys.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	broken := writeFile(t, "broken.pem", []byte("-----BEGIN PUBLIC KEY-----\n"))
	tests := []struct {
		name string
		auth string
		want []string
	}{
		{"hmac", "{hmac_secrets: [{secret: {value: portal-secret-of-at-least-32-bytes-x}}]}", nil},
		{"no source", "{hmac_secrets: []}", []string{"auth"}},
		{"RS256 with hmac only", "{algorithms: [HS256, RS256], hmac_secrets: [{secret: {value: portal-secret-of-at-least-32-bytes-x}}]}", []string{"auth.public_keys_file"}},
		{"RS256 with a key file", "{algorithms: [RS256, EdDSA], public_keys_file: " + strconv.Quote(pub) + "}", nil},
		{"ES256 with jwks", "{algorithms: [ES256], jwks_url: https://portal.example.com/.well-known/jwks.json}", nil},
		{"HS512 with jwks only", "{algorithms: [HS512], jwks_url: https://portal.example.com/jwks}", []string{"auth.hmac_secrets", "auth.algorithms"}},
		{"hmac never used", "{algorithms: [RS256], jwks_url: https://p/jwks, hmac_secrets: [{secret: {value: portal-secret-of-at-least-32-bytes-x}}]}", []string{"auth.hmac_secrets"}},
		{"missing key file", "{algorithms: [RS256], public_keys_file: " + strconv.Quote(pub+".gone") + "}", []string{"auth.public_keys_file"}},
		{"unparsable key file", "{algorithms: [RS256], public_keys_file: " + strconv.Quote(broken) + "}", []string{"auth.public_keys_file"}},
		{"short hmac secret", "{hmac_secrets: [{secret: {value: short}}]}", []string{"auth.hmac_secrets[0].secret"}},
		{"no algorithms", "{algorithms: [], hmac_secrets: [{secret: {value: portal-secret-of-at-least-32-bytes-x}}]}", []string{"auth.algorithms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yml := strings.Replace(minimalYAML, "auth:\n  hmac_secrets: [{secret: {env: PORTAL_JWT_SECRET}}]\n", "auth: "+tt.auth+"\n", 1)
			_, err := Parse([]byte(yml), goodEnv().get)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if got := problemKeys(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("problems at %q, want %q: %v", got, tt.want, err)
			}
		})
	}
}

func TestValidateLinks(t *testing.T) {
	key := "{value: 0123456789abcdef0123456789abcdef}"
	tests := []struct {
		name  string
		links string
		want  []string
	}{
		{"direct needs no grant keys", "{mode: direct, grant_keys: []}", nil},
		{"proxy needs grant keys", "{mode: proxy, grant_keys: []}", []string{"links.grant_keys"}},
		{"direct ttl over 24h", "{mode: direct, ttl: 25h}", []string{"links.ttl"}},
		{"proxy ttl over 24h", "{mode: proxy, ttl: 48h, grant_keys: [{id: a, secret: " + key + "}]}", nil},
		{"duplicate ids", "{grant_keys: [{id: a, secret: " + key + "}, {id: a, secret: " + key + "}]}", []string{"links.grant_keys[1].id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yml := strings.Replace(minimalYAML, "links:\n  grant_keys: [{id: k1, secret: {env: STREAMGATE_GRANT_KEY}}]\n", "links: "+tt.links+"\n", 1)
			_, err := Parse([]byte(yml), goodEnv().get)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if got := problemKeys(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("problems at %q, want %q: %v", got, tt.want, err)
			}
		})
	}
}

func TestValidateCountryRulesNeedGeoIP(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		plans  string
		want   string
	}{
		{"allow list", "{countries: {allow: [FR]}}", "", "required by the country rules of policy"},
		{"deny unknown", "{unknown_country: deny}", "", "required by the country rules of policy"},
		{"plan override", "{}", "plans: {free: {countries: {block: [RU]}}}", "required by the country rules of plans.free.countries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(minimalYAML+"policy: "+tt.policy+"\n"+tt.plans+"\n"), goodEnv().get)
			if got := problemKeys(t, err); !slices.Equal(got, []string{"policy.geoip_db"}) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want policy.geoip_db: ...%s", err, tt.want)
			}
		})
	}
}

func TestCountryRules(t *testing.T) {
	geo := writeFile(t, "geo.mmdb", []byte("x"))
	c, err := Parse([]byte(minimalYAML+`
policy:
  geoip_db: `+strconv.Quote(geo)+`
  unknown_country: deny
  countries: {block: [RU]}
plans:
  free: {}
  pro: {countries: {allow: [FR, DE]}}
  eu: {countries: {allow: [FR], unknown_country: allow}}
`), goodEnv().get)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		plan string
		want policy.CountryRules
	}{
		{"free", policy.CountryRules{Block: []string{"RU"}, UnknownCountry: "deny"}},
		{"", policy.CountryRules{Block: []string{"RU"}, UnknownCountry: "deny"}},
		{"nope", policy.CountryRules{Block: []string{"RU"}, UnknownCountry: "deny"}},
		{"pro", policy.CountryRules{Allow: []string{"FR", "DE"}, UnknownCountry: "deny"}},
		{"eu", policy.CountryRules{Allow: []string{"FR"}, UnknownCountry: "allow"}},
	}
	countries, err := policy.NewCountryPolicy(c.CountryRules())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.plan, func(t *testing.T) {
			got := countries.Rules(tt.plan)
			if !slices.Equal(got.Allow, tt.want.Allow) || !slices.Equal(got.Block, tt.want.Block) || got.UnknownCountry != tt.want.UnknownCountry {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestListen(t *testing.T) {
	for _, tt := range []struct {
		listen string
		ok     bool
	}{
		{"127.0.0.1:8080", true},
		{":8080", true},
		{"[::1]:0", true},
		{"localhost:http", false},
		{"localhost", false},
		{"1.2.3.4:70000", false},
	} {
		p := &problems{}
		p.hostPort("listen", tt.listen)
		if ok := len(p.list) == 0; ok != tt.ok {
			t.Errorf("listen %q: ok = %v, want %v (%v)", tt.listen, ok, tt.ok, p.list)
		}
	}
}

func TestValidateRedis(t *testing.T) {
	tests := []struct {
		name  string
		redis string
		want  []string
	}{
		{name: "unset keeps limits in memory", redis: "{}"},
		{name: "addr", redis: `{addr: "127.0.0.1:6379"}`},
		{name: "addr with password and db", redis: `{addr: "redis.internal:6379", password: {value: "s3cret"}, db: 2}`},
		{name: "bad addr", redis: `{addr: "redis.internal"}`, want: []string{"redis.addr"}},
		{name: "password without addr", redis: `{password: {value: "s3cret"}}`, want: []string{"redis.addr"}},
		{name: "negative db", redis: `{addr: "127.0.0.1:6379", db: -1}`, want: []string{"redis.db"}},
		{name: "empty prefix", redis: `{addr: "127.0.0.1:6379", key_prefix: ""}`, want: []string{"redis.key_prefix"}},
		{name: "password env unset", redis: `{addr: "127.0.0.1:6379", password: {env: NOT_SET}}`, want: []string{"redis.password"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(minimalYAML+"redis: "+tt.redis+"\n"), goodEnv().get)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if c.Redis.Password.IsSet() && len(c.Redis.Password.Bytes()) == 0 {
					t.Error("redis.password is not resolved")
				}
				return
			}
			if got := problemKeys(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("problems at %q, want %q: %v", got, tt.want, err)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}
