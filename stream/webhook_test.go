package stream

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

const (
	hookSecret = "85011ed3a913c6ad5f9cf6c5573cc0a7" // the shape Stream's secrets have
	hookUID    = "dd5d531a12de0c724bd1275a3b2bc9c6"
)

var hookNow = time.Unix(1230811200, 0)

const hookBody = `{"uid":"dd5d531a12de0c724bd1275a3b2bc9c6","readyToStream":true,"status":{"state":"ready","pctComplete":"100.000000","errorReasonCode":"","errorReasonText":""},"meta":{},"duration":120}`

// sign is Stream's signature, computed here independently of webhookMAC.
func sign(secret string, t int64, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.%s", t, body)
	return hex.EncodeToString(m.Sum(nil))
}

func hookHeader(secret string, t int64, body string) string {
	return fmt.Sprintf("time=%d,sig1=%s", t, sign(secret, t, body))
}

func newTestVerifier(t *testing.T, secrets ...string) *WebhookVerifier {
	t.Helper()
	cfg := WebhookConfig{Now: func() time.Time { return hookNow }}
	for _, s := range secrets {
		cfg.Secrets = append(cfg.Secrets, []byte(s))
	}
	v, err := NewWebhookVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestWebhookVerify(t *testing.T) {
	ts := hookNow.Unix()
	good := hookHeader(hookSecret, ts, hookBody)
	cases := []struct {
		name   string
		header string
		body   string
		at     time.Time
		want   error // nil: accepted
	}{
		{"valid", good, hookBody, hookNow, nil},
		{"valid with spaces and an unknown scheme", fmt.Sprintf(" time=%d, sig2=abc , sig1=%s", ts, sign(hookSecret, ts, hookBody)), hookBody, hookNow, nil},
		{"uppercase hex", fmt.Sprintf("time=%d,sig1=%s", ts, strings.ToUpper(sign(hookSecret, ts, hookBody))), hookBody, hookNow, nil},
		{"second of two signatures", fmt.Sprintf("time=%d,sig1=%s,sig1=%s", ts, sign("old", ts, hookBody), sign(hookSecret, ts, hookBody)), hookBody, hookNow, nil},
		{"4m59s old", good, hookBody, hookNow.Add(4*time.Minute + 59*time.Second), nil},
		{"5m old", good, hookBody, hookNow.Add(5 * time.Minute), nil},
		{"5m1s old", good, hookBody, hookNow.Add(5*time.Minute + time.Second), ErrWebhookExpired},
		{"a day old", good, hookBody, hookNow.Add(24 * time.Hour), ErrWebhookExpired},
		{"1m ahead", good, hookBody, hookNow.Add(-time.Minute), nil},
		{"1m1s ahead", good, hookBody, hookNow.Add(-time.Minute - time.Second), ErrWebhookExpired},
		{"tampered body", good, strings.Replace(hookBody, `"readyToStream":true`, `"readyToStream":false`, 1), hookNow, ErrWebhookSignature},
		{"body with a trailing newline", good, hookBody + "\n", hookNow, ErrWebhookSignature},
		{"time moved", fmt.Sprintf("time=%d,sig1=%s", ts+1, sign(hookSecret, ts, hookBody)), hookBody, hookNow, ErrWebhookSignature},
		{"wrong secret", hookHeader("another-secret", ts, hookBody), hookBody, hookNow, ErrWebhookSignature},
		{"no header", "", hookBody, hookNow, ErrWebhookSignature},
		{"no time", "sig1=" + sign(hookSecret, ts, hookBody), hookBody, hookNow, ErrWebhookSignature},
		{"no sig1", fmt.Sprintf("time=%d", ts), hookBody, hookNow, ErrWebhookSignature},
		{"time twice", fmt.Sprintf("time=%d,%s", ts, good), hookBody, hookNow, ErrWebhookSignature},
		{"time in ms", fmt.Sprintf("time=%d,sig1=%s", ts*1000, sign(hookSecret, ts*1000, hookBody)), hookBody, hookNow, ErrWebhookSignature},
		{"negative time", fmt.Sprintf("time=-1,sig1=%s", sign(hookSecret, -1, hookBody)), hookBody, hookNow, ErrWebhookSignature},
		{"short sig", fmt.Sprintf("time=%d,sig1=%s", ts, sign(hookSecret, ts, hookBody)[:62]), hookBody, hookNow, ErrWebhookSignature},
		{"not hex", fmt.Sprintf("time=%d,sig1=%s", ts, strings.Repeat("zz", 32)), hookBody, hookNow, ErrWebhookSignature},
		{"semicolons", strings.ReplaceAll(good, ",", ";"), hookBody, hookNow, ErrWebhookSignature},
		{"huge header", good + "," + strings.Repeat("x=y,", 400), hookBody, hookNow, ErrWebhookSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestVerifier(t, hookSecret)
			ev, err := v.VerifyAt(context.Background(), tc.header, []byte(tc.body), tc.at)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == nil:
				if ev.UID != hookUID || !ev.Ready() {
					t.Errorf("event %+v, want %s ready", ev, hookUID)
				}
			case !errors.Is(err, tc.want):
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestWebhookReplay(t *testing.T) {
	v := newTestVerifier(t, hookSecret)
	ctx := context.Background()
	h := hookHeader(hookSecret, hookNow.Unix(), hookBody)
	if _, err := v.VerifyAt(ctx, h, []byte(hookBody), hookNow); err != nil {
		t.Fatal(err)
	}
	// Sent again within its window, in any spelling of the same signature.
	for _, again := range []string{h, strings.ToUpper(h[:5]) + h[5:], " " + h, strings.Replace(h, "sig1=", "sig1=", 1) + ",sig2=x"} {
		if _, err := v.VerifyAt(ctx, again, []byte(hookBody), hookNow.Add(4*time.Minute)); !errors.Is(err, ErrWebhookReplay) && !errors.Is(err, ErrWebhookSignature) {
			t.Errorf("replay %q: err = %v, want ErrWebhookReplay", again, err)
		}
	}
	if _, err := v.VerifyAt(ctx, h, []byte(hookBody), hookNow.Add(time.Minute)); !errors.Is(err, ErrWebhookReplay) {
		t.Errorf("replay: err = %v, want ErrWebhookReplay", err)
	}
	// A replay after the window is refused as expired, not accepted as new.
	if _, err := v.VerifyAt(ctx, h, []byte(hookBody), hookNow.Add(6*time.Minute)); !errors.Is(err, ErrWebhookExpired) {
		t.Errorf("late replay: err = %v, want ErrWebhookExpired", err)
	}
	// A new delivery of the same event is signed anew and accepted.
	later := hookNow.Add(30 * time.Second)
	if _, err := v.VerifyAt(ctx, hookHeader(hookSecret, later.Unix(), hookBody), []byte(hookBody), later); err != nil {
		t.Errorf("a new delivery of the same body: %v", err)
	}
	// A forged signature is never remembered.
	forged := hookHeader("forger", hookNow.Unix()+1, hookBody)
	before := v.replay.(*MemoryReplayCache).Len()
	_, _ = v.VerifyAt(ctx, forged, []byte(hookBody), hookNow)
	if after := v.replay.(*MemoryReplayCache).Len(); after != before {
		t.Errorf("a forged webhook entered the replay cache: %d → %d", before, after)
	}
}

func TestWebhookSecretRotation(t *testing.T) {
	v := newTestVerifier(t, "new-secret", hookSecret)
	for i, secret := range []string{"new-secret", hookSecret} {
		ts := hookNow.Unix() + int64(i)
		if _, err := v.VerifyAt(context.Background(), hookHeader(secret, ts, hookBody), []byte(hookBody), hookNow); err != nil {
			t.Errorf("signed with secret %d: %v", i, err)
		}
	}
}

func TestMemoryReplayCache(t *testing.T) {
	ctx := context.Background()
	c := NewMemoryReplayCache(2)
	const window = 5 * time.Minute
	at := func(m int) time.Time { return hookNow.Add(time.Duration(m) * time.Minute) }
	steps := []struct {
		key   string
		min   int // minutes after hookNow; each entry expires window later
		fresh bool
		err   error
	}{
		{"a", 0, true, nil},
		{"a", 1, false, nil},
		{"b", 0, true, nil},
		{"c", 1, false, ErrReplayCacheFull}, // full, nothing expired: never forget a live entry
		{"a", 4, false, nil},
		{"c", 5, true, nil}, // a and b expired: pruned, room again
		{"a", 6, true, nil},
		{"d", 7, false, ErrReplayCacheFull},
		{"c", 9, false, nil},
		{"d", 10, true, nil}, // c expired
	}
	for i, s := range steps {
		fresh, err := c.Remember(ctx, s.key, at(s.min).Add(window), at(s.min))
		if fresh != s.fresh || !errors.Is(err, s.err) {
			t.Errorf("step %d: Remember(%s) = %v, %v; want %v, %v", i, s.key, fresh, err, s.fresh, s.err)
		}
	}
	if c.Len() != 2 {
		t.Errorf("Len = %d, want 2", c.Len())
	}
}

func TestParseVideoEvent(t *testing.T) {
	cases := []struct {
		name string
		body string
		want VideoEvent
		ok   bool
	}{
		{"ready", hookBody, VideoEvent{UID: hookUID, ReadyToStream: true, State: "ready"}, true},
		{"error", `{"uid":"` + hookUID + `","readyToStream":false,"status":{"state":"error","errorReasonCode":"ERR_NON_VIDEO","errorReasonText":"The file was not recognized as a valid video file."}}`,
			VideoEvent{UID: hookUID, State: "error", ErrorReasonCode: "ERR_NON_VIDEO", ErrorReasonText: "The file was not recognized as a valid video file."}, true},
		{"ready flag without ready state", `{"uid":"` + hookUID + `","readyToStream":true,"status":{"state":"inprogress"}}`,
			VideoEvent{UID: hookUID, ReadyToStream: true, State: "inprogress"}, true},
		{"bad uid", `{"uid":"../../x","readyToStream":true,"status":{"state":"ready"}}`, VideoEvent{}, false},
		{"no status", `{"uid":"` + hookUID + `","readyToStream":true}`, VideoEvent{}, false},
		{"not an object", `[1,2]`, VideoEvent{}, false},
		{"empty", ``, VideoEvent{}, false},
		{"wrong type", `{"uid":"` + hookUID + `","readyToStream":"yes","status":{"state":"ready"}}`, VideoEvent{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseVideoEvent([]byte(tc.body))
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("ParseVideoEvent = %+v, %v; want %+v, ok %v", got, err, tc.want, tc.ok)
			}
			if tc.ok && got.Ready() != (tc.name == "ready") {
				t.Errorf("Ready() = %v", got.Ready())
			}
		})
	}
}

func TestNewWebhookVerifier(t *testing.T) {
	for _, cfg := range []WebhookConfig{
		{},
		{Secrets: [][]byte{nil}},
		{Secrets: [][]byte{[]byte("s")}, MaxAge: -time.Second},
	} {
		if _, err := NewWebhookVerifier(cfg); err == nil {
			t.Errorf("NewWebhookVerifier(%+v): no error", cfg)
		}
	}
}

// FuzzWebhookVerify: no header or body panics the verifier, and whatever it
// accepts carries a signature of the body under the secret within the window.
func FuzzWebhookVerify(f *testing.F) {
	ts := hookNow.Unix()
	f.Add(hookHeader(hookSecret, ts, hookBody), hookBody)
	f.Add(hookHeader(hookSecret, ts, `{}`), `{}`)
	f.Add(fmt.Sprintf("time=%d,sig1=%s,sig1=00", ts, sign(hookSecret, ts, hookBody)), hookBody)
	f.Add("time=,sig1=", "")
	f.Add("time=1230811200", `{"uid":1}`)
	f.Add(strings.Repeat("sig1=ab,", 50), hookBody)
	f.Fuzz(func(t *testing.T, header, body string) {
		v := newTestVerifier(t, hookSecret)
		ev, err := v.VerifyAt(context.Background(), header, []byte(body), hookNow)
		if err != nil {
			return
		}
		sig, perr := ParseWebhookSignature(header)
		if perr != nil {
			t.Fatalf("accepted a header that does not parse: %q", header)
		}
		d := hookNow.Sub(time.Unix(sig.Time, 0))
		if d > DefaultWebhookMaxAge || -d > DefaultWebhookMaxSkew {
			t.Fatalf("accepted time %d outside the window", sig.Time)
		}
		want := sign(hookSecret, sig.Time, body)
		found := false
		for _, s := range sig.Sigs {
			found = found || hex.EncodeToString(s) == want
		}
		if !found || !ValidUID(ev.UID) {
			t.Fatalf("accepted %q for %q without its signature or uid", header, body)
		}
	})
}
