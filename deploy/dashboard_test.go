package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// goldenMetrics reads the metric names and types the gateway exports from the
// metrics package's golden file.
func goldenMetrics(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../metrics/testdata/metrics.golden")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	types := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			t.Fatalf("golden line %q: want name and type", line)
		}
		types[fields[0]] = fields[1]
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(types) == 0 {
		t.Fatal("the golden file lists no metric")
	}
	return types
}

// promqlFuncs are PromQL's functions and aggregation operators.
var promqlFuncs = map[string]bool{}

func init() {
	for _, f := range strings.Fields(`
		sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
		abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week
		day_of_year days_in_month delta deriv exp floor histogram_avg histogram_count histogram_fraction
		histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters double_exponential_smoothing
		hour idelta increase irate label_join label_replace ln log2 log10 minute month predict_linear
		rate resets round scalar sgn sort sort_desc sort_by_label sort_by_label_desc sqrt time timestamp vector year
		avg_over_time min_over_time max_over_time sum_over_time count_over_time quantile_over_time
		stddev_over_time stdvar_over_time last_over_time present_over_time mad_over_time
		acos acosh asin asinh atan atanh cos cosh sin sinh tan tanh deg pi rad`) {
		promqlFuncs[f] = true
	}
}

// promqlKeywords are the words of PromQL that are neither functions nor metrics.
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true,
	"inf": true, "nan": true,
}

var (
	stringLit = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	matchers  = regexp.MustCompile(`\{[^{}]*\}`)
	ranges    = regexp.MustCompile(`\[[^\[\]]*\]`)
	grouping  = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	token     = regexp.MustCompile(`[0-9][0-9a-zA-Z_.]*|[a-zA-Z_:][a-zA-Z0-9_:]*`)
)

// promqlNames returns the metric names and the functions an expression uses.
// It reads enough PromQL for dashboards: strings, label matchers, ranges and
// grouping labels are dropped first, so what remains are functions (followed by
// "("), keywords, numbers and metric names.
func promqlNames(expr string) (metrics, funcs []string) {
	e := stringLit.ReplaceAllString(expr, `""`)
	e = matchers.ReplaceAllString(e, " ")
	e = ranges.ReplaceAllString(e, " ")
	e = grouping.ReplaceAllString(e, " ")
	for _, loc := range token.FindAllStringIndex(e, -1) {
		w := e[loc[0]:loc[1]]
		if w[0] >= '0' && w[0] <= '9' || promqlKeywords[strings.ToLower(w)] {
			continue
		}
		if rest := strings.TrimLeft(e[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			funcs = append(funcs, w)
			continue
		}
		metrics = append(metrics, w)
	}
	return metrics, funcs
}

// checkExpr reports the first name in expr that is not a PromQL function or a
// series the gateway exports (a histogram's _bucket, _sum and _count included).
func checkExpr(expr string, golden map[string]string) error {
	metrics, funcs := promqlNames(expr)
	for _, f := range funcs {
		if !promqlFuncs[f] {
			return fmt.Errorf("unknown PromQL function %q", f)
		}
	}
	if len(metrics) == 0 {
		return fmt.Errorf("no metric")
	}
	for _, m := range metrics {
		if _, ok := golden[m]; ok {
			continue
		}
		found := false
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(m, suffix); ok && golden[base] == "histogram" {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("metric %q is not in metrics/testdata/metrics.golden", m)
		}
	}
	return nil
}

func TestCheckExpr(t *testing.T) {
	golden := map[string]string{
		"streamgate_http_requests_total":      "counter",
		"streamgate_upstream_latency_seconds": "histogram",
	}
	tests := []struct {
		name, expr string
		ok         bool
	}{
		{"counter rate", `sum by (status) (rate(streamgate_http_requests_total{instance=~"$instance"}[$__rate_interval]))`, true},
		{"histogram quantile", `histogram_quantile(0.95, sum by (le) (rate(streamgate_upstream_latency_seconds_bucket[5m])))`, true},
		{"label value looks like a metric", `sum(rate(streamgate_http_requests_total{route="GET /x", status=~"5.."}[5m]))`, true},
		{"grouping label", `sum without (streamgate_nothing) (streamgate_http_requests_total)`, true},
		{"offset", `streamgate_http_requests_total offset 1h`, true},
		{"typo in a metric", `rate(streamgate_http_request_total[5m])`, false},
		{"typo in the prefix", `rate(streamgat_http_requests_total[5m])`, false},
		{"bucket of a counter", `rate(streamgate_http_requests_total_bucket[5m])`, false},
		{"typo in a function", `rat(streamgate_http_requests_total[5m])`, false},
		{"unexported metric", `up`, false},
		{"no metric", `vector(1)`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkExpr(tt.expr, golden)
			if (err == nil) != tt.ok {
				t.Errorf("checkExpr(%s) = %v, want ok %v", tt.expr, err, tt.ok)
			}
		})
	}
}

// dashboard is the part of Grafana's JSON model the test reads.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	return d
}

// TestDashboardQueriesExportedMetrics: every PromQL expression of the dashboard
// names only metrics the gateway exports, so a renamed metric or a typo fails
// here rather than as an empty panel.
func TestDashboardQueriesExportedMetrics(t *testing.T) {
	golden := goldenMetrics(t)
	d := readDashboard(t)
	used := map[string]bool{}
	exprs := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs++
			if err := checkExpr(tg.Expr, golden); err != nil {
				t.Errorf("panel %q target %s: %v\n\t%s", p.Title, tg.RefID, err, tg.Expr)
			}
			ms, _ := promqlNames(tg.Expr)
			for _, m := range ms {
				used[m] = true
			}
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok && v.Type == "query" {
			// label_values(METRIC, label)
			s, _ := q["query"].(string)
			inner := strings.TrimSuffix(strings.TrimPrefix(s, "label_values("), ")")
			if m, _, ok := strings.Cut(inner, ","); !ok || golden[strings.TrimSpace(m)] == "" {
				t.Errorf("variable %s: query %q does not read an exported metric", v.Name, s)
			}
		}
	}
	if exprs == 0 {
		t.Fatal("the dashboard has no queries")
	}
	// Every metric of the list has a panel.
	for _, m := range []string{
		"streamgate_http_requests_total", "streamgate_delivered_bytes_total", "streamgate_billed_minutes_total",
		"streamgate_stream_minutes_total", "streamgate_downloads_in_flight", "streamgate_refusals_total",
		"streamgate_upstream_latency_seconds_bucket", "streamgate_upstream_first_byte_seconds_bucket",
		"streamgate_stream_api_calls_total", "streamgate_stream_token_mints_total",
		"streamgate_stream_token_cache_hits_total", "streamgate_ledger_call_duration_seconds_bucket",
	} {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
}

// TestDashboardModel checks what Grafana needs to import the dashboard: a uid,
// a datasource variable the panels use, unique panel IDs and refIds, and a grid
// without overlaps.
func TestDashboardModel(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
		t.Errorf("uid %q, title %q, schemaVersion %d: all are required", d.UID, d.Title, d.SchemaVersion)
	}
	dsVar := ""
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && v.Query == "prometheus" {
			dsVar = "${" + v.Name + "}"
		}
	}
	if dsVar == "" {
		t.Fatal("no Prometheus datasource variable")
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v is outside the 24-column grid", p.Title, g)
		}
	grid:
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Errorf("panel %q overlaps %q at (%d,%d)", p.Title, other, x, y)
					break grid
				}
				taken[cell{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != dsVar {
			t.Errorf("panel %q: datasource %+v, want prometheus %s", p.Title, p.Datasource, dsVar)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
		}
	}
}
