package main

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/streamgate/streamgate/stream"
)

// TestCountryPolicy locates clients by their source address (and, behind a
// trusted proxy only, by X-Forwarded-For) and applies policy.countries and
// policy.unknown_country before anything is reserved or forwarded.
func TestCountryPolicy(t *testing.T) {
	se := newStreamEnv(t)
	uid := se.addVideo(testDuration, testSize)
	gw := startGateway(t, se, gwOptions{
		Block:          []string{"US"},
		UnknownCountry: "deny",
		TrustedProxies: []string{ipProxy + "/32"},
	})
	token := portalToken(t, "frank", "basic")

	cases := []struct {
		name       string
		from       string
		forwarded  string
		wantStatus int
		wantReason string
	}{
		{name: "GB client", from: ipGB, wantStatus: http.StatusOK},
		{name: "US client is blocked", from: ipUS, wantStatus: http.StatusForbidden, wantReason: "country_blocked"},
		{name: "address not in the database, unknown denied", from: ipUnknown, wantStatus: http.StatusForbidden, wantReason: "country_unknown"},
		{name: "US client spoofing a GB X-Forwarded-For", from: ipUS, forwarded: ipGB, wantStatus: http.StatusForbidden, wantReason: "country_blocked"},
		{name: "unknown client spoofing a GB X-Forwarded-For", from: ipUnknown, forwarded: ipGB, wantStatus: http.StatusForbidden, wantReason: "country_unknown"},
		{name: "trusted proxy forwarding a GB client", from: ipProxy, forwarded: ipGB, wantStatus: http.StatusOK},
		{name: "trusted proxy forwarding a US client", from: ipProxy, forwarded: ipUS, wantStatus: http.StatusForbidden, wantReason: "country_blocked"},
		{name: "trusted proxy forwarding a forged chain", from: ipProxy, forwarded: ipGB + ", " + ipUS, wantStatus: http.StatusForbidden, wantReason: "country_blocked"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.forwarded != "" {
				hdr = []string{"X-Forwarded-For", tc.forwarded}
			}
			c := clientFrom(t, tc.from)
			r := do(t, c, http.MethodGet, gw.downloadURL(uid, stream.Default), token, nil, hdr...)
			if r.status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", r.status, tc.wantStatus, r.body)
			}
			if tc.wantStatus == http.StatusOK {
				if len(r.body) != testSize {
					t.Fatalf("body of %d bytes, want %d", len(r.body), testSize)
				}
				checkContent(t, r.body, uid, stream.Default, 0)
				return
			}
			if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q, want application/problem+json", ct)
			}
			body := r.json(t)
			if body["reason"] != tc.wantReason || body["type"] != "urn:streamgate:problem:country_denied" || body["status"] != 403.0 {
				t.Errorf("problem body = %v, want reason %q", body, tc.wantReason)
			}
			// The body names the reason, never the configured list.
			_, hasBlock := body["block"]
			_, hasAllow := body["allow"]
			if strings.Contains(string(r.body), `"US"`) || hasBlock || hasAllow {
				t.Errorf("problem body reveals the country list: %s", r.body)
			}
		})
	}

	// Nothing was billed for the refusals: the file went twice to GB clients,
	// one download of the user's, billed once.
	u := settledUsage(t, clientFrom(t, ipGB), gw.url, token)
	if !near(u.MinutesUsed, testMinutes, 1e-5) {
		t.Errorf("minutes_used = %.6f, want %.6f", u.MinutesUsed, testMinutes)
	}
	lines := logLines(t, gw.logs.String(), "billable download")
	if len(lines) != 2 {
		t.Fatalf("%d billable download lines, want 2", len(lines))
	}
	for _, l := range lines {
		if l["country"] != "GB" {
			t.Errorf("billable download line has country %v, want GB: %v", l["country"], l)
		}
	}
}

// TestDirectLinkCountryRules: in direct link mode the user gets a Stream URL whose
// token pins the user's own country, and Stream (the emulator, judging the
// address that connects to it) enforces it.
func TestDirectLinkCountryRules(t *testing.T) {
	se := newStreamEnv(t)
	uid := se.addVideo(testDuration, testSize)
	gw := startGateway(t, se, gwOptions{LinkMode: "direct"})
	token := portalToken(t, "gina", "basic")
	gb, us := clientFrom(t, ipGB), clientFrom(t, ipUS)

	r := do(t, gb, http.MethodPost, gw.url+"/v1/videos/"+uid+"/links", token,
		strings.NewReader(`{"type":"default","filename":"talk"}`), "Content-Type", "application/json")
	if r.status != http.StatusCreated {
		t.Fatalf("create link: status %d: %s", r.status, r.body)
	}
	var link struct {
		URL  string `json:"url"`
		Mode string `json:"mode"`
	}
	if err := json.Unmarshal(r.body, &link); err != nil {
		t.Fatal(err)
	}
	if link.Mode != "direct" || !strings.HasPrefix(link.URL, se.url+"/") {
		t.Fatalf("link = %+v, want a direct link to the delivery host %s", link, se.url)
	}

	u, err := url.Parse(link.URL)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 3 || parts[1] != "downloads" || parts[2] != "default.mp4" || u.Query().Get("filename") != "talk" {
		t.Fatalf("link %s: want /TOKEN/downloads/default.mp4?filename=talk", link.URL)
	}
	jwtParts := strings.Split(parts[0], ".")
	if len(jwtParts) != 3 {
		t.Fatalf("link token %q is not a JWT", parts[0])
	}
	payload, err := base64.RawURLEncoding.DecodeString(jwtParts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Sub          string              `json:"sub"`
		Kid          string              `json:"kid"`
		Downloadable bool                `json:"downloadable"`
		AccessRules  []stream.AccessRule `json:"accessRules"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatalf("token payload %s: %v", payload, err)
	}
	wantRules := []stream.AccessRule{
		{Type: "ip.geoip.country", Action: "allow", Country: []string{"GB"}},
		{Type: "any", Action: "block"},
	}
	if claims.Sub != uid || claims.Kid != se.keyID || !claims.Downloadable || !reflect.DeepEqual(claims.AccessRules, wantRules) {
		t.Errorf("token claims = %+v (payload %s), want sub %s, kid %s, downloadable, rules %+v", claims, payload, uid, se.keyID, wantRules)
	}

	got := do(t, gb, http.MethodGet, link.URL, "", nil)
	if got.status != http.StatusOK {
		t.Fatalf("GB client fetching the link: status %d: %s", got.status, got.body)
	}
	if cd := got.header.Get("Content-Disposition"); cd != `attachment; filename="talk.mp4"` {
		t.Errorf("Content-Disposition %q, want talk.mp4", cd)
	}
	if len(got.body) != testSize {
		t.Fatalf("GB client got %d bytes, want %d", len(got.body), testSize)
	}
	checkContent(t, got.body, uid, stream.Default, 0)

	if got := do(t, us, http.MethodGet, link.URL, "", nil); got.status != http.StatusForbidden {
		t.Errorf("US client fetching the GB link: status %d, want 403: %s", got.status, got.body)
	}

	// The link was billed in full when it was handed out.
	if u := settledUsage(t, gb, gw.url, token); !near(u.MinutesUsed, testMinutes, 1e-6) {
		t.Errorf("minutes_used = %.6f, want %.6f for one direct link", u.MinutesUsed, testMinutes)
	}
}
