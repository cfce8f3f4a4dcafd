package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestMain lets the test binary serve as the harness's own servers, which
// the harness starts by running its executable again with -serve.
func TestMain(m *testing.M) {
	if slices.Contains(os.Args, "-serve") {
		if err := run(context.Background(), os.Args[1:], func(string) string { return "" }, os.Stdout, os.Stderr); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmoke runs the harness's short mode against every variant and checks
// the report it writes into a copy of docs/benchmarks.md.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds streamgate and runs every proxy: not in -short")
	}
	doc := filepath.Join(t.TempDir(), "benchmarks.md")
	before := "# Benchmarks\n\nText before.\n\n" + beginMarker + "\nold figures\n" + endMarker + "\n\nText after.\n"
	if err := os.WriteFile(doc, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-smoke", "-out", doc}
	if err := run(context.Background(), args, func(string) string { return "" }, io.Discard, testWriter{t}); err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{"Text before.", "Text after.", "load average", "go1."} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(got, "old figures") {
		t.Error("the old marked section was kept")
	}
	if n := strings.Count(got, beginMarker); n != 1 {
		t.Errorf("%d begin markers, want 1", n)
	}
	variants := []string{"streamgate", "bare-32k", "bare-256k"}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		variants = append(variants, "nginx")
	}
	tables := tablesOf(got)
	for _, m := range measures {
		rows, ok := tables[m.title]
		if !ok {
			t.Errorf("no table %q", m.title)
			continue
		}
		want := variants
		if m.key == "links" {
			want = []string{"streamgate (proxy links)", "streamgate (direct links)", "JWT verify + RS256 sign"}
		}
		for _, v := range want {
			cell, ok := rows[v]
			if !ok {
				t.Errorf("%s: no row %q", m.title, v)
				continue
			}
			f, err := strconv.ParseFloat(strings.Fields(cell)[0], 64)
			if err != nil || f < 0 || (m.higher && f <= 0) {
				t.Errorf("%s, %s: %q is not a figure", m.title, v, cell)
			}
		}
	}
}

// tablesOf reads the report's tables: title → variant → median cell.
func tablesOf(doc string) map[string]map[string]string {
	out := map[string]map[string]string{}
	var cur map[string]string
	for _, line := range strings.Split(doc, "\n") {
		if title, ok := strings.CutPrefix(line, "#### "); ok {
			title, _, _ = strings.Cut(title, " (")
			cur = map[string]string{}
			out[title] = cur
			continue
		}
		cells := strings.Split(line, "|")
		if cur == nil || len(cells) < 4 || strings.HasPrefix(line, "|---") || strings.Contains(line, "| variant |") {
			continue
		}
		cur[strings.TrimSpace(cells[1])] = strings.TrimSpace(cells[2])
	}
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
