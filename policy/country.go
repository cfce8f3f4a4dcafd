package policy

import (
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Reasons a Decision denies a request. They name the rule, never the
// configured lists, so they are safe to show to the user.
const (
	ReasonCountryBlocked    = "country_blocked"
	ReasonCountryNotAllowed = "country_not_allowed"
	ReasonCountryUnknown    = "country_unknown"
)

// Values of CountryRules.UnknownCountry.
const (
	UnknownAllow = "allow"
	UnknownDeny  = "deny"
)

// Decision is the outcome of a policy check.
type Decision struct {
	// Allowed reports whether the request may go on.
	Allowed bool
	// Reason is a stable, machine-readable code when Allowed is false
	// (one of the Reason constants), and "" otherwise.
	Reason string
}

// CountryRules restricts downloads by the country of the client IP. Codes are
// ISO 3166-1 alpha-2, two uppercase letters ("GB").
type CountryRules struct {
	// Allow, when non-empty, admits only these countries. Default: nil, every
	// country.
	Allow []string
	// Block refuses these countries; it wins over Allow. Default: nil.
	Block []string
	// UnknownCountry decides for a client whose country is unknown (no GeoIP
	// database, an address it does not cover): "allow" or "deny". It alone
	// governs unknown countries; Allow does not apply to them. Default: "allow".
	UnknownCountry string
}

// countrySet holds country codes as a bitmap of the 26x26 two-letter codes.
type countrySet [26 * 26]bool

func (s *countrySet) has(code string) bool { return s[countryIndex(code)] }

func countryIndex(code string) int { return int(code[0]-'A')*26 + int(code[1]-'A') }

func validCountryCode(code string) bool {
	return len(code) == 2 && code[0] >= 'A' && code[0] <= 'Z' && code[1] >= 'A' && code[1] <= 'Z'
}

type compiledRules struct {
	rules       CountryRules // as configured, for Rules
	allow       countrySet
	hasAllow    bool
	block       countrySet
	denyUnknown bool
}

// CountryPolicy applies CountryRules, globally and per plan. It is immutable
// and safe for concurrent use.
type CountryPolicy struct {
	global compiledRules
	plans  map[string]*compiledRules
}

// NewCountryPolicy builds a policy from the global rules and per-plan
// overrides. A plan's rules replace the global ones field by field when set:
// a non-nil Allow or Block (an empty, non-nil list clears the global one) and
// a non-empty UnknownCountry. Every invalid code or value is reported at
// once, naming the plan, the field and the entry.
func NewCountryPolicy(global CountryRules, perPlan map[string]CountryRules) (*CountryPolicy, error) {
	var errs []error
	p := &CountryPolicy{plans: make(map[string]*compiledRules, len(perPlan))}
	p.global = compileRules(global, "country rules", &errs)
	for _, plan := range slices.Sorted(maps.Keys(perPlan)) {
		override := perPlan[plan]
		merged := global
		if override.Allow != nil {
			merged.Allow = override.Allow
		}
		if override.Block != nil {
			merged.Block = override.Block
		}
		if override.UnknownCountry != "" {
			merged.UnknownCountry = override.UnknownCountry
		}
		// Report only the plan's own entries; the global ones are reported once.
		_ = compileRules(override, fmt.Sprintf("country rules for plan %q", plan), &errs)
		c := compileRules(merged, "", nil)
		p.plans[plan] = &c
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// compileRules builds the bitmaps for r. Problems are appended to errs, each
// prefixed with where; a nil errs skips reporting.
func compileRules(r CountryRules, where string, errs *[]error) compiledRules {
	c := compiledRules{
		rules: CountryRules{
			Allow:          slices.Clone(r.Allow),
			Block:          slices.Clone(r.Block),
			UnknownCountry: r.UnknownCountry,
		},
		hasAllow: len(r.Allow) > 0,
	}
	report := func(format string, args ...any) {
		if errs != nil {
			*errs = append(*errs, fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...)))
		}
	}
	for _, code := range r.Allow {
		if !validCountryCode(code) {
			report("allow: %q is not a country code (two uppercase letters, ISO 3166-1 alpha-2)", code)
			continue
		}
		c.allow[countryIndex(code)] = true
	}
	for _, code := range r.Block {
		if !validCountryCode(code) {
			report("block: %q is not a country code (two uppercase letters, ISO 3166-1 alpha-2)", code)
			continue
		}
		c.block[countryIndex(code)] = true
	}
	switch r.UnknownCountry {
	case "", UnknownAllow:
	case UnknownDeny:
		c.denyUnknown = true
	default:
		report("unknown_country: %q is neither %q nor %q", r.UnknownCountry, UnknownAllow, UnknownDeny)
	}
	if c.rules.UnknownCountry == "" {
		c.rules.UnknownCountry = UnknownAllow
	}
	return c
}

func (p *CountryPolicy) rulesFor(plan string) *compiledRules {
	if c, ok := p.plans[plan]; ok {
		return c
	}
	return &p.global
}

// Check decides whether a client in country (as returned by GeoIP.Country;
// "" or anything that is not a country code counts as unknown) may download
// under plan. A plan without rules of its own gets the global rules. A nil
// *CountryPolicy allows everything.
func (p *CountryPolicy) Check(plan, country string) Decision {
	if p == nil {
		return Decision{Allowed: true}
	}
	c := p.rulesFor(plan)
	switch {
	case !validCountryCode(country):
		if c.denyUnknown {
			return Decision{Reason: ReasonCountryUnknown}
		}
	case c.block.has(country):
		return Decision{Reason: ReasonCountryBlocked}
	case c.hasAllow && !c.allow.has(country):
		return Decision{Reason: ReasonCountryNotAllowed}
	}
	return Decision{Allowed: true}
}

// Rules returns the effective rules for plan (the plan's overrides merged
// onto the global rules), with UnknownCountry filled in. The slices are
// copies. It serves callers that must restate the rules elsewhere, such as
// the access rules of a Stream token.
func (p *CountryPolicy) Rules(plan string) CountryRules {
	if p == nil {
		return CountryRules{UnknownCountry: UnknownAllow}
	}
	r := p.rulesFor(plan).rules
	return CountryRules{
		Allow:          slices.Clone(r.Allow),
		Block:          slices.Clone(r.Block),
		UnknownCountry: r.UnknownCountry,
	}
}
