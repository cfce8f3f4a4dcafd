package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

const hookSecret = "0123456789abcdef0123456789abcdef"

// hookGateway serves POST /hooks/stream with auto_enable [default, audio],
// its verifier's clock skew ahead of the emulator's.
func (e *env) hookGateway(skew time.Duration) *gateway {
	e.t.Helper()
	v, err := stream.NewWebhookVerifier(stream.WebhookConfig{
		Secrets: [][]byte{[]byte(hookSecret)},
		Now:     func() time.Time { return e.clock.Now().Add(skew) },
	})
	if err != nil {
		e.t.Fatalf("NewWebhookVerifier: %v", err)
	}
	return e.gateway(func(c *Config, d *Deps) {
		c.AutoEnable = []stream.DownloadType{stream.Default, stream.Audio}
		d.Webhooks = v
		d.Enabler = e.api
	})
}

// readyVideo adds a video that is ready to stream, which makes the emulator
// post its webhook, and returns that webhook once answered.
func (e *env) readyVideo(t *testing.T, uid string) streamtest.WebhookDelivery {
	t.Helper()
	e.emu.AddVideo(streamtest.Video{UID: uid, Duration: 30, Size: 1 << 20, ReadyToStream: true})
	e.emu.WaitWebhooks()
	for _, d := range e.emu.WebhookDeliveries() {
		if d.UID == uid {
			if d.Err != nil {
				t.Fatalf("webhook for %s: %v", uid, d.Err)
			}
			return d
		}
	}
	t.Fatalf("the emulator sent no webhook for %s", uid)
	return streamtest.WebhookDelivery{}
}

// enabled lists the download types Stream has for uid.
func (e *env) enabled(t *testing.T, uid string) []string {
	t.Helper()
	dls, err := e.api.Downloads(context.Background(), uid)
	if err != nil && !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Downloads(%s): %v", uid, err)
	}
	var types []string
	for typ := range dls {
		types = append(types, string(typ))
	}
	sort.Strings(types)
	return types
}

func TestStreamHookEnablesDownloads(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gw := e.hookGateway(0)
	e.emu.SetWebhook(gw.url+"/hooks/stream", hookSecret)

	const uid = "6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a"
	d := e.readyVideo(t, uid)
	if d.Status != http.StatusOK {
		t.Fatalf("webhook answered %d, want 200", d.Status)
	}
	if got := e.enabled(t, uid); strings.Join(got, ",") != "audio,default" {
		t.Fatalf("downloads after the webhook = %v, want [audio default]", got)
	}

	// The same webhook again is a replay: refused, with a problem body.
	r := postHook(t, e, gw.url, d.Signature, d.Body)
	if r.status != http.StatusBadRequest {
		t.Fatalf("replayed webhook: %d %s", r.status, r.body)
	}
	if p := r.problem(t); p["type"] != "urn:streamgate:problem:webhook_replayed" {
		t.Errorf("replay type = %v", p["type"])
	}
	var line map[string]any
	eventually(t, "the downloads enabled line", func() bool {
		for _, l := range e.logs.lines(t, "downloads enabled") {
			line = l
			return true
		}
		return false
	})
	if line["video"] != uid {
		t.Errorf("log line video = %v, want %s", line["video"], uid)
	}
	if strings.Contains(e.logs.String(), hookSecret) {
		t.Error("a log line holds the webhook secret")
	}
}

func TestStreamHookRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	gw := e.hookGateway(0)

	// Signed with another secret: 401, nothing enabled.
	e.emu.SetWebhook(gw.url+"/hooks/stream", "not-the-configured-secret-at-all")
	const forged = "7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b"
	if d := e.readyVideo(t, forged); d.Status != http.StatusUnauthorized {
		t.Errorf("webhook with a bad signature answered %d, want 401", d.Status)
	}
	if got := e.enabled(t, forged); len(got) != 0 {
		t.Errorf("a webhook with a bad signature enabled %v", got)
	}

	// Signed six minutes before the gateway's clock: 400, nothing enabled.
	late := e.hookGateway(6 * time.Minute)
	e.emu.SetWebhook(late.url+"/hooks/stream", hookSecret)
	const stale = "8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c"
	d := e.readyVideo(t, stale)
	if d.Status != http.StatusBadRequest {
		t.Errorf("webhook with an old timestamp answered %d, want 400", d.Status)
	}
	if got := e.enabled(t, stale); len(got) != 0 {
		t.Errorf("a webhook with an old timestamp enabled %v", got)
	}
	r := postHook(t, e, late.url, d.Signature, d.Body)
	if p := r.problem(t); p["type"] != "urn:streamgate:problem:webhook_expired" {
		t.Errorf("old timestamp: type = %v", p["type"])
	}

	tests := []struct {
		name   string
		sig    string
		body   []byte
		status int
		typ    string
	}{
		{name: "no signature", body: []byte(`{}`), status: http.StatusUnauthorized, typ: "unauthorized"},
		{name: "body changed after signing", sig: d.Signature, body: append(bytes.Clone(d.Body), ' '),
			status: http.StatusUnauthorized, typ: "unauthorized"},
		{name: "body too large", sig: d.Signature, body: bytes.Repeat([]byte(" "), maxWebhookBody+1),
			status: http.StatusRequestEntityTooLarge, typ: "body_too_large"},
		{name: "signed, not a video event",
			sig: streamtest.SignWebhook(hookSecret, e.clock.Now(), []byte(`{"uid":"nope"}`)), body: []byte(`{"uid":"nope"}`),
			status: http.StatusBadRequest, typ: "bad_body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := postHook(t, e, gw.url, tt.sig, tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if p := r.problem(t); p["type"] != "urn:streamgate:problem:"+tt.typ {
				t.Errorf("type = %v, want %s", p["type"], tt.typ)
			}
		})
	}
	if got := e.enabled(t, stale); len(got) != 0 {
		t.Errorf("refused webhooks enabled %v", got)
	}

	// A signed webhook for a video that is not ready is acknowledged and
	// enables nothing.
	body, _ := json.Marshal(map[string]any{"uid": forged, "readyToStream": false, "status": map[string]any{"state": "inprogress"}})
	r = postHook(t, e, gw.url, streamtest.SignWebhook(hookSecret, e.clock.Now(), body), body)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"enabled":[]`) {
		t.Errorf("not-ready webhook: %d %s", r.status, r.body)
	}
	if got := e.enabled(t, forged); len(got) != 0 {
		t.Errorf("a not-ready webhook enabled %v", got)
	}

	// The route passes the gateway's edges, and exists only when configured.
	if r := do(t, e.client(addrGB), "GET", gw.url+"/hooks/stream", nil, nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET /hooks/stream: %d, want 405", r.status)
	}
	if r := postHook(t, e, e.gw.url, d.Signature, d.Body); r.status != http.StatusNotFound {
		t.Errorf("POST /hooks/stream without webhooks configured: %d, want 404", r.status)
	}
}

// postHook posts a webhook body with a Webhook-Signature header, as Stream does.
func postHook(t *testing.T, e *env, base, sig string, body []byte) result {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json"}}
	if sig != "" {
		h.Set(stream.WebhookSignatureHeader, sig)
	}
	return do(t, e.client(addrGB), "POST", base+"/hooks/stream", h, bytes.NewReader(body))
}
