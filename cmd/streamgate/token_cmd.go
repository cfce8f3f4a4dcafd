package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/streamgate/streamgate/stream"
)

// signingKeys are the configuration keys `token mint` reads.
var signingKeys = []string{"stream.delivery_url", "stream.signing_key_id", "stream.signing_key", "stream.token_ttl"}

// mintSkew backdates a hand-minted token's nbf, so a clock a little ahead of
// Stream's does not make it not yet valid.
const mintSkew = 30 * time.Second

func tokenCmd(e env) *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "token",
		Short: "Mint Stream tokens by hand, to check a setup",
	}
	configFlag(c, &path)
	c.AddCommand(tokenMintCmd(e, &path))
	return c
}

func tokenMintCmd(e env, path *string) *cobra.Command {
	var (
		typ       string
		ttl       time.Duration
		countries []string
		ip        string
	)
	c := &cobra.Command{
		Use:   "mint UID",
		Short: "Print a signed delivery URL for the video's download",
		Long: `mint signs a Stream token with the configured signing key (stream.signing_key_id,
stream.signing_key) and prints the delivery URL it opens, under stream.delivery_url:
fetch it with curl to check the key, the video and the downloads by hand. The
token carries downloadable: true and lives --ttl (default stream.token_ttl, at
most 24h).

--country CC (repeatable) allows only those countries and --ip ADDR only that
address or CIDR, each followed by a rule that blocks everyone else, as the
gateway's direct links do. Stream takes the first rule that matches, so a token
cannot require a country and an address at once: give one or the other.

The URL is a credential until it expires: do not paste it anywhere public.`,
		Example: `  curl -fsSI "$(streamgate token mint --config streamgate.yaml 6b9e68b07dfee8cc2d116e4c51d6a957 --country GB)"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := stream.ParseDownloadType(typ)
			if err != nil {
				return fmt.Errorf("--type: %w", err)
			}
			rules, err := mintRules(countries, ip)
			if err != nil {
				return err
			}
			cfg, err := loadPartialConfig(*path, e.getenv, signingKeys)
			if err != nil {
				return err
			}
			if ttl == 0 {
				ttl = cfg.Stream.TokenTTL
			}
			if ttl < 0 || ttl > stream.MaxTokenLifetime {
				return fmt.Errorf("--ttl %s: want more than 0 and at most %s", ttl, stream.MaxTokenLifetime)
			}
			signer, err := stream.NewSigner(cfg.Stream.SigningKeyID, cfg.Stream.SigningKey.Bytes())
			if err != nil {
				return err
			}
			uid := args[0]
			if !stream.ValidUID(uid) {
				return errors.New("invalid video uid: want 32 lowercase hex characters")
			}
			now := time.Now()
			tok, err := signer.Mint(stream.Claims{
				Video: uid, NotBefore: now.Add(-mintSkew), ExpiresAt: now.Add(ttl), Downloadable: true, AccessRules: rules,
			}, now)
			if err != nil {
				return err
			}
			u, err := stream.DeliveryURL(cfg.Stream.DeliveryURL, tok, t, "")
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, u)
			return nil
		},
	}
	c.Flags().StringVar(&typ, "type", "default", "default (the MP4) or audio (the M4A)")
	c.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime (default stream.token_ttl; at most 24h)")
	c.Flags().StringSliceVar(&countries, "country", nil, "allow only this country (ISO 3166-1 alpha-2); repeatable")
	c.Flags().StringVar(&ip, "ip", "", "allow only this address or CIDR")
	return c
}

// mintRules are the access rules of a hand-minted token: an allow rule for the
// countries or the address, then one that blocks the rest.
func mintRules(countries []string, ip string) ([]stream.AccessRule, error) {
	var allow stream.AccessRule
	switch {
	case len(countries) > 0 && ip != "":
		return nil, errors.New("--country and --ip together: Stream takes the first rule that matches, so a token cannot require both; give one")
	case len(countries) > 0:
		cc := make([]string, len(countries))
		for i, c := range countries {
			cc[i] = strings.ToUpper(strings.TrimSpace(c))
			if !stream.ValidCountry(cc[i]) {
				return nil, fmt.Errorf("--country %q: want a two-letter code (ISO 3166-1 alpha-2)", c)
			}
		}
		allow = stream.AccessRule{Type: stream.RuleCountry, Action: stream.ActionAllow, Country: cc}
	case ip != "":
		p, err := stream.ParseIPOrPrefix(ip)
		if err != nil {
			return nil, fmt.Errorf("--ip %q: want an address or CIDR", ip)
		}
		s := p.String()
		if p.IsSingleIP() {
			s = p.Addr().String()
		}
		allow = stream.AccessRule{Type: stream.RuleIPSrc, Action: stream.ActionAllow, IP: []string{s}}
	default:
		return nil, nil
	}
	return []stream.AccessRule{allow, {Type: stream.RuleAny, Action: stream.ActionBlock}}, nil
}
