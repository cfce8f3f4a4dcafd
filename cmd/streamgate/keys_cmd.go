package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/streamgate/streamgate/stream"
)

func keysCmd(e env) *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "keys",
		Short: "Create, list and revoke the Stream signing keys tokens are signed with",
		Long: `keys manages the account's Stream signing keys with the account and API token of
the configuration file (stream.account_id, stream.api_token, stream.api_url). The
gateway signs its tokens with stream.signing_key_id and stream.signing_key.`,
	}
	configFlag(c, &path)
	c.AddCommand(keysCreateCmd(e, &path), keysListCmd(e, &path), keysRevokeCmd(e, &path))
	return c
}

// stdoutPath is the --out value that asks for the private key on stdout.
const stdoutPath = "-"

func keysCreateCmd(e env, path *string) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "create",
		Short: "Create a signing key and store its private key in a file (mode 0600)",
		Long: `create asks Stream for a new signing key. Stream shows the private key only once:
it is written, as PEM, to --out (a new file, mode 0600; an existing file is never
overwritten, and the file is made before the key is, so a key is never created
where it cannot be kept). Then a configuration snippet with the key's ID is
printed. --out - writes the private key to stdout and the snippet to stderr.`,
		Example: `  streamgate keys create --config streamgate.yaml --out /run/secrets/stream-signing-key.pem`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, api, err := apiClient(*path, e.getenv)
			if err != nil {
				return err
			}
			keyOut, snippetOut := io.Writer(nil), e.stdout
			var f *os.File
			if out == stdoutPath {
				keyOut, snippetOut = e.stdout, e.stderr
			} else {
				if f, err = os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
					return fmt.Errorf("--out: %w (the key is created only where it can be kept)", err)
				}
				keyOut = f
			}
			k, err := api.CreateSigningKey(cmd.Context())
			if err != nil {
				if f != nil {
					f.Close()
					os.Remove(out)
				}
				return err
			}
			if err := writeKey(keyOut, f, k.PEM); err != nil {
				// The key exists at Stream but nowhere else: it can sign nothing
				// anyone holds, so it goes.
				rctx, cancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), 30*time.Second)
				defer cancel()
				if rerr := api.RevokeSigningKey(rctx, k.ID); rerr != nil {
					return fmt.Errorf("storing signing key %s: %w; revoking it failed too, revoke it by hand: %v", k.ID, err, rerr)
				}
				return fmt.Errorf("storing signing key %s: %w; the key was revoked", k.ID, err)
			}
			secret := "{env: STREAM_SIGNING_KEY}  # the PEM printed above"
			if f != nil {
				abs, aerr := filepath.Abs(out)
				if aerr != nil {
					abs = out
				}
				secret = fmt.Sprintf("{file: %q}", abs)
				fmt.Fprintf(snippetOut, "created signing key %s; its private key is in %s (mode 0600)\n", k.ID, abs)
			} else {
				fmt.Fprintf(snippetOut, "created signing key %s\n", k.ID)
			}
			fmt.Fprintf(snippetOut, "# add to the configuration:\nstream:\n  signing_key_id: %q\n  signing_key: %s\n", k.ID, secret)
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "stream-signing-key.pem", "new file for the private key (PEM, mode 0600); - for stdout")
	return c
}

// writeKey writes the PEM to w and, when f is the file behind w, syncs and
// closes it.
func writeKey(w io.Writer, f *os.File, pem []byte) error {
	_, err := w.Write(pem)
	if f == nil {
		return err
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func keysListCmd(e env, path *string) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the account's signing keys: ID and creation time",
		Long: `list prints one signing key a line, its ID and creation time (UTC); the one the
configuration signs with (stream.signing_key_id) is marked "in use".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, api, err := apiClient(*path, e.getenv)
			if err != nil {
				return err
			}
			keys, err := api.SigningKeys(cmd.Context())
			if err != nil {
				return err
			}
			for _, k := range keys {
				mark := ""
				if k.ID == cfg.Stream.SigningKeyID {
					mark = "  in use"
				}
				fmt.Fprintf(e.stdout, "%s  %s%s\n", k.ID, k.Created.UTC().Format(time.RFC3339), mark)
			}
			if len(keys) == 0 {
				fmt.Fprintln(e.stderr, "no signing keys")
			}
			return nil
		},
	}
}

func keysRevokeCmd(e env, path *string) *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a signing key: every token signed with it stops working",
		Long: `revoke deletes the signing key at Stream. Every token signed with it, and so every
link handed out with it, stops working at once. The key the configuration signs
with (stream.signing_key_id) is revoked only with --force: rotate first.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, api, err := apiClient(*path, e.getenv)
			if err != nil {
				return err
			}
			id := args[0]
			if id == cfg.Stream.SigningKeyID && !force {
				return errors.New("key " + id + " is stream.signing_key_id, the key the gateway signs with: " +
					"revoking it breaks every download; configure another key first, or pass --force")
			}
			if err := api.RevokeSigningKey(cmd.Context(), id); err != nil {
				if errors.Is(err, stream.ErrNotFound) {
					return fmt.Errorf("%w (list the keys with `streamgate keys list`)", err)
				}
				return err
			}
			fmt.Fprintf(e.stdout, "revoked signing key %s\n", id)
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "revoke even the key the configuration signs with")
	return c
}
