package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// adminKeys are the configuration keys `links revoke` reads.
var adminKeys = []string{"admin.listen", "admin.token"}

// adminCallTimeout bounds one call to the admin API.
const adminCallTimeout = 15 * time.Second

func linksCmd(e env) *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "links",
		Short: "Control the links the gateway has handed out",
	}
	configFlag(c, &path)
	c.AddCommand(linksRevokeCmd(e, &path))
	return c
}

// linksRevokeCmd calls the admin API of a running gateway rather than writing
// to the ledger itself: the gateway validates and logs the revocation in one
// place, the operator's machine needs the admin token only, not the ledger's
// credentials, and a SQLite ledger stays with the one process that owns it.
func linksRevokeCmd(e env, path *string) *cobra.Command {
	var user, video, id, adminURL string
	c := &cobra.Command{
		Use:   "revoke (--user USER [--video UID] | --id LINK_ID)",
		Short: "Revoke a user's links, or one link",
		Long: `revoke asks a running gateway, through its admin API (admin.listen, with
admin.token as the bearer token), to refuse links:

  --user U             every link of user U issued before now
  --user U --video V   U's links to video V issued before now
  --id ID              the one link whose id a link request answered with

The revocation is written to the ledger, which every replica reads when a
link's request opens, so it holds everywhere at once; refused links answer 403
link_revoked. Links made afterwards work (links carry their issue time to the
second, so wait for the next second before making a new one). --admin
overrides the admin server's URL, which is otherwise http://admin.listen.`,
		Example: `  streamgate links revoke --config streamgate.yaml --user user-42
  streamgate links revoke --config streamgate.yaml --id 3QZKXC7EJ5OBCDXN6WMV2TQ4LA`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := revokeBody(user, video, id)
			if err != nil {
				return err
			}
			cfg, err := loadPartialConfig(*path, e.getenv, adminKeys)
			if err != nil {
				return err
			}
			token := cfg.Admin.Token.Bytes()
			if len(token) == 0 {
				return errors.New("admin.token is not set: the admin API is off")
			}
			if adminURL == "" {
				if adminURL, err = adminBase(cfg.Admin.Listen); err != nil {
					return err
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), adminCallTimeout)
			defer cancel()
			var out map[string]any
			if err := callAdmin(ctx, adminURL, "/v1/admin/links/revoke", token, body, &out); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, revokedLine(out))
			return nil
		},
	}
	c.Flags().StringVar(&user, "user", "", "revoke this user's links")
	c.Flags().StringVar(&video, "video", "", "with --user: only the links to this video")
	c.Flags().StringVar(&id, "id", "", "revoke the link with this id")
	c.Flags().StringVar(&adminURL, "admin", "", "the admin server's URL (default http://admin.listen)")
	return c
}

// revokeBody is the admin API's request for the flags given.
func revokeBody(user, video, id string) ([]byte, error) {
	switch {
	case id != "" && (user != "" || video != ""):
		return nil, errors.New("give --id, or --user with an optional --video, not both")
	case id != "":
		return json.Marshal(map[string]string{"link_id": id})
	case user == "":
		return nil, errors.New("give --user USER [--video UID], or --id LINK_ID")
	case video != "":
		return json.Marshal(map[string]string{"user": user, "video": video})
	}
	return json.Marshal(map[string]string{"user": user})
}

// adminBase is the URL of the admin server listening on listen: a listener on
// every address (":9090", "0.0.0.0:9090", "[::]:9090") is called on loopback.
func adminBase(listen string) (string, error) {
	if listen == "" {
		return "", errors.New("admin.listen is not set: no admin server to call (or give --admin URL)")
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("admin.listen %q: %w", listen, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// callAdmin posts body to the admin API's path with the token and decodes a
// 200 answer into out; any other answer is an error carrying its problem.
func callAdmin(ctx context.Context, base, path string, token, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var p struct {
			Type   string `json:"type"`
			Detail string `json:"detail"`
		}
		if json.Unmarshal(data, &p) == nil && p.Detail != "" {
			return fmt.Errorf("admin API: %s (%s): %s", resp.Status, strings.TrimPrefix(p.Type, "urn:streamgate:problem:"), p.Detail)
		}
		return fmt.Errorf("admin API: %s", resp.Status)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin API: answer: %w", err)
	}
	return nil
}

// revokedLine says what the admin API revoked.
func revokedLine(a map[string]any) string {
	s := func(k string) string { v, _ := a[k].(string); return v }
	switch s("revoked") {
	case "link":
		return fmt.Sprintf("revoked link %s (kept until %s)", s("link_id"), s("until"))
	case "user_video":
		return fmt.Sprintf("revoked the links of user %q to video %s issued before %s", s("user"), s("video"), s("issued_before"))
	case "user":
		return fmt.Sprintf("revoked the links of user %q issued before %s", s("user"), s("issued_before"))
	}
	b, _ := json.Marshal(a)
	return "revoked: " + string(b)
}
