package streamtest

import (
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
)

func TestAPIAuth(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPublic, Duration: 60, Size: 100, ReadyToStream: true})

	status, env := apiAs(t, srv, "wrong", http.MethodGet, "/"+uidPublic, "")
	if status != http.StatusUnauthorized || len(env.Errors) != 1 || env.Errors[0].Code != 10000 || env.Errors[0].Message != "Authentication error" {
		t.Errorf("bad token: status %d, errors %v; want 401 and 10000 Authentication error", status, env.Errors)
	}
	r := do(t, srv.Client(), http.MethodGet, srv.URL+"/client/v4/accounts/test-account/stream/"+uidPublic, nil, "")
	if r.status != http.StatusUnauthorized {
		t.Errorf("no token: status %d, want 401", r.status)
	}
	r = do(t, srv.Client(), http.MethodGet, srv.URL+"/client/v4/accounts/other/stream/"+uidPublic,
		map[string]string{"Authorization": "Bearer test-token"}, "")
	if r.status != http.StatusForbidden {
		t.Errorf("other account: status %d, want 403", r.status)
	}
	status, env = api(t, srv, http.MethodPatch, "/"+uidPublic, "{}")
	if status != http.StatusMethodNotAllowed {
		t.Errorf("PATCH video: status %d, want 405", status)
	}
	status, _ = api(t, srv, http.MethodGet, "/"+uidPublic+"/captions", "")
	if status != http.StatusNotFound {
		t.Errorf("unknown route: status %d, want 404", status)
	}
}

func TestAPIVideo(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPrivate, Duration: 125.5, Size: 1 << 20, RequireSignedURLs: true, ReadyToStream: true, Name: "intro"})
	e.AddVideo(Video{UID: uidUnready, Duration: -1, Size: 0})

	status, env := api(t, srv, http.MethodGet, "/"+uidPrivate, "")
	if status != http.StatusOK {
		t.Fatalf("status %d, errors %v", status, env.Errors)
	}
	v := decode[map[string]any](t, env.Result)
	want := map[string]any{
		"uid": uidPrivate, "duration": 125.5, "readyToStream": true, "requireSignedURLs": true,
		"size": float64(1 << 20),
	}
	for k, w := range want {
		if v[k] != w {
			t.Errorf("%s = %v, want %v", k, v[k], w)
		}
	}
	if st := v["status"].(map[string]any); st["state"] != "ready" || st["pctComplete"] != "100.000000" {
		t.Errorf("status = %v, want ready 100", st)
	}
	if m := v["meta"].(map[string]any); m["name"] != "intro" {
		t.Errorf("meta = %v, want name intro", m)
	}
	if _, err := time.Parse(time.RFC3339, v["created"].(string)); err != nil {
		t.Errorf("created: %v", err)
	}

	_, env = api(t, srv, http.MethodGet, "/"+uidUnready, "")
	u := decode[map[string]any](t, env.Result)
	if u["duration"] != -1.0 || u["readyToStream"] != false || u["status"].(map[string]any)["state"] != "inprogress" {
		t.Errorf("unready video = %v", u)
	}

	for _, path := range []string{"/" + uidUnknown, "/not-a-uid", "/" + uidUnknown + "/downloads"} {
		status, env = api(t, srv, http.MethodGet, path, "")
		if status != http.StatusNotFound || len(env.Errors) != 1 || env.Errors[0].Code != 10005 || env.Errors[0].Message != "video not found" {
			t.Errorf("GET %s: status %d, errors %v; want 404 10005 video not found", path, status, env.Errors)
		}
	}
	status, env = api(t, srv, http.MethodPost, "/"+uidUnknown+"/downloads", "")
	if status != http.StatusNotFound {
		t.Errorf("enable on unknown video: status %d, want 404", status)
	}

	status, env = api(t, srv, http.MethodGet, "", "")
	if list := decode[[]map[string]any](t, env.Result); status != 200 || len(list) != 2 {
		t.Errorf("list: status %d, %d videos; want 2", status, len(list))
	}
}

