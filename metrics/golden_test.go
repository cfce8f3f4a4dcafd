package metrics

import (
	"flag"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/streamgate/streamgate/usage"
)

var update = flag.Bool("update", false, "rewrite testdata/metrics.golden from the registry")

const goldenPath = "testdata/metrics.golden"

const goldenHeader = `# Every metric streamgate exports: name, type, [label names], help.
# Dashboards and alerts depend on these; deploy/ checks its PromQL against this file.
# Regenerate after a deliberate change: go test ./metrics -run TestGolden -update
`

// exercise calls every recording method once, so that every metric vector has a
// series to show its labels.
func exercise(m *Metrics) {
	m.Request("GET /healthz", 200)
	m.Settled(usage.Settled{Type: "default", Status: "complete", Acked: 1, StreamBytes: 1, Minutes: 1, StreamMinutes: 1})
	m.DownloadStarted()()
	m.Refused(RefusedQuota)
	m.UpstreamLatency(time.Millisecond)
	m.UpstreamTTFB(time.Millisecond)
	m.StreamAPICall("video", "ok")
	m.TokenMinted()
	m.TokenCacheHit()
	m.LedgerCall("open", time.Millisecond, nil)
}

// describe lists the streamgate_ families of m, one line each, sorted by name.
func describe(t *testing.T, m *Metrics) string {
	t.Helper()
	fams, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var b strings.Builder
	b.WriteString(goldenHeader)
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), "streamgate_") {
			continue
		}
		var labels []string
		if len(f.GetMetric()) > 0 {
			for _, lp := range f.GetMetric()[0].GetLabel() {
				labels = append(labels, lp.GetName())
			}
		}
		slices.Sort(labels)
		b.WriteString(f.GetName() + " " + strings.ToLower(f.GetType().String()) +
			" [" + strings.Join(labels, " ") + "] " + f.GetHelp() + "\n")
	}
	return b.String()
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// TestGoldenCoversEveryMetric makes sure exercise reaches every registered
// metric: one it missed would be absent from the golden file, and a rename of it
// unnoticed.
func TestGoldenCoversEveryMetric(t *testing.T) {
	m := New("test")
	exercise(m)
	ch := make(chan *prometheus.Desc, 256)
	go func() { m.reg.Describe(ch); close(ch) }()
	var described []string
	for d := range ch {
		if n := fqName.FindStringSubmatch(d.String()); n != nil && strings.HasPrefix(n[1], "streamgate_") {
			described = append(described, n[1])
		}
	}
	fams, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	gathered := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		gathered[f.GetName()] = f
	}
	if len(described) == 0 {
		t.Fatal("no streamgate_ metric is registered")
	}
	for _, n := range described {
		if gathered[n] == nil {
			t.Errorf("%s is registered but has no series after exercise: call its method in exercise", n)
		}
	}
}

func TestGolden(t *testing.T) {
	m := New("test")
	exercise(m)
	got := describe(t, m)
	if *update {
		if err := os.WriteFile(goldenPath, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (run go test ./metrics -run TestGolden -update)", err)
	}
	if got != string(want) {
		t.Errorf("metrics changed; if deliberate, run go test ./metrics -run TestGolden -update and update deploy/grafana-dashboard.json.\n--- got\n%s--- want\n%s", got, want)
	}
}
