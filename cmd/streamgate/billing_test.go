package main

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

// billingCase is one scenario run through a fresh gateway in one metering mode.
type billingCase struct {
	name string
	mode string
	// fault is injected into the video's deliveries before run.
	fault streamtest.Fault
	// run makes the requests; wantMinutes is what the user should be billed.
	run         func(t *testing.T, b *billingRig)
	wantMinutes float64
	// tol is the tolerance on the minutes billed (default 1e-5, the ledger's
	// micro-minute rounding).
	tol float64
	// atLeast, when set, is a floor on the minutes billed.
	atLeast float64
}

type billingRig struct {
	se    *streamEnv
	gw    *testGateway
	uid   string
	c     *http.Client
	token string
}

func (b *billingRig) get(t *testing.T, hdr ...string) response {
	t.Helper()
	return do(t, b.c, http.MethodGet, b.gw.downloadURL(b.uid, stream.Default), b.token, nil, hdr...)
}

// expect checks a response's status and that its body is the file's bytes from
// off on.
func (b *billingRig) expect(t *testing.T, r response, status int, off int64) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if status == http.StatusOK || status == http.StatusPartialContent {
		if int64(len(r.body)) != testSize-off {
			t.Fatalf("body of %d bytes, want %d", len(r.body), testSize-off)
		}
		checkContent(t, r.body, b.uid, stream.Default, off)
	}
}

// leaveHalfway reads half of a whole-file download and hangs up.
func (b *billingRig) leaveHalfway(t *testing.T) int64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.gw.downloadURL(b.uid, stream.Default), nil)
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	half := make([]byte, testSize/2)
	if _, err := io.ReadFull(resp.Body, half); err != nil {
		t.Fatalf("reading half the body: %v", err)
	}
	resp.Body.Close() // before the end: the transport drops the connection
	checkContent(t, half, b.uid, stream.Default, 0)
	return int64(len(half))
}

const resumeAt = testSize * 3 / 4

