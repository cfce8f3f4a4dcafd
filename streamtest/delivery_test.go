package streamtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestDeliveryRanges(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	const size = 300_000
	e.AddVideo(Video{UID: uidPublic, Duration: 120, Size: size, ReadyToStream: true})
	e.SetDownloadReady(uidPublic, stream.Default)
	e.SetDownloadReady(uidPublic, stream.Audio)
	url := srv.URL + stream.DeliveryPath(uidPublic, stream.Default)
	c := srv.Client()

	full := do(t, c, http.MethodGet, url, nil, "")
	etag := full.header.Get("ETag")
	lastMod := full.header.Get("Last-Modified")
	if full.status != 200 || !bytes.Equal(full.body, Content(uidPublic, stream.Default, 0, size)) {
		t.Fatalf("full: status %d, %d bytes", full.status, len(full.body))
	}
	for k, want := range map[string]string{
		"Content-Type":        "video/mp4",
		"Content-Disposition": `attachment; filename="` + uidPublic + `.mp4"`,
		"Accept-Ranges":       "bytes",
		"Content-Length":      fmt.Sprint(size),
	} {
		if got := full.header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if etag == "" || lastMod == "" {
		t.Errorf("ETag %q, Last-Modified %q: want both", etag, lastMod)
	}

	tests := []struct {
		name      string
		hdr       map[string]string
		want      int
		from, to  int64 // inclusive, when 206
		wantRange string
	}{
		{"range", map[string]string{"Range": "bytes=100-199"}, 206, 100, 199, "bytes 100-199/300000"},
		{"range from 0", map[string]string{"Range": "bytes=0-9"}, 206, 0, 9, "bytes 0-9/300000"},
		{"open-ended", map[string]string{"Range": "bytes=299950-"}, 206, 299950, size - 1, "bytes 299950-299999/300000"},
		{"suffix", map[string]string{"Range": "bytes=-100"}, 206, size - 100, size - 1, "bytes 299900-299999/300000"},
		{"past the end clipped", map[string]string{"Range": "bytes=299990-400000"}, 206, 299990, size - 1, "bytes 299990-299999/300000"},
		{"unsatisfiable", map[string]string{"Range": "bytes=300000-"}, 416, 0, 0, "bytes */300000"},
		{"several ranges answered in full", map[string]string{"Range": "bytes=0-9,20-29"}, 200, 0, size - 1, ""},
		{"if-range etag matches", map[string]string{"Range": "bytes=1000-1999", "If-Range": etag}, 206, 1000, 1999, "bytes 1000-1999/300000"},
		{"if-range etag stale", map[string]string{"Range": "bytes=1000-1999", "If-Range": `"stale"`}, 200, 0, size - 1, ""},
		{"if-range date matches", map[string]string{"Range": "bytes=5-14", "If-Range": lastMod}, 206, 5, 14, "bytes 5-14/300000"},
		{"if-range date stale", map[string]string{"Range": "bytes=5-14", "If-Range": "Mon, 02 Jan 2006 15:04:05 GMT"}, 200, 0, size - 1, ""},
		{"if-none-match", map[string]string{"If-None-Match": etag}, 304, 0, 0, ""},
	}
	var bytesGot int64
	var dlMinutes float64 = 2 // the first full download
	bytesGot += int64(len(full.body))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, c, http.MethodGet, url, tt.hdr, "")
			if r.status == 200 || r.status == 206 {
				// Only file bytes are billed; a 416's error text is not.
				bytesGot += int64(len(r.body))
			}
			if r.status != tt.want {
				t.Fatalf("status %d, want %d", r.status, tt.want)
			}
			if got := r.header.Get("Content-Range"); got != tt.wantRange {
				t.Errorf("Content-Range = %q, want %q", got, tt.wantRange)
			}
			if tt.want == 200 || tt.want == 206 {
				if tt.from == 0 {
					dlMinutes += 2
				}
				want := Content(uidPublic, stream.Default, tt.from, tt.to-tt.from+1)
				if !bytes.Equal(r.body, want) {
					t.Errorf("body: %d bytes, want %d bytes from %d", len(r.body), len(want), tt.from)
				}
			}
		})
	}

	head := do(t, c, http.MethodHead, url, nil, "")
	if head.status != 200 || len(head.body) != 0 || head.header.Get("Content-Length") != fmt.Sprint(size) {
		t.Errorf("HEAD: status %d, %d body bytes, Content-Length %q", head.status, len(head.body), head.header.Get("Content-Length"))
	}
	headRange := do(t, c, http.MethodHead, url, map[string]string{"Range": "bytes=0-99"}, "")
	if headRange.status != 206 || headRange.header.Get("Content-Length") != "100" {
		t.Errorf("HEAD range: status %d, Content-Length %q", headRange.status, headRange.header.Get("Content-Length"))
	}

	st := e.Stats(uidPublic, stream.Default)
	wantReq := int64(1 + len(tests) + 2)
	if st.Requests != wantReq || st.Bytes != bytesGot || st.Refused != 0 {
		t.Errorf("stats = %+v, want %d requests and %d bytes", st, wantReq, bytesGot)
	}
	if !near(st.DownloadMinutes, dlMinutes) {
		t.Errorf("DownloadMinutes = %v, want %v", st.DownloadMinutes, dlMinutes)
	}
	if want := 2 * float64(bytesGot) / size; !near(st.ProportionalMinutes, want) {
		t.Errorf("ProportionalMinutes = %v, want %v", st.ProportionalMinutes, want)
	}

	// Audio: its own size, type and counters.
	audio := do(t, c, http.MethodGet, srv.URL+stream.DeliveryPath(uidPublic, stream.Audio)+"?filename=my-talk_2", nil, "")
	if audio.status != 200 || len(audio.body) != size/8 || audio.header.Get("Content-Type") != "audio/mp4" ||
		audio.header.Get("Content-Disposition") != `attachment; filename="my-talk_2.m4a"` {
		t.Errorf("audio: status %d, %d bytes, headers %v", audio.status, len(audio.body), audio.header)
	}
	if !bytes.Equal(audio.body, Content(uidPublic, stream.Audio, 0, size/8)) {
		t.Error("audio body differs from Content")
	}
	if st := e.Stats(uidPublic, stream.Audio); st.Requests != 1 || st.Bytes != size/8 || !near(st.DownloadMinutes, 2) || !near(st.ProportionalMinutes, 2) {
		t.Errorf("audio stats = %+v", st)
	}
	if tot := e.TotalStats(); tot.Bytes != bytesGot+size/8 {
		t.Errorf("total bytes = %d, want %d", tot.Bytes, bytesGot+size/8)
	}
}

