package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/streamgate/streamgate/config"
	"github.com/streamgate/streamgate/stream"
)

// apiKeys are the configuration keys the Stream API commands read.
var apiKeys = []string{"stream.account_id", "stream.api_token", "stream.api_url"}

// loadPartialConfig reads the configuration as serve does (defaults, the file,
// the environment) but holds a command only to the keys it reads: `keys create`
// must run before the signing key it creates is configured, and enabling a
// download needs no portal secret (config.LoadKeys).
func loadPartialConfig(path string, getenv func(string) string, keys []string) (*config.Config, error) {
	if path == "" {
		return loadConfig(path, getenv)
	}
	return config.LoadKeys(path, getenv, keys)
}

// apiClient builds a Stream API client from the configuration file at path.
func apiClient(path string, getenv func(string) string) (*config.Config, *stream.Client, error) {
	cfg, err := loadPartialConfig(path, getenv, apiKeys)
	if err != nil {
		return nil, nil, err
	}
	c, err := stream.NewClient(cfg.StreamClient())
	if err != nil {
		return nil, nil, err
	}
	return cfg, c, nil
}

// configFlag adds the --config flag every command that reads the configuration
// takes, on c and its subcommands.
func configFlag(c *cobra.Command, path *string) {
	c.PersistentFlags().StringVar(path, "config", "", "configuration file (YAML), as for serve")
	_ = c.MarkPersistentFlagRequired("config")
}

func downloadType(audio bool) stream.DownloadType {
	if audio {
		return stream.Audio
	}
	return stream.Default
}

func downloadsCmd(e env) *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "downloads",
		Short: "Enable, inspect and delete a video's MP4 and M4A downloads on Stream",
		Long: `downloads drives Stream's downloads API with the account and API token of the
configuration file (stream.account_id, stream.api_token, stream.api_url, and their
environment overrides). Stream generates a download file once it is enabled; the
gateway serves a video's download only when it is ready.`,
	}
	configFlag(c, &path)
	c.AddCommand(downloadsEnableCmd(e, &path), downloadsStatusCmd(e, &path), downloadsDeleteCmd(e, &path))
	return c
}

func downloadsEnableCmd(e env, path *string) *cobra.Command {
	var (
		audio, wait    bool
		timeout, every time.Duration
	)
	c := &cobra.Command{
		Use:   "enable UID",
		Short: "Enable the video's MP4 (or with --audio its M4A) download",
		Long: `enable asks Stream to generate the video's MP4 download (default.mp4), or with
--audio its audio-only M4A (audio.m4a). The video must be ready to stream.

With --wait it polls until the file is ready, showing percentComplete as a progress
bar (plain lines when stdout is not a terminal), and exits non-zero when Stream
reports the status error or --timeout passes first.`,
		Example: `  streamgate downloads enable --config streamgate.yaml 6b9e68b07dfee8cc2d116e4c51d6a957 --wait`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 || every <= 0 {
				return errors.New("--timeout and --poll-interval must be more than 0")
			}
			_, api, err := apiClient(*path, e.getenv)
			if err != nil {
				return err
			}
			uid, t := args[0], downloadType(audio)
			d, err := api.EnableDownload(cmd.Context(), uid, t)
			if err != nil {
				return err
			}
			if !wait {
				fmt.Fprintf(e.stdout, "%s download of %s: %s\n", t, uid, describeDownload(d))
				return nil
			}
			ctx, cancel := context.WithTimeoutCause(cmd.Context(), timeout,
				fmt.Errorf("not ready within --timeout %s", timeout))
			defer cancel()
			d, err = waitDownload(ctx, api, uid, t, every, d, newProgress(e.stdout, fmt.Sprintf("%s %s", t, uid)))
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s download of %s: ready: %s\n", t, uid, d.URL)
			return nil
		},
	}
	c.Flags().BoolVar(&audio, "audio", false, "the M4A audio download instead of the MP4")
	c.Flags().BoolVar(&wait, "wait", false, "wait until the download is ready")
	c.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "with --wait, how long to wait at most")
	c.Flags().DurationVar(&every, "poll-interval", stream.DefaultPollInterval, "with --wait, how often to ask Stream")
	return c
}

// progress shows how far a download's generation is.
type progress interface {
	// Show reports percentComplete, 0 to 100.
	Show(pct float64)
	// Done ends the display.
	Done()
}

// newProgress draws a bar on a terminal and prints a line per change elsewhere
// (logs, pipes, CI), where a bar's carriage returns would be noise.
func newProgress(w io.Writer, what string) progress {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return &barProgress{bar: progressbar.NewOptions(100,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(what),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionSetRenderBlankState(true),
		), w: w}
	}
	return &lineProgress{w: w, what: what, last: -1}
}

