// Command streamgate is the download gateway for Cloudflare Stream: `serve` runs
// it, `demo` runs it beside a Stream emulator with nothing to configure,
// `emulator` runs the emulator alone, `config check` validates a configuration,
// `usage report` reads the ledger, and `downloads`, `keys` and `token` prepare
// and check a Stream account by hand: enable downloads, manage signing keys and
// mint a signed delivery URL.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "streamgate:", err)
		os.Exit(1)
	}
}

// env is what a command reads from its surroundings; tests pass their own.
type env struct {
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
}

// run is the whole program: it parses args, wires the components and serves until
// ctx ends or a signal arrives.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := env{getenv: getenv, stdout: stdout, stderr: stderr}

	root := &cobra.Command{
		Use:           "streamgate",
		Short:         "A download gateway for Cloudflare Stream",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(serveCmd(e), demoCmd(e), emulatorCmd(e), configCmd(e), usageCmd(e),
		downloadsCmd(e), keysCmd(e), tokenCmd(e), linksCmd(e))
	return root.ExecuteContext(ctx)
}

func serveCmd(e env) *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(path, e.getenv)
			if err != nil {
				return err
			}
			log, err := newLogger(cfg.Log.Level, cfg.Log.Format, e.stderr)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			g, err := newGateway(cmd.Context(), cfg, log, gatewayOptions{})
			if err != nil {
				return err
			}
			defer g.Close()
			return g.Serve(cmd.Context(), nil)
		},
	}
	c.Flags().StringVar(&path, "config", "", "configuration file (YAML)")
	_ = c.MarkFlagRequired("config")
	return c
}