func TestDeliveryRequests(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPublic, Duration: 60, Size: 1000, ReadyToStream: true})
	e.SetDownloadReady(uidPublic, stream.Default)
	base := srv.URL + stream.DeliveryPath(uidPublic, stream.Default)
	tests := []struct {
		name   string
		method string
		url    string
		want   int
	}{
		{"filename ok", http.MethodGet, base + "?filename=Lecture-01_final", 200},
		{"filename with a dot", http.MethodGet, base + "?filename=a.b", 400},
		{"filename with its extension", http.MethodGet, base + "?filename=a.mp4", 200},
		{"filename empty", http.MethodGet, base + "?filename=", 400},
		{"filename with a space", http.MethodGet, base + "?filename=a%20b", 400},
		{"filename too long", http.MethodGet, base + "?filename=" + strings.Repeat("a", 121), 400},
		{"filename 120 characters", http.MethodGet, base + "?filename=" + strings.Repeat("a", 120), 200},
		{"POST", http.MethodPost, base, 405},
		{"unknown file", http.MethodGet, srv.URL + "/" + uidPublic + "/downloads/video.mp4", 404},
		{"manifest", http.MethodGet, srv.URL + "/" + uidPublic + "/manifest/video.m3u8", 404},
		{"root", http.MethodGet, srv.URL + "/", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, srv.Client(), tt.method, tt.url, nil, "")
			if r.status != tt.want {
				t.Errorf("status %d, want %d", r.status, tt.want)
			}
		})
	}
	r := do(t, srv.Client(), http.MethodGet, base+"?filename=Lecture-01_final", nil, "")
	if got := r.header.Get("Content-Disposition"); got != `attachment; filename="Lecture-01_final.mp4"` {
		t.Errorf("Content-Disposition = %q", got)
	}
}

