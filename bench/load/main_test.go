package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"gateway", []string{"-clients", "3", "-duration", "200ms", "-size", "256KiB", "-videos", "2"}},
		// Whole downloads only: a resume whose first part already reached the
		// client whole is a new download, which the emulator's per-download rule
		// (ranges at byte 0 only) does not count.
		{"per-download", []string{"-clients", "2", "-duration", "100ms", "-size", "64KiB", "-mode", "per-download", "-mix", "full=1,link=1"}},
		{"direct", []string{"-clients", "2", "-duration", "100ms", "-size", "64KiB", "-direct", "-mix", "full=1,resume=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if err := run(context.Background(), append(tc.args, "-json"), &out, &errOut); err != nil {
				t.Fatalf("run: %v\n%s", err, errOut.String())
			}
			var res result
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("decode %q: %v", out.String(), err)
			}
			if res.Requests == 0 || res.ErrorsTotal != 0 {
				t.Errorf("%d requests, %d errors (%v), want some and none", res.Requests, res.ErrorsTotal, res.Errors)
			}
			if res.GoroutinesAfter > res.Start.Goroutines {
				t.Errorf("goroutines: %d before, %d after:\n%s", res.Start.Goroutines, res.GoroutinesAfter, res.Leaked)
			}
			if tc.name == "direct" {
				if res.Metering != nil {
					t.Errorf("direct run reports metering: %+v", res.Metering)
				}
				return
			}
			// Clients here read every body to its end or drop it, so the ledger and
			// the emulator can differ only by what was in flight when a client left.
			if m := res.Metering; m == nil || m.EmulatorMinutes <= 0 || m.DiffPercent < -10 || m.DiffPercent > 1 {
				t.Errorf("metering %+v: want the ledger within a few %% of the emulator", res.Metering)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error; "" for none
	}{
		{nil, ""},
		{[]string{"-size", "8MiB", "-read-rate", "2MB"}, ""},
		{[]string{"-size", "lots"}, "-size"},
		{[]string{"-mix", "full=1,bogus=2"}, "-mix"},
		{[]string{"-mix", "full=0"}, "all weights are 0"},
		{[]string{"-mode", "free"}, "-mode"},
		{[]string{"-gateway", "http://127.0.0.1:1"}, "needs -token and -video"},
		{[]string{"-direct"}, "makes no links"},
		{[]string{"-clients", "0"}, "-clients"},
	} {
		_, err := parseFlags(tc.args, &bytes.Buffer{})
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFlags(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"8MiB": 8 << 20, "64KiB": 64 << 10, "1.5GiB": 3 << 29, "16MB": 16e6, "100": 100, "2 MiB": 2 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}
