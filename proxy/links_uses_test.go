package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
	"github.com/streamgate/streamgate/usage"
)

// uidLarge is a video big enough for aria2c to split in eight.
const (
	uidLarge  = "5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f"
	sizeLarge = 16 << 20
	durLarge  = 300.0
)

type usesLink struct {
	ID        string `json:"id"`
	URL       string `json:"url"`
	ExpiresAt string `json:"expires_at"`
	Mode      string `json:"mode"`
	MaxUses   int    `json:"max_uses"`
}

// newUsesEnv is an environment whose links live a day, so the clock can pass
// the resume window between downloads of one link.
func newUsesEnv(t *testing.T) (*env, *gateway) {
	e := newEnv(t, envOptions{})
	e.emu.AddVideo(streamtest.Video{UID: uidLarge, Duration: durLarge, Size: sizeLarge, ReadyToStream: true})
	e.emu.SetDownloadReady(uidLarge, stream.Default)
	gw := e.gateway(func(c *Config, _ *Deps) { c.LinkTTL = 24 * time.Hour })
	return e, gw
}

func (e *env) usesLink(t *testing.T, gw *gateway, tok, uid, body string) usesLink {
	t.Helper()
	h := bearer(tok)
	h.Set("Content-Type", "application/json")
	r := do(t, e.client(addrGB), "POST", gw.url+"/v1/videos/"+uid+"/links", h, strings.NewReader(body))
	if r.status != http.StatusCreated {
		t.Fatalf("POST links %s: status %d, want 201: %s", body, r.status, r.body)
	}
	var l usesLink
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatal(err)
	}
	e.remember(strings.Split(l.URL, "/")[4])
	return l
}

func TestLinkMaxUsesRequest(t *testing.T) {
	t.Parallel()
	e, gw := newUsesEnv(t)
	direct := e.gateway(func(c *Config, _ *Deps) { c.LinkMode = "direct" })
	tok := e.jwt("max-uses", "", nil)
	tests := []struct {
		name, body string
		gw         *gateway
		status     int
		typ        string
	}{
		{"zero", `{"max_uses":0}`, gw, 400, "bad_max_uses"},
		{"negative", `{"max_uses":-2}`, gw, 400, "bad_max_uses"},
		{"over the bound", fmt.Sprintf(`{"max_uses":%d}`, MaxLinkUses+1), gw, 400, "bad_max_uses"},
		{"fraction", `{"max_uses":1.5}`, gw, 400, "bad_max_uses"},
		{"string", `{"max_uses":"2"}`, gw, 400, "bad_max_uses"},
		{"huge", `{"max_uses":1e30}`, gw, 400, "bad_max_uses"},
		{"direct mode", `{"max_uses":2}`, direct, 400, "bad_max_uses"},
		{"unknown field", `{"max_use":2}`, gw, 400, "bad_body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := bearer(tok)
			h.Set("Content-Type", "application/json")
			r := do(t, e.client(addrGB), "POST", tc.gw.url+"/v1/videos/"+uidPublic+"/links", h, strings.NewReader(tc.body))
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if p := r.problem(t); p["type"] != "urn:streamgate:problem:"+tc.typ {
				t.Errorf("type %v, want %s", p["type"], tc.typ)
			}
		})
	}
	t.Run("answer names the link and its uses", func(t *testing.T) {
		l := e.usesLink(t, gw, tok, uidPublic, fmt.Sprintf(`{"max_uses":%d}`, MaxLinkUses))
		if l.ID == "" || l.MaxUses != MaxLinkUses || !strings.Contains(l.URL, "/dl/") {
			t.Errorf("link = %+v", l)
		}
		g, err := e.grants.Verify(strings.Split(l.URL, "/")[4])
		if err != nil || g.ID() != l.ID || g.MaxUses != MaxLinkUses || !g.IssuedAt.Equal(t0) {
			t.Errorf("grant = %+v, %v; want ID %s, %d uses, issued at %v", g, err, l.ID, MaxLinkUses, t0)
		}
		unlimited := e.usesLink(t, gw, tok, uidPublic, `{}`)
		if unlimited.ID == "" || unlimited.ID == l.ID || unlimited.MaxUses != 0 {
			t.Errorf("unlimited link = %+v", unlimited)
		}
	})
}

// wantRefusedLink fetches url, wants a 403 problem of typ, and checks the
// refusal reserved and billed nothing and left no delivery.
func (e *env) wantRefusedLink(t *testing.T, url, user, typ string) map[string]any {
	t.Helper()
	ctx := context.Background()
	period := usage.Period(e.clock.Now())
	before, err := e.ledger.Usage(ctx, user, period)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := e.ledger.Report(ctx, period)
	r := do(t, e.client(addrUS), "GET", url, nil, nil)
	if r.status != http.StatusForbidden {
		t.Fatalf("GET: status %d, want 403: %s", r.status, r.body)
	}
	p := r.problem(t)
	if p["type"] != "urn:streamgate:problem:"+typ {
		t.Fatalf("problem type %v, want %s", p["type"], typ)
	}
	after, err := e.ledger.Usage(ctx, user, period)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("the refusal changed the usage: %+v, was %+v", after, before)
	}
	rowsAfter, _ := e.ledger.Report(ctx, period)
	if fmt.Sprint(rowsAfter) != fmt.Sprint(rows) {
		t.Errorf("the refusal changed the report: %+v, was %+v", rowsAfter, rows)
	}
	return p
}

