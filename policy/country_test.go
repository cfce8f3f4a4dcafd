package policy

import (
	"slices"
	"strings"
	"testing"
)

func TestCountryPolicyCheck(t *testing.T) {
	p, err := NewCountryPolicy(
		CountryRules{Block: []string{"KP", "RU"}},
		map[string]CountryRules{
			"uk-only":  {Allow: []string{"GB"}, UnknownCountry: "deny"},
			"eu":       {Allow: []string{"DE", "FR", "RU"}},
			"anywhere": {Block: []string{}},
			"strict":   {UnknownCountry: "deny"},
		},
	)
	if err != nil {
		t.Fatalf("NewCountryPolicy: %v", err)
	}
	allowed := Decision{Allowed: true}
	tests := []struct {
		name    string
		plan    string
		country string
		want    Decision
	}{
		{name: "global allowed", plan: "", country: "GB", want: allowed},
		{name: "global blocked", plan: "", country: "KP", want: Decision{Reason: ReasonCountryBlocked}},
		{name: "global unknown allowed by default", plan: "", country: "", want: allowed},
		{name: "plan without rules gets global", plan: "free", country: "RU", want: Decision{Reason: ReasonCountryBlocked}},
		{name: "allow list admits", plan: "uk-only", country: "GB", want: allowed},
		{name: "not in allow list", plan: "uk-only", country: "FR", want: Decision{Reason: ReasonCountryNotAllowed}},
		{name: "global block still applies under a plan allow list", plan: "uk-only", country: "KP", want: Decision{Reason: ReasonCountryBlocked}},
		{name: "unknown denied by plan", plan: "uk-only", country: "", want: Decision{Reason: ReasonCountryUnknown}},
		{name: "block wins over allow", plan: "eu", country: "RU", want: Decision{Reason: ReasonCountryBlocked}},
		{name: "allow list with global block", plan: "eu", country: "DE", want: allowed},
		{name: "unknown allowed despite allow list", plan: "eu", country: "", want: allowed},
		{name: "empty block clears global block", plan: "anywhere", country: "KP", want: allowed},
		{name: "unknown deny only", plan: "strict", country: "", want: Decision{Reason: ReasonCountryUnknown}},
		{name: "unknown deny keeps global block", plan: "strict", country: "RU", want: Decision{Reason: ReasonCountryBlocked}},
		{name: "unknown deny allows known", plan: "strict", country: "US", want: allowed},
		{name: "malformed country is unknown", plan: "strict", country: "gb", want: Decision{Reason: ReasonCountryUnknown}},
		{name: "too long country is unknown", plan: "strict", country: "GBR", want: Decision{Reason: ReasonCountryUnknown}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Check(tt.plan, tt.country); got != tt.want {
				t.Errorf("Check(%q, %q) = %+v, want %+v", tt.plan, tt.country, got, tt.want)
			}
		})
	}
}

func TestCountryPolicyReasonsHideLists(t *testing.T) {
	p, err := NewCountryPolicy(CountryRules{Allow: []string{"GB"}, Block: []string{"FR"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"FR", "DE"} {
		if d := p.Check("", c); d.Allowed || strings.Contains(d.Reason, "GB") || strings.Contains(d.Reason, "FR") {
			t.Errorf("Check(%q) = %+v, want a denial without the lists", c, d)
		}
	}
}

func TestCountryPolicyNil(t *testing.T) {
	var p *CountryPolicy
	if d := p.Check("any", ""); !d.Allowed {
		t.Errorf("nil CountryPolicy: Check = %+v, want allowed", d)
	}
}

func TestCountryPolicyRules(t *testing.T) {
	global := CountryRules{Block: []string{"KP"}}
	p, err := NewCountryPolicy(global, map[string]CountryRules{"uk": {Allow: []string{"GB"}}})
	if err != nil {
		t.Fatal(err)
	}
	got := p.Rules("uk")
	if !slices.Equal(got.Allow, []string{"GB"}) || !slices.Equal(got.Block, []string{"KP"}) || got.UnknownCountry != "allow" {
		t.Errorf("Rules(uk) = %+v, want allow [GB], block [KP], unknown allow", got)
	}
	got.Block[0] = "XX"
	global.Block[0] = "YY"
	if d := p.Check("uk", "KP"); d.Reason != ReasonCountryBlocked {
		t.Errorf("after changing copies, Check(uk, KP) = %+v, want blocked", d)
	}
	if got := p.Rules("other"); !slices.Equal(got.Block, []string{"KP"}) || got.Allow != nil {
		t.Errorf("Rules(other) = %+v, want the global rules", got)
	}
}

func TestNewCountryPolicyErrors(t *testing.T) {
	_, err := NewCountryPolicy(
		CountryRules{Allow: []string{"gb", "GB"}, Block: []string{"GBR"}, UnknownCountry: "maybe"},
		map[string]CountryRules{
			"pro":  {Block: []string{"F1", ""}},
			"fine": {Allow: []string{"DE"}},
		},
	)
	if err == nil {
		t.Fatal("NewCountryPolicy: got nil error")
	}
	for _, want := range []string{
		`allow: "gb"`,
		`block: "GBR"`,
		`unknown_country: "maybe"`,
		`plan "pro": block: "F1"`,
		`plan "pro": block: ""`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "fine") {
		t.Errorf("error %q blames a valid plan", err)
	}
}

func BenchmarkCountryPolicyCheck(b *testing.B) {
	p, err := NewCountryPolicy(CountryRules{Block: []string{"KP", "RU"}}, map[string]CountryRules{"uk": {Allow: []string{"GB"}}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !p.Check("uk", "GB").Allowed {
			b.Fatal("denied")
		}
	}
}
