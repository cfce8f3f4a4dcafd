package streamtest

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
)

// hookReceiver records the webhooks posted to it.
type hookReceiver struct {
	mu   sync.Mutex
	got  []receivedHook
	srv  *httptest.Server
	want int // status to answer with
}

type receivedHook struct {
	signature, contentType string
	body                   []byte
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{want: http.StatusOK}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.got = append(h.got, receivedHook{r.Header.Get(stream.WebhookSignatureHeader), r.Header.Get("Content-Type"), b})
		status := h.want
		h.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) received() []receivedHook {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]receivedHook(nil), h.got...)
}

// TestWebhook subscribes through the API as Stream's documentation shows, makes
// a video ready, and checks the webhook it receives with stream's verifier: the
// signature verifies, and a tampered body, a tampered signature, another secret,
// a replay and a late delivery do not.
func TestWebhook(t *testing.T) {
	clock := newClock()
	e := New(Options{Now: clock.Now})
	srv := start(t, e)
	rcv := newHookReceiver(t)

	if status, env := api(t, srv, http.MethodGet, "/webhook", ""); status != http.StatusNotFound || env.Errors[0].Code != 10010 {
		t.Errorf("GET /webhook before subscribing: %d %v", status, env.Errors)
	}
	if status, _ := api(t, srv, http.MethodPut, "/webhook", `{"notificationUrl":"www.example.com/hook"}`); status != http.StatusBadRequest {
		t.Errorf("PUT /webhook without a protocol: status %d, want 400", status)
	}
	status, env := api(t, srv, http.MethodPut, "/webhook", `{"notificationUrl":"`+rcv.srv.URL+`/hooks/stream"}`)
	sub := decode[struct {
		NotificationURL string    `json:"notificationUrl"`
		Modified        time.Time `json:"modified"`
		Secret          string    `json:"secret"`
	}](t, env.Result)
	if status != http.StatusOK || sub.NotificationURL != rcv.srv.URL+"/hooks/stream" || !sub.Modified.Equal(t0) || len(sub.Secret) != 32 {
		t.Fatalf("PUT /webhook: %d %+v", status, sub)
	}
	if _, err := hex.DecodeString(sub.Secret); err != nil {
		t.Errorf("secret %q is not hex", sub.Secret)
	}
	_, env = api(t, srv, http.MethodGet, "/webhook", "")
	if got := decode[map[string]any](t, env.Result); got["secret"] != sub.Secret {
		t.Errorf("GET /webhook = %v, want the same secret", got)
	}
	_, env = api(t, srv, http.MethodPut, "/webhook", `{"notificationUrl":"`+rcv.srv.URL+`/hooks/stream"}`)
	if got := decode[map[string]any](t, env.Result); got["secret"] != sub.Secret {
		t.Errorf("a second PUT changed the secret: %v", got)
	}

	// Not ready: no webhook. Ready: one. Ready again: none more.
	e.AddVideo(Video{UID: uidUnready, Duration: 60, Size: 1000})
	e.WaitWebhooks()
	if n := len(rcv.received()); n != 0 {
		t.Fatalf("%d webhooks for a video not ready", n)
	}
	e.AddVideo(Video{UID: uidUnready, Duration: 60, Size: 1000, ReadyToStream: true})
	e.AddVideo(Video{UID: uidUnready, Duration: 61, Size: 1000, ReadyToStream: true})
	e.WaitWebhooks()
	got := rcv.received()
	if len(got) != 1 {
		t.Fatalf("%d webhooks for a video that became ready, want 1", len(got))
	}
	hook := got[0]
	if hook.contentType != "application/json" {
		t.Errorf("Content-Type %q", hook.contentType)
	}
	ds := e.WebhookDeliveries()
	if len(ds) != 1 || ds[0].Status != http.StatusOK || ds[0].Err != nil || ds[0].UID != uidUnready || string(ds[0].Body) != string(hook.body) {
		t.Errorf("deliveries %+v", ds)
	}

	newVerifier := func(secret string) *stream.WebhookVerifier {
		v, err := stream.NewWebhookVerifier(stream.WebhookConfig{Secrets: [][]byte{[]byte(secret)}, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	ctx := context.Background()
	v := newVerifier(sub.Secret)
	ev, err := v.Verify(ctx, hook.signature, hook.body)
	if err != nil {
		t.Fatalf("the emulator's webhook does not verify: %v\n%s\n%s", err, hook.signature, hook.body)
	}
	if ev.UID != uidUnready || !ev.Ready() {
		t.Errorf("event %+v, want %s ready", ev, uidUnready)
	}
	if !strings.Contains(string(hook.body), `/`+uidUnready+`/thumbnails/thumbnail.jpg"`) {
		t.Errorf("body lacks the video's details: %s", hook.body)
	}

	flipped := []byte(hook.signature)
	flipped[len(flipped)-1] ^= 1
	if flipped[len(flipped)-1] > 'f' || flipped[len(flipped)-1] < '0' {
		flipped[len(flipped)-1] = '0'
	}
	refusals := []struct {
		name      string
		v         *stream.WebhookVerifier
		signature string
		body      string
		want      error
	}{
		{"replayed", v, hook.signature, string(hook.body), stream.ErrWebhookReplay},
		{"tampered body", newVerifier(sub.Secret), hook.signature, strings.Replace(string(hook.body), `"readyToStream":true`, `"readyToStream":false`, 1), stream.ErrWebhookSignature},
		{"tampered signature", newVerifier(sub.Secret), string(flipped), string(hook.body), stream.ErrWebhookSignature},
		{"another secret", newVerifier(strings.Repeat("0", 32)), hook.signature, string(hook.body), stream.ErrWebhookSignature},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.v.Verify(ctx, tc.signature, []byte(tc.body)); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("late", func(t *testing.T) {
		clock.Advance(5*time.Minute + time.Second)
		if _, err := newVerifier(sub.Secret).Verify(ctx, hook.signature, hook.body); !errors.Is(err, stream.ErrWebhookExpired) {
			t.Errorf("err = %v, want ErrWebhookExpired", err)
		}
	})

	t.Run("set by the test, failing receiver, unsubscribed", func(t *testing.T) {
		rcv.mu.Lock()
		rcv.want = http.StatusInternalServerError
		rcv.mu.Unlock()
		e.SetWebhook(rcv.srv.URL, "fixed-secret")
		e.AddVideo(Video{UID: uidAudio, Duration: 60, Size: 1000, ReadyToStream: true})
		e.WaitWebhooks()
		ds := e.WebhookDeliveries()
		last := ds[len(ds)-1]
		if len(ds) != 2 || last.UID != uidAudio || last.Status != http.StatusInternalServerError ||
			last.Signature != SignWebhook("fixed-secret", clock.Now(), last.Body) {
			t.Errorf("deliveries %+v", ds)
		}
		if _, err := newVerifier("fixed-secret").Verify(ctx, last.Signature, last.Body); err != nil {
			t.Errorf("a webhook signed with a secret set by the test: %v", err)
		}
		if status, _ := api(t, srv, http.MethodDelete, "/webhook", ""); status != http.StatusOK {
			t.Errorf("DELETE /webhook: %d", status)
		}
		e.AddVideo(Video{UID: uidPublic, Duration: 60, Size: 1000, ReadyToStream: true})
		e.WaitWebhooks()
		if n := len(e.WebhookDeliveries()); n != 2 {
			t.Errorf("%d deliveries after unsubscribing, want 2", n)
		}
	})
}
