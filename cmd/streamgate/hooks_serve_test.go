package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

// TestServeEnablesDownloadsOnWebhook configures a gateway the way serve does,
// with a webhook secret and downloads.auto_enable: the emulator's signed
// video-ready webhook reaches POST /hooks/stream and both download types are
// enabled through the API. A webhook signed with another secret enables
// nothing.
func TestServeEnablesDownloadsOnWebhook(t *testing.T) {
	t.Parallel()
	const secret = "a-webhook-secret-of-some-length-0123456789"
	se := newStreamEnv(t)
	gw := startGateway(t, se, gwOptions{WebhookSecret: secret, AutoEnable: []string{"default", "audio"}})
	api, err := stream.NewClient(gw.cfg.StreamClient())
	if err != nil {
		t.Fatal(err)
	}
	ready := func(uid string) streamtest.WebhookDelivery {
		t.Helper()
		se.emu.AddVideo(streamtest.Video{UID: uid, Duration: 30, Size: 1 << 20, ReadyToStream: true})
		se.emu.WaitWebhooks()
		for _, d := range se.emu.WebhookDeliveries() {
			if d.UID == uid {
				return d
			}
		}
		t.Fatalf("the emulator sent no webhook for %s", uid)
		return streamtest.WebhookDelivery{}
	}
	enabled := func(uid string) int {
		t.Helper()
		dls, err := api.Downloads(context.Background(), uid)
		if err != nil && !strings.Contains(err.Error(), "not found") {
			t.Fatalf("Downloads(%s): %v", uid, err)
		}
		return len(dls)
	}

	se.emu.SetWebhook(gw.url+"/hooks/stream", "another-secret-altogether-0123456789")
	forged := randomHex(16)
	if d := ready(forged); d.Status != http.StatusUnauthorized {
		t.Errorf("webhook signed with another secret answered %d, want 401", d.Status)
	}
	if n := enabled(forged); n != 0 {
		t.Errorf("a webhook with a bad signature enabled %d download types", n)
	}

	se.emu.SetWebhook(gw.url+"/hooks/stream", secret)
	uid := randomHex(16)
	if d := ready(uid); d.Status != http.StatusOK {
		t.Fatalf("webhook answered %d, want 200", d.Status)
	}
	if n := enabled(uid); n != 2 {
		t.Errorf("after the webhook %d download types are enabled, want 2 (default and audio)", n)
	}
	if strings.Contains(gw.logs.String(), secret) {
		t.Error("a log line holds the webhook secret")
	}
}

// TestServePacesAPlan configures a plan with max_bytes_per_second: a download
// takes at least the time the rate allows (a floor, not a speed target), and
// its bytes are whole.
func TestServePacesAPlan(t *testing.T) {
	t.Parallel()
	const rate = 128 << 10
	se := newStreamEnv(t)
	uid := se.addVideo(testDuration, testSize)
	gw := startGateway(t, se, gwOptions{Plans: map[string]plan{"basic": {Minutes: 1000, BytesPerSecond: rate}}})
	c := clientFrom(t, ipGB)
	req, _ := http.NewRequest(http.MethodGet, gw.downloadURL(uid, stream.Default), nil)
	req.Header.Set("Authorization", "Bearer "+portalToken(t, "pat", "basic"))
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	checkStream(t, resp.Body, uid, stream.Default, 0, testSize)
	// The bucket's burst is a sixteenth of a second's worth.
	floor := time.Duration(float64(testSize-rate/16) / rate * float64(time.Second))
	if took := time.Since(start); took < floor {
		t.Errorf("a %d-byte download at %d B/s took %s, less than the %s the rate allows", testSize, rate, took, floor)
	}
}