type barProgress struct {
	bar *progressbar.ProgressBar
	w   io.Writer
}

func (p *barProgress) Show(pct float64) { _ = p.bar.Set(int(pct)) }
func (p *barProgress) Done()            { _ = p.bar.Exit(); fmt.Fprintln(p.w) }

type lineProgress struct {
	w    io.Writer
	what string
	last float64
}

func (p *lineProgress) Show(pct float64) {
	if pct != p.last {
		fmt.Fprintf(p.w, "%s: %.0f%%\n", p.what, pct)
		p.last = pct
	}
}
func (p *lineProgress) Done() {}

// waitDownload polls the download of type t every interval, from its state d,
// until it is ready, failed, or ctx ends; ctx's cause says why it ended.
func waitDownload(ctx context.Context, api *stream.Client, uid string, t stream.DownloadType, every time.Duration,
	d stream.Download, p progress) (stream.Download, error) {
	defer p.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		p.Show(d.PercentComplete)
		switch d.Status {
		case stream.DownloadReady:
			return d, nil
		case stream.DownloadError:
			return d, fmt.Errorf("%s download of %s: Stream reports status error: %w", t, uid, stream.ErrDownloadFailed)
		}
		select {
		case <-ctx.Done():
			return d, fmt.Errorf("%s download of %s: %w (%.0f%% complete, status %s)", t, uid, context.Cause(ctx), d.PercentComplete, d.Status)
		case <-tick.C:
		}
		ds, err := api.Downloads(ctx, uid)
		if err != nil {
			if ctx.Err() != nil {
				return d, fmt.Errorf("%s download of %s: %w (%.0f%% complete, status %s)", t, uid, context.Cause(ctx), d.PercentComplete, d.Status)
			}
			return d, err
		}
		next, ok := ds[t]
		if !ok {
			return d, fmt.Errorf("%s download of %s: no longer enabled (deleted while waiting?)", t, uid)
		}
		d = next
	}
}

// describeDownload is a download's state in a few words.
func describeDownload(d stream.Download) string {
	switch d.Status {
	case stream.DownloadReady:
		return "ready: " + d.URL
	case stream.DownloadInProgress:
		return fmt.Sprintf("in progress, %.0f%% complete", d.PercentComplete)
	}
	return d.Status
}

// downloadJSON is one download in `downloads status --json`.
type downloadJSON struct {
	Status          string  `json:"status"`
	PercentComplete float64 `json:"percentComplete"`
	URL             string  `json:"url"`
}

func downloadsStatusCmd(e env, path *string) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status UID",
		Short: "Show the state of the video's MP4 and M4A downloads",
		Long: `status shows both download types of the video: ready (with the URL Stream serves
it at), inprogress (with percentComplete), error, or not enabled. --json prints
{"uid": UID, "downloads": {"default": {...}, "audio": {...}}}, in Stream's own
shape: a type is present only once it has been enabled.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, api, err := apiClient(*path, e.getenv)
			if err != nil {
				return err
			}
			uid := args[0]
			ds, err := api.Downloads(cmd.Context(), uid)
			if errors.Is(err, stream.ErrNotFound) {
				// Stream may answer NotFound for a video with no download
				// enabled: the video itself tells the two apart.
				if _, verr := api.Video(cmd.Context(), uid); verr != nil {
					return verr
				}
				ds, err = stream.Downloads{}, nil
			}
			if err != nil {
				return err
			}
			if asJSON {
				out := map[string]downloadJSON{}
				for t, d := range ds {
					out[string(t)] = downloadJSON{Status: d.Status, PercentComplete: d.PercentComplete, URL: d.URL}
				}
				return json.NewEncoder(e.stdout).Encode(map[string]any{"uid": uid, "downloads": out})
			}
			for _, t := range []stream.DownloadType{stream.Default, stream.Audio} {
				state := "not enabled"
				if d, ok := ds[t]; ok {
					state = describeDownload(d)
				}
				fmt.Fprintf(e.stdout, "%-7s %s %s\n", t, t.File(), state)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func downloadsDeleteCmd(e env, path *string) *cobra.Command {
	var audio bool
	c := &cobra.Command{
		Use:   "delete UID",
		Short: "Delete the video's MP4 (or with --audio its M4A) download",
		Long: `delete removes the generated file from Stream. Downloads of it through the gateway
fail from then on, until it is enabled and generated again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, api, err := apiClient(*path, e.getenv)
			if err != nil {
				return err
			}
			t := downloadType(audio)
			if err := api.DeleteDownload(cmd.Context(), args[0], t); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "deleted the %s download of %s\n", t, args[0])
			return nil
		},
	}
	c.Flags().BoolVar(&audio, "audio", false, "the M4A audio download instead of the MP4")
	return c
}
