package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/streamgate/streamgate/config"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

// The demo's fixed account: videos, users and plans a reader can try by hand. The
// videos are real MP4 and M4A files (streamtest.FastStart, streamtest.MoovAtEnd), so
// a browser, ffplay or ffprobe can play what the gateway hands out.
var demoVideos = []streamtest.Video{
	{UID: "5d5bc37ffcf54c9b82e996823bffbb81", Name: "Welcome", Duration: 600, Size: 24 << 20, ReadyToStream: true, Layout: streamtest.FastStart},
	{UID: "ea95132c15732412d22c1476fa83f27a", Name: "Members-only lecture", Duration: 1800, Size: 48 << 20, RequireSignedURLs: true, ReadyToStream: true, Layout: streamtest.MoovAtEnd},
	{UID: "0a7a5d2bf2c54d1e9a1b3c4d5e6f7a8b", Name: "Downloads not enabled", Duration: 300, Size: 8 << 20, RequireSignedURLs: true, ReadyToStream: true, Layout: streamtest.FastStart},
}

type demoUser struct {
	ID              string  `json:"id"`
	Token           string  `json:"token"`
	Plan            string  `json:"plan"`
	MinutesPerMonth float64 `json:"minutes_per_month"`
}

type demoVideo struct {
	UID      string  `json:"uid"`
	Name     string  `json:"name"`
	Duration float64 `json:"duration"`
	Private  bool    `json:"private"`
	MP4      string  `json:"mp4"`
	Audio    string  `json:"audio"`
}

type demoInfo struct {
	Gateway  string `json:"gateway"`
	Emulator string `json:"emulator"`
	// Admin is the gateway's admin listener: GET /metrics, and the admin API
	// with AdminToken.
	Admin      string      `json:"admin"`
	AdminToken string      `json:"admin_token"`
	Videos     []demoVideo `json:"videos"`
	Users      []demoUser  `json:"users"`
}

