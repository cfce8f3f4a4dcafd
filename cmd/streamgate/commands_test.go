package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/streamgate/config"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
	"github.com/streamgate/streamgate/usage"
)

// TestConfigCheck runs `config check` on the example configuration, with its
// secrets in the environment, and on broken files, which must list every problem
// by its key.
func TestConfigCheck(t *testing.T) {
	env := map[string]string{
		"STREAM_API_TOKEN":     "an-api-token",
		"STREAM_SIGNING_KEY":   string(signingKeyPEM()),
		"PORTAL_JWT_SECRET":    "a-portal-secret-of-at-least-32-bytes",
		"STREAMGATE_GRANT_KEY": strings.Repeat("g", 32),
	}
	getenv := func(k string) string { return env[k] }

	t.Run("example with env secrets", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"config", "check", "--config", "../../config.example.yaml"}, getenv, &stdout, &stderr)
		if err != nil {
			t.Fatalf("config check: %v", err)
		}
		if !strings.HasPrefix(stdout.String(), "config ok") {
			t.Errorf("stdout = %q, want it to say config ok", stdout.String())
		}
	})

	t.Run("example without its secrets", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"config", "check", "--config", "../../config.example.yaml"}, noEnv, &stdout, &stderr)
		if err == nil {
			t.Fatalf("config check passed without the secrets: %s", stdout.String())
		}
		for _, key := range []string{"stream.api_token", "stream.signing_key", "auth.hmac_secrets[0].secret", "links.grant_keys[0].secret"} {
			if !strings.Contains(err.Error(), key) {
				t.Errorf("error does not name %s:\n%v", key, err)
			}
		}
	})

	cases := []struct {
		name string
		yaml string
		keys []string
	}{
		{
			name: "invalid values",
			yaml: `listen: "nowhere"
public_url: "ftp://example.com"
stream:
  api_token: {value: t}
  delivery_url: "https://customer-x.cloudflarestream.com"
  signing_key_id: abc
  signing_key: {value: "not a key"}
  token_ttl: 48h
auth:
  hmac_secrets: [{secret: {value: s}}]
links:
  grant_keys: [{id: "bad id!", secret: {value: short}}]
policy:
  unknown_country: maybe
  countries: {block: [usa]}
plans:
  free: {minutes_per_month: 10, max_concurrent: -1}
metering:
  mode: sometimes
ledger:
  driver: oracle
log:
  level: loud
`,
			keys: []string{
				"listen", "public_url", "stream.account_id", "stream.signing_key", "stream.token_ttl",
				"links.grant_keys[0].id", "links.grant_keys[0].secret",
				"policy.unknown_country", "policy.countries.block[0]", "policy.geoip_db",
				"plans.free.max_concurrent", "metering.mode", "ledger.driver", "log.level",
			},
		},
		{
			name: "unknown keys",
			yaml: `listen: "127.0.0.1:0"
lisen: "127.0.0.1:0"
stream:
  acount_id: x
plans:
  free: {minutes: 10}
`,
			keys: []string{"lisen", "stream.acount_id", "plans.free.minutes"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "broken.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"config", "check", "--config", path}, noEnv, &stdout, &stderr)
			if err == nil {
				t.Fatalf("config check passed: %s", stdout.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", stdout.String())
			}
			msg := err.Error()
			for _, key := range tc.keys {
				if !strings.Contains(msg, "\n  "+key+": ") && !strings.HasPrefix(msg, key+": ") && !strings.Contains(msg, ": "+key+": ") {
					t.Errorf("problem list does not name %s:\n%s", key, msg)
				}
			}
			if len(tc.keys) > 1 && !strings.Contains(msg, strconv.Itoa(len(tc.keys))+" problems") &&
				strings.Count(msg, "\n  ") < len(tc.keys) {
				t.Errorf("want at least %d problems reported at once:\n%s", len(tc.keys), msg)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		err := run(context.Background(), []string{"config", "check", "--config", filepath.Join(t.TempDir(), "nope.yaml")}, noEnv, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
			t.Errorf("err = %v, want one naming the missing file", err)
		}
	})
}

// TestUsageReport reads the ledger after downloads by two users: one row per user
// and a total in CSV and in JSON, with the same figures /v1/me/usage shows. Each
// user downloads the file twice, one download billed once, while Stream sent
// every copy.
func TestUsageReport(t *testing.T) {
	se := newStreamEnv(t)
	uid := se.addVideo(testDuration, testSize)
	gw := startGateway(t, se, gwOptions{})
	c := clientFrom(t, ipGB)
	hana, ivan := portalToken(t, "hana", "basic"), portalToken(t, "ivan", "basic")
	for _, tok := range []string{hana, hana, ivan} {
		if r := do(t, c, http.MethodGet, gw.downloadURL(uid, stream.Default), tok, nil); r.status != http.StatusOK {
			t.Fatalf("download: status %d: %s", r.status, r.body)
		}
	}
	if r := do(t, c, http.MethodGet, gw.downloadURL(uid, stream.Default), ivan, nil, "Range", "bytes=0-65535"); r.status != http.StatusPartialContent {
		t.Fatalf("ranged download: status %d: %s", r.status, r.body)
	}
	uh, ui := settledUsage(t, c, gw.url, hana), settledUsage(t, c, gw.url, ivan)
	period := uh.Period

	want := map[string]struct {
		downloads, deliveries, bytes int64
		minutes, stream              float64
	}{
		"hana": {1, 2, 2 * testSize, uh.MinutesUsed, 2 * testMinutes},
		"ivan": {1, 2, testSize + 65536, ui.MinutesUsed, 1.25 * testMinutes},
	}
	if !near(uh.MinutesUsed, testMinutes, 1e-5) || !near(ui.MinutesUsed, testMinutes, 1e-5) {
		t.Errorf("usage hana %.6f, ivan %.6f; want %.6f each", uh.MinutesUsed, ui.MinutesUsed, testMinutes)
	}
	if !near(uh.StreamMinutes, 2*testMinutes, 1e-5) || !near(ui.StreamMinutes, 1.25*testMinutes, 1e-5) {
		t.Errorf("Stream minutes hana %.6f, ivan %.6f", uh.StreamMinutes, ui.StreamMinutes)
	}

	t.Run("json", func(t *testing.T) {
		rep := reportRows(t, gw.cfgPath, period)
		if rep.Period != period || len(rep.Users) != 2 {
			t.Fatalf("report = %+v, want two users in %s", rep, period)
		}
		for _, row := range rep.Users {
			w, ok := want[row.User]
			if !ok {
				t.Errorf("unexpected user %q", row.User)
				continue
			}
			if row.Downloads != w.downloads || row.Deliveries != w.deliveries || row.Bytes != w.bytes ||
				!near(row.Minutes, w.minutes, 1e-6) || !near(row.StreamMinutes, w.stream, 1e-6) || row.StreamBytes != w.bytes {
				t.Errorf("row %+v, want %+v", row, w)
			}
		}
	})

	t.Run("csv", func(t *testing.T) {
		recs, err := csv.NewReader(strings.NewReader(report(t, gw.cfgPath, period, "csv"))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 4 || strings.Join(recs[0], ",") != "period,user,downloads,deliveries,minutes,stream_minutes,bytes,stream_bytes" {
			t.Fatalf("csv = %q, want a header, two rows and a total", recs)
		}
		for _, rec := range recs[1:3] {
			w := want[rec[1]]
			minutes, _ := strconv.ParseFloat(rec[4], 64)
			stream, _ := strconv.ParseFloat(rec[5], 64)
			if rec[0] != period || rec[2] != strconv.FormatInt(w.downloads, 10) || rec[3] != strconv.FormatInt(w.deliveries, 10) ||
				rec[6] != strconv.FormatInt(w.bytes, 10) || !near(minutes, w.minutes, 1e-6) || !near(stream, w.stream, 1e-6) {
				t.Errorf("csv row %q, want %+v", rec, w)
			}
		}
		total := recs[3]
		minutes, _ := strconv.ParseFloat(total[4], 64)
		stream, _ := strconv.ParseFloat(total[5], 64)
		if total[1] != "" || total[2] != "2" || !near(minutes, 2*testMinutes, 1e-6) || !near(stream, 3.25*testMinutes, 1e-6) {
			t.Errorf("csv total %q", total)
		}
	})

	t.Run("another month is empty", func(t *testing.T) {
		if out := report(t, gw.cfgPath, "1999-01", "json"); !strings.HasPrefix(strings.TrimSpace(out), `{"period":"1999-01","total":{"user":"","downloads":0`) ||
			!strings.Contains(out, `"users":[]`) {
			t.Errorf("report of an empty month = %s", out)
		}
	})

	for _, args := range [][]string{
		{"--period", "2024-13", "--format", "csv"},
		{"--period", "2024-1", "--format", "csv"},
		{"--period", period, "--format", "xml"},
	} {
		err := run(context.Background(), append([]string{"usage", "report", "--config", gw.cfgPath}, args...), noEnv, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil {
			t.Errorf("usage report %v: no error", args)
		}
	}
}

// TestServeCommand runs `serve --config FILE` in-process on a port of the test's
// choosing and stops it by cancelling the context, as a signal would.
func TestServeCommand(t *testing.T) {
	se := newStreamEnv(t)
	uid := se.addVideo(testDuration, testSize)
	addr := freePort(t)
	path := se.writeConfig(t, t.TempDir(), addr, gwOptions{})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", path}, noEnv, &bytes.Buffer{}, stderr)
	}()
	c := clientFrom(t, ipGB)
	base := "http://" + addr
	waitHealthy(t, c, base, done)
	if r := do(t, c, http.MethodGet, base+"/readyz", "", nil); r.status != http.StatusOK {
		t.Errorf("/readyz: status %d: %s", r.status, r.body)
	}
	r := do(t, c, http.MethodGet, base+"/v1/videos/"+uid+"/downloads/default.mp4", portalToken(t, "jo", "basic"), nil)
	if r.status != http.StatusOK || len(r.body) != testSize {
		t.Fatalf("download: status %d, %d bytes", r.status, len(r.body))
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v, want nil after a clean shutdown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(stderr.String(), `"msg":"streamgate listening"`) || !strings.Contains(stderr.String(), `"msg":"billable download"`) {
		t.Errorf("log lacks the listening or billable download line:\n%s", stderr.String())
	}

	t.Run("no config", func(t *testing.T) {
		if err := run(context.Background(), []string{"serve"}, noEnv, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Error("serve without --config: no error")
		}
	})
}

// freePort returns a loopback address nothing listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", ipLocal+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// waitHealthy polls /healthz until it answers 200; done reports a server that
// stopped before it did.
func waitHealthy(t *testing.T, c *http.Client, base string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("the server stopped before it was healthy: %v", err)
		default:
		}
		resp, err := c.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/healthz did not answer 200 in time: %v", base, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestShutdownSettlesCutDownloads stops a gateway while a slow download is
// flowing: after the grace period the download is cut off, and by the time Serve
// has returned and the ledger is closed, it is settled for what it delivered, with
// nothing left reserved or open for the next start to recover.
func TestShutdownSettlesCutDownloads(t *testing.T) {
	se := newStreamEnv(t)
	const size = 1 << 20
	uid := se.addVideo(testDuration, size)
	se.emu.SetFault(uid, streamtest.Fault{BytesPerSecond: 128 << 10})
	ln, err := net.Listen("tcp", ipLocal+":0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := se.writeConfig(t, dir, ln.Addr().String(), gwOptions{ShutdownGrace: 300 * time.Millisecond})
	cfg, err := config.Load(path, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log, _ := newLogger("info", "json", logs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, err := newGateway(ctx, cfg, log, gatewayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()

	c := clientFrom(t, ipGB)
	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/v1/videos/"+uid+"/downloads/default.mp4", nil)
	req.Header.Set("Authorization", "Bearer "+portalToken(t, "lou", "basic"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadFull(resp.Body, make([]byte, 32<<10)); err != nil {
		t.Fatal(err)
	}
	cancel()
	go func() { _, _ = io.Copy(io.Discard, resp.Body) }()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the grace period")
	}
	g.Close() // as serve does when Serve returns

	l, err := usage.OpenSQLite(context.Background(), cfg.Ledger.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u, err := l.Usage(context.Background(), "lou", usage.Period(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	lines := logLines(t, logs.String(), "billable download")
	if u.MinutesReserved != 0 || u.MinutesUsed <= 0 || u.MinutesUsed >= testMinutes || len(lines) != 1 {
		t.Errorf("after shutdown: usage %+v and %d billable download lines; want the cut download settled for part of %.0f minutes\n%s",
			u, len(lines), testMinutes, logs.String())
	}
	for _, l := range lines {
		if l["status"] != "shutdown" {
			t.Errorf("cut download settled with status %v, want shutdown", l["status"])
		}
	}
}

// TestServeStartupErrors: a failure while wiring the gateway is reported with its
// cause, after what was opened before it is closed, and never panics.
func TestServeStartupErrors(t *testing.T) {
	se := newStreamEnv(t)
	dir := t.TempDir()
	path := se.writeConfig(t, dir, freePort(t), gwOptions{})
	// A ledger path under a regular file cannot be opened.
	blocker := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		if k == "STREAMGATE_LEDGER_PATH" {
			return filepath.Join(blocker, "ledger.db")
		}
		return ""
	}
	err := run(context.Background(), []string{"serve", "--config", path}, env, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "ledger") {
		t.Fatalf("serve with an unopenable ledger = %v, want a ledger error", err)
	}
}