// A client that goes away midway counts what was written, not the whole file.
func TestDeliveryClientGone(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	const size = 256 << 20
	e.AddVideo(Video{UID: uidPublic, Duration: 600, Size: size, ReadyToStream: true})
	e.SetDownloadReady(uidPublic, stream.Default)

	res, err := srv.Client().Get(srv.URL + stream.DeliveryPath(uidPublic, stream.Default))
	if err != nil {
		t.Fatal(err)
	}
	const want = 1 << 20
	got, err := io.CopyN(io.Discard, res.Body, want)
	if err != nil || got != want {
		t.Fatalf("read %d bytes: %v", got, err)
	}
	res.Body.Close()
	waitIdle(t, e)
	st := e.Stats(uidPublic, stream.Default)
	if st.Bytes < want || st.Bytes > size/4 {
		t.Errorf("Bytes = %d, want about %d (at least that, well below %d)", st.Bytes, want, size)
	}
	if want := 10 * float64(st.Bytes) / size; !near(st.ProportionalMinutes, want) {
		t.Errorf("ProportionalMinutes = %v, want %v", st.ProportionalMinutes, want)
	}
	if !near(st.DownloadMinutes, 10) {
		t.Errorf("DownloadMinutes = %v, want 10 (the per-download rule bills the start)", st.DownloadMinutes)
	}
}

func TestDeliveryFaults(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	const size = 100_000
	e.AddVideo(Video{UID: uidPublic, Duration: 60, Size: size, ReadyToStream: true})
	e.SetDownloadReady(uidPublic, stream.Default)
	url := srv.URL + stream.DeliveryPath(uidPublic, stream.Default)

	t.Run("status", func(t *testing.T) {
		e.SetFault(uidPublic, Fault{Status: http.StatusServiceUnavailable})
		defer e.SetFault(uidPublic, Fault{})
		before := e.Stats(uidPublic, stream.Default)
		r := do(t, srv.Client(), http.MethodGet, url, nil, "")
		if r.status != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503", r.status)
		}
		after := e.Stats(uidPublic, stream.Default)
		if after.Requests != before.Requests+1 || after.Bytes != before.Bytes || after.DownloadMinutes != before.DownloadMinutes {
			t.Errorf("stats %+v -> %+v: want one request, no bytes, no minutes", before, after)
		}
	})

	t.Run("reset after N bytes", func(t *testing.T) {
		e.SetFault(uidPublic, Fault{ResetAfter: 12_345})
		defer e.SetFault(uidPublic, Fault{})
		before := e.Stats(uidPublic, stream.Default)
		res, err := srv.Client().Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("read error = %v, want unexpected EOF", err)
		}
		if len(body) != 12_345 || !bytes.Equal(body, Content(uidPublic, stream.Default, 0, 12_345)) {
			t.Errorf("got %d bytes, want the first 12345", len(body))
		}
		waitIdle(t, e)
		if got := e.Stats(uidPublic, stream.Default).Bytes - before.Bytes; got != 12_345 {
			t.Errorf("counted %d bytes, want 12345", got)
		}
		// A range that ends before the cut is served whole.
		r := do(t, srv.Client(), http.MethodGet, url, map[string]string{"Range": "bytes=0-999"}, "")
		if r.status != 206 || len(r.body) != 1000 {
			t.Errorf("short range: status %d, %d bytes", r.status, len(r.body))
		}
	})

	t.Run("delay", func(t *testing.T) {
		e.SetFault(uidPublic, Fault{Delay: 300 * time.Millisecond})
		defer e.SetFault(uidPublic, Fault{})
		impatient := &http.Client{Timeout: 50 * time.Millisecond}
		if _, err := impatient.Get(url); err == nil {
			t.Error("client with a 50ms timeout got an answer")
		}
		begin := time.Now()
		r := do(t, srv.Client(), http.MethodGet, url, nil, "")
		if el := time.Since(begin); r.status != 200 || el < 300*time.Millisecond {
			t.Errorf("status %d after %s, want 200 after at least 300ms", r.status, el)
		}
		waitIdle(t, e)
	})

	t.Run("bandwidth", func(t *testing.T) {
		e.SetFault(uidPublic, Fault{BytesPerSecond: 400_000})
		defer e.SetFault(uidPublic, Fault{})
		begin := time.Now()
		r := do(t, srv.Client(), http.MethodGet, url, nil, "")
		el := time.Since(begin)
		if r.status != 200 || len(r.body) != size || !bytes.Equal(r.body, Content(uidPublic, stream.Default, 0, size)) {
			t.Fatalf("status %d, %d bytes", r.status, len(r.body))
		}
		if el < 200*time.Millisecond {
			t.Errorf("100 kB at 400 kB/s took %s, want about 250ms", el)
		}
	})

	t.Run("cleared", func(t *testing.T) {
		r := do(t, srv.Client(), http.MethodGet, url, nil, "")
		if r.status != 200 || len(r.body) != size {
			t.Errorf("status %d, %d bytes", r.status, len(r.body))
		}
	})

	t.Run("refusals come first", func(t *testing.T) {
		e.AddVideo(Video{UID: uidPrivate, Duration: 60, Size: 10, RequireSignedURLs: true, ReadyToStream: true})
		e.SetFault(uidPrivate, Fault{Status: 500, Delay: time.Second})
		defer e.SetFault(uidPrivate, Fault{})
		r := do(t, srv.Client(), http.MethodGet, srv.URL+stream.DeliveryPath(uidPrivate, stream.Default), nil, "")
		if r.status != 401 {
			t.Errorf("status %d, want 401", r.status)
		}
	})
}

