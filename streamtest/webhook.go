package streamtest

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// webhookSub is the account's webhook subscription.
type webhookSub struct {
	url      string
	secret   string
	modified time.Time
}

type webhookJSON struct {
	NotificationURL string    `json:"notificationUrl"`
	Modified        time.Time `json:"modified"`
	Secret          string    `json:"secret"`
}

// WebhookDelivery is one webhook the emulator sent, and how it went.
type WebhookDelivery struct {
	// UID is the video the webhook is about.
	UID string
	// URL is where it was posted.
	URL string
	// Body is the raw body, the video's details as GET .../stream/{uid} gives them.
	Body []byte
	// Signature is the Webhook-Signature header: time=T,sig1=HEX.
	Signature string
	// Status is the receiver's HTTP status; 0 when the request failed.
	Status int
	// Err is why the request failed; nil when the receiver answered.
	Err error
}

// codeNoWebhook answers GET .../stream/webhook with no subscription.
const codeNoWebhook = 10010

// webhookTimeout bounds one webhook request.
const webhookTimeout = 10 * time.Second

// SetWebhook subscribes url to the account's video webhooks, signed with secret,
// as PUT .../stream/webhook does (where the emulator makes the secret itself). An
// empty url removes the subscription.
func (e *Emulator) SetWebhook(url, secret string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if url == "" {
		e.hook = nil
		return
	}
	e.hook = &webhookSub{url: url, secret: secret, modified: e.now().UTC()}
}

// WebhookDeliveries returns the webhooks sent so far that have been answered
// (or failed), oldest first.
func (e *Emulator) WebhookDeliveries() []WebhookDelivery {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]WebhookDelivery(nil), e.hookLog...)
}

// WaitWebhooks waits until every webhook being sent has been answered or has
// failed.
func (e *Emulator) WaitWebhooks() { e.hooks.Wait() }

// SignWebhook is Stream's webhook signature: time=T,sig1=hex(HMAC-SHA256(secret,
// "T." + body)), T in Unix seconds.
func SignWebhook(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	return "time=" + ts + ",sig1=" + hex.EncodeToString(m.Sum(nil))
}

// sendWebhook posts v's details to the subscribed URL, if any, in the
// background. The caller holds e.mu.
func (e *Emulator) sendWebhook(v *video) {
	if e.hook == nil {
		return
	}
	body, err := json.Marshal(videoResultAt(e.deliveryBase, v))
	if err != nil {
		return
	}
	d := WebhookDelivery{UID: v.UID, URL: e.hook.url, Body: body, Signature: SignWebhook(e.hook.secret, e.now(), body)}
	e.hooks.Add(1)
	go func() {
		defer e.hooks.Done()
		d.Status, d.Err = postWebhook(d)
		e.mu.Lock()
		e.hookLog = append(e.hookLog, d)
		e.mu.Unlock()
	}()
}

// postWebhook sends one webhook; there are no retries.
func postWebhook(d WebhookDelivery) (int, error) {
	req, err := http.NewRequest(http.MethodPost, d.URL, bytes.NewReader(d.Body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Webhook-Signature", d.Signature)
	c := &http.Client{Timeout: webhookTimeout}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, nil
}

// putWebhook is PUT .../stream/webhook: {"notificationUrl": URL} subscribes URL
// and answers with the subscription and its secret. The secret is kept when the
// URL changes.
func (e *Emulator) putWebhook(w http.ResponseWriter, r *http.Request) {
	var req struct {
		NotificationURL string `json:"notificationUrl"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeAPIError(w, http.StatusBadRequest, codeBadRequest, "invalid JSON body")
		return
	}
	if u, err := url.Parse(req.NotificationURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		writeAPIError(w, http.StatusBadRequest, codeBadRequest,
			fmt.Sprintf("notificationUrl %q: the URL must include the protocol, http:// or https://", req.NotificationURL))
		return
	}
	e.mu.Lock()
	secret := ""
	if e.hook != nil {
		secret = e.hook.secret
	}
	if secret == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		secret = hex.EncodeToString(b)
	}
	e.hook = &webhookSub{url: req.NotificationURL, secret: secret, modified: e.now().UTC()}
	res := webhookJSON{NotificationURL: e.hook.url, Modified: e.hook.modified, Secret: e.hook.secret}
	e.mu.Unlock()
	writeResult(w, res)
}

// getWebhook is GET .../stream/webhook: the subscription with its secret.
func (e *Emulator) getWebhook(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	h := e.hook
	e.mu.Unlock()
	if h == nil {
		writeAPIError(w, http.StatusNotFound, codeNoWebhook, "webhook not found")
		return
	}
	writeResult(w, webhookJSON{NotificationURL: h.url, Modified: h.modified, Secret: h.secret})
}

// deleteWebhook is DELETE .../stream/webhook.
func (e *Emulator) deleteWebhook(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	e.hook = nil
	e.mu.Unlock()
	writeResult(w, "ok")
}
