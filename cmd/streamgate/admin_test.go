package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/streamgate/metrics"
)

const testAdminToken = "an-admin-token-of-at-least-32-bytes!"

// startAdmin serves a new admin server on a loopback port and shuts it down
// when the test ends.
func startAdmin(t *testing.T, m *metrics.Metrics, token string) (*adminServer, string) {
	t.Helper()
	a := newAdmin(m, adminOptions{Token: []byte(token)})
	a.Handle("POST /v1/admin/echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok")
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve after Shutdown: %v", err)
		}
	})
	return a, "http://" + ln.Addr().String()
}

type adminAnswer struct {
	status  int
	header  http.Header
	body    string
	problem map[string]any
}

func adminDo(t *testing.T, method, url, auth string) adminAnswer {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := adminAnswer{status: res.StatusCode, header: res.Header, body: string(b)}
	if res.Header.Get("Content-Type") == "application/problem+json" {
		if err := json.Unmarshal(b, &a.problem); err != nil {
			t.Fatalf("problem body %q: %v", b, err)
		}
	}
	return a
}

func TestAdminMetrics(t *testing.T) {
	m := metrics.New("test")
	m.Refused(metrics.RefusedQuota)
	_, base := startAdmin(t, m, testAdminToken)
	got := adminDo(t, http.MethodGet, base+"/metrics", "")
	if got.status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", got.status, got.body)
	}
	if want := `streamgate_refusals_total{reason="quota"} 1`; !strings.Contains(got.body, want) {
		t.Errorf("/metrics lacks %q", want)
	}
}

func TestAdminToken(t *testing.T) {
	_, base := startAdmin(t, metrics.New("test"), testAdminToken)
	tests := []struct {
		name        string
		auth        string
		wantStatus  int
		wantType    string
		wantWWWAuth string
	}{
		{"right token", "Bearer " + testAdminToken, http.StatusOK, "", ""},
		{"scheme in lower case", "bearer " + testAdminToken, http.StatusOK, "", ""},
		{"no header", "", http.StatusUnauthorized, "urn:streamgate:problem:unauthorized", `Bearer realm="streamgate-admin"`},
		{"wrong token", "Bearer " + testAdminToken + "x", http.StatusUnauthorized, "urn:streamgate:problem:unauthorized", `error="invalid_token"`},
		{"prefix of the token", "Bearer " + testAdminToken[:10], http.StatusUnauthorized, "urn:streamgate:problem:unauthorized", `error="invalid_token"`},
		{"basic scheme", "Basic " + testAdminToken, http.StatusUnauthorized, "urn:streamgate:problem:unauthorized", `Bearer realm=`},
		{"empty bearer", "Bearer ", http.StatusUnauthorized, "urn:streamgate:problem:unauthorized", `Bearer realm=`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := adminDo(t, http.MethodPost, base+"/v1/admin/echo", tt.auth)
			if got.status != tt.wantStatus {
				t.Fatalf("status %d, want %d (%s)", got.status, tt.wantStatus, got.body)
			}
			if tt.wantType == "" {
				if got.body != "ok" {
					t.Errorf("body %q, want the route's", got.body)
				}
				return
			}
			if got.problem["type"] != tt.wantType || got.problem["status"] != float64(tt.wantStatus) {
				t.Errorf("problem %v, want type %s status %d", got.problem, tt.wantType, tt.wantStatus)
			}
			if strings.Contains(got.body, testAdminToken[:10]) {
				t.Errorf("the answer repeats the token: %s", got.body)
			}
			if wa := got.header.Get("WWW-Authenticate"); !strings.Contains(wa, tt.wantWWWAuth) {
				t.Errorf("WWW-Authenticate %q, want it to hold %q", wa, tt.wantWWWAuth)
			}
		})
	}
}

// TestAdminDisabled: without admin.token the protected routes refuse everyone,
// while /metrics still answers.
func TestAdminDisabled(t *testing.T) {
	_, base := startAdmin(t, metrics.New("test"), "")
	for _, auth := range []string{"", "Bearer ", "Bearer anything"} {
		got := adminDo(t, http.MethodPost, base+"/v1/admin/echo", auth)
		if got.status != http.StatusForbidden || got.problem["type"] != "urn:streamgate:problem:admin_disabled" {
			t.Errorf("auth %q: %d %s, want 403 admin_disabled", auth, got.status, got.body)
		}
		if d, _ := got.problem["detail"].(string); !strings.Contains(d, "admin.token") {
			t.Errorf("detail %q does not name admin.token", d)
		}
	}
	if got := adminDo(t, http.MethodGet, base+"/metrics", ""); got.status != http.StatusOK {
		t.Errorf("GET /metrics without a token configured: %d", got.status)
	}
}

func TestAdminUnknownRoute(t *testing.T) {
	_, base := startAdmin(t, metrics.New("test"), testAdminToken)
	got := adminDo(t, http.MethodGet, base+"/v1/me/usage", "Bearer "+testAdminToken)
	if got.status != http.StatusNotFound || got.problem["type"] != "urn:streamgate:problem:not_found" {
		t.Errorf("unknown route: %d %s, want a 404 problem", got.status, got.body)
	}
}

// TestAdminShutdown: after Shutdown the port no longer answers and Serve has
// returned nil.
func TestAdminShutdown(t *testing.T) {
	a := newAdmin(metrics.New("test"), adminOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- a.Serve(ln) }()
	if got := adminDo(t, http.MethodGet, "http://"+addr+"/metrics", ""); got.status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", got.status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve returned %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("Serve did not return after Shutdown")
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		_ = c.Close()
		t.Error("the admin port still accepts connections after Shutdown")
	} else if !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "refused") {
		t.Logf("dial after Shutdown: %v", err)
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name, header, want string
		ok                 bool
	}{
		{"bearer", "Bearer abc", "abc", true},
		{"case-insensitive scheme", "BEARER abc", "abc", true},
		{"spaces trimmed", "Bearer  abc ", "abc", true},
		{"empty", "", "", false},
		{"no token", "Bearer", "", false},
		{"blank token", "Bearer   ", "", false},
		{"other scheme", "Token abc", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := bearerToken(tt.header)
			if got != tt.want || ok != tt.ok {
				t.Errorf("bearerToken(%q) = %q, %v; want %q, %v", tt.header, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestAdminProfiles: Go's profiles answer with the admin token and only with it.
func TestAdminProfiles(t *testing.T) {
	_, base := startAdmin(t, metrics.New("test"), testAdminToken)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/profile?seconds=1"} {
		if got := adminDo(t, http.MethodGet, base+path, ""); got.status != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d, want 401", path, got.status)
		}
	}
	if got := adminDo(t, http.MethodGet, base+"/debug/pprof/goroutine?debug=1", "Bearer "+testAdminToken); got.status != http.StatusOK ||
		!strings.Contains(got.body, "goroutine profile:") {
		t.Errorf("goroutine profile with the token: %d %.200s", got.status, got.body)
	}
	if got := adminDo(t, http.MethodGet, base+"/debug/pprof/profile?seconds=1", "Bearer "+testAdminToken); got.status != http.StatusOK ||
		len(got.body) == 0 {
		t.Errorf("CPU profile with the token: %d, %d bytes", got.status, len(got.body))
	}
}
