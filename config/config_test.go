package config

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const examplePath = "../config.example.yaml"

func TestDefault(t *testing.T) {
	c := Default()
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"listen", c.Listen, "127.0.0.1:8080"},
		{"public_url", c.PublicURL, "http://127.0.0.1:8080"},
		{"shutdown_grace", c.ShutdownGrace, 30 * time.Second},
		{"stream.api_token", c.Stream.APIToken.Env, "STREAM_API_TOKEN"},
		{"stream.api_url", c.Stream.APIURL, "https://api.cloudflare.com/client/v4/"},
		{"stream.signing_key", c.Stream.SigningKey.Env, "STREAM_SIGNING_KEY"},
		{"stream.token_ttl", c.Stream.TokenTTL, 5 * time.Minute},
		{"stream.video_cache_ttl", c.Stream.VideoCacheTTL, 30 * time.Second},
		{"auth.algorithms", c.Auth.Algorithms, []string{"HS256"}},
		{"auth.leeway", c.Auth.Leeway, 30 * time.Second},
		{"auth.user_claim", c.Auth.UserClaim, "sub"},
		{"auth.plan_claim", c.Auth.PlanClaim, "plan"},
		{"links.mode", c.Links.Mode, "proxy"},
		{"links.ttl", c.Links.TTL, 15 * time.Minute},
		{"links.bind_ip", c.Links.BindIP, false},
		{"policy.unknown_country", c.Policy.UnknownCountry, "allow"},
		{"policy.ip_limit", c.Policy.IPLimit, Rate{PerMinute: 60, Burst: 20}},
		{"policy.max_limiter_keys", c.Policy.MaxLimiterKeys, 100000},
		{"default_plan", c.DefaultPlan, "free"},
		{"plans", c.Plans, Plans{"free": {
			MinutesPerMonth: 600,
			Links:           Rate{PerMinute: 30, Burst: 10},
			Downloads:       Rate{PerMinute: 30, Burst: 10},
			MaxConcurrent:   2,
		}}},
		{"metering.mode", c.Metering.Mode, "proportional"},
		{"metering.resume_window", c.Metering.ResumeWindow, time.Hour},
		{"metering.checkpoint_every", c.Metering.CheckpointEvery, 2 * time.Second},
		{"ledger.driver", c.Ledger.Driver, "sqlite"},
		{"ledger.path", c.Ledger.Path, "streamgate.db"},
		{"ledger.dsn", c.Ledger.DSN.Env, "STREAMGATE_LEDGER_DSN"},
		{"ledger.stale_after", c.Ledger.StaleAfter, 2 * time.Minute},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}

	// Default hands out fresh slices and maps every time.
	c.Auth.Algorithms[0] = "RS256"
	c.Plans["free"] = Plan{}
	if d := Default(); d.Auth.Algorithms[0] != "HS256" || d.Plans["free"].MaxConcurrent != 2 {
		t.Error("Default shares state between calls")
	}
}

func TestDefaultNeedsOnlyTheRequiredKeys(t *testing.T) {
	c := Default()
	err := c.Validate(env{}.get)
	want := []string{
		"stream.account_id",
		"stream.api_token",
		"stream.delivery_url",
		"stream.signing_key_id",
		"stream.signing_key",
		"auth",
		"links.grant_keys",
	}
	if got := problemKeys(t, err); !slices.Equal(got, want) {
		t.Errorf("problems at %q, want %q\n%v", got, want, err)
	}
}

func TestExampleLoads(t *testing.T) {
	c, err := Load(examplePath, goodEnv().get)
	if err != nil {
		t.Fatalf("Load(%s): %v", examplePath, err)
	}
	if got, want := string(c.Stream.APIToken.Bytes()), "cf-api-token"; got != want {
		t.Errorf("stream.api_token = %q, want %q", got, want)
	}
	if got := c.Links.GrantKeys[0].Secret.Bytes(); len(got) != 32 {
		t.Errorf("links.grant_keys[0].secret has %d bytes, want 32", len(got))
	}
	if got, want := string(c.Auth.HMACSecrets[0].Secret.Bytes()), "portal-secret-of-at-least-32-bytes!!"; got != want {
		t.Errorf("auth.hmac_secrets[0].secret = %q, want %q", got, want)
	}
}

