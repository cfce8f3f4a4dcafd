package config

import (
	"crypto"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/time/rate"

	"github.com/streamgate/streamgate/auth"
	"github.com/streamgate/streamgate/policy"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/usage"
)

// The settings below are what the components are built from, in their own
// types, so the wiring hands them over as they are. Each assumes a Config that
// Validate accepted.

// StreamClient is the Stream API client's configuration.
func (c *Config) StreamClient() stream.ClientConfig {
	return stream.ClientConfig{
		AccountID: c.Stream.AccountID,
		APIToken:  string(c.Stream.APIToken.Bytes()),
		BaseURL:   c.Stream.APIURL,
	}
}

// Verifier is the portal token verifier's configuration, with the public keys
// file read. PEM carries no key IDs: the first key serves tokens without a
// kid, and every key answers to its position in the file ("0", "1", ...).
// The caller adds the clock and the JWKS error hook.
func (c *Config) Verifier() (auth.VerifierConfig, error) {
	a := c.Auth
	vc := auth.VerifierConfig{
		Algorithms: a.Algorithms,
		JWKSURL:    a.JWKSURL,
		Issuer:     a.Issuer,
		Audience:   a.Audience,
		Leeway:     a.Leeway,
		UserClaim:  a.UserClaim,
		PlanClaim:  a.PlanClaim,
		Cookie:     a.Cookie,
	}
	if len(a.HMACSecrets) > 0 {
		vc.HMACSecrets = map[string][]byte{}
		for _, s := range a.HMACSecrets {
			vc.HMACSecrets[s.KID] = s.Secret.Bytes()
		}
	}
	if a.PublicKeysFile != "" {
		b, err := os.ReadFile(a.PublicKeysFile)
		if err != nil {
			return vc, fmt.Errorf("auth.public_keys_file: %w", err)
		}
		keys, err := auth.LoadPublicKeys(b)
		if err != nil {
			return vc, fmt.Errorf("auth.public_keys_file: %w", err)
		}
		vc.PublicKeys = map[string]crypto.PublicKey{}
		for i, k := range keys {
			vc.PublicKeys[strconv.Itoa(i)] = k
		}
		if len(keys) > 0 {
			vc.PublicKeys[""] = keys[0]
		}
	}
	return vc, nil
}

// GrantKeys are the link grant keys; none in direct link mode.
func (c *Config) GrantKeys() []auth.GrantKey {
	var gks []auth.GrantKey
	for _, k := range c.Links.GrantKeys {
		gks = append(gks, auth.GrantKey{ID: k.ID, Secret: k.Secret.Bytes()})
	}
	return gks
}

// CountryRules are the global country rules and each plan's overrides, for
// policy.NewCountryPolicy, which merges them. A plan that sets countries
// replaces both global lists, so its lists are never nil.
func (c *Config) CountryRules() (global policy.CountryRules, perPlan map[string]policy.CountryRules) {
	global = policy.CountryRules{
		Allow:          c.Policy.Countries.Allow,
		Block:          c.Policy.Countries.Block,
		UnknownCountry: c.Policy.UnknownCountry,
	}
	perPlan = map[string]policy.CountryRules{}
	for name, p := range c.Plans {
		if p.Countries == nil {
			continue
		}
		perPlan[name] = policy.CountryRules{
			Allow:          nonNil(p.Countries.Allow),
			Block:          nonNil(p.Countries.Block),
			UnknownCountry: p.Countries.UnknownCountry,
		}
	}
	return global, perPlan
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Limit is r as a limiter's bucket called name.
func (r Rate) Limit(name string) policy.Limit {
	return policy.Limit{Rate: rate.Limit(r.PerSecond()), Burst: r.Burst, Name: name}
}

// Meter is the meter's configuration. The caller adds the clock and the logger.
func (c *Config) Meter() (usage.MeterConfig, error) {
	mode, err := usage.ParseMode(c.Metering.Mode)
	if err != nil {
		return usage.MeterConfig{}, fmt.Errorf("metering.mode: %w", err)
	}
	return usage.MeterConfig{
		Mode:            mode,
		ResumeWindow:    c.Metering.ResumeWindow,
		CopiesPerCharge: int64(c.Metering.CopiesPerCharge),
		CheckpointEvery: c.Metering.CheckpointEvery,
	}, nil
}

// Webhook is the webhook verifier's configuration; ok is false when no
// secret is configured and the webhook route stays off. The caller adds the
// clock and, for several replicas, a shared replay cache.
func (c *Config) Webhook() (wc stream.WebhookConfig, ok bool) {
	for _, s := range c.Stream.WebhookSecrets {
		wc.Secrets = append(wc.Secrets, s.Bytes())
	}
	return wc, len(wc.Secrets) > 0
}

// AutoEnable are the download types a video-ready webhook enables.
func (c *Config) AutoEnable() []stream.DownloadType {
	var ts []stream.DownloadType
	for _, t := range c.Downloads.AutoEnable {
		if dt, err := stream.ParseDownloadType(t); err == nil {
			ts = append(ts, dt)
		}
	}
	return ts
}
