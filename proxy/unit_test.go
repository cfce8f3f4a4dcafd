package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/policy"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

// A JWT-shaped string, as Stream tokens and portal tokens are.
const sampleJWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImFiYyJ9.eyJzdWIiOiIwYTBhIn0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"

// A grant-shaped string: payload.kid.mac.
const sampleGrant = "eyJ1IjoiYWxpY2UiLCJ2IjoiMGEwYSJ9.g1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

func TestRedactPath(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"link", "/dl/" + sampleGrant + "/default.mp4", "/dl/[redacted]/default.mp4"},
		{"link without file", "/dl/" + sampleGrant, "/dl/[redacted]"},
		{"short link segment", "/dl/x/audio.m4a", "/dl/[redacted]/audio.m4a"},
		{"authenticated route", "/v1/videos/0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a/downloads/default.mp4", "/v1/videos/0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a/downloads/default.mp4"},
		{"token in a path", "/" + sampleJWT + "/downloads/default.mp4", "/[redacted]/downloads/default.mp4"},
		{"grant outside /dl/", "//dl/" + sampleGrant + "/default.mp4", "//dl/[redacted]/default.mp4"},
		{"grant after an empty segment", "/dl//" + sampleGrant + "/default.mp4", "/dl/[redacted]/[redacted]/default.mp4"},
		{"grant deeper", "/dl/x/" + sampleGrant, "/dl/[redacted]/[redacted]"},
		{"health", "/healthz", "/healthz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := redactPath(tt.in); got != tt.want {
				t.Errorf("redactPath(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactText(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"empty", "", ""},
		{"no dots", "connection refused", "connection refused"},
		{"address", "dial tcp 127.0.0.1:8080: connect: connection refused", "dial tcp 127.0.0.1:8080: connect: connection refused"},
		{"short dotted words", "file a.b.c and v1.2.3", "file a.b.c and v1.2.3"},
		{"two parts only", strings.Repeat("a", 40) + "." + strings.Repeat("b", 40), strings.Repeat("a", 40) + "." + strings.Repeat("b", 40)},
		{"url", `Get "https://customer-x.cloudflarestream.com/` + sampleJWT + `/downloads/default.mp4?filename=a": EOF`,
			`Get "https://customer-x.cloudflarestream.com/[redacted]/downloads/default.mp4?filename=a": EOF`},
		{"query", "token=" + sampleJWT + "&x=1", "token=[redacted]&x=1"},
		{"alone", sampleJWT, "[redacted]"},
		{"grant", "bad grant " + sampleGrant + " at end", "bad grant [redacted] at end"},
		{"two tokens", sampleJWT + " " + sampleJWT, "[redacted] [redacted]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := redactText(tt.in); got != tt.want {
				t.Errorf("redactText(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// billingRangeTests is the table of TestBillingRange and the seeds of its fuzz target.
var billingRangeTests = []struct {
	name   string
	header string
	want   billing.Range
	kept   bool // the Range header is still on the request
}{
	{"none", "", billing.Whole, false},
	{"open", "bytes=100-", billing.Range{First: 100, Last: -1}, true},
	{"from zero", "bytes=0-", billing.Range{First: 0, Last: -1}, true},
	{"closed", "bytes=10-19", billing.Range{First: 10, Last: 19}, true},
	{"one byte", "bytes=5-5", billing.Range{First: 5, Last: 5}, true},
	{"spaces", "bytes= 7-", billing.Range{First: 7, Last: -1}, true},
	{"suffix", "bytes=-500", billing.Range{First: -1, Last: -1, Suffix: 500}, true},
	{"suffix zero", "bytes=-0", billing.Whole, false},
	{"suffix garbage", "bytes=-x", billing.Whole, false},
	{"reversed", "bytes=20-10", billing.Whole, false},
	{"several", "bytes=0-1,5-6", billing.Whole, false},
	{"other unit", "items=0-1", billing.Whole, false},
	{"no dash", "bytes=12", billing.Whole, false},
	{"negative", "bytes=-5-", billing.Whole, false},
	{"letters", "bytes=a-b", billing.Whole, false},
	{"bad end", "bytes=1-z", billing.Whole, false},
	{"huge", "bytes=99999999999999999999-", billing.Whole, false},
}

func TestBillingRangeSeveralLines(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest("GET", "/", nil)
	r.Header["Range"] = []string{"bytes=500-", "bytes=0-"}
	r.Header.Set("If-Range", `"etag"`)
	if got := meterRange(r.Header); got != billing.Whole || r.Header.Get("Range") != "" || r.Header.Get("If-Range") != "" {
		t.Errorf("two Range lines: claimed %+v with Range %q kept; want the whole file, no Range", got, r.Header.Values("Range"))
	}
}

func TestUpstreamErrorLedger(t *testing.T) {
	t.Parallel()
	s := &Server{}
	r := httptest.NewRequest("GET", "/", nil)
	var pe *Error
	if !errors.As(s.upstreamError(r, ledgerError{context.DeadlineExceeded}), &pe) || pe.Status != http.StatusServiceUnavailable {
		t.Errorf("a ledger timeout while handling headers maps to %+v, want 503", pe)
	}
}

func TestBillingRange(t *testing.T) {
	t.Parallel()
	for _, tt := range billingRangeTests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			if tt.header != "" {
				r.Header.Set("Range", tt.header)
				r.Header.Set("If-Range", `"etag"`)
			}
			if got := meterRange(r.Header); got != tt.want {
				t.Errorf("billingRange(%q) = %+v, want %+v", tt.header, got, tt.want)
			}
			if kept := r.Header.Get("Range") != ""; kept != tt.kept {
				t.Errorf("Range kept = %v, want %v", kept, tt.kept)
			}
		})
	}
}

// FuzzBillingRange: whatever the header, the bytes the meter claims for it are
// the bytes a server answering the kept header sends.
func FuzzBillingRange(f *testing.F) {
	for _, tt := range billingRangeTests {
		f.Add(tt.header)
	}
	const size = 1000
	content := strings.Repeat("x", size)
	f.Fuzz(func(t *testing.T, h string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header["Range"] = []string{h}
		rg := meterRange(r.Header)
		claim := billing.ClaimFor(rg, size)
		w := httptest.NewRecorder()
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(content))
		switch w.Code {
		case http.StatusOK:
			if claim != (billing.Interval{Start: 0, End: size}) {
				t.Fatalf("range %q: served whole, claimed %v", h, claim)
			}
		case http.StatusPartialContent:
			var a, b, n int64
			if _, err := fmt.Sscanf(w.Header().Get("Content-Range"), "bytes %d-%d/%d", &a, &b, &n); err != nil {
				t.Fatalf("Content-Range %q: %v", w.Header().Get("Content-Range"), err)
			}
			if claim != (billing.Interval{Start: a, End: b + 1}) {
				t.Fatalf("range %q: served %d-%d, claimed %v", h, a, b, claim)
			}
		case http.StatusRequestedRangeNotSatisfiable:
			if claim.Len() > 0 && claim.Start < size {
				// Stream refuses and sends no file bytes; the claim is released
				// when the answer arrives, so an over-claim costs nothing.
				return
			}
		}
	})
}

