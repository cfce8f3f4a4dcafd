package config

import (
	"errors"
	"io/fs"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
)

func TestParseMinimal(t *testing.T) {
	c, err := Parse([]byte(minimalYAML), goodEnv().get)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Stream.AccountID, "acc"; got != want {
		t.Errorf("stream.account_id = %q, want %q", got, want)
	}
	if c.Stream.TokenTTL != 5*time.Minute || c.Links.Mode != "proxy" {
		t.Errorf("defaults not kept: token_ttl %s, links.mode %q", c.Stream.TokenTTL, c.Links.Mode)
	}
}

func TestUnknownKeys(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // keys, each with its line
	}{
		{"top level", "lisen: x\n", []string{"lisen: unknown key (line 1)"}},
		{"nested", "stream:\n  acount_id: x\n", []string{"stream.acount_id: unknown key (line 2)"}},
		{"in a plan", "plans:\n  pro:\n    minutes: 5\n", []string{"plans.pro.minutes: unknown key (line 3)"}},
		{"in a list", "links:\n  grant_keys:\n    - {id: a, key: b}\n", []string{"links.grant_keys[0].key: unknown key (line 3)"}},
		{"in a secret", "stream:\n  api_token: {envv: X}\n", []string{"stream.api_token.envv: unknown key (line 2)"}},
		{"in an egress rule", "stream:\n  egress_rules: [{type: any, action: block, ips: []}]\n", []string{"stream.egress_rules[0].ips: unknown key (line 2)"}},
		{"anchored unknown key", "base: &b {per_minute: 1, burs: 2}\n", []string{"base: unknown key (line 1)"}},
		{"merged in", "x: &b {per_minute: 1, burs: 2}\npolicy:\n  ip_limit:\n    <<: *b\n", []string{
			"x: unknown key (line 1)",
			"policy.ip_limit.burs: unknown key (line 1)",
		}},
		{"several", "a: 1\nlog:\n  levl: debug\n  fmt: json\n", []string{
			"a: unknown key (line 1)",
			"log.levl: unknown key (line 3)",
			"log.fmt: unknown key (line 4)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), goodEnv().get)
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("got %v, want unknown key errors", err)
			}
			var got []string
			for _, e := range es {
				got = append(got, e.Error())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestStrictDecoder checks the yaml.v3 decoder on its own, as the backstop of
// the key walk.
func TestStrictDecoder(t *testing.T) {
	c := Default()
	err := decodeStrict([]byte("stream:\n  bogus: 1\n"), &c)
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("got %v, want an error naming bogus at line 2", err)
	}
}

func TestTypeErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"bad duration", "stream:\n  token_ttl: 5x\n", "line 2"},
		{"integer duration", "shutdown_grace: 30\n", "line 1"},
		{"secret as string", "stream:\n  api_token: abc\n", "line 2: a secret is a mapping"},
		{"secret value as list", "stream:\n  api_token: {value: [a]}\n", "line 2: secret value must be a string"},
		{"list for a string", "listen: [a]\n", "line 1"},
		{"two documents", "listen: a:1\n---\nlisten: b:2\n", "line 2: more than one YAML document"},
		{"syntax", "listen: [\n", "yaml:"},
		{"duplicate key", "log: {level: info}\nlog: {format: json}\n", `mapping key "log" already defined`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), goodEnv().get)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestEmptyDocumentIsDefaults(t *testing.T) {
	for _, doc := range []string{"", "# nothing\n", "---\n"} {
		c := Default()
		if err := decode([]byte(doc), &c); err != nil {
			t.Errorf("decode(%q): %v", doc, err)
		}
		if c.Listen != "127.0.0.1:8080" {
			t.Errorf("decode(%q): listen = %q, want the default", doc, c.Listen)
		}
	}
}

