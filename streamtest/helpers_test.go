package streamtest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
)

const (
	uidPrivate = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	uidPublic  = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	uidUnready = "cccccccccccccccccccccccccccccccc"
	uidUnknown = "dddddddddddddddddddddddddddddddd"
	uidAudio   = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
)

// t0 is the fixed instant tests run at.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newClock() *Clock { return NewClock(t0) }

var (
	keyOnce sync.Once
	testKey *rsa.PrivateKey
)

// rsaKey is one 2048-bit key shared by the tests of this package.
func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		testKey = k
	})
	return testKey
}

func newSigner(t testing.TB, kid string, k *rsa.PrivateKey) *stream.Signer {
	t.Helper()
	s, err := stream.NewSignerFromKey(kid, k)
	if err != nil {
		t.Fatalf("NewSignerFromKey: %v", err)
	}
	return s
}

// start serves e on a real socket and points download URLs at it.
func start(t testing.TB, e *Emulator) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(e.Handler())
	t.Cleanup(srv.Close)
	e.SetDeliveryBase(srv.URL)
	return srv
}

// clientFrom returns a client whose connections come from the loopback address
// ip, so that the emulator sees that address as the viewer's.
func clientFrom(t testing.TB, ip string) *http.Client {
	t.Helper()
	c := ClientFrom(ip)
	c.Transport.(*http.Transport).DisableKeepAlives = true
	return c
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t testing.TB, c *http.Client, method, url string, hdr map[string]string, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return response{res.StatusCode, res.Header, b}
}

// apiEnvelope is the API's answer with the result left raw.
type apiEnvelope struct {
	Success  bool              `json:"success"`
	Errors   []apiError        `json:"errors"`
	Messages []json.RawMessage `json:"messages"`
	Result   json.RawMessage   `json:"result"`
}

// api calls the API with the emulator's token and decodes the envelope.
func api(t testing.TB, srv *httptest.Server, method, path, body string) (int, apiEnvelope) {
	t.Helper()
	return apiAs(t, srv, "test-token", method, path, body)
}

func apiAs(t testing.TB, srv *httptest.Server, token, method, path, body string) (int, apiEnvelope) {
	t.Helper()
	hdr := map[string]string{"Authorization": "Bearer " + token}
	if body != "" {
		hdr["Content-Type"] = "application/json"
	}
	r := do(t, srv.Client(), method, srv.URL+"/client/v4/accounts/test-account/stream"+path, hdr, body)
	var env apiEnvelope
	if err := json.Unmarshal(r.body, &env); err != nil {
		t.Fatalf("%s %s: decode %q: %v", method, path, r.body, err)
	}
	if env.Errors == nil || env.Messages == nil {
		t.Errorf("%s %s: errors and messages must be arrays: %s", method, path, r.body)
	}
	if env.Success != (len(env.Errors) == 0) {
		t.Errorf("%s %s: success %v with errors %v", method, path, env.Success, env.Errors)
	}
	return r.status, env
}

func decode[T any](t testing.TB, raw json.RawMessage) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return v
}

// waitIdle waits until the emulator has finished every delivery.
func waitIdle(t testing.TB, e *Emulator) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.InFlight() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("deliveries still in flight: %d", e.InFlight())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// snippet is the start of a body, for failure messages.
func snippet(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return fmt.Sprintf("%q", b)
}