// Many clients at once, with API calls in between, under the race detector.
func TestConcurrentUse(t *testing.T) {
	clk := newClock()
	e := New(Options{Now: clk.Now, ReadyAfter: time.Second})
	srv := start(t, e)
	const size = 64 << 10
	e.AddVideo(Video{UID: uidPublic, Duration: 60, Size: size, ReadyToStream: true})
	e.SetDownloadReady(uidPublic, stream.Default)
	url := srv.URL + stream.DeliveryPath(uidPublic, stream.Default)

	var wg sync.WaitGroup
	const n = 16
	errs := make(chan error, 3*n)
	for i := 0; i < n; i++ {
		wg.Add(3)
		go func(i int) {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", i*1000))
			res, err := srv.Client().Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer res.Body.Close()
			b, err := io.ReadAll(res.Body)
			if err != nil || !bytes.Equal(b, Content(uidPublic, stream.Default, int64(i*1000), size-int64(i*1000))) {
				errs <- fmt.Errorf("client %d: %d bytes, %v", i, len(b), err)
			}
		}(i)
		go func() {
			defer wg.Done()
			clk.Advance(10 * time.Millisecond)
			_ = e.Stats(uidPublic, stream.Default)
			_ = e.TotalStats()
		}()
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/client/v4/accounts/test-account/stream/"+uidPublic+"/downloads/audio", nil)
			req.Header.Set("Authorization", "Bearer test-token")
			res, err := srv.Client().Do(req)
			if err != nil {
				errs <- err
				return
			}
			res.Body.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var want int64
	for i := 0; i < n; i++ {
		want += size - int64(i*1000)
	}
	if st := e.Stats(uidPublic, stream.Default); st.Requests != n || st.Bytes != want {
		t.Errorf("stats = %+v, want %d requests and %d bytes", st, n, want)
	}
}

func BenchmarkDelivery(b *testing.B) {
	e := New(Options{})
	srv := start(b, e)
	const size = 64 << 20
	e.AddVideo(Video{UID: uidPublic, Duration: 600, Size: size, ReadyToStream: true})
	e.SetDownloadReady(uidPublic, stream.Default)
	url := srv.URL + stream.DeliveryPath(uidPublic, stream.Default)
	b.ReportAllocs()
	b.SetBytes(size)
	for b.Loop() {
		res, err := srv.Client().Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || n != size {
			b.Fatalf("%d bytes, %v", n, err)
		}
	}
}