func TestEnvOverrides(t *testing.T) {
	e := goodEnv()
	e["STREAMGATE_LISTEN"] = "0.0.0.0:9000"
	e["STREAMGATE_PUBLIC_URL"] = "https://dl.example.com"
	e["STREAMGATE_LOG_LEVEL"] = "debug"
	e["STREAMGATE_LOG_FORMAT"] = "console"
	e["STREAMGATE_STREAM_ACCOUNT_ID"] = "acc-env"
	e["STREAMGATE_STREAM_DELIVERY_URL"] = "https://customer-env.cloudflarestream.com"
	e["STREAMGATE_STREAM_SIGNING_KEY_ID"] = "kid-env"
	e["STREAMGATE_LEDGER_DRIVER"] = "postgres"
	e["STREAMGATE_LEDGER_DSN"] = "postgres://streamgate@db.internal/streamgate"
	e["STREAMGATE_LEDGER_PATH"] = "/var/lib/streamgate/ledger.db"
	e["STREAMGATE_ADMIN_LISTEN"] = "127.0.0.1:9090"
	c, err := Parse([]byte(minimalYAML+"listen: 127.0.0.1:1\nlog: {level: warn}\n"), e.get)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ key, got, want string }{
		{"listen", c.Listen, "0.0.0.0:9000"},
		{"public_url", c.PublicURL, "https://dl.example.com"},
		{"log.level", c.Log.Level, "debug"},
		{"log.format", c.Log.Format, "console"},
		{"stream.account_id", c.Stream.AccountID, "acc-env"},
		{"stream.delivery_url", c.Stream.DeliveryURL, "https://customer-env.cloudflarestream.com"},
		{"stream.signing_key_id", c.Stream.SigningKeyID, "kid-env"},
		{"ledger.driver", c.Ledger.Driver, "postgres"},
		{"ledger.dsn", string(c.Ledger.DSN.Bytes()), "postgres://streamgate@db.internal/streamgate"},
		{"ledger.path", c.Ledger.Path, "/var/lib/streamgate/ledger.db"},
		{"admin.listen", c.Admin.Listen, "127.0.0.1:9090"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.key, tt.got, tt.want)
		}
	}
	for name, key := range EnvOverrides() {
		if _, ok := e[name]; !ok {
			t.Errorf("override %s (%s) is not tested", name, key)
		}
	}
}

func TestEnvOverrideIsValidated(t *testing.T) {
	e := goodEnv()
	e["STREAMGATE_LOG_LEVEL"] = "loud"
	_, err := Parse([]byte(minimalYAML), e.get)
	if got := problemKeys(t, err); !slices.Equal(got, []string{"log.level"}) {
		t.Errorf("problems at %q, want [log.level]: %v", got, err)
	}
}

func TestPlansReplaceDefaultsAndStartFromPlanDefaults(t *testing.T) {
	c, err := Parse([]byte(minimalYAML+`
default_plan: pro
plans:
  pro:
    minutes_per_month: -1
    downloads: {burst: 50}
    countries: {block: [RU]}
policy:
  geoip_db: `+strconv.Quote(writeFile(t, "geo.mmdb", []byte("x")))+`
  ip_limit: {per_minute: 10}
`), goodEnv().get)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Plans["free"]; ok {
		t.Error("default plan free kept although plans were given")
	}
	pro := c.Plans["pro"]
	if pro.MinutesPerMonth != -1 || pro.MaxConcurrent != 2 || pro.Links != (Rate{30, 10}) || pro.Downloads != (Rate{30, 50}) {
		t.Errorf("plans.pro = %+v, want unset keys at their defaults", pro)
	}
	if got := c.Policy.IPLimit; got != (Rate{PerMinute: 10, Burst: 20}) {
		t.Errorf("policy.ip_limit = %+v, want burst kept at 20", got)
	}
}

func TestSecretInYAMLReplacesDefault(t *testing.T) {
	// The default api_token is {env: STREAM_API_TOKEN}; a file in YAML must not
	// sit beside it as "both given".
	path := writeFile(t, "token", []byte("from-file\n"))
	c, err := Parse([]byte(strings.Replace(minimalYAML, "stream:\n", "stream:\n  api_token: {file: "+strconv.Quote(path)+"}\n", 1)), goodEnv().get)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(c.Stream.APIToken.Bytes()); got != "from-file" {
		t.Errorf("stream.api_token = %q, want from-file", got)
	}
	if c.Stream.APIToken.Env != "" {
		t.Errorf("stream.api_token.env = %q, want it cleared", c.Stream.APIToken.Env)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(t.TempDir()+"/none.yaml", goodEnv().get)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("got %v, want fs.ErrNotExist", err)
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	path := writeFile(t, "c.yaml", []byte("listen: nope\n"))
	_, err := Load(path, goodEnv().get)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("got %v, want the path in the error", err)
	}
}

func TestEgressRulesDecode(t *testing.T) {
	yml := strings.Replace(minimalYAML, "stream:\n", `stream:
  egress_rules:
    - {type: ip.src, action: allow, ip: [203.0.113.7, "2001:db8::/32"]}
    - {type: ip.geoip.country, action: block, country: [RU]}
    - {type: any, action: block}
`, 1)
	c, err := Parse([]byte(yml), goodEnv().get)
	if err != nil {
		t.Fatal(err)
	}
	want := []stream.AccessRule{
		{Type: stream.RuleIPSrc, Action: stream.ActionAllow, IP: []string{"203.0.113.7", "2001:db8::/32"}},
		{Type: stream.RuleCountry, Action: stream.ActionBlock, Country: []string{"RU"}},
		{Type: stream.RuleAny, Action: stream.ActionBlock},
	}
	if !reflect.DeepEqual(c.Stream.EgressRules, want) {
		t.Errorf("stream.egress_rules = %+v, want %+v", c.Stream.EgressRules, want)
	}
}