// TestLinkUsesAria2c: a 2-use link survives `aria2c -x8 -s8` as one use (its
// first GET starts the download, its segments join it); a second download,
// past the resume window, spends the second use; a third is refused 403
// link_used_up and reserves and bills nothing.
func TestLinkUsesAria2c(t *testing.T) {
	t.Parallel()
	aria, err := exec.LookPath("aria2c")
	if err != nil {
		t.Skip("aria2c is not installed (Debian: apt-get install aria2)")
	}
	e, gw := newUsesEnv(t)
	const user = "aria-user"
	l := e.usesLink(t, gw, e.jwt(user, "", nil), uidLarge, `{"max_uses":2}`)
	if l.MaxUses != 2 {
		t.Fatalf("link = %+v", l)
	}

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, aria, "--no-conf", "--dir="+dir, "--out=one.mp4", "--console-log-level=warn",
		"--file-allocation=none", "--auto-file-renaming=false", "--summary-interval=0",
		"--max-connection-per-server=8", "--split=8", "--min-split-size=1M", l.URL)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("aria2c: %v\n%s", err, out.String())
	}
	if fi, err := os.Stat(filepath.Join(dir, "one.mp4")); err != nil || fi.Size() != sizeLarge {
		t.Fatalf("aria2c's file: %v, %v; want %d bytes", fi, err, sizeLarge)
	}
	segments := 0
	for _, rq := range e.rec.deliveries() {
		if rq.Header.Get("Range") != "" {
			segments++
		}
	}
	if segments < 2 {
		t.Fatalf("aria2c sent %d ranged requests; the test needs it to split the file", segments)
	}
	u := e.settled(t, user)
	if want := durLarge / 60; !near(u.MinutesUsed, want) {
		t.Fatalf("after aria2c: %v minutes used, want %v (one download)", u.MinutesUsed, want)
	}

	// Past the resume window, a new download: the second use.
	e.clock.Advance(61 * time.Minute)
	if r := do(t, e.client(addrUS), "GET", l.URL, nil, nil); r.status != http.StatusOK || len(r.body) != sizeLarge {
		t.Fatalf("second download: status %d, %d bytes", r.status, len(r.body))
	}
	if u := e.settled(t, user); !near(u.MinutesUsed, 2*durLarge/60) {
		t.Fatalf("after the second download: %v minutes used, want %v", u.MinutesUsed, 2*durLarge/60)
	}

	// A resume of the second download, within the window, spends nothing.
	e.clock.Advance(10 * time.Minute)
	if r := do(t, e.client(addrUS), "GET", l.URL, withRange(nil, "bytes=1000-1999"), nil); r.status != http.StatusPartialContent {
		t.Fatalf("resume within the window: status %d: %s", r.status, r.body)
	}
	e.settled(t, user)

	// Past the window again: the third download is refused.
	e.clock.Advance(61 * time.Minute)
	p := e.wantRefusedLink(t, l.URL, user, "link_used_up")
	if d, _ := p["detail"].(string); !strings.Contains(d, "2 download") || p["max_uses"] != 2.0 {
		t.Errorf("refusal = %v; want it to say the link had 2 uses", p)
	}
}