func FuzzParseDownload(f *testing.F) {
	f.Add(uidPublic, "default.mp4", "name", true)
	f.Add(uidPrivate, "audio.m4a", "", false)
	f.Add(uidPublic, "default.mp4", "a.b", true)
	f.Add("ABC", "video.webm", "../x", true)
	f.Add(uidPublic, "audio.m4a", strings.Repeat("n", 121), true)
	f.Fuzz(func(t *testing.T, uid, file, filename string, withName bool) {
		q := url.Values{}
		if withName {
			q.Set("filename", filename)
		}
		dl, err := parseDownload(uid, file, q)
		if err != nil {
			pe, ok := err.(*Error)
			if !ok || pe.Status != http.StatusBadRequest {
				t.Fatalf("parseDownload error %v, want a 400 *Error", err)
			}
			return
		}
		if !stream.ValidUID(dl.video) || dl.video != uid {
			t.Fatalf("accepted video %q", uid)
		}
		if typ, ok := stream.TypeFromFile(file); !ok || typ != dl.typ {
			t.Fatalf("accepted file %q as %q", file, dl.typ)
		}
		if withName != (dl.filename != "") || withName && (!stream.ValidFilename(dl.filename) || dl.filename != filename) {
			t.Fatalf("accepted filename %q (given %v) as %q", filename, withName, dl.filename)
		}
		if strings.ContainsAny(dl.filename, "./\\%") {
			t.Fatalf("filename %q would reach Stream", dl.filename)
		}
	})
}