func TestAPIDownloadsNotReadyVideo(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidUnready, Duration: 60, Size: 100})
	for _, path := range []string{"/downloads", "/downloads/default", "/downloads/audio"} {
		status, env := api(t, srv, http.MethodPost, "/"+uidUnready+path, "")
		if status != http.StatusBadRequest || len(env.Errors) != 1 || env.Errors[0].Code != 10007 {
			t.Errorf("POST %s: status %d, errors %v; want 400 and code 10007", path, status, env.Errors)
		}
	}
	_, env := api(t, srv, http.MethodGet, "/"+uidUnready+"/downloads", "")
	if got := string(env.Result); got != "{}" {
		t.Errorf("downloads = %s, want {}", got)
	}
}

func TestAPIDownloadsLifecycle(t *testing.T) {
	clk := newClock()
	e := New(Options{Now: clk.Now, ReadyAfter: 10 * time.Second})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPublic, Duration: 60, Size: 4000, ReadyToStream: true})
	get := func(file string) int {
		return do(t, srv.Client(), http.MethodGet, srv.URL+"/"+uidPublic+"/downloads/"+file, nil, "").status
	}
	list := func() map[string]downloadJSON {
		t.Helper()
		status, env := api(t, srv, http.MethodGet, "/"+uidPublic+"/downloads", "")
		if status != http.StatusOK {
			t.Fatalf("list downloads: status %d, errors %v", status, env.Errors)
		}
		return decode[map[string]downloadJSON](t, env.Result)
	}

	if got := get("default.mp4"); got != http.StatusNotFound {
		t.Errorf("download before enabling: status %d, want 404", got)
	}
	status, env := api(t, srv, http.MethodPost, "/"+uidPublic+"/downloads", "")
	if status != http.StatusOK {
		t.Fatalf("enable default: status %d, errors %v", status, env.Errors)
	}
	created := decode[map[string]downloadJSON](t, env.Result)
	wantURL := srv.URL + "/" + uidPublic + "/downloads/default.mp4"
	if d, ok := created["default"]; !ok || len(created) != 1 || d.Status != "inprogress" || d.PercentComplete != 0 || d.URL != wantURL {
		t.Errorf("POST /downloads = %+v, want only default, inprogress at 0%%, url %s", created, wantURL)
	}

	clk.Advance(4 * time.Second)
	if _, env := api(t, srv, http.MethodPost, "/"+uidPublic+"/downloads/audio", ""); !env.Success {
		t.Fatalf("enable audio: errors %v", env.Errors)
	}
	clk.Advance(1 * time.Second)
	got := list()
	if d := got["default"]; d.Status != "inprogress" || d.PercentComplete != 50 {
		t.Errorf("default after 5s = %+v, want inprogress 50", d)
	}
	if d := got["audio"]; d.Status != "inprogress" || d.PercentComplete != 10 || !strings.HasSuffix(d.URL, "/audio.m4a") {
		t.Errorf("audio after 1s = %+v, want inprogress 10", d)
	}
	if got := get("default.mp4"); got != http.StatusNotFound {
		t.Errorf("download in progress: status %d, want 404", got)
	}

	// Poll, advancing the clock, until both are ready; percentages only rise.
	last := map[string]float64{}
	for i := 0; ; i++ {
		got = list()
		ready := true
		for typ, d := range got {
			if d.PercentComplete < last[typ] {
				t.Errorf("%s percentComplete fell from %v to %v", typ, last[typ], d.PercentComplete)
			}
			last[typ] = d.PercentComplete
			ready = ready && d.Status == "ready"
		}
		if ready {
			break
		}
		if i > 20 {
			t.Fatalf("downloads never ready: %+v", got)
		}
		clk.Advance(time.Second)
	}
	if d := got["default"]; d.PercentComplete != 100 || d.URL != wantURL {
		t.Errorf("ready default = %+v", d)
	}
	if clk.Now().Sub(t0) < 14*time.Second {
		t.Errorf("audio ready after %s, before ReadyAfter", clk.Now().Sub(t0)-4*time.Second)
	}
	if got := get("default.mp4"); got != http.StatusOK {
		t.Errorf("ready default: status %d, want 200", got)
	}
	if got := get("audio.m4a"); got != http.StatusOK {
		t.Errorf("ready audio: status %d, want 200", got)
	}

	// Enabling again does not restart the download.
	_, env = api(t, srv, http.MethodPost, "/"+uidPublic+"/downloads/default", "")
	if d := decode[map[string]downloadJSON](t, env.Result)["default"]; d.Status != "ready" {
		t.Errorf("enable again = %+v, want ready", d)
	}

	if status, env := api(t, srv, http.MethodDelete, "/"+uidPublic+"/downloads/audio", ""); status != 200 || string(env.Result) != `"ok"` {
		t.Errorf("delete audio: status %d, result %s", status, env.Result)
	}
	if got := list(); len(got) != 1 || got["default"].Status != "ready" {
		t.Errorf("after deleting audio: %+v", got)
	}
	if got := get("audio.m4a"); got != http.StatusNotFound {
		t.Errorf("deleted audio: status %d, want 404", got)
	}
	if status, _ := api(t, srv, http.MethodDelete, "/"+uidPublic+"/downloads", ""); status != 200 {
		t.Errorf("delete default: status %d", status)
	}
	if got := list(); len(got) != 0 {
		t.Errorf("after deleting both: %+v", got)
	}
	if got := get("default.mp4"); got != http.StatusNotFound {
		t.Errorf("deleted default: status %d, want 404", got)
	}
}

