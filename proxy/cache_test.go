package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

const uidNoDownloads = "3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d" // ready, no download enabled

// Stream answers a video with no download enabled either with {} or with
// NotFound. Either way the gateway says download_not_enabled, never
// video_not_found, and serves the download soon after it is enabled: neither
// answer is cached as the video's last word.
func TestNoDownloadsEitherAnswer(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  streamtest.NoDownloads
	}{
		{"empty object", streamtest.NoDownloadsEmpty},
		{"not found", streamtest.NoDownloadsNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			e.emu.SetNoDownloads(tt.set)
			e.emu.AddVideo(streamtest.Video{UID: uidNoDownloads, Duration: 60, Size: 1 << 16, ReadyToStream: true})

			// The cache on its own: no error, no downloads, asked again soon.
			c := newVideoCache(e.api, 30*time.Second, e.clock.Now)
			info, err := c.get(context.Background(), uidNoDownloads)
			if err != nil || len(info.Downloads) != 0 || info.Video.UID != uidNoDownloads {
				t.Fatalf("videoCache.get = %+v, %v; want the video with no downloads", info, err)
			}

			// Through the gateway.
			tok := e.jwt("no-downloads-user", "", nil)
			url := e.gw.url + "/v1/videos/" + uidNoDownloads + "/downloads/default.mp4"
			r := do(t, e.client(addrGB), http.MethodGet, url, bearer(tok), nil)
			if p := r.problem(t); r.status != http.StatusConflict || p["type"] != "urn:streamgate:problem:download_not_enabled" {
				t.Fatalf("nothing enabled: status %d type %v, want 409 download_not_enabled", r.status, p["type"])
			}

			e.emu.SetDownloadReady(uidNoDownloads, stream.Default)
			e.clock.Advance(negativeTTL)
			if info, err := c.get(context.Background(), uidNoDownloads); err != nil || !info.Downloads[stream.Default].Ready() {
				t.Errorf("after enabling: videoCache.get = %+v, %v; want default ready", info, err)
			}
			r = do(t, e.client(addrGB), http.MethodGet, url, bearer(tok), nil)
			if r.status != http.StatusOK {
				t.Errorf("after enabling: status %d (%s), want 200", r.status, r.body)
			}
		})
	}
}

// A link's filename may end in the type's own extension, as in Stream's own
// example; the link then carries the name without it. Other dots are refused.
func TestLinkFilenameExtension(t *testing.T) {
	e := newEnv(t, envOptions{})
	tok := e.jwt("link-filename-user", "", nil)
	for _, tt := range []struct {
		body   string
		status int
		want   string
	}{
		{`{"filename":"MY_VIDEO.mp4"}`, http.StatusCreated, "filename=MY_VIDEO"},
		{`{"type":"audio","filename":"Talk.m4a"}`, http.StatusCreated, "filename=Talk"},
		{`{"filename":"MY_VIDEO.m4a"}`, http.StatusBadRequest, ""},
		{`{"filename":"a.b"}`, http.StatusBadRequest, ""},
	} {
		r := do(t, e.client(addrGB), http.MethodPost, e.gw.url+"/v1/videos/"+uidPublic+"/links", bearer(tok), strings.NewReader(tt.body))
		if r.status != tt.status {
			t.Errorf("%s: status %d (%s), want %d", tt.body, r.status, r.body, tt.status)
			continue
		}
		if tt.status != http.StatusCreated {
			if p := r.problem(t); p["type"] != "urn:streamgate:problem:bad_filename" {
				t.Errorf("%s: problem type %v, want bad_filename", tt.body, p["type"])
			}
			continue
		}
		var l linkResponse
		if err := json.Unmarshal(r.body, &l); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(l.URL, "?"+tt.want) {
			t.Errorf("%s: link %s, want it to end in ?%s", tt.body, l.URL, tt.want)
		}
	}
}
