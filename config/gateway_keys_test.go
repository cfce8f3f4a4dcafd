package config

import (
	"slices"
	"testing"
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