func TestParseDownload(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, uid, file string
		q               url.Values
		wantErr         string
	}{
		{"plain", uidPublic, "default.mp4", nil, ""},
		{"audio with name", uidPublic, "audio.m4a", url.Values{"filename": {"My_song-1"}}, ""},
		{"max length", uidPublic, "default.mp4", url.Values{"filename": {strings.Repeat("a", stream.MaxFilenameLen)}}, ""},
		{"too long", uidPublic, "default.mp4", url.Values{"filename": {strings.Repeat("a", stream.MaxFilenameLen+1)}}, "bad_filename"},
		{"dot", uidPublic, "default.mp4", url.Values{"filename": {"a.b"}}, "bad_filename"},
		{"traversal", uidPublic, "default.mp4", url.Values{"filename": {"../x"}}, "bad_filename"},
		{"empty", uidPublic, "default.mp4", url.Values{"filename": {""}}, "bad_filename"},
		{"two", uidPublic, "default.mp4", url.Values{"filename": {"a", "b"}}, "bad_filename"},
		{"space", uidPublic, "default.mp4", url.Values{"filename": {"a b"}}, "bad_filename"},
		{"uppercase uid", strings.ToUpper(uidPublic), "default.mp4", nil, "bad_video"},
		{"short uid", "0a0a", "default.mp4", nil, "bad_video"},
		{"hls", uidPublic, "video.m3u8", nil, "bad_type"},
		{"mp4 named audio", uidPublic, "audio.mp4", nil, "bad_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseDownload(tt.uid, tt.file, tt.q)
			got := ""
			if err != nil {
				got = err.(*Error).Type
			}
			if got != tt.wantErr {
				t.Errorf("parseDownload error type = %q, want %q (%v)", got, tt.wantErr, err)
			}
		})
	}
}

func TestDirectRules(t *testing.T) {
	t.Parallel()
	gb := netip.MustParseAddr("127.0.0.2")
	mapped := netip.MustParseAddr("::ffff:127.0.0.2")
	v6 := netip.MustParseAddr("2001:db8::1")
	country := func(cc string) []stream.AccessRule {
		return []stream.AccessRule{
			{Type: stream.RuleCountry, Action: stream.ActionAllow, Country: []string{cc}},
			{Type: stream.RuleAny, Action: stream.ActionBlock},
		}
	}
	addr := func(ip string) []stream.AccessRule {
		return []stream.AccessRule{
			{Type: stream.RuleIPSrc, Action: stream.ActionAllow, IP: []string{ip}},
			{Type: stream.RuleAny, Action: stream.ActionBlock},
		}
	}
	tests := []struct {
		name    string
		country string
		ip      netip.Addr
		bind    bool
		plan    policy.CountryRules
		want    []stream.AccessRule
	}{
		{"country", "GB", gb, false, policy.CountryRules{Block: []string{"FR"}}, country("GB")},
		{"country without address", "DE", netip.Addr{}, false, policy.CountryRules{}, country("DE")},
		{"bound address wins over country", "GB", gb, true, policy.CountryRules{}, addr("127.0.0.2")},
		{"bound mapped address", "GB", mapped, true, policy.CountryRules{}, addr("127.0.0.2")},
		{"bound IPv6", "", v6, true, policy.CountryRules{}, addr("2001:db8::1")},
		{"bound, address unknown", "US", netip.Addr{}, true, policy.CountryRules{}, country("US")},
		{"nothing known", "", netip.Addr{}, true, policy.CountryRules{}, nil},
		{"country unknown, not bound", "", gb, false, policy.CountryRules{}, nil},
		{"country unknown: the plan's blocks restated", "", gb, false, policy.CountryRules{Block: []string{"FR", "US"}},
			[]stream.AccessRule{{Type: stream.RuleCountry, Action: stream.ActionBlock, Country: []string{"FR", "US"}}}},
		{"country unknown: the plan's allow list restated", "", gb, false, policy.CountryRules{Allow: []string{"GB", "IE", "FR"}, Block: []string{"FR"}},
			[]stream.AccessRule{{Type: stream.RuleCountry, Action: stream.ActionAllow, Country: []string{"GB", "IE"}}, {Type: stream.RuleAny, Action: stream.ActionBlock}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DirectRules(tt.country, tt.ip, tt.bind, tt.plan)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DirectRules(%q, %v, %v, %+v) = %+v, want %+v", tt.country, tt.ip, tt.bind, tt.plan, got, tt.want)
			}
			for i, r := range got {
				if err := r.Validate(); err != nil {
					t.Errorf("rule %d: %v", i, err)
				}
			}
		})
	}
}

