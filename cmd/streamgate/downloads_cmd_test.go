package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

// apiEnv is an emulator whose downloads take readyAfter to generate, and a
// configuration file that holds only the keys the API commands read: the rest
// of the file (auth, links, the signing key) may be missing.
type apiEnv struct {
	emu     *streamtest.Emulator
	url     string
	cfgPath string
}

func newAPIEnv(t *testing.T, readyAfter time.Duration, apiTokenKey string) *apiEnv {
	t.Helper()
	emu := streamtest.New(streamtest.Options{AccountID: "acct", APIToken: apiToken, ReadyAfter: readyAfter})
	srv := streamtest.NewServer(emu.Handler())
	t.Cleanup(srv.Close)
	emu.SetDeliveryBase(srv.URL)
	if apiTokenKey == "" {
		apiTokenKey = fmt.Sprintf("{value: %q}", apiToken)
	}
	path := filepath.Join(t.TempDir(), "streamgate.yaml")
	yaml := fmt.Sprintf("stream:\n  account_id: acct\n  api_token: %s\n  api_url: %q\n", apiTokenKey, srv.URL+"/client/v4/")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return &apiEnv{emu: emu, url: srv.URL, cfgPath: path}
}

// addVideo adds a video ready to stream with no download enabled.
func (ae *apiEnv) addVideo(ready bool) string {
	uid := randomHex(16)
	ae.emu.AddVideo(streamtest.Video{UID: uid, Duration: testDuration, Size: testSize, ReadyToStream: ready})
	return uid
}

