package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
)

// tokenClaimsOf decodes the payload of the token in a delivery URL.
func tokenClaimsOf(t *testing.T, deliveryURL string) map[string]any {
	t.Helper()
	u, err := url.Parse(deliveryURL)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(strings.Split(strings.TrimPrefix(u.Path, "/"), "/")[0], ".")
	if len(parts) != 3 {
		t.Fatalf("%s holds no JWT", deliveryURL)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestTokenMint mints URLs with the configured key and fetches them from clients
// in different countries and at different addresses: the emulator enforces the
// access rules as Stream does.
func TestTokenMint(t *testing.T) {
	se := newStreamEnv(t)
	uid := se.addVideo(testDuration, testSize)
	path := se.writeConfig(t, t.TempDir(), freePort(t), gwOptions{})
	mint := func(args ...string) (string, error) {
		out, _, err := cli(context.Background(), noEnv, append([]string{"token", "mint", "--config", path}, args...)...)
		return strings.TrimSpace(out), err
	}
	gb, us := clientFrom(t, ipGB), clientFrom(t, ipUS)

	cases := []struct {
		name   string
		args   []string
		file   string
		size   int
		gb, us int
	}{
		{"no rules", []string{uid}, "default.mp4", testSize, http.StatusOK, http.StatusOK},
		{"audio", []string{uid, "--type", "audio"}, "audio.m4a", testSize / 8, http.StatusOK, http.StatusOK},
		{"country", []string{uid, "--country", "gb"}, "default.mp4", testSize, http.StatusOK, http.StatusForbidden},
		{"countries", []string{uid, "--country", "DE", "--country", "US"}, "default.mp4", testSize, http.StatusForbidden, http.StatusOK},
		{"address", []string{uid, "--ip", ipUS}, "default.mp4", testSize, http.StatusForbidden, http.StatusOK},
		{"network", []string{uid, "--ip", "127.0.0.2/31"}, "default.mp4", testSize, http.StatusOK, http.StatusOK},
		{"another network", []string{uid, "--ip", "127.0.0.4/31"}, "default.mp4", testSize, http.StatusForbidden, http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, err := mint(tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(u, se.url+"/") || !strings.HasSuffix(u, "/downloads/"+tc.file) {
				t.Errorf("URL %s, want %s/TOKEN/downloads/%s", u, se.url, tc.file)
			}
			for _, c := range []struct {
				client *http.Client
				want   int
			}{{gb, tc.gb}, {us, tc.us}} {
				r := do(t, c.client, http.MethodGet, u, "", nil)
				if r.status != c.want || c.want == http.StatusOK && len(r.body) != tc.size {
					t.Errorf("GET: status %d with %d bytes, want %d", r.status, len(r.body), c.want)
				}
			}
		})
	}

	t.Run("claims", func(t *testing.T) {
		before := time.Now()
		u, err := mint(uid, "--ttl", "2h")
		if err != nil {
			t.Fatal(err)
		}
		c := tokenClaimsOf(t, u)
		exp, _ := c["exp"].(float64)
		if c["sub"] != uid || c["kid"] != se.keyID || c["downloadable"] != true ||
			exp < float64(before.Add(2*time.Hour).Unix()) || exp > float64(time.Now().Add(2*time.Hour).Unix()) {
			t.Errorf("claims %v, want sub, kid, downloadable and exp 2h ahead", c)
		}
		u, _ = mint(uid)
		exp, _ = tokenClaimsOf(t, u)["exp"].(float64)
		if d := time.Until(time.Unix(int64(exp), 0)); d > 5*time.Minute || d < 4*time.Minute {
			t.Errorf("default lifetime %s, want stream.token_ttl (5m)", d)
		}
	})

	errCases := []struct {
		name string
		args []string
		want string
	}{
		{"country and ip", []string{uid, "--country", "GB", "--ip", ipGB}, "cannot require both"},
		{"bad country", []string{uid, "--country", "GBR"}, `--country "GBR"`},
		{"bad ip", []string{uid, "--ip", "300.1.1.1"}, `--ip "300.1.1.1"`},
		{"bad type", []string{uid, "--type", "hls"}, "--type"},
		{"ttl too long", []string{uid, "--ttl", "25h"}, "--ttl 25h0m0s"},
		{"bad uid", []string{"NOTAUID"}, "invalid video uid"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := mint(tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || out != "" {
				t.Errorf("mint %v = %q, %v; want an error with %q", tc.args, out, err, tc.want)
			}
		})
	}

	t.Run("no signing key", func(t *testing.T) {
		ae := newAPIEnv(t, 0, "")
		_, _, err := cli(context.Background(), noEnv, "token", "mint", uid, "--config", ae.cfgPath)
		for _, key := range []string{"stream.delivery_url", "stream.signing_key_id", "stream.signing_key", "STREAM_SIGNING_KEY"} {
			if err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("mint without a signing key: %v, want it to name %s", err, key)
			}
		}
	})
}

// TestTokenMintRules is the rule table of hand-minted tokens.
func TestTokenMintRules(t *testing.T) {
	block := stream.AccessRule{Type: stream.RuleAny, Action: stream.ActionBlock}
	cases := []struct {
		name      string
		countries []string
		ip        string
		want      []stream.AccessRule
	}{
		{"none", nil, "", nil},
		{"countries", []string{"gb", " us"}, "", []stream.AccessRule{{Type: stream.RuleCountry, Action: stream.ActionAllow, Country: []string{"GB", "US"}}, block}},
		{"address", nil, "::ffff:192.0.2.1", []stream.AccessRule{{Type: stream.RuleIPSrc, Action: stream.ActionAllow, IP: []string{"192.0.2.1"}}, block}},
		{"network", nil, "2001:db8::1/32", []stream.AccessRule{{Type: stream.RuleIPSrc, Action: stream.ActionAllow, IP: []string{"2001:db8::/32"}}, block}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mintRules(tc.countries, tc.ip)
			if err != nil {
				t.Fatal(err)
			}
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(tc.want)
			if string(g) != string(w) {
				t.Errorf("rules %s, want %s", g, w)
			}
		})
	}
}