func TestAPIKeys(t *testing.T) {
	clk := newClock()
	e := New(Options{Now: clk.Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPrivate, Duration: 60, Size: 1000, RequireSignedURLs: true, ReadyToStream: true})
	e.SetDownloadReady(uidPrivate, stream.Default)

	status, env := api(t, srv, http.MethodPost, "/keys", "")
	if status != http.StatusOK {
		t.Fatalf("create key: status %d, errors %v", status, env.Errors)
	}
	k := decode[keyJSON](t, env.Result)
	if !stream.ValidUID(k.ID) || !k.Created.Equal(t0) {
		t.Errorf("key id %q created %v", k.ID, k.Created)
	}
	pemBytes, err := base64.StdEncoding.DecodeString(k.PEM)
	if err != nil || !strings.HasPrefix(string(pemBytes), "-----BEGIN RSA PRIVATE KEY-----") {
		t.Fatalf("pem is not base64 of a PKCS#1 PEM: %v", err)
	}
	jwkBytes, err := base64.StdEncoding.DecodeString(k.JWK)
	if err != nil {
		t.Fatalf("jwk is not base64: %v", err)
	}
	var jwk map[string]string
	if err := json.Unmarshal(jwkBytes, &jwk); err != nil {
		t.Fatalf("jwk: %v", err)
	}
	signer, err := stream.NewSigner(k.ID, pemBytes)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	n, _ := base64.RawURLEncoding.DecodeString(jwk["n"])
	if jwk["alg"] != "RS256" || jwk["use"] != "sig" || jwk["kid"] != k.ID || jwk["kty"] != "RSA" ||
		new(big.Int).SetBytes(n).Cmp(signer.PublicKey().N) != 0 || jwk["e"] != "AQAB" {
		t.Errorf("jwk = %v", jwk)
	}

	clk.Advance(time.Second)
	e.AddSigningKey("local", &rsaKey(t).PublicKey)
	status, env = api(t, srv, http.MethodGet, "/keys", "")
	keys := decode[[]map[string]any](t, env.Result)
	if status != 200 || len(keys) != 2 || keys[0]["id"] != k.ID || keys[1]["id"] != "local" || keys[0]["pem"] != nil {
		t.Errorf("list keys: status %d, %v", status, keys)
	}

	tok, err := signer.Mint(stream.Claims{Video: uidPrivate, ExpiresAt: t0.Add(time.Hour), Downloadable: true}, t0)
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + stream.DeliveryPath(tok, stream.Default)
	if r := do(t, srv.Client(), http.MethodGet, url, nil, ""); r.status != http.StatusOK {
		t.Fatalf("token of an API key: status %d, want 200", r.status)
	}
	if status, env := api(t, srv, http.MethodDelete, "/keys/"+k.ID, ""); status != 200 || string(env.Result) != `"Revoked"` {
		t.Errorf("delete key: status %d, result %s", status, env.Result)
	}
	if r := do(t, srv.Client(), http.MethodGet, url, nil, ""); r.status != http.StatusUnauthorized {
		t.Errorf("token of a revoked key: status %d, want 401", r.status)
	}
	if status, env := api(t, srv, http.MethodDelete, "/keys/"+k.ID, ""); status != http.StatusNotFound || env.Errors[0].Code != 10006 {
		t.Errorf("delete again: status %d, errors %v; want 404 10006", status, env.Errors)
	}
	_, env = api(t, srv, http.MethodGet, "/keys", "")
	if keys := decode[[]map[string]any](t, env.Result); len(keys) != 1 {
		t.Errorf("keys after delete: %v", keys)
	}
}