// TestLinkRevoked: links revoked by user, by user and video, and by ID answer
// 403 link_revoked and reserve nothing; links made after a revocation work.
func TestLinkRevoked(t *testing.T) {
	t.Parallel()
	e, gw := newUsesEnv(t)
	admin := httptestAdmin(t, gw.srv.AdminLinks(e.ledger))
	tok := e.jwt("revokee", "", nil)
	other := e.jwt("bystander", "", nil)

	byUser := e.usesLink(t, gw, tok, uidPublic, `{}`)
	byUserAudio := e.usesLink(t, gw, tok, uidPrivate, `{"type":"audio"}`)
	bystander := e.usesLink(t, gw, other, uidPublic, `{}`)
	e.clock.Advance(500 * time.Millisecond)
	resp := admin.post(t, `{"user":"revokee"}`, http.StatusOK)
	if resp["revoked"] != "user" || resp["issued_before"] != t0.Add(time.Second).Format(time.RFC3339) {
		t.Errorf("revoke answer = %v", resp)
	}
	e.wantRefusedLink(t, byUser.URL, "revokee", "link_revoked")
	e.wantRefusedLink(t, byUserAudio.URL, "revokee", "link_revoked")
	// A HEAD opens no delivery; the link is checked all the same.
	if r := do(t, e.client(addrUS), "HEAD", byUser.URL, nil, nil); r.status != http.StatusForbidden {
		t.Errorf("HEAD of a revoked link: status %d, want 403", r.status)
	}
	if r := do(t, e.client(addrUS), "GET", bystander.URL, nil, nil); r.status != http.StatusOK {
		t.Fatalf("another user's link: status %d", r.status)
	}

	// A link made in the revocation's second is revoked with it; one made the
	// next second works.
	sameSecond := e.usesLink(t, gw, tok, uidPublic, `{}`)
	e.wantRefusedLink(t, sameSecond.URL, "revokee", "link_revoked")
	e.clock.Advance(time.Second)
	after := e.usesLink(t, gw, e.jwt("revokee", "", nil), uidPublic, `{"max_uses":1}`)
	if r := do(t, e.client(addrUS), "GET", after.URL, nil, nil); r.status != http.StatusOK {
		t.Fatalf("a link made after the revocation: status %d: %s", r.status, r.body)
	}
	e.settled(t, "revokee")

	// By user and video: the user's other videos stay.
	tok = e.jwt("revokee", "", nil)
	pub := e.usesLink(t, gw, tok, uidPublic, `{}`)
	priv := e.usesLink(t, gw, tok, uidPrivate, `{}`)
	e.clock.Advance(time.Second)
	if resp := admin.post(t, `{"user":"revokee","video":"`+uidPublic+`"}`, http.StatusOK); resp["revoked"] != "user_video" {
		t.Errorf("revoke answer = %v", resp)
	}
	e.wantRefusedLink(t, pub.URL, "revokee", "link_revoked")
	if r := do(t, e.client(addrUS), "GET", priv.URL, nil, nil); r.status != http.StatusOK {
		t.Fatalf("the user's link to another video: status %d", r.status)
	}

	// By ID: that link only.
	one := e.usesLink(t, gw, other, uidPrivate, `{}`)
	two := e.usesLink(t, gw, other, uidPrivate, `{"type":"audio"}`)
	if resp := admin.post(t, `{"link_id":"`+one.ID+`"}`, http.StatusOK); resp["revoked"] != "link" || resp["link_id"] != one.ID {
		t.Errorf("revoke answer = %v", resp)
	}
	e.wantRefusedLink(t, one.URL, "bystander", "link_revoked")
	if r := do(t, e.client(addrUS), "GET", two.URL, nil, nil); r.status != http.StatusOK {
		t.Fatalf("the user's other link: status %d", r.status)
	}
}

func TestAdminRevokeRejects(t *testing.T) {
	t.Parallel()
	e, gw := newUsesEnv(t)
	admin := httptestAdmin(t, gw.srv.AdminLinks(e.ledger))
	tests := []struct {
		name, body string
		status     int
		typ        string
	}{
		{"empty", `{}`, 400, "bad_revocation"},
		{"both", `{"user":"a","link_id":"abc"}`, 400, "bad_revocation"},
		{"video without user", `{"video":"` + uidPublic + `"}`, 400, "bad_revocation"},
		{"bad video", `{"user":"a","video":"nope"}`, 400, "bad_video"},
		{"bad link id", `{"link_id":"a/b"}`, 400, "bad_link_id"},
		{"long link id", `{"link_id":"` + strings.Repeat("a", 65) + `"}`, 400, "bad_link_id"},
		{"control in user", `{"user":"a\nb"}`, 400, "bad_user"},
		{"unknown field", `{"users":"a"}`, 400, "bad_body"},
		{"not JSON", `user=a`, 400, "bad_body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := admin.post(t, tc.body, tc.status)
			if p["type"] != "urn:streamgate:problem:"+tc.typ {
				t.Errorf("type %v, want %s", p["type"], tc.typ)
			}
		})
	}
	t.Run("form body", func(t *testing.T) {
		r := do(t, e.client(addrGB), "POST", admin.url, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}},
			strings.NewReader("user=a"))
		if r.status != http.StatusUnsupportedMediaType {
			t.Errorf("status %d, want 415", r.status)
		}
	})
}

// testAdmin serves an admin handler on a real socket.
type testAdmin struct{ url string }

func httptestAdmin(t *testing.T, h http.Handler) testAdmin {
	srv := streamtest.NewServer(h)
	t.Cleanup(srv.Close)
	return testAdmin{url: srv.URL + "/v1/admin/links/revoke"}
}

func (a testAdmin) post(t *testing.T, body string, status int) map[string]any {
	t.Helper()
	r := do(t, http.DefaultClient, "POST", a.url, http.Header{"Content-Type": {"application/json"}}, strings.NewReader(body))
	if r.status != status {
		t.Fatalf("POST %s: status %d, want %d: %s", body, r.status, status, r.body)
	}
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer: %v: %s", err, r.body)
	}
	return m
}
