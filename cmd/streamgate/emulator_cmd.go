package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

func emulatorCmd(e env) *cobra.Command {
	var listen, account, token, geoip string
	var readyAfter time.Duration
	c := &cobra.Command{
		Use:   "emulator",
		Short: "Run the Stream emulator (API and delivery) with the demo videos",
		Long: `emulator serves an in-memory Cloudflare Stream account: the API under
/client/v4/accounts/ACCOUNT/stream/... and downloads under /UID-or-TOKEN/downloads/....
Create a signing key with POST .../stream/keys to sign tokens for private videos.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			url := "http://" + ln.Addr().String()
			opts := streamtest.Options{AccountID: account, APIToken: token, DeliveryBase: url, ReadyAfter: readyAfter}
			if geoip != "" {
				if opts.GeoIP, err = os.ReadFile(geoip); err != nil {
					ln.Close()
					return err
				}
			}
			emu := streamtest.New(opts)
			for _, v := range demoVideos {
				emu.AddVideo(v)
			}
			for _, v := range demoVideos[:2] {
				emu.SetDownloadReady(v.UID, stream.Default)
				emu.SetDownloadReady(v.UID, stream.Audio)
			}
			line, _ := json.Marshal(map[string]any{
				"emulator": url, "api": url + "/client/v4/", "account_id": emu.AccountID(), "videos": demoVideos,
			})
			fmt.Fprintf(e.stdout, "%s\n", line)
			srv := streamtest.Server(emu.Handler())
			go func() {
				<-cmd.Context().Done()
				_ = srv.Close()
			}()
			if err := srv.Serve(streamtest.Listen(ln)); err != http.ErrServerClosed {
				return err
			}
			return nil
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8081", "address to listen on")
	c.Flags().StringVar(&account, "account", "test-account", "the account ID the API answers for")
	c.Flags().StringVar(&token, "api-token", "test-token", "the bearer token the API requires")
	c.Flags().StringVar(&geoip, "geoip", "", "a MaxMind-format country database for access rules")
	c.Flags().DurationVar(&readyAfter, "ready-after", 10*time.Second, "time a newly enabled download takes to become ready")
	return c
}