func TestExampleWithoutSecretsNamesThem(t *testing.T) {
	_, err := Load(examplePath, env{}.get)
	want := []string{
		"stream.api_token",
		"stream.signing_key",
		"auth.hmac_secrets[0].secret",
		"links.grant_keys[0].secret",
	}
	if got := problemKeys(t, err); !slices.Equal(got, want) {
		t.Errorf("problems at %q, want %q\n%v", got, want, err)
	}
	if !strings.Contains(err.Error(), "STREAM_SIGNING_KEY") {
		t.Errorf("error does not name the variable: %v", err)
	}
}

// TestExampleShowsDefaults checks that config.example.yaml gives the default of
// every key that has one: decoded over a zero Config, it equals Default once the
// placeholders of required keys are cleared.
func TestExampleShowsDefaults(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var got Config
	if err := decode(data, &got); err != nil {
		t.Fatal(err)
	}
	got.Stream.AccountID = ""
	got.Stream.DeliveryURL = ""
	got.Stream.SigningKeyID = ""
	got.Auth.HMACSecrets = nil
	got.Links.GrantKeys = nil
	want := Default()
	emptyToNil(reflect.ValueOf(&got).Elem())
	emptyToNil(reflect.ValueOf(&want).Elem())
	if !reflect.DeepEqual(got, want) {
		t.Errorf("example decodes to\n%+v\nwant the defaults\n%+v", got, want)
	}
}

// emptyToNil sets every empty slice inside v to nil.
func emptyToNil(v reflect.Value) {
	switch v.Kind() {
	case reflect.Slice:
		if v.Len() == 0 && v.CanSet() {
			v.Set(reflect.Zero(v.Type()))
		}
		for i := range v.Len() {
			emptyToNil(v.Index(i))
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				emptyToNil(v.Field(i))
			}
		}
	case reflect.Pointer:
		if !v.IsNil() {
			emptyToNil(v.Elem())
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(k))
			emptyToNil(e)
			v.SetMapIndex(k, e)
		}
	}
}

// TestExampleHasEveryKey checks that config.example.yaml names every key, in
// the order of the Config type.
func TestExampleHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	got := exampleKeys(doc.Content[0], "")
	want := typeKeys(reflect.TypeOf(Config{}), "")
	// A plan's countries override is shown commented out: written out, even
	// empty, it would replace the global rules.
	// policy.countries.unknown_country is refused: policy.unknown_country is
	// the global one.
	want = slices.DeleteFunc(want, func(k string) bool {
		return strings.HasPrefix(k, "plans.*.countries") || k == "policy.countries.unknown_country"
	})
	if !strings.Contains(string(data), `# countries: {allow: [], block: [], unknown_country: ""}`) {
		t.Error("example does not show plans.*.countries")
	}
	if !slices.Equal(got, want) {
		t.Errorf("example keys\n%q\nwant\n%q", got, want)
	}
}

func exampleKeys(n *yaml.Node, path string) []string {
	var keys []string
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		name := n.Content[i].Value
		if path == "plans" {
			name = "*"
		}
		key := join(path, name)
		keys = append(keys, key)
		if v := n.Content[i+1]; !isSecret(v) {
			keys = append(keys, exampleKeys(v, key)...)
		}
	}
	return keys
}

func isSecret(n *yaml.Node) bool {
	if n.Kind != yaml.MappingNode || len(n.Content) == 0 {
		return false
	}
	k := n.Content[0].Value
	return k == "value" || k == "env" || k == "file"
}

func typeKeys(t reflect.Type, path string) []string {
	var keys []string
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeOf(Secret{}):
		return nil
	case t.Kind() == reflect.Map:
		key := join(path, "*")
		return append([]string{key}, typeKeys(t.Elem(), key)...)
	case t.Kind() != reflect.Struct:
		return nil
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		key := join(path, name)
		keys = append(keys, key)
		keys = append(keys, typeKeys(f.Type, key)...)
	}
	return keys
}