func TestAPIToken(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPrivate, Duration: 60, Size: 1000, RequireSignedURLs: true, ReadyToStream: true})
	e.SetDownloadReady(uidPrivate, stream.Default)

	status, env := api(t, srv, http.MethodPost, "/"+uidPrivate+"/token", `{"downloadable": true}`)
	if status != http.StatusOK {
		t.Fatalf("token: status %d, errors %v", status, env.Errors)
	}
	tok := decode[map[string]string](t, env.Result)["token"]
	if r := do(t, srv.Client(), http.MethodGet, srv.URL+stream.DeliveryPath(tok, stream.Default), nil, ""); r.status != http.StatusOK {
		t.Errorf("API-signed token: status %d, want 200", r.status)
	}
	_, env = api(t, srv, http.MethodPost, "/"+uidPrivate+"/token", "")
	tok = decode[map[string]string](t, env.Result)["token"]
	if r := do(t, srv.Client(), http.MethodGet, srv.URL+stream.DeliveryPath(tok, stream.Default), nil, ""); r.status != http.StatusForbidden {
		t.Errorf("API-signed token without downloadable: status %d, want 403", r.status)
	}
	if status, _ := api(t, srv, http.MethodPost, "/"+uidPrivate+"/token", `{"exp": `+strconv.FormatInt(t0.Add(48*time.Hour).Unix(), 10)+`}`); status != http.StatusBadRequest {
		t.Errorf("exp 48h ahead: status %d, want 400", status)
	}
}

func TestAPIRateLimit(t *testing.T) {
	clk := newClock()
	e := New(Options{Now: clk.Now, RateLimit: 3})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPublic, Duration: 60, Size: 100, ReadyToStream: true})
	for i := 0; i < 3; i++ {
		if status, _ := api(t, srv, http.MethodGet, "/"+uidPublic, ""); status != 200 {
			t.Fatalf("request %d: status %d", i, status)
		}
	}
	clk.Advance(time.Minute)
	r := do(t, srv.Client(), http.MethodGet, srv.URL+"/client/v4/accounts/test-account/stream/"+uidPublic,
		map[string]string{"Authorization": "Bearer test-token"}, "")
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "240" {
		t.Errorf("past the limit: status %d, Retry-After %q; want 429 and 240", r.status, r.header.Get("Retry-After"))
	}
	clk.Advance(4 * time.Minute)
	if status, _ := api(t, srv, http.MethodGet, "/"+uidPublic, ""); status != 200 {
		t.Errorf("next window: status %d, want 200", status)
	}
}
