package streamtest

import (
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// GET .../downloads for a video with nothing enabled answers as the switch says:
// {} or the binding's NotFound. A video that does not exist is 404 either way.
func TestNoDownloadsAnswers(t *testing.T) {
	tests := []struct {
		name     string
		set      NoDownloads
		status   int
		code     int
		wantBody string
	}{
		{"empty object", NoDownloadsEmpty, http.StatusOK, 0, `{}`},
		{"not found", NoDownloadsNotFound, http.StatusNotFound, codeNoDownloads, `null`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New(Options{Now: newClock().Now, NoDownloads: tt.set})
			srv := start(t, e)
			e.AddVideo(Video{UID: uidPublic, Duration: 60, Size: 1000, ReadyToStream: true})
			status, env := api(t, srv, http.MethodGet, "/"+uidPublic+"/downloads", "")
			if status != tt.status || string(env.Result) != tt.wantBody {
				t.Errorf("nothing enabled: status %d result %s, want %d %s", status, env.Result, tt.status, tt.wantBody)
			}
			if tt.code != 0 && (len(env.Errors) != 1 || env.Errors[0].Code != tt.code) {
				t.Errorf("nothing enabled: errors %v, want code %d", env.Errors, tt.code)
			}
			e.SetDownloadReady(uidPublic, Audio)
			if status, env := api(t, srv, http.MethodGet, "/"+uidPublic+"/downloads", ""); status != 200 || !strings.Contains(string(env.Result), `"audio"`) {
				t.Errorf("audio enabled: status %d result %s", status, env.Result)
			}
			if status, env := api(t, srv, http.MethodGet, "/"+uidUnknown+"/downloads", ""); status != 404 || env.Errors[0].Code != codeVideoNotFound {
				t.Errorf("unknown video: status %d errors %v", status, env.Errors)
			}
		})
	}
	e := New(Options{})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPublic, Duration: 60, Size: 1000, ReadyToStream: true})
	e.SetNoDownloads(NoDownloadsNotFound)
	if status, _ := api(t, srv, http.MethodGet, "/"+uidPublic+"/downloads", ""); status != http.StatusNotFound {
		t.Errorf("after SetNoDownloads(NoDownloadsNotFound): status %d, want 404", status)
	}
}

// POST .../downloads[/type] answers with every download of the video, as GET does.
func TestEnableAnswersAllDownloads(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPublic, Duration: 60, Size: 1000, ReadyToStream: true})
	for _, tt := range []struct {
		path string
		want []string
	}{
		{"/downloads/audio", []string{"audio"}},
		{"/downloads", []string{"audio", "default"}},
		{"/downloads/default", []string{"audio", "default"}},
	} {
		status, env := api(t, srv, http.MethodPost, "/"+uidPublic+tt.path, "")
		got := decode[map[string]downloadJSON](t, env.Result)
		if status != 200 || len(got) != len(tt.want) {
			t.Errorf("POST %s: status %d, result %s; want the types %v", tt.path, status, env.Result, tt.want)
		}
		for _, typ := range tt.want {
			if got[typ].Status != "ready" || !strings.HasSuffix(got[typ].URL, deliveryPath(uidPublic, DownloadType(typ))) {
				t.Errorf("POST %s: %s = %+v", tt.path, typ, got[typ])
			}
		}
	}
}