// cli runs the command line args and returns stdout, stderr and the error.
func cli(ctx context.Context, getenv func(string) string, args ...string) (string, string, error) {
	var stdout, stderr syncBuffer
	err := run(ctx, args, getenv, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

var percentLine = regexp.MustCompile(`(?m)^(default|audio) [0-9a-f]{32}: (\d+)%$`)

// percents are the percentComplete values of the plain progress lines in out.
func percents(out string) []int {
	var ps []int
	for _, m := range percentLine.FindAllStringSubmatch(out, -1) {
		p, _ := strconv.Atoi(m[2])
		ps = append(ps, p)
	}
	return ps
}

func TestDownloadsCommands(t *testing.T) {
	ae := newAPIEnv(t, time.Second, "")
	ctx := context.Background()
	uid := ae.addVideo(true)
	dl := func(args ...string) (string, string, error) {
		return cli(ctx, noEnv, append([]string{"downloads", "--config", ae.cfgPath}, args...)...)
	}

	t.Run("enable without waiting", func(t *testing.T) {
		out, _, err := dl("enable", uid)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out, "default download of "+uid+": in progress, ") {
			t.Errorf("stdout = %q, want the download in progress", out)
		}
	})

	t.Run("status", func(t *testing.T) {
		out, _, err := dl("status", uid)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "default default.mp4 in progress") ||
			lines[1] != "audio   audio.m4a not enabled" {
			t.Errorf("status =\n%s", out)
		}
		out, _, err = dl("status", uid, "--json")
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			UID       string                  `json:"uid"`
			Downloads map[string]downloadJSON `json:"downloads"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("status --json: %v: %s", err, out)
		}
		d, ok := got.Downloads["default"]
		if got.UID != uid || len(got.Downloads) != 1 || !ok || d.Status != stream.DownloadInProgress ||
			d.URL != ae.url+"/"+uid+"/downloads/default.mp4" {
			t.Errorf("status --json = %s", out)
		}
	})

	t.Run("wait reaches ready", func(t *testing.T) {
		out, _, err := dl("enable", uid, "--audio", "--wait", "--poll-interval", "50ms", "--timeout", "30s")
		if err != nil {
			t.Fatalf("enable --wait: %v\n%s", err, out)
		}
		ps := percents(out)
		if len(ps) < 3 || ps[0] >= 100 || ps[len(ps)-1] != 100 {
			t.Errorf("progress lines %v, want several rising to 100:\n%s", ps, out)
		}
		for i := 1; i < len(ps); i++ {
			if ps[i] <= ps[i-1] {
				t.Errorf("progress %v does not rise", ps)
			}
		}
		if !strings.HasSuffix(out, "audio download of "+uid+": ready: "+ae.url+"/"+uid+"/downloads/audio.m4a\n") {
			t.Errorf("stdout does not end with the ready URL:\n%s", out)
		}
	})

	t.Run("wait fails on error", func(t *testing.T) {
		uid := ae.addVideo(true)
		var stdout syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"downloads", "--config", ae.cfgPath, "enable", uid, "--wait", "--poll-interval", "20ms"},
				noEnv, &stdout, &bytes.Buffer{})
		}()
		waitFor(t, 10*time.Second, "a progress line", func() bool { return len(percents(stdout.String())) > 0 })
		ae.emu.FailDownload(uid, stream.Default)
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "Stream reports status error") {
				t.Errorf("enable --wait on a failed download = %v, want the error status", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("enable --wait did not stop on error")
		}
	})

	t.Run("wait times out", func(t *testing.T) {
		uid := ae.addVideo(true)
		start := time.Now()
		out, _, err := dl("enable", uid, "--wait", "--poll-interval", "20ms", "--timeout", "150ms")
		if err == nil || !strings.Contains(err.Error(), "not ready within --timeout 150ms") || !strings.Contains(err.Error(), "% complete") {
			t.Errorf("enable --wait --timeout = %v, want a timeout naming the progress\n%s", err, out)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("timed out after %s", d)
		}
	})

	t.Run("delete", func(t *testing.T) {
		out, _, err := dl("delete", uid, "--audio")
		if err != nil || out != "deleted the audio download of "+uid+"\n" {
			t.Fatalf("delete --audio: %q, %v", out, err)
		}
		out, _, _ = dl("status", uid)
		if !strings.Contains(out, "audio   audio.m4a not enabled") {
			t.Errorf("status after delete:\n%s", out)
		}
	})

	t.Run("none enabled answered as not found", func(t *testing.T) {
		ae.emu.SetNoDownloads(streamtest.NoDownloadsNotFound)
		defer ae.emu.SetNoDownloads(streamtest.NoDownloadsEmpty)
		uid := ae.addVideo(true)
		out, _, err := dl("status", uid)
		if err != nil || strings.Count(out, "not enabled") != 2 {
			t.Errorf("status = %q, %v; want both types not enabled", out, err)
		}
		_, _, err = dl("status", randomHex(16))
		if err == nil || !strings.Contains(err.Error(), "get video") || !strings.Contains(err.Error(), "code 10005") {
			t.Errorf("status of an unknown video = %v, want the video call's error", err)
		}
	})

	// API errors name the call and carry Stream's code and message.
	errCases := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown video", []string{"enable", randomHex(16)}, []string{"enable default download of", "HTTP 404", "code 10005", "video not found"}},
		{"not ready", []string{"enable", ae.addVideo(false), "--audio"}, []string{"enable audio download of", "code 10007", "not ready"}},
		{"delete unknown", []string{"delete", randomHex(16)}, []string{"delete default download of", "code 10005"}},
		{"bad uid", []string{"status", "not-a-uid"}, []string{"invalid video uid"}},
		{"no uid", []string{"enable"}, []string{"accepts 1 arg"}},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := dl(tc.args...)
			if err == nil {
				t.Fatalf("no error; stdout %q", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestDownloadsCredentials: a missing API token says which key and variable to
// set; a wrong one reports Stream's authentication error; a file with problems
// only in keys the command does not read still works, one with unknown keys not.
func TestDownloadsCredentials(t *testing.T) {
	ctx := context.Background()
	ae := newAPIEnv(t, 0, "{env: STREAM_API_TOKEN}")
	uid := ae.addVideo(true)

	_, _, err := cli(ctx, noEnv, "downloads", "status", uid, "--config", ae.cfgPath)
	if err == nil || !strings.Contains(err.Error(), "stream.api_token") || !strings.Contains(err.Error(), "STREAM_API_TOKEN") {
		t.Errorf("without the token: %v, want it to name stream.api_token and STREAM_API_TOKEN", err)
	}
	if err != nil && strings.Contains(err.Error(), "auth") {
		t.Errorf("the error reports keys the command does not read: %v", err)
	}

	withToken := func(tok string) func(string) string {
		return func(k string) string {
			if k == "STREAM_API_TOKEN" {
				return tok
			}
			return ""
		}
	}
	if out, _, err := cli(ctx, withToken(apiToken), "downloads", "status", uid, "--config", ae.cfgPath); err != nil || !strings.Contains(out, "not enabled") {
		t.Errorf("with the token in the environment: %q, %v", out, err)
	}
	_, _, err = cli(ctx, withToken("wrong-token"), "downloads", "status", uid, "--config", ae.cfgPath)
	if err == nil || !strings.Contains(err.Error(), "list downloads of") || !strings.Contains(err.Error(), "code 10000") ||
		!strings.Contains(err.Error(), "Authentication error") || strings.Contains(err.Error(), "wrong-token") {
		t.Errorf("with a wrong token: %v, want Stream's authentication error without the token", err)
	}

	t.Run("account from the environment", func(t *testing.T) {
		getenv := func(k string) string {
			switch k {
			case "STREAM_API_TOKEN":
				return apiToken
			case "STREAMGATE_STREAM_ACCOUNT_ID":
				return "another-account"
			}
			return ""
		}
		_, _, err := cli(ctx, getenv, "downloads", "status", uid, "--config", ae.cfgPath)
		if err == nil || !strings.Contains(err.Error(), "HTTP 403") {
			t.Errorf("with STREAMGATE_STREAM_ACCOUNT_ID overriding the file: %v, want the emulator to refuse the account", err)
		}
	})

	t.Run("unknown key", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "typo.yaml")
		if err := os.WriteFile(path, []byte("stream:\n  acount_id: acct\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := cli(ctx, withToken(apiToken), "downloads", "status", uid, "--config", path)
		if err == nil || !strings.Contains(err.Error(), "stream.acount_id") {
			t.Errorf("a file with an unknown key: %v, want it named", err)
		}
	})

	t.Run("no config", func(t *testing.T) {
		_, _, err := cli(ctx, noEnv, "downloads", "status", uid)
		if err == nil || !strings.Contains(err.Error(), "config") {
			t.Errorf("without --config: %v", err)
		}
	})
}