func demoCmd(e env) *cobra.Command {
	var listen, emulatorListen, metering string
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run the gateway in front of a built-in Stream emulator, with demo videos and users",
		Long: `demo starts a Stream emulator and the gateway in one process on loopback, with a
generated signing key, a few videos and two users, and needs no file and no network.
Its first line on stdout is a JSON object describing them; curl commands follow.

The gateway's address also serves a demo page at /: pick a user, see the videos'
download status and the user's remaining minutes, play a video, download one, and
watch the minutes drop. The page gets the demo users' portal tokens from
/demo/users, which exists only in the demo: a real portal signs its users in.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), e, listen, emulatorListen, metering, nil)
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "the gateway's address")
	c.Flags().StringVar(&emulatorListen, "emulator-listen", "127.0.0.1:0", "the emulator's address")
	c.Flags().StringVar(&metering, "metering", "proportional", "metering mode: proportional or per-download")
	return c
}

// runDemo serves until ctx ends. ready, when not nil, receives the demo's
// description once both servers accept connections.
func runDemo(ctx context.Context, e env, listen, emulatorListen, metering string, ready func(demoInfo)) error {
	eln, err := net.Listen("tcp", emulatorListen)
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	gln, err := net.Listen("tcp", listen)
	if err != nil {
		eln.Close()
		return fmt.Errorf("gateway: %w (pick another address with --listen)", err)
	}
	emuURL := "http://" + eln.Addr().String()
	gwURL := "http://" + gln.Addr().String()

	apiToken := randomHex(24)
	emu := streamtest.New(streamtest.Options{AccountID: "demo-account", APIToken: apiToken, DeliveryBase: emuURL})
	for _, v := range demoVideos {
		emu.AddVideo(v)
	}
	for _, v := range demoVideos[:2] {
		emu.SetDownloadReady(v.UID, stream.Default)
		emu.SetDownloadReady(v.UID, stream.Audio)
	}
	// The third video has no downloads enabled: asking for one answers 409.

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	keyID := randomHex(16)
	emu.AddSigningKey(keyID, &key.PublicKey)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})

	dir, err := os.MkdirTemp("", "streamgate-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	portalSecret := randomHex(32)
	cfg := config.Default()
	cfg.Listen = gln.Addr().String()
	cfg.PublicURL = gwURL
	cfg.ShutdownGrace = 5 * time.Second
	// The operators' listener, on a port of its own: GET /metrics.
	cfg.Admin.Listen = "127.0.0.1:0"
	adminToken := randomHex(32)
	cfg.Admin.Token = config.Secret{Value: adminToken}
	cfg.Stream.AccountID = "demo-account"
	cfg.Stream.APIToken = config.Secret{Value: apiToken}
	cfg.Stream.APIURL = emuURL + "/client/v4/"
	cfg.Stream.DeliveryURL = emuURL
	cfg.Stream.SigningKeyID = keyID
	cfg.Stream.SigningKey = config.Secret{Value: string(keyPEM)}
	cfg.Auth.Algorithms = []string{"HS256"}
	cfg.Auth.HMACSecrets = []config.HMACSecret{{Secret: config.Secret{Value: portalSecret}}}
	cfg.Auth.Cookie = "portal_session"
	cfg.Links.GrantKeys = []config.GrantKey{{ID: "demo1", Secret: config.Secret{Value: randomHex(32)}}}
	cfg.Metering.Mode = metering
	cfg.Ledger.Path = filepath.Join(dir, "ledger.db")
	cfg.DefaultPlan = "trial"
	cfg.Plans = config.Plans{
		"pro":   {MinutesPerMonth: 100000, Links: config.Rate{PerMinute: 600, Burst: 100}, Downloads: config.Rate{PerMinute: 600, Burst: 100}, MaxConcurrent: 8},
		"trial": {MinutesPerMonth: 25, Links: config.Rate{PerMinute: 60, Burst: 20}, Downloads: config.Rate{PerMinute: 60, Burst: 20}, MaxConcurrent: 2},
	}
	if err := cfg.Validate(e.getenv); err != nil {
		return fmt.Errorf("demo configuration: %w", err)
	}

	info := demoInfo{Gateway: gwURL, Emulator: emuURL}
	for _, v := range demoVideos {
		info.Videos = append(info.Videos, demoVideo{
			UID: v.UID, Name: v.Name, Duration: v.Duration, Private: v.RequireSignedURLs,
			MP4:   gwURL + "/v1/videos/" + v.UID + "/downloads/default.mp4",
			Audio: gwURL + "/v1/videos/" + v.UID + "/downloads/audio.m4a",
		})
	}
	exp := time.Now().Add(24 * time.Hour)
	for _, u := range []struct{ id, plan string }{{"alice", "pro"}, {"bob", "trial"}} {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": u.id, "plan": u.plan, "exp": exp.Unix(), "iat": time.Now().Unix(),
		}).SignedString([]byte(portalSecret))
		if err != nil {
			return err
		}
		info.Users = append(info.Users, demoUser{ID: u.id, Token: tok, Plan: u.plan, MinutesPerMonth: cfg.Plans[u.plan].MinutesPerMonth})
	}

	log, err := newLogger("info", "json", e.stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	// The demo page answers / and /demo/...; the gateway, everything else.
	page := newDemoPage(info)
	g, err := newGateway(ctx, &cfg, log, gatewayOptions{Wrap: page.wrap})
	if err != nil {
		return err
	}
	defer g.Close()

	emuSrv := streamtest.Server(emu.Handler())
	go func() { _ = emuSrv.Serve(streamtest.Listen(eln)) }()
	defer emuSrv.Close()

	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, gln) }()
	// Serve opens the admin listener first; its address goes into the description.
	select {
	case addr := <-g.adminAddr:
		info.Admin, info.AdminToken = "http://"+addr, adminToken
	case err := <-served:
		return demoServed(err)
	}
	line, err := json.Marshal(info)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s\n", line)
	printDemoHelp(e, info)
	if ready != nil {
		ready(info)
	}
	log.Info("demo running", zap.String("gateway", gwURL), zap.String("emulator", emuURL), zap.String("admin", info.Admin))
	return demoServed(<-served)
}

// demoServed is what the demo returns for Serve's result: a server closed by
// the end of the demo is no failure.
func demoServed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func printDemoHelp(e env, d demoInfo) {
	a, b := d.Users[0], d.Users[1]
	pub, priv := d.Videos[0], d.Videos[1]
	fmt.Fprintf(e.stdout, `
streamgate demo: gateway %s, Stream emulator %s
Users: %s (plan %s, %.0f min/month) and %s (plan %s, %.0f min/month).
Open %s/ in a browser to pick a user, play and download the videos and watch the
minutes drop; or use curl:

  export ALICE=%s
  export BOB=%s

  # the downloads of a video, with this user's gateway URLs
  curl -s -H "Authorization: Bearer $ALICE" %s/v1/videos/%s/downloads
  # download the private video's MP4 through the gateway, named lecture.mp4
  curl -s -H "Authorization: Bearer $ALICE" -o lecture.mp4 -D - '%s?filename=lecture'
  # the audio only
  curl -s -H "Authorization: Bearer $ALICE" -o lecture.m4a %s
  # resume: the second half only (206)
  curl -s -H "Authorization: Bearer $ALICE" -H 'Range: bytes=25165824-' -o /dev/null -w '%%{http_code}\n' %s
  # a short-lived link that works in a browser with no other credential
  curl -s -H "Authorization: Bearer $ALICE" -d '{"type":"default","filename":"Welcome"}' %s/v1/videos/%s/links
  # what alice has used this month
  curl -s -H "Authorization: Bearer $ALICE" %s/v1/me/usage
  # bob fetches the first video twice: one download, billed once (10 of his 25 minutes)
  for i in 1 2; do curl -s -H "Authorization: Bearer $BOB" -o /dev/null -w '%%{http_code}\n' %s; done
  # the lecture needs 30 minutes and 15 remain: 403, with the figures
  curl -s -H "Authorization: Bearer $BOB" %s
  # what the gateway counted (bytes, billed and Stream minutes), off the public port
  curl -s %s/metrics
  # the admin API (refusal lookup, link revocation) takes the JSON line's admin_token:
  #   curl -s -H "Authorization: Bearer $ADMIN_TOKEN" %s/v1/admin/refusals/REQUEST_ID

`, d.Gateway, d.Emulator, a.ID, a.Plan, a.MinutesPerMonth, b.ID, b.Plan, b.MinutesPerMonth, d.Gateway,
		a.Token, b.Token,
		d.Gateway, priv.UID,
		priv.MP4, priv.Audio, priv.MP4,
		d.Gateway, pub.UID,
		d.Gateway,
		pub.MP4, priv.MP4,
		d.Admin, d.Admin)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