// /token checks access rules as delivery does: no token that delivery refuses.
func TestTokenEndpointChecksRules(t *testing.T) {
	e := New(Options{GeoIP: testCountryDB(t), Now: newClock().Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPrivate, Duration: 60, Size: 1000, RequireSignedURLs: true, ReadyToStream: true})
	e.SetDownloadReady(uidPrivate, Default)
	six := strings.Repeat(`{"type":"any","action":"allow"},`, 6)
	tests := []struct {
		name   string
		rules  string
		status int
		from   string
		get    int
	}{
		{"bogus type", `[{"type":"bogus","action":"allow"}]`, 400, "", 0},
		{"bogus action", `[{"type":"any","action":"maybe"}]`, 400, "", 0},
		{"country not a list", `[{"type":"ip.geoip.country","action":"allow","country":"GB"}]`, 400, "", 0},
		{"lowercase country", `[{"type":"ip.geoip.country","action":"allow","country":["gb"]}]`, 400, "", 0},
		{"country rule without countries", `[{"type":"ip.geoip.country","action":"allow"}]`, 400, "", 0},
		{"bad ip", `[{"type":"ip.src","action":"allow","ip":["300.1.1.1"]}]`, 400, "", 0},
		{"six rules", `[` + strings.TrimSuffix(six, ",") + `]`, 400, "", 0},
		{"country allowed", `[{"type":"ip.geoip.country","action":"allow","country":["GB"]},{"type":"any","action":"block"}]`, 200, ipGB, 200},
		{"country blocked", `[{"type":"ip.geoip.country","action":"allow","country":["GB"]},{"type":"any","action":"block"}]`, 200, ipUS, 403},
		{"extra fields", `[{"type":"ip.src","action":"allow","ip":["127.0.0.2/32"],"country":["US"],"note":"office"},{"type":"any","action":"block","ip":[]}]`, 200, ipGB, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, env := api(t, srv, http.MethodPost, "/"+uidPrivate+"/token", `{"downloadable":true,"accessRules":`+tt.rules+`}`)
			if status != tt.status {
				t.Fatalf("status %d (errors %v), want %d", status, env.Errors, tt.status)
			}
			if status != 200 {
				if env.Errors[0].Code != codeBadRequest {
					t.Errorf("errors %v, want code %d", env.Errors, codeBadRequest)
				}
				return
			}
			tok := decode[map[string]string](t, env.Result)["token"]
			if r := do(t, clientFrom(t, tt.from), http.MethodGet, srv.URL+deliveryPath(tok, Default), nil, ""); r.status != tt.get {
				t.Errorf("delivery from %s: status %d, want %d", tt.from, r.status, tt.get)
			}
		})
	}
}

// The key /token signs with when given none is the account's own: not listed,
// not deletable, and its tokens keep working. DELETE of a real key says
// "Revoked".
func TestTokenEndpointKeyHidden(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPrivate, Duration: 60, Size: 1000, RequireSignedURLs: true, ReadyToStream: true})
	e.SetDownloadReady(uidPrivate, Default)
	_, env := api(t, srv, http.MethodPost, "/"+uidPrivate+"/token", `{"downloadable":true}`)
	tok := decode[map[string]string](t, env.Result)["token"]
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := parsed.Header["kid"].(string)
	if _, env := api(t, srv, http.MethodGet, "/keys", ""); string(env.Result) != "[]" {
		t.Errorf("keys after /token: %s, want []", env.Result)
	}
	if status, env := api(t, srv, http.MethodDelete, "/keys/"+kid, ""); status != http.StatusNotFound || env.Errors[0].Code != codeKeyNotFound {
		t.Errorf("delete the account's own key: status %d errors %v, want 404", status, env.Errors)
	}
	if r := do(t, srv.Client(), http.MethodGet, srv.URL+deliveryPath(tok, Default), nil, ""); r.status != 200 {
		t.Errorf("token of the account's own key: status %d, want 200", r.status)
	}
	_, env = api(t, srv, http.MethodPost, "/keys", "")
	k := decode[keyJSON](t, env.Result)
	if status, env := api(t, srv, http.MethodDelete, "/keys/"+k.ID, ""); status != 200 || string(env.Result) != `"Revoked"` {
		t.Errorf("delete key: status %d result %s, want \"Revoked\"", status, env.Result)
	}
}

