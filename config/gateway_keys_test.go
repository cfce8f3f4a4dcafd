package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/streamgate/streamgate/stream"
)

func TestPlanMaxBytesPerSecond(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    int64
		problem bool
	}{
		{name: "left out is unpaced", value: "", want: 0},
		{name: "zero is unpaced", value: "0", want: 0},
		{name: "one MiB per second", value: "1048576", want: 1 << 20},
		{name: "the slowest allowed", value: "1024", want: 1024},
		{name: "slower than allowed", value: "1023", problem: true},
		{name: "negative", value: "-1", problem: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yml := minimalYAML + "plans:\n  free:\n    minutes_per_month: 10\n"
			if tt.value != "" {
				yml += "    max_bytes_per_second: " + tt.value + "\n"
			}
			c, err := Parse([]byte(yml), goodEnv().get)
			if tt.problem {
				if err == nil {
					t.Fatal("Parse: got nil error")
				}
				if keys := problemKeys(t, err); !slices.Equal(keys, []string{"plans.free.max_bytes_per_second"}) {
					t.Fatalf("problem keys = %v, want [plans.free.max_bytes_per_second]", keys)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := c.Plans["free"].MaxBytesPerSecond; got != tt.want {
				t.Errorf("max_bytes_per_second = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestAutoEnable(t *testing.T) {
	secrets := "stream:\n  webhook_secrets: [{value: whsec}, {env: HOOK_SECRET}]\n"
	tests := []struct {
		name     string
		yml      string
		problems []string
		want     []stream.DownloadType
		hook     bool
	}{
		{name: "off by default", yml: ""},
		{name: "both types", yml: secrets + "downloads:\n  auto_enable: [default, audio]\n",
			want: []stream.DownloadType{stream.Default, stream.Audio}, hook: true},
		{name: "secrets alone acknowledge webhooks", yml: secrets, hook: true},
		{name: "auto_enable without a secret", yml: "downloads:\n  auto_enable: [default]\n",
			problems: []string{"downloads.auto_enable"}},
		{name: "unknown and repeated types", yml: secrets + "downloads:\n  auto_enable: [hls, audio, audio]\n",
			problems: []string{"downloads.auto_enable[0]", "downloads.auto_enable[2]"}},
		{name: "a secret that does not resolve", yml: "stream:\n  webhook_secrets: [{env: UNSET_SECRET}]\n",
			problems: []string{"stream.webhook_secrets[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := goodEnv()
			e["HOOK_SECRET"] = "second-secret"
			// The stream section of minimalYAML is merged by hand: YAML keys
			// may not repeat.
			yml := minimalYAML
			if s, ok := strings.CutPrefix(tt.yml, "stream:\n"); ok {
				yml = strings.Replace(minimalYAML, "stream:\n", "stream:\n"+s[:strings.Index(s, "\n")+1], 1) + s[strings.Index(s, "\n")+1:]
			} else {
				yml += tt.yml
			}
			c, err := Parse([]byte(yml), e.get)
			if tt.problems != nil {
				if err == nil {
					t.Fatal("Parse: got nil error")
				}
				if keys := problemKeys(t, err); !slices.Equal(keys, tt.problems) {
					t.Fatalf("problem keys = %v, want %v", keys, tt.problems)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := c.AutoEnable(); !slices.Equal(got, tt.want) {
				t.Errorf("AutoEnable() = %v, want %v", got, tt.want)
			}
			wc, ok := c.Webhook()
			if ok != tt.hook {
				t.Fatalf("Webhook() ok = %v, want %v", ok, tt.hook)
			}
			if ok && (len(wc.Secrets) != 2 || string(wc.Secrets[0]) != "whsec" || string(wc.Secrets[1]) != "second-secret") {
				t.Errorf("Webhook() secrets are not the two configured")
			}
		})
	}
}

func TestNotesSayPacingIsPerReplica(t *testing.T) {
	for _, tt := range []struct {
		bps  string
		want bool
	}{{"0", false}, {"1048576", true}} {
		c, err := Parse([]byte(minimalYAML+"plans:\n  free:\n    max_bytes_per_second: "+tt.bps+"\n"), goodEnv().get)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		got := slices.ContainsFunc(c.Notes(), func(n string) bool { return strings.HasPrefix(n, "max_bytes_per_second is per replica") })
		if got != tt.want {
			t.Errorf("max_bytes_per_second %s: note given = %v, want %v", tt.bps, got, tt.want)
		}
	}
}
