package stream_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

const (
	testAccount = "023e105f4ecef8ad9ca31a8372d0c353"
	testToken   = "Y2xvdWRmbGFyZS10ZXN0LXRva2VuLTEyMzQ1Njc4OTA"
	testUID     = "ea95132c15732412d22c1476fa83f27a"
)

// reply is one canned API answer.
type reply struct {
	status int
	header map[string]string
	file   string // under testdata/
	body   string // used when file is empty
}

// fakeAPI serves canned replies by "METHOD path" and records what it was asked.
// A route with several replies hands them out in order and repeats the last.
type fakeAPI struct {
	t      *testing.T
	mu     sync.Mutex
	routes map[string][]reply
	calls  []string
	auth   []string
}

func newFakeAPI(t *testing.T, routes map[string][]reply) (*fakeAPI, *httptest.Server) {
	t.Helper()
	f := &fakeAPI{t: t, routes: routes}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Method + " " + r.URL.Path
	f.mu.Lock()
	f.calls = append(f.calls, key)
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	replies := f.routes[key]
	var rep reply
	if len(replies) > 0 {
		rep = replies[0]
		if len(replies) > 1 {
			f.routes[key] = replies[1:]
		}
	}
	f.mu.Unlock()
	if len(replies) == 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"success":false,"errors":[{"code":7003,"message":"No route for that URI"}],"messages":[],"result":null}`)
		return
	}
	body := []byte(rep.body)
	if rep.file != "" {
		b, err := os.ReadFile(filepath.Join("testdata", rep.file))
		if err != nil {
			f.t.Errorf("fixture: %v", err)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		body = b
	}
	ct := "application/json"
	if strings.HasSuffix(rep.file, ".html") {
		ct = "text/html"
	}
	w.Header().Set("Content-Type", ct)
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	status := rep.status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	w.Write(body)
}

func (f *fakeAPI) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

const prefix = "/client/v4/accounts/" + testAccount + "/stream/"

func newTestClient(t *testing.T, srv *httptest.Server, retries int) *stream.Client {
	t.Helper()
	c, err := stream.NewClient(stream.ClientConfig{
		AccountID:  testAccount,
		APIToken:   testToken,
		BaseURL:    srv.URL + "/client/v4/",
		HTTPClient: srv.Client(),
		MaxRetries: retries,
	})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func TestNewClientConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  stream.ClientConfig
		want []string // substrings of the error; none means success
	}{
		{name: "ok", cfg: stream.ClientConfig{AccountID: testAccount, APIToken: testToken}},
		{name: "token with trailing newline", cfg: stream.ClientConfig{AccountID: testAccount, APIToken: testToken + "\n"}},
		{name: "all missing", cfg: stream.ClientConfig{}, want: []string{"account id is empty", "api token is empty"}},
		{
			name: "every problem at once",
			cfg:  stream.ClientConfig{AccountID: "a/b", APIToken: "sec ret", BaseURL: "ftp://x", RequestTimeout: -1, MaxRetryWait: -1},
			want: []string{"account id", "whitespace", "base url", "request timeout", "max retry wait"},
		},
		{name: "relative base", cfg: stream.ClientConfig{AccountID: testAccount, APIToken: testToken, BaseURL: "/client/v4/"}, want: []string{"base url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := stream.NewClient(tt.cfg)
			if len(tt.want) == 0 {
				if err != nil || c == nil {
					t.Fatalf("NewClient: got %v, want a client", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("NewClient: got nil error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q: want it to mention %q", err, w)
				}
			}
			if tt.cfg.APIToken != "" && strings.Contains(err.Error(), tt.cfg.APIToken) {
				t.Errorf("error %q contains the api token", err)
			}
		})
	}
}

func TestClientVideo(t *testing.T) {
	tests := []struct {
		name string
		file string
		want stream.Video
	}{
		{
			name: "ready",
			file: "video_ready.json",
			want: stream.Video{UID: testUID, Duration: 602.5, ReadyToStream: true, RequireSignedURLs: true, Size: 4190963, State: "ready"},
		},
		{
			name: "processing",
			file: "video_processing.json",
			want: stream.Video{UID: testUID, Duration: -1, State: "inprogress"},
		},
		{
			name: "null duration is unknown, not zero",
			file: "video_no_duration.json",
			want: stream.Video{UID: testUID, Duration: -1, State: "queued"},
		},
		{
			name: "missing duration of a ready video is unknown, not zero",
			file: "video_missing_duration.json",
			want: stream.Video{UID: testUID, Duration: -1, ReadyToStream: true, State: "ready"},
		},
		{
			name: "zero duration of a ready video is unknown, never billed as 0",
			file: "video_zero_duration.json",
			want: stream.Video{UID: testUID, Duration: -1, ReadyToStream: true, State: "ready"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := newFakeAPI(t, map[string][]reply{"GET " + prefix + testUID: {{file: tt.file}}})
			c := newTestClient(t, srv, 0)
			got, err := c.Video(context.Background(), testUID)
			if err != nil {
				t.Fatalf("Video: %v", err)
			}
			if got != tt.want {
				t.Errorf("Video: got %+v, want %+v", got, tt.want)
			}
			if a := f.auth[0]; a != "Bearer "+testToken {
				t.Errorf("Authorization: got %q, want the bearer token", a)
			}
			billErr := got.Billable()
			billable := tt.want.ReadyToStream && tt.want.Duration > 0
			if billable != (billErr == nil) {
				t.Errorf("Billable: got %v, want nil only for a ready video of known duration", billErr)
			}
			if billErr != nil && !errors.Is(billErr, stream.ErrNotReady) {
				t.Errorf("Billable: got %v, want ErrNotReady", billErr)
			}
			min, minErr := got.Minutes()
			if (minErr == nil) != billable || billable && min != tt.want.Duration/60 || !billable && min != 0 {
				t.Errorf("Minutes: got %v, %v; want duration/60 only when billable", min, minErr)
			}
		})
	}
}

func TestClientRejectsBadUIDWithoutRequest(t *testing.T) {
	f, srv := newFakeAPI(t, nil)
	c := newTestClient(t, srv, 0)
	ctx := context.Background()
	const bad = "eyJhbGciOiJSUzI1NiJ9.not-a-uid"
	calls := map[string]func() error{
		"Video":          func() error { _, err := c.Video(ctx, bad); return err },
		"Downloads":      func() error { _, err := c.Downloads(ctx, bad); return err },
		"EnableDownload": func() error { _, err := c.EnableDownload(ctx, bad, stream.Default); return err },
		"DeleteDownload": func() error { return c.DeleteDownload(ctx, bad, stream.Audio) },
		"WaitReady":      func() error { _, err := c.WaitReady(ctx, bad, stream.Default, time.Millisecond); return err },
		"../ traversal":  func() error { _, err := c.Video(ctx, "../../keys"); return err },
		"uppercase":      func() error { _, err := c.Video(ctx, strings.ToUpper(testUID)); return err },
	}
	for name, call := range calls {
		err := call()
		if err == nil {
			t.Errorf("%s: got nil error for a bad uid", name)
			continue
		}
		if strings.Contains(err.Error(), bad) {
			t.Errorf("%s: error %q echoes the bad uid", name, err)
		}
	}
	if _, err := c.EnableDownload(ctx, testUID, stream.DownloadType("hls")); err == nil {
		t.Error("EnableDownload: got nil error for an unknown type")
	}
	if got := f.Calls(); len(got) != 0 {
		t.Errorf("requests: got %q, want none", got)
	}
}

func TestClientDownloadShapes(t *testing.T) {
	dlURL := func(file string) string {
		return "https://customer-f33zs165nr7gyfy4.cloudflarestream.com/" + testUID + "/downloads/" + file
	}
	t.Run("list keyed", func(t *testing.T) {
		_, srv := newFakeAPI(t, map[string][]reply{"GET " + prefix + testUID + "/downloads": {{file: "downloads_keyed.json"}}})
		got, err := newTestClient(t, srv, 0).Downloads(context.Background(), testUID)
		if err != nil {
			t.Fatalf("Downloads: %v", err)
		}
		want := stream.Downloads{
			stream.Default: {Type: stream.Default, Status: "ready", URL: dlURL("default.mp4"), PercentComplete: 100},
			stream.Audio:   {Type: stream.Audio, Status: "inprogress", URL: dlURL("audio.m4a"), PercentComplete: 75},
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Downloads: got %+v, want %+v", got, want)
		}
		if !got[stream.Default].Ready() || got[stream.Audio].Ready() {
			t.Errorf("Ready: got default %v audio %v, want true false", got[stream.Default].Ready(), got[stream.Audio].Ready())
		}
	})
	t.Run("list empty", func(t *testing.T) {
		_, srv := newFakeAPI(t, map[string][]reply{"GET " + prefix + testUID + "/downloads": {{file: "downloads_empty.json"}}})
		got, err := newTestClient(t, srv, 0).Downloads(context.Background(), testUID)
		if err != nil || len(got) != 0 {
			t.Fatalf("Downloads: got %v, %v; want empty", got, err)
		}
	})

	tests := []struct {
		name string
		typ  stream.DownloadType
		file string
		want stream.Download
	}{
		{name: "default keyed", typ: stream.Default, file: "download_default_keyed.json",
			want: stream.Download{Type: stream.Default, Status: "inprogress", URL: dlURL("default.mp4")}},
		{name: "audio keyed", typ: stream.Audio, file: "download_audio_keyed.json",
			want: stream.Download{Type: stream.Audio, Status: "inprogress", URL: dlURL("audio.m4a"), PercentComplete: 12.5}},
		{name: "default flat", typ: stream.Default, file: "download_flat.json",
			want: stream.Download{Type: stream.Default, Status: "inprogress", URL: "https://videodelivery.net/" + testUID + "/downloads/default.mp4", PercentComplete: 75}},
		{name: "audio flat", typ: stream.Audio, file: "download_flat.json",
			want: stream.Download{Type: stream.Audio, Status: "inprogress", URL: "https://videodelivery.net/" + testUID + "/downloads/default.mp4", PercentComplete: 75}},
		{name: "default from full listing", typ: stream.Default, file: "downloads_keyed.json",
			want: stream.Download{Type: stream.Default, Status: "ready", URL: dlURL("default.mp4"), PercentComplete: 100}},
	}
	for _, tt := range tests {
		t.Run("enable "+tt.name, func(t *testing.T) {
			path := "POST " + prefix + testUID + "/downloads/" + string(tt.typ)
			f, srv := newFakeAPI(t, map[string][]reply{path: {{file: tt.file}}})
			got, err := newTestClient(t, srv, 0).EnableDownload(context.Background(), testUID, tt.typ)
			if err != nil {
				t.Fatalf("EnableDownload: %v", err)
			}
			if got != tt.want {
				t.Errorf("EnableDownload: got %+v, want %+v", got, tt.want)
			}
			if calls := f.Calls(); len(calls) != 1 || calls[0] != path {
				t.Errorf("requests: got %q, want [%q]", calls, path)
			}
		})
	}

	t.Run("enable answered without the type", func(t *testing.T) {
		_, srv := newFakeAPI(t, map[string][]reply{"POST " + prefix + testUID + "/downloads/audio": {{file: "download_default_keyed.json"}}})
		if _, err := newTestClient(t, srv, 0).EnableDownload(context.Background(), testUID, stream.Audio); err == nil {
			t.Fatal("EnableDownload: got nil error, want one for a response without the audio entry")
		}
	})

	for _, typ := range []stream.DownloadType{stream.Default, stream.Audio} {
		t.Run("delete "+string(typ), func(t *testing.T) {
			path := "DELETE " + prefix + testUID + "/downloads/" + string(typ)
			f, srv := newFakeAPI(t, map[string][]reply{path: {{file: "delete_ok.json"}}})
			if err := newTestClient(t, srv, 0).DeleteDownload(context.Background(), testUID, typ); err != nil {
				t.Fatalf("DeleteDownload: %v", err)
			}
			if calls := f.Calls(); len(calls) != 1 || calls[0] != path {
				t.Errorf("requests: got %q, want [%q]", calls, path)
			}
		})
	}
}

func TestClientErrors(t *testing.T) {
	videoPath := "GET " + prefix + testUID
	enablePath := "POST " + prefix + testUID + "/downloads/default"
	tests := []struct {
		name      string
		routes    map[string][]reply
		retries   int
		call      func(*stream.Client) error
		is        error
		notIs     []error
		status    int
		code      int
		message   string
		retryIn   time.Duration
		wantCalls int
	}{
		{
			name:   "not found",
			routes: map[string][]reply{videoPath: {{status: 404, file: "error_not_found.json"}}},
			call:   callVideo, is: stream.ErrNotFound, status: 404, code: 10005, message: "Video not found", wantCalls: 1,
		},
		{
			name:   "bad token",
			routes: map[string][]reply{videoPath: {{status: 401, file: "error_auth.json"}}},
			call:   callVideo, is: stream.ErrUnauthorized, status: 401, code: 10000, message: "Authentication error", wantCalls: 1,
		},
		{
			name:   "forbidden",
			routes: map[string][]reply{videoPath: {{status: 403, file: "error_auth.json"}}},
			call:   callVideo, is: stream.ErrUnauthorized, status: 403, code: 10000, wantCalls: 1,
		},
		{
			name:    "rate limited, retries disabled",
			routes:  map[string][]reply{videoPath: {{status: 429, header: map[string]string{"Retry-After": "1"}, file: "error_rate_limited.json"}}},
			retries: -1,
			call:    callVideo, is: stream.ErrRateLimited, status: 429, code: 971, retryIn: time.Second, wantCalls: 1,
		},
		{
			name:   "rate limited for minutes is not slept through",
			routes: map[string][]reply{videoPath: {{status: 429, header: map[string]string{"Retry-After": "300"}, file: "error_rate_limited.json"}}},
			call:   callVideo, is: stream.ErrRateLimited, status: 429, code: 971, retryIn: 300 * time.Second, wantCalls: 1,
		},
		{
			name: "rate limited briefly is retried",
			routes: map[string][]reply{videoPath: {
				{status: 429, header: map[string]string{"Retry-After": "0"}, file: "error_rate_limited.json"},
				{file: "video_ready.json"},
			}},
			call: callVideo, wantCalls: 2,
		},
		{
			name:   "rate limited past the retries",
			routes: map[string][]reply{videoPath: {{status: 429, header: map[string]string{"Retry-After": "0"}, file: "error_rate_limited.json"}}},
			call:   callVideo, is: stream.ErrRateLimited, status: 429, wantCalls: 3,
		},
		{
			name:    "non-JSON error body",
			routes:  map[string][]reply{videoPath: {{status: 502, file: "error_bad_gateway.html"}}},
			retries: -1,
			call:    callVideo, status: 502, notIs: []error{stream.ErrNotFound, stream.ErrUnauthorized}, message: "Bad Gateway", wantCalls: 1,
		},
		{
			name:   "success false with status 200",
			routes: map[string][]reply{"GET " + prefix + testUID + "/downloads": {{file: "error_success_false.json"}}},
			call: func(c *stream.Client) error {
				_, err := c.Downloads(context.Background(), testUID)
				return err
			},
			status: 200, code: 10002, message: "An internal error occurred; Try again later", wantCalls: 1,
		},
		{
			name:   "not ready, said in the message",
			routes: map[string][]reply{enablePath: {{status: 400, file: "error_not_ready.json"}}},
			call:   callEnable, is: stream.ErrNotReady, status: 400, code: 10007, wantCalls: 1,
		},
		{
			name: "not ready, confirmed by the video",
			routes: map[string][]reply{
				enablePath: {{status: 400, file: "error_bad_request.json"}},
				videoPath:  {{file: "video_processing.json"}},
			},
			call: callEnable, is: stream.ErrNotReady, status: 400, code: 10011, wantCalls: 2,
		},
		{
			name: "conflict on a ready video is not retried and not ErrNotReady",
			routes: map[string][]reply{
				enablePath: {{status: 409, file: "error_bad_request.json"}},
				videoPath:  {{file: "video_ready.json"}},
			},
			call: callEnable, status: 409, notIs: []error{stream.ErrNotReady}, wantCalls: 2,
		},
		{
			name:   "unknown video on enable",
			routes: map[string][]reply{enablePath: {{status: 404, file: "error_not_found.json"}}},
			call:   callEnable, is: stream.ErrNotFound, notIs: []error{stream.ErrNotReady}, status: 404, wantCalls: 1,
		},
		{
			name:   "ping with a bad token",
			routes: map[string][]reply{"GET " + prefix + "keys": {{status: 401, file: "error_auth.json"}}},
			call:   func(c *stream.Client) error { return c.Ping(context.Background()) },
			is:     stream.ErrUnauthorized, status: 401, wantCalls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := newFakeAPI(t, tt.routes)
			c := newTestClient(t, srv, tt.retries)
			start := time.Now()
			err := tt.call(c)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("call took %s", took)
			}
			if n := len(f.Calls()); n != tt.wantCalls {
				t.Errorf("requests: got %d (%q), want %d", n, f.Calls(), tt.wantCalls)
			}
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			if err == nil {
				t.Fatal("got nil error")
			}
			if strings.Contains(err.Error(), testToken) {
				t.Errorf("error %q contains the api token", err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v): got false, want true", err, tt.is)
			}
			for _, not := range tt.notIs {
				if errors.Is(err, not) {
					t.Errorf("errors.Is(%v, %v): got true, want false", err, not)
				}
			}
			var ae *stream.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("errors.As(%v, *APIError): got false", err)
			}
			if ae.Status != tt.status {
				t.Errorf("Status: got %d, want %d", ae.Status, tt.status)
			}
			if tt.code != 0 && ae.Code != tt.code {
				t.Errorf("Code: got %d, want %d", ae.Code, tt.code)
			}
			if tt.message != "" && ae.Message != tt.message {
				t.Errorf("Message: got %q, want %q", ae.Message, tt.message)
			}
			if ae.RetryAfter != tt.retryIn {
				t.Errorf("RetryAfter: got %s, want %s", ae.RetryAfter, tt.retryIn)
			}
		})
	}
}

func callVideo(c *stream.Client) error {
	_, err := c.Video(context.Background(), testUID)
	return err
}

func callEnable(c *stream.Client) error {
	_, err := c.EnableDownload(context.Background(), testUID, stream.Default)
	return err
}

func TestClientRateLimitRespectsDeadline(t *testing.T) {
	// Retry-After within MaxRetryWait but past the context's deadline: fail now
	// with the 429 rather than sleep into a deadline error.
	f, srv := newFakeAPI(t, map[string][]reply{"GET " + prefix + testUID: {
		{status: 429, header: map[string]string{"Retry-After": "3"}, file: "error_rate_limited.json"},
	}})
	c := newTestClient(t, srv, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := c.Video(ctx, testUID)
	if !errors.Is(err, stream.ErrRateLimited) {
		t.Fatalf("Video: got %v, want ErrRateLimited", err)
	}
	if n := len(f.Calls()); n != 1 {
		t.Errorf("requests: got %d, want 1", n)
	}
}

func TestClientWaitReady(t *testing.T) {
	listPath := "GET " + prefix + testUID + "/downloads"
	inprogress := `{"success":true,"errors":[],"messages":[],"result":{"default":{"status":"inprogress","url":"u","percentComplete":40}}}`
	ready := `{"success":true,"errors":[],"messages":[],"result":{"default":{"status":"ready","url":"u","percentComplete":100}}}`
	failed := `{"success":true,"errors":[],"messages":[],"result":{"default":{"status":"error","url":"u","percentComplete":40}}}`

	t.Run("polls until ready", func(t *testing.T) {
		f, srv := newFakeAPI(t, map[string][]reply{listPath: {{body: inprogress}, {body: inprogress}, {body: ready}}})
		d, err := newTestClient(t, srv, 0).WaitReady(context.Background(), testUID, stream.Default, time.Millisecond)
		if err != nil {
			t.Fatalf("WaitReady: %v", err)
		}
		if want := (stream.Download{Type: stream.Default, Status: "ready", URL: "u", PercentComplete: 100}); d != want {
			t.Errorf("WaitReady: got %+v, want %+v", d, want)
		}
		if n := len(f.Calls()); n != 3 {
			t.Errorf("requests: got %d, want 3", n)
		}
	})
	t.Run("error status", func(t *testing.T) {
		_, srv := newFakeAPI(t, map[string][]reply{listPath: {{body: inprogress}, {body: failed}}})
		_, err := newTestClient(t, srv, 0).WaitReady(context.Background(), testUID, stream.Default, time.Millisecond)
		if !errors.Is(err, stream.ErrDownloadFailed) {
			t.Fatalf("WaitReady: got %v, want ErrDownloadFailed", err)
		}
	})
	t.Run("type not enabled", func(t *testing.T) {
		_, srv := newFakeAPI(t, map[string][]reply{listPath: {{body: ready}}})
		_, err := newTestClient(t, srv, 0).WaitReady(context.Background(), testUID, stream.Audio, time.Millisecond)
		if !errors.Is(err, stream.ErrNotFound) {
			t.Fatalf("WaitReady: got %v, want ErrNotFound", err)
		}
	})
	t.Run("context ends the wait", func(t *testing.T) {
		_, srv := newFakeAPI(t, map[string][]reply{listPath: {{body: inprogress}}})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := newTestClient(t, srv, 0).WaitReady(ctx, testUID, stream.Default, 10*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitReady: got %v, want DeadlineExceeded", err)
		}
	})
}

func TestClientCreateSigningKey(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	const keyID = "ed72cd8cd2f2b2c8d0e1b9c3f2a6a0b7"
	jwk := fmt.Sprintf(`{"use":"sig","kty":"RSA","kid":%q,"alg":"RS256","n":%q,"e":"AQAB"}`,
		keyID, base64.RawURLEncoding.EncodeToString(key.N.Bytes()))
	result, _ := json.Marshal(map[string]any{
		"success": true, "errors": []any{}, "messages": []any{},
		"result": map[string]string{
			"id":      keyID,
			"pem":     base64.StdEncoding.EncodeToString(pemBytes),
			"jwk":     base64.StdEncoding.EncodeToString([]byte(jwk)),
			"created": "2014-01-02T02:20:00.123Z",
		},
	})
	f, srv := newFakeAPI(t, map[string][]reply{"POST " + prefix + "keys": {{body: string(result)}}})
	got, err := newTestClient(t, srv, 0).CreateSigningKey(context.Background())
	if err != nil {
		t.Fatalf("CreateSigningKey: %v", err)
	}
	if got.ID != keyID {
		t.Errorf("ID: got %q, want %q", got.ID, keyID)
	}
	if string(got.PEM) != string(pemBytes) {
		t.Errorf("PEM: got %q, want the decoded PEM", got.PEM)
	}
	if string(got.JWK) != jwk {
		t.Errorf("JWK: got %q, want %q", got.JWK, jwk)
	}
	if want := time.Date(2014, 1, 2, 2, 20, 0, 123e6, time.UTC); !got.Created.Equal(want) {
		t.Errorf("Created: got %s, want %s", got.Created, want)
	}
	s, err := got.Signer()
	if err != nil {
		t.Fatalf("Signer: %v", err)
	}
	if s.KeyID() != keyID || !s.PublicKey().Equal(&key.PublicKey) {
		t.Errorf("Signer: got kid %q and another public key", s.KeyID())
	}
	if calls := f.Calls(); len(calls) != 1 {
		t.Errorf("requests: got %q, want one POST", calls)
	}
}

func TestClientPing(t *testing.T) {
	f, srv := newFakeAPI(t, map[string][]reply{"GET " + prefix + "keys": {{file: "keys_list.json"}}})
	if err := newTestClient(t, srv, 0).Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if calls := f.Calls(); len(calls) != 1 || calls[0] != "GET "+prefix+"keys" {
		t.Errorf("requests: got %q", calls)
	}
}

func TestClientConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close()
	c, err := stream.NewClient(stream.ClientConfig{AccountID: testAccount, APIToken: testToken, BaseURL: base + "/client/v4/", MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Ping(context.Background())
	if err == nil {
		t.Fatal("Ping: got nil error from a dead port")
	}
	var ae *stream.APIError
	if errors.As(err, &ae) {
		t.Errorf("Ping: got APIError %v, want a transport error", ae)
	}
	if strings.Contains(err.Error(), testToken) {
		t.Errorf("error %q contains the api token", err)
	}
}

const (
	emuAccount  = "9a7806061c88ada191ed06f989cc3dac"
	emuToken    = "emulator-api-token"
	readyUID    = "0123456789abcdef0123456789abcdef"
	pendingUID  = "fedcba9876543210fedcba9876543210"
	unknownUID  = "00000000000000000000000000000000"
	readyAfter  = 10 * time.Minute
	emuDuration = 754.2
)

// newEmulator serves a fresh emulator over a real socket. polls receives a value
// for every GET of a downloads listing.
func newEmulator(t *testing.T, opts streamtest.Options) (*streamtest.Emulator, *httptest.Server, <-chan struct{}) {
	t.Helper()
	e := streamtest.New(opts)
	e.AddVideo(streamtest.Video{UID: readyUID, Duration: emuDuration, Size: 1 << 20, RequireSignedURLs: true, ReadyToStream: true})
	e.AddVideo(streamtest.Video{UID: pendingUID, Duration: -1, Size: 1 << 20})
	polls := make(chan struct{}, 64)
	h := e.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/downloads") {
			defer func() {
				select {
				case polls <- struct{}{}:
				default:
				}
			}()
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return e, srv, polls
}

func emulatorClient(t *testing.T, srv *httptest.Server, account, token string) *stream.Client {
	t.Helper()
	c, err := stream.NewClient(stream.ClientConfig{
		AccountID:  account,
		APIToken:   token,
		BaseURL:    srv.URL + "/client/v4/",
		HTTPClient: srv.Client(),
		MaxRetries: -1,
	})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func TestClientEmulatorRoundTrip(t *testing.T) {
	clk := streamtest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	_, srv, polls := newEmulator(t, streamtest.Options{AccountID: emuAccount, APIToken: emuToken, ReadyAfter: readyAfter, Now: clk.Now})
	c := emulatorClient(t, srv, emuAccount, emuToken)
	ctx := context.Background()

	v, err := c.Video(ctx, readyUID)
	if err != nil {
		t.Fatalf("Video: %v", err)
	}
	if want := (stream.Video{UID: readyUID, Duration: emuDuration, ReadyToStream: true, RequireSignedURLs: true, Size: 1 << 20, State: "ready"}); v != want {
		t.Errorf("Video: got %+v, want %+v", v, want)
	}
	if err := v.Billable(); err != nil {
		t.Errorf("Billable: %v", err)
	}

	for _, typ := range []stream.DownloadType{stream.Default, stream.Audio} {
		d, err := c.EnableDownload(ctx, readyUID, typ)
		if err != nil {
			t.Fatalf("EnableDownload %s: %v", typ, err)
		}
		if d.Type != typ || d.Status != stream.DownloadInProgress || d.PercentComplete != 0 {
			t.Errorf("EnableDownload %s: got %+v, want in progress at 0%%", typ, d)
		}
		if want := srv.URL + stream.DeliveryPath(readyUID, typ); d.URL != want {
			t.Errorf("EnableDownload %s: url %q, want %q", typ, d.URL, want)
		}
	}

	clk.Advance(readyAfter / 2)
	ds, err := c.Downloads(ctx, readyUID)
	if err != nil {
		t.Fatalf("Downloads: %v", err)
	}
	if len(ds) != 2 {
		t.Fatalf("Downloads: got %+v, want default and audio", ds)
	}
	for typ, d := range ds {
		if d.Status != stream.DownloadInProgress || d.PercentComplete != 50 {
			t.Errorf("Downloads[%s] halfway: got %+v, want in progress at 50%%", typ, d)
		}
	}
	<-polls // the listing above

	// Wait while the clock stands still, then let it reach ReadyAfter.
	type waited struct {
		d   stream.Download
		err error
	}
	done := make(chan waited, 1)
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	go func() {
		d, err := c.WaitReady(waitCtx, readyUID, stream.Default, time.Millisecond)
		done <- waited{d, err}
	}()
	for range 3 {
		select {
		case <-polls:
		case w := <-done:
			t.Fatalf("WaitReady returned before the download was ready: %+v, %v", w.d, w.err)
		}
	}
	clk.Advance(readyAfter / 2)
	w := <-done
	if w.err != nil {
		t.Fatalf("WaitReady: %v", w.err)
	}
	if w.d.Status != stream.DownloadReady || w.d.PercentComplete != 100 || !w.d.Ready() {
		t.Errorf("WaitReady: got %+v, want ready at 100%%", w.d)
	}
	if d, err := c.WaitReady(ctx, readyUID, stream.Audio, time.Millisecond); err != nil || !d.Ready() {
		t.Errorf("WaitReady audio: got %+v, %v; want ready", d, err)
	}

	// Enabling again returns the existing download unchanged.
	if d, err := c.EnableDownload(ctx, readyUID, stream.Audio); err != nil || !d.Ready() {
		t.Errorf("EnableDownload again: got %+v, %v; want the ready download", d, err)
	}

	if err := c.DeleteDownload(ctx, readyUID, stream.Audio); err != nil {
		t.Fatalf("DeleteDownload audio: %v", err)
	}
	ds, err = c.Downloads(ctx, readyUID)
	if err != nil {
		t.Fatalf("Downloads: %v", err)
	}
	if _, ok := ds[stream.Audio]; ok || len(ds) != 1 {
		t.Errorf("Downloads after deleting audio: got %+v, want default only", ds)
	}
	if _, err := c.WaitReady(ctx, readyUID, stream.Audio, time.Millisecond); !errors.Is(err, stream.ErrNotFound) {
		t.Errorf("WaitReady on a deleted download: got %v, want ErrNotFound", err)
	}
	if err := c.DeleteDownload(ctx, readyUID, stream.Default); err != nil {
		t.Fatalf("DeleteDownload default: %v", err)
	}
	if ds, err = c.Downloads(ctx, readyUID); err != nil || len(ds) != 0 {
		t.Errorf("Downloads after deleting both: got %+v, %v; want none", ds, err)
	}

	if err := c.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestClientEmulatorFailedDownload(t *testing.T) {
	e, srv, _ := newEmulator(t, streamtest.Options{AccountID: emuAccount, APIToken: emuToken})
	e.FailDownload(readyUID, stream.Default)
	c := emulatorClient(t, srv, emuAccount, emuToken)
	if _, err := c.WaitReady(context.Background(), readyUID, stream.Default, time.Millisecond); !errors.Is(err, stream.ErrDownloadFailed) {
		t.Errorf("WaitReady: got %v, want ErrDownloadFailed", err)
	}
}

func TestClientEmulatorErrors(t *testing.T) {
	_, srv, _ := newEmulator(t, streamtest.Options{AccountID: emuAccount, APIToken: emuToken})
	good := emulatorClient(t, srv, emuAccount, emuToken)
	badToken := emulatorClient(t, srv, emuAccount, "not-the-token")
	otherAccount := emulatorClient(t, srv, "another-account", emuToken)
	ctx := context.Background()

	tests := []struct {
		name   string
		call   func() error
		is     error
		status int
	}{
		{name: "unknown video", call: func() error { _, err := good.Video(ctx, unknownUID); return err }, is: stream.ErrNotFound, status: 404},
		{name: "downloads of unknown video", call: func() error { _, err := good.Downloads(ctx, unknownUID); return err }, is: stream.ErrNotFound, status: 404},
		{name: "enable on unknown video", call: func() error { _, err := good.EnableDownload(ctx, unknownUID, stream.Audio); return err }, is: stream.ErrNotFound, status: 404},
		{name: "not ready video", call: func() error { _, err := good.EnableDownload(ctx, pendingUID, stream.Default); return err }, is: stream.ErrNotReady, status: 400},
		{name: "not ready video, audio", call: func() error { _, err := good.EnableDownload(ctx, pendingUID, stream.Audio); return err }, is: stream.ErrNotReady, status: 400},
		{name: "bad token", call: func() error { _, err := badToken.Video(ctx, readyUID); return err }, is: stream.ErrUnauthorized, status: 401},
		{name: "bad token ping", call: func() error { return badToken.Ping(ctx) }, is: stream.ErrUnauthorized, status: 401},
		{name: "other account ping", call: func() error { return otherAccount.Ping(ctx) }, is: stream.ErrUnauthorized, status: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.is) {
				t.Fatalf("got %v, want %v", err, tt.is)
			}
			var ae *stream.APIError
			if !errors.As(err, &ae) || ae.Status != tt.status {
				t.Errorf("got %v, want an APIError with status %d", err, tt.status)
			}
			if strings.Contains(err.Error(), emuToken) {
				t.Errorf("error %q contains the api token", err)
			}
		})
	}

	v, err := good.Video(ctx, pendingUID)
	if err != nil {
		t.Fatalf("Video: %v", err)
	}
	if v.Duration != -1 || v.ReadyToStream || !errors.Is(v.Billable(), stream.ErrNotReady) {
		t.Errorf("Video not ready: got %+v (Billable %v), want unknown duration and ErrNotReady", v, v.Billable())
	}
}

func TestClientEmulatorRateLimit(t *testing.T) {
	clk := streamtest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	_, srv, _ := newEmulator(t, streamtest.Options{AccountID: emuAccount, APIToken: emuToken, RateLimit: 1, Now: clk.Now})
	c, err := stream.NewClient(stream.ClientConfig{
		AccountID: emuAccount, APIToken: emuToken, BaseURL: srv.URL + "/client/v4/", HTTPClient: srv.Client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("first Ping: %v", err)
	}
	start := time.Now()
	err = c.Ping(ctx)
	if !errors.Is(err, stream.ErrRateLimited) {
		t.Fatalf("second Ping: got %v, want ErrRateLimited", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("second Ping took %s, want an answer without sleeping through Retry-After", took)
	}
	var ae *stream.APIError
	if !errors.As(err, &ae) || ae.RetryAfter != 5*time.Minute {
		t.Errorf("RetryAfter: got %v, want 5m", err)
	}
	clk.Advance(5 * time.Minute)
	if err := c.Ping(ctx); err != nil {
		t.Errorf("Ping after the window: %v", err)
	}
}

func TestClientEmulatorSigningKey(t *testing.T) {
	clk := streamtest.NewClock(time.Now().UTC().Truncate(time.Second))
	e, srv, _ := newEmulator(t, streamtest.Options{AccountID: emuAccount, APIToken: emuToken, Now: clk.Now})
	e.SetDownloadReady(readyUID, stream.Default)
	c := emulatorClient(t, srv, emuAccount, emuToken)
	ctx := context.Background()

	k, err := c.CreateSigningKey(ctx)
	if err != nil {
		t.Fatalf("CreateSigningKey: %v", err)
	}
	if !stream.ValidUID(k.ID) {
		t.Errorf("ID: got %q, want 32 hex characters", k.ID)
	}
	if !strings.HasPrefix(string(k.PEM), "-----BEGIN RSA PRIVATE KEY-----") {
		t.Errorf("PEM: got %.40q..., want a decoded PKCS#1 PEM", k.PEM)
	}
	var jwk struct {
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
		Kty string `json:"kty"`
	}
	if err := json.Unmarshal(k.JWK, &jwk); err != nil {
		t.Fatalf("JWK: %v", err)
	}
	if jwk.Kid != k.ID || jwk.Alg != "RS256" || jwk.Use != "sig" || jwk.Kty != "RSA" {
		t.Errorf("JWK: got %+v, want kid %s, RS256, sig, RSA", jwk, k.ID)
	}
	if !k.Created.Equal(clk.Now()) {
		t.Errorf("Created: got %s, want %s", k.Created, clk.Now())
	}

	signer, err := stream.NewSigner(k.ID, k.PEM)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	// The emulator accepts what the key signs: a downloadable token opens the
	// private video's MP4.
	tok, err := signer.Mint(stream.Claims{Video: readyUID, ExpiresAt: clk.Now().Add(time.Hour), Downloadable: true}, clk.Now())
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	res, err := srv.Client().Get(srv.URL + stream.DeliveryPath(tok, stream.Default))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("delivery with a token of the new key: got %s, want 200", res.Status)
	}
}