// TestBilling runs each billing rule of DESIGN.md through the gateway against the
// emulator: what a user is billed for resumes, ranges that do not start at 0,
// upstream failures and clients that leave.
func TestBilling(t *testing.T) {
	cases := []billingCase{
		{
			name:  "per-download resume is not billed twice",
			mode:  "per-download",
			fault: streamtest.Fault{BytesPerSecond: testSize},
			run: func(t *testing.T, b *billingRig) {
				got := b.leaveHalfway(t)
				b.expect(t, b.get(t, "Range", fmt.Sprintf("bytes=%d-", got)), http.StatusPartialContent, got)
			},
			wantMinutes: testMinutes,
		},
		{
			// The whole file, its last quarter, then nearly all of it again: 2.25
			// copies sent, past the two one charge covers.
			name: "per-download re-download loop pays once per two copies",
			mode: "per-download",
			run: func(t *testing.T, b *billingRig) {
				b.expect(t, b.get(t), http.StatusOK, 0)
				b.expect(t, b.get(t, "Range", fmt.Sprintf("bytes=%d-", resumeAt)), http.StatusPartialContent, resumeAt)
				b.expect(t, b.get(t, "Range", "bytes=1-"), http.StatusPartialContent, 1)
			},
			wantMinutes: 2 * testMinutes,
		},
		{
			name: "proportional re-fetch of held bytes is free",
			mode: "proportional",
			run: func(t *testing.T, b *billingRig) {
				b.expect(t, b.get(t), http.StatusOK, 0)
				b.expect(t, b.get(t, "Range", fmt.Sprintf("bytes=%d-", resumeAt)), http.StatusPartialContent, resumeAt)
			},
			wantMinutes: testMinutes,
		},
		{
			name:  "proportional resume after leaving pays only the rest",
			mode:  "proportional",
			fault: streamtest.Fault{BytesPerSecond: testSize},
			run: func(t *testing.T, b *billingRig) {
				got := b.leaveHalfway(t)
				b.expect(t, b.get(t, "Range", fmt.Sprintf("bytes=%d-", got)), http.StatusPartialContent, got)
			},
			wantMinutes: testMinutes,
		},
		{
			name: "per-download first request at bytes=1- is billed",
			mode: "per-download",
			run: func(t *testing.T, b *billingRig) {
				b.expect(t, b.get(t, "Range", "bytes=1-"), http.StatusPartialContent, 1)
			},
			wantMinutes: testMinutes,
		},
		{
			name: "proportional first request at bytes=1- is billed",
			mode: "proportional",
			run: func(t *testing.T, b *billingRig) {
				b.expect(t, b.get(t, "Range", "bytes=1-"), http.StatusPartialContent, 1)
			},
			wantMinutes: testMinutes * float64(testSize-1) / testSize,
		},
		{
			name:  "per-download upstream failure before the first byte bills nothing",
			mode:  "per-download",
			fault: streamtest.Fault{Status: http.StatusInternalServerError},
			run: func(t *testing.T, b *billingRig) {
				for range 3 {
					b.expect(t, b.get(t), http.StatusBadGateway, 0)
				}
			},
			wantMinutes: 0,
		},
		{
			name:  "proportional upstream failure before the first byte bills nothing",
			mode:  "proportional",
			fault: streamtest.Fault{Status: http.StatusInternalServerError},
			run: func(t *testing.T, b *billingRig) {
				for range 3 {
					b.expect(t, b.get(t), http.StatusBadGateway, 0)
				}
			},
			wantMinutes: 0,
		},
		{
			name:  "proportional client leaving halfway is billed about half",
			mode:  "proportional",
			fault: streamtest.Fault{BytesPerSecond: testSize},
			run: func(t *testing.T, b *billingRig) {
				b.leaveHalfway(t)
			},
			// Half, and what was in flight when the client hung up: at most a few
			// of the emulator's 1/20 s chunks (5% of the file each). Less by at
			// most two segments the client read but whose ACK its kernel was still
			// delaying when it closed with data unread and sent a reset instead
			// (docs/decisions.md, "Delivered"; the gateway under test sends
			// segments of a real network's size, streamtest.RealMSS).
			wantMinutes: testMinutes * 0.55,
			tol:         testMinutes * 0.065,
			atLeast:     testMinutes * (0.5 - 2*1448.0/testSize),
		},
		{
			name:  "per-download client leaving halfway is billed the download",
			mode:  "per-download",
			fault: streamtest.Fault{BytesPerSecond: testSize},
			run: func(t *testing.T, b *billingRig) {
				b.leaveHalfway(t)
			},
			wantMinutes: testMinutes,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			se := newStreamEnv(t)
			uid := se.addVideo(testDuration, testSize)
			if tc.fault != (streamtest.Fault{}) {
				se.emu.SetFault(uid, tc.fault)
			}
			gw := startGateway(t, se, gwOptions{Metering: tc.mode})
			b := &billingRig{se: se, gw: gw, uid: uid, c: clientFrom(t, ipGB), token: portalToken(t, "erin", "basic")}
			tc.run(t, b)

			u := settledUsage(t, b.c, gw.url, b.token)
			tol := tc.tol
			if tol == 0 {
				tol = 1e-5
			}
			t.Logf("billed %.6f minutes", u.MinutesUsed)
			if !near(u.MinutesUsed, tc.wantMinutes, tol) {
				t.Errorf("minutes_used = %.6f, want %.6f ± %g", u.MinutesUsed, tc.wantMinutes, tol)
			}
			if u.MinutesUsed < tc.atLeast-1e-6 {
				t.Errorf("minutes_used = %.6f, want at least %.6f", u.MinutesUsed, tc.atLeast)
			}
			se.waitIdle(t)
			st := se.emu.Stats(uid, stream.Default)
			if tc.mode == "proportional" && u.MinutesUsed > st.ProportionalMinutes+1e-5 {
				t.Errorf("billed %.6f minutes, more than the %.6f Stream delivered", u.MinutesUsed, st.ProportionalMinutes)
			}
			if tc.wantMinutes == 0 {
				if n := len(logLines(t, gw.logs.String(), "billable download")); n != 0 {
					t.Errorf("%d billable download lines for a download that delivered nothing", n)
				}
			}
		})
	}
}