// Token shapes Cloudflare documents: exp and nbf as strings, rules with fields
// of other types. A token without sub names no video and is refused.
func TestDeliveryTokenVariants(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPrivate, Duration: 60, Size: 1000, RequireSignedURLs: true, ReadyToStream: true})
	e.SetDownloadReady(uidPrivate, Default)
	key := rsaKey(t)
	e.AddSigningKey("k1", &key.PublicKey)
	k1 := map[string]any{"kid": "k1"}
	exp, nbf := t0.Add(time.Hour).Unix(), t0.Add(-time.Minute).Unix()
	tests := []struct {
		name   string
		claims jwt.MapClaims
		want   int
	}{
		{"numbers", rawClaims(uidPrivate), 200},
		{"string exp and nbf", with(rawClaims(uidPrivate), "exp", strconv.FormatInt(exp, 10), "nbf", strconv.FormatInt(nbf, 10)), 200},
		{"string exp past", with(rawClaims(uidPrivate), "exp", strconv.FormatInt(t0.Add(-time.Hour).Unix(), 10)), 401},
		{"string exp not a number", with(rawClaims(uidPrivate), "exp", "soon"), 401},
		{"rule with fields of other types", with(rawClaims(uidPrivate), "accessRules", []map[string]any{
			{"type": "any", "action": "allow", "country": []string{"US"}, "comment": "all"},
		}), 200},
		{"no kid claim", with(rawClaims(uidPrivate), "kid", nil), 200},
		{"no sub", with(rawClaims(uidPrivate), "sub", nil), 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := craft(t, jwt.SigningMethodRS256, key, k1, tt.claims)
			if r := do(t, srv.Client(), http.MethodGet, srv.URL+deliveryPath(tok, Default), nil, ""); r.status != tt.want {
				t.Errorf("status %d (%s), want %d", r.status, r.body, tt.want)
			}
		})
	}
}

// ?filename= may end in the type's own extension; other dots are refused.
func TestDeliveryFilenameExtension(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPublic, Duration: 60, Size: 1000, ReadyToStream: true})
	e.SetDownloadReady(uidPublic, Default)
	e.SetDownloadReady(uidPublic, Audio)
	tests := []struct {
		typ      DownloadType
		filename string
		status   int
		saved    string
	}{
		{Default, "MY_VIDEO.mp4", 200, "MY_VIDEO.mp4"},
		{Default, "MY_VIDEO", 200, "MY_VIDEO.mp4"},
		{Audio, "Talk.m4a", 200, "Talk.m4a"},
		{Default, strings.Repeat("a", 120) + ".mp4", 200, strings.Repeat("a", 120) + ".mp4"},
		{Default, "MY_VIDEO.m4a", 400, ""},
		{Audio, "Talk.mp4", 400, ""},
		{Default, "a.b", 400, ""},
		{Default, "a.b.mp4", 400, ""},
		{Default, ".mp4", 400, ""},
		{Default, "a.mp4.mp4", 400, ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.typ)+"/"+tt.filename, func(t *testing.T) {
			r := do(t, srv.Client(), http.MethodGet, srv.URL+deliveryPath(uidPublic, tt.typ)+"?filename="+tt.filename, nil, "")
			if r.status != tt.status {
				t.Fatalf("status %d, want %d", r.status, tt.status)
			}
			if want := `attachment; filename="` + tt.saved + `"`; tt.status == 200 && r.header.Get("Content-Disposition") != want {
				t.Errorf("Content-Disposition = %q, want %q", r.header.Get("Content-Disposition"), want)
			}
		})
	}
}

// The emulator carries its own copy of Stream's rules: it must not import the
// gateway's packages, or a signer bug would be mirrored instead of caught. It
// may use acked, which measures a socket and holds no rule of Stream's or of
// the gateway's.
func TestIndependentOfStreamPackage(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if strings.HasPrefix(imp, "github.com/streamgate/streamgate/") && imp != "github.com/streamgate/streamgate/acked" {
			t.Errorf("streamtest imports %s; it must carry its own rules", imp)
		}
	}
}

// Every API error code the emulator sends has a row in the package
// documentation's table, marked either with its source or as invented.
func TestDocTableCoversCodes(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "api.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Values) != 1 || !strings.HasPrefix(vs.Names[0].Name, "code") {
			return true
		}
		if lit, ok := vs.Values[0].(*ast.BasicLit); ok {
			codes[vs.Names[0].Name] = lit.Value
		}
		return true
	})
	if len(codes) < 8 {
		t.Fatalf("found %d code constants in api.go, want them all", len(codes))
	}
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	for name, code := range codes {
		row := regexp.MustCompile(`(?m)^//\s+` + code + `\s+\d{3}\s.*$`).Find(doc)
		if row == nil {
			t.Errorf("%s (%s): no row in doc.go's table", name, code)
			continue
		}
		if !strings.Contains(string(row), "documented:") && !strings.Contains(string(row), "invented") {
			t.Errorf("%s: row %q says neither where it is documented nor that it is invented", name, row)
		}
	}
}
