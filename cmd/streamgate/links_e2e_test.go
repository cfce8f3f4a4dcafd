package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// makeLink asks gw for a proxy link to uid with body and returns its answer.
func makeLink(t *testing.T, c *http.Client, gw *testGateway, token, uid, body string) map[string]any {
	t.Helper()
	r := do(t, c, http.MethodPost, gw.url+"/v1/videos/"+uid+"/links", token, strings.NewReader(body),
		"Content-Type", "application/json")
	if r.status != http.StatusCreated {
		t.Fatalf("POST links: %d %s", r.status, r.body)
	}
	return r.json(t)
}

// wantLinkRefused fetches link and wants 403 with problem type typ.
func wantLinkRefused(t *testing.T, c *http.Client, link, typ string) {
	t.Helper()
	r := do(t, c, http.MethodGet, link, "", nil)
	if r.status != http.StatusForbidden || r.json(t)["type"] != "urn:streamgate:problem:"+typ {
		t.Fatalf("GET link: %d %s; want 403 %s", r.status, r.body, typ)
	}
}

// revokeCLI runs `streamgate links revoke` against gw's admin API.
func revokeCLI(t *testing.T, gw *adminGateway, args ...string) string {
	t.Helper()
	out, stderr, err := cli(context.Background(), noEnv,
		append([]string{"links", "revoke", "--config", gw.cfgPath, "--admin", gw.admin}, args...)...)
	if err != nil {
		t.Fatalf("links revoke %v: %v\n%s", args, err, stderr)
	}
	return out
}

// TestLinkRevocationAcrossReplicas runs two gateways on one PostgreSQL ledger:
// links revoked through one replica's admin API (by the CLI) are refused by
// the other on their next request, by user, by user and video, and by ID;
// links made after a revocation work on both; and a use-limited link's
// download goes on across both without spending another use.
func TestLinkRevocationAcrossReplicas(t *testing.T) {
	dsn, _, _ := sharedStores(t)
	se := newStreamEnv(t)
	uid := se.addVideo(testDuration, testSize)
	other := se.addVideo(testDuration, testSize)
	o := gwOptions{LedgerDSN: dsn}
	a, b := startAdminGateway(t, se, o), startAdminGateway(t, se, o)
	c := clientFrom(t, ipGB)
	tok := portalToken(t, "rhea", "basic")

	t.Run("by user", func(t *testing.T) {
		link := makeLink(t, c, a.testGateway, tok, uid, `{}`)["url"].(string)
		toOther := makeLink(t, c, b.testGateway, tok, other, `{"type":"default"}`)["url"].(string)
		if r := do(t, c, http.MethodGet, link, "", nil); r.status != http.StatusOK {
			t.Fatalf("the link before its revocation: %d", r.status)
		}
		out := revokeCLI(t, a, "--user", "rhea")
		if !strings.Contains(out, `revoked the links of user "rhea" issued before`) {
			t.Errorf("links revoke printed %q", out)
		}
		// The link was made on a; b refuses it, and the user's other links.
		wantLinkRefused(t, c, strings.Replace(link, a.url, b.url, 1), "link_revoked")
		wantLinkRefused(t, c, toOther, "link_revoked")
		// Links carry their issue time to the second: one made from the next
		// second on works, on either replica.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
		fresh := makeLink(t, c, b.testGateway, tok, uid, `{}`)["url"].(string)
		if r := do(t, c, http.MethodGet, strings.Replace(fresh, b.url, a.url, 1), "", nil); r.status != http.StatusOK {
			t.Fatalf("a link made after the revocation: %d %s", r.status, r.body)
		}
	})

	t.Run("by user and video", func(t *testing.T) {
		tok := portalToken(t, "ravi", "basic")
		link := makeLink(t, c, a.testGateway, tok, uid, `{}`)["url"].(string)
		toOther := makeLink(t, c, a.testGateway, tok, other, `{}`)["url"].(string)
		revokeCLI(t, b, "--user", "ravi", "--video", uid)
		wantLinkRefused(t, c, link, "link_revoked")
		if r := do(t, c, http.MethodGet, toOther, "", nil); r.status != http.StatusOK {
			t.Fatalf("the user's link to another video: %d", r.status)
		}
	})

	t.Run("by ID", func(t *testing.T) {
		tok := portalToken(t, "rosa", "basic")
		one := makeLink(t, c, a.testGateway, tok, uid, `{}`)
		two := makeLink(t, c, a.testGateway, tok, uid, `{"type":"audio"}`)
		out := revokeCLI(t, b, "--id", one["id"].(string))
		if !strings.Contains(out, "revoked link "+one["id"].(string)) {
			t.Errorf("links revoke printed %q", out)
		}
		wantLinkRefused(t, c, one["url"].(string), "link_revoked")
		if r := do(t, c, http.MethodGet, two["url"].(string), "", nil); r.status != http.StatusOK {
			t.Fatalf("the user's other link: %d", r.status)
		}
	})

	t.Run("a use-limited download goes on across replicas", func(t *testing.T) {
		tok := portalToken(t, "remi", "basic")
		link := makeLink(t, c, a.testGateway, tok, uid, `{"max_uses":1}`)["url"].(string)
		if r := do(t, c, http.MethodGet, link, "", nil); r.status != http.StatusOK {
			t.Fatalf("first use: %d", r.status)
		}
		// Within the resume window the same download goes on, on either
		// replica: a ranged request spends nothing.
		onB := strings.Replace(link, a.url, b.url, 1)
		if r := do(t, c, http.MethodGet, onB, "", nil, "Range", "bytes=0-99"); r.status != http.StatusPartialContent {
			t.Fatalf("a range of the same download on the other replica: %d %s", r.status, r.body)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		_, _, err := cli(context.Background(), noEnv, "links", "revoke", "--config", a.cfgPath, "--admin", a.admin)
		if err == nil {
			t.Error("links revoke without --user or --id succeeded")
		}
		_, _, err = cli(context.Background(), noEnv, "links", "revoke", "--config", a.cfgPath, "--admin", a.admin,
			"--user", "x", "--video", "not-a-uid")
		if err == nil || !strings.Contains(err.Error(), "bad_video") {
			t.Errorf("links revoke with a bad video: %v", err)
		}
		// The public port has no admin route.
		r := do(t, c, http.MethodPost, a.url+"/v1/admin/links/revoke", testAdminToken, strings.NewReader(`{"user":"x"}`),
			"Content-Type", "application/json")
		if r.status == http.StatusOK {
			t.Errorf("the public port revoked links: %d %s", r.status, r.body)
		}
		// The admin API wants its token.
		r = do(t, c, http.MethodPost, a.admin+"/v1/admin/links/revoke", "wrong-token", strings.NewReader(`{"user":"x"}`),
			"Content-Type", "application/json")
		if r.status != http.StatusUnauthorized {
			t.Errorf("a wrong admin token: %d %s", r.status, r.body)
		}
	})
}