// TestMeteringAgreesWithStream runs a mixed workload (whole files, ranges at and
// after byte 0, re-fetches, failures injected upstream, a client that leaves
// and resumes) and checks what each user is billed by the rule, and that the
// Stream minutes the ledger counted agree with what the emulator counted it sent.
func TestMeteringAgreesWithStream(t *testing.T) {
	for _, mode := range []string{"proportional", "per-download"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			se := newStreamEnv(t)
			plain := se.addVideo(testDuration, testSize)
			failing := se.addVideo(testDuration, testSize)
			slow := se.addVideo(12, testSize) // short, so in-flight bytes weigh little
			se.emu.SetFault(failing, streamtest.Fault{Status: http.StatusServiceUnavailable})
			se.emu.SetFault(slow, streamtest.Fault{BytesPerSecond: testSize})
			gw := startGateway(t, se, gwOptions{Metering: mode})

			type user struct {
				token string
				c     *http.Client
			}
			alice := user{portalToken(t, "alice", "basic"), clientFrom(t, ipGB)}
			dave := user{portalToken(t, "dave", "basic"), clientFrom(t, ipDE)}
			get := func(u user, uid string, typ stream.DownloadType, wantStatus int, off int64, rng string) {
				t.Helper()
				var hdr []string
				if rng != "" {
					hdr = []string{"Range", rng}
				}
				r := do(t, u.c, http.MethodGet, gw.downloadURL(uid, typ), u.token, nil, hdr...)
				if r.status != wantStatus {
					t.Fatalf("GET %s %s %q: status %d, want %d: %s", uid, typ, rng, r.status, wantStatus, r.body)
				}
				if wantStatus < 300 {
					checkContent(t, r.body, uid, typ, off)
				}
			}

			for range 3 {
				get(alice, plain, stream.Default, http.StatusOK, 0, "")
			}
			get(alice, plain, stream.Audio, http.StatusOK, 0, "")
			get(alice, plain, stream.Default, http.StatusPartialContent, 0, "bytes=0-65535")
			get(alice, plain, stream.Default, http.StatusPartialContent, 65536, "bytes=65536-131071")
			get(dave, plain, stream.Default, http.StatusOK, 0, "")
			get(dave, plain, stream.Default, http.StatusPartialContent, resumeAt, fmt.Sprintf("bytes=%d-", resumeAt))
			get(dave, plain, stream.Audio, http.StatusPartialContent, 0, "bytes=0-1023")
			get(dave, failing, stream.Default, http.StatusBadGateway, 0, "")
			get(dave, failing, stream.Default, http.StatusBadGateway, 0, "bytes=0-")

			b := &billingRig{se: se, gw: gw, uid: slow, c: alice.c, token: alice.token}
			got := b.leaveHalfway(t)
			settledUsage(t, alice.c, gw.url, alice.token)
			get(alice, slow, stream.Default, http.StatusPartialContent, got, fmt.Sprintf("bytes=%d-", got))

			ua := settledUsage(t, alice.c, gw.url, alice.token)
			ud := settledUsage(t, dave.c, gw.url, dave.token)
			se.waitIdle(t)

			// What each user pays: per file, once (proportional: what they
			// received of it; per-download: a duration per two copies sent).
			slowMinutes := 12.0 / 60
			wantAlice := 2*testMinutes + slowMinutes                // default, audio, slow
			wantDave := testMinutes + testMinutes*1024/(testSize/8) // default, a KiB of the audio (an eighth of the size)
			if mode == "per-download" {
				wantAlice = 2*testMinutes + testMinutes + slowMinutes // three copies and more of default
				wantDave = 2 * testMinutes
			}
			if !near(ua.MinutesUsed, wantAlice, 1e-5) || !near(ud.MinutesUsed, wantDave, 1e-5) {
				t.Errorf("%s: alice billed %.6f, dave %.6f; want %.6f and %.6f", mode, ua.MinutesUsed, ud.MinutesUsed, wantAlice, wantDave)
			}

			var emulated float64
			for _, uid := range []string{plain, failing, slow} {
				for _, typ := range []stream.DownloadType{stream.Default, stream.Audio} {
					emulated += se.emu.Stats(uid, typ).ProportionalMinutes
				}
			}
			rep := reportRows(t, gw.cfgPath, ua.Period)
			var reported, streamed float64
			for _, row := range rep.Users {
				reported += row.Minutes
				streamed += row.StreamMinutes
			}
			billed := ua.MinutesUsed + ud.MinutesUsed
			t.Logf("%s: streamgate billed %.6f minutes (report %.6f); Stream minutes %.6f in the ledger, %.6f counted by Stream",
				mode, billed, reported, streamed, emulated)
			if !near(reported, billed, 1e-5) {
				t.Errorf("usage report sums %.6f minutes, /v1/me/usage %.6f", reported, billed)
			}
			if !near(ua.StreamMinutes+ud.StreamMinutes, streamed, 1e-5) {
				t.Errorf("usage shows %.6f Stream minutes, the report %.6f", ua.StreamMinutes+ud.StreamMinutes, streamed)
			}
			if emulated <= 0 || math.Abs(streamed-emulated) > 0.01*emulated {
				t.Errorf("the ledger counted %.6f Stream minutes, Stream %.6f: more than 1%% apart", streamed, emulated)
			}
			if lines := logLines(t, gw.logs.String(), "billable download"); len(lines) == 0 {
				t.Error("no billable download log lines")
			} else {
				for _, l := range lines {
					for _, k := range []string{"user", "video", "type", "minutes", "stream_minutes", "bytes", "status", "country", "download_id", "delivered_by"} {
						if _, ok := l[k]; !ok {
							t.Errorf("billable download line lacks %q: %v", k, l)
						}
					}
				}
				if !strings.Contains(gw.logs.String(), `"country":"DE"`) {
					t.Error("no billable download line carries dave's country DE")
				}
			}
		})
	}
}