func TestNewRefusesMissingComponents(t *testing.T) {
	t.Parallel()
	_, err := New(Config{DeliveryURL: "https://delivery.example", PublicURL: "https://gw.example", DefaultPlan: "free"}, Deps{})
	if err == nil {
		t.Fatal("New accepted no components")
	}
	for _, want := range []string{"authenticator", "grant issuer", "token signer", "stream API", "meter"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
}

func TestPlanLookup(t *testing.T) {
	t.Parallel()
	s := &Server{cfg: Config{DefaultPlan: "free", Plans: map[string]Plan{
		"free": {MinutesPerMonth: 600},
		"pro":  {MinutesPerMonth: 6000},
	}}}
	if name, p := s.plan("nope"); name != "free" || p.MinutesPerMonth != 600 {
		t.Errorf("plan(nope) = %q %+v, want the default plan free", name, p)
	}
	if name, _ := s.plan(""); name != "free" {
		t.Errorf("plan(\"\") = %q, want the default plan free", name)
	}
	if name, _ := s.plan("pro"); name != "pro" {
		t.Errorf("plan(pro) = %q", name)
	}
}

// fakeAPI answers every video as ready, counting calls.
type fakeAPI struct{ calls atomic.Int64 }

func (a *fakeAPI) Video(_ context.Context, uid string) (stream.Video, error) {
	a.calls.Add(1)
	return stream.Video{UID: uid, Duration: 60, ReadyToStream: true}, nil
}

func (a *fakeAPI) Downloads(context.Context, string) (stream.Downloads, error) {
	return stream.Downloads{stream.Default: {Type: stream.Default, Status: stream.DownloadReady, PercentComplete: 100}}, nil
}

func (a *fakeAPI) Ping(context.Context) error { return nil }

func TestVideoCacheBounded(t *testing.T) {
	t.Parallel()
	api := &fakeAPI{}
	clock := streamtest.NewClock(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	c := newVideoCache(api, time.Hour, clock.Now)
	for i := range maxCachedVideos + 500 {
		if _, err := c.get(context.Background(), fmt.Sprintf("%032x", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.entries); n > maxCachedVideos {
		t.Fatalf("%d cached videos, want at most %d", n, maxCachedVideos)
	}
	// A fresh entry is served from the cache.
	before := api.calls.Load()
	uid := fmt.Sprintf("%032x", maxCachedVideos+499)
	if _, err := c.get(context.Background(), uid); err != nil || api.calls.Load() != before {
		t.Fatalf("a fresh entry cost an API call (%v)", err)
	}
}

func TestAnswerBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		length int64
		cr     string
		size   int64
		body   billing.Interval
	}{
		{200, 1000, "", 1000, billing.Interval{Start: 0, End: 1000}},
		{200, -1, "", 0, billing.Interval{Start: 0, End: billing.Unknown}},
		{206, 10, "bytes 10-19/1000", 1000, billing.Interval{Start: 10, End: 20}},
		{206, 10, "bytes 10-19/*", 0, billing.Interval{Start: 10, End: 20}},
		{206, 10, "bytes 19-10/1000", 0, billing.Interval{Start: 0, End: billing.Unknown}},
		{206, 10, "items 1-2/3", 0, billing.Interval{Start: 0, End: billing.Unknown}},
		{416, 0, "bytes */1000", 0, billing.Interval{}},
		{304, 0, "", 0, billing.Interval{}},
	}
	for _, tt := range tests {
		resp := &http.Response{StatusCode: tt.status, ContentLength: tt.length, Header: http.Header{}}
		if tt.cr != "" {
			resp.Header.Set("Content-Range", tt.cr)
		}
		size, body := answerBytes(resp)
		if size != tt.size || body != tt.body {
			t.Errorf("%d %q: size %d, body %v; want %d, %v", tt.status, tt.cr, size, body, tt.size, tt.body)
		}
	}
}
