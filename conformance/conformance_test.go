package conformance

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

const (
	perDownload  = "per-download"
	proportional = "proportional"
)

// TestClients runs every scenario on every route it can use, in both metering
// modes: one emulator and one gateway process per mode, the scenarios of a mode
// in parallel. Then it checks the mode's Stream minutes against the emulator's
// and logs the table of the mode.
func TestClients(t *testing.T) {
	for _, mode := range []string{perDownload, proportional} {
		t.Run(mode, func(t *testing.T) {
			se := newStreamEnv(t)
			gw := startGateway(t, se, gwOptions{Metering: mode})
			tab := &table{}
			t.Run("scenarios", func(t *testing.T) {
				for _, sc := range scenarios() {
					for _, rt := range sc.routes {
						t.Run(sc.name+"/"+string(rt), func(t *testing.T) {
							t.Parallel()
							requireTools(t, sc.tools...)
							c := newRun(t, mode, se, gw, tab, sc, rt)
							o := sc.run(t, c)
							c.checkStage(t, "", o)
						})
					}
				}
			})
			checkStreamMinutes(t, se, gw, tab, mode)
		})
	}
}

func newRun(t *testing.T, mode string, se *streamEnv, gw *gateway, tab *table, sc scenario, rt route) *run {
	t.Helper()
	c := &run{
		mode: mode, se: se, gw: gw, tab: tab, sc: sc, route: rt,
		user:  "u-" + sc.name + "-" + string(rt) + "-" + randomHex(8),
		video: sc.video,
		dir:   t.TempDir(),
		home:  t.TempDir(),
	}
	c.token = portalToken(t, c.user)
	c.uid, c.file = se.addVideo(t, sc.video)
	c.video.Size = c.file.Size()
	switch rt {
	case routeAuth:
		c.url = gw.downloadURL(c.uid)
		c.bearer = "Authorization: Bearer " + c.token
	case routeLink:
		c.url = gw.createLink(t, c.token, c.uid)
	}
	return c
}

// checkStage waits until c's user has nothing reserved, then checks what the
// user was billed against what the client ended with (o), after the stage
// named ("" for the end of the scenario; "cut" after a client was cut), and
// adds a line to the table.
func (c *run) checkStage(t *testing.T, stage string, o outcome) {
	t.Helper()
	u := c.gw.settledUsage(t, c.se.rec, c.uid, c.token)
	v := c.se.rec.video(c.uid)
	st := c.se.emu.Stats(c.uid, stream.Default)
	want, ok := expect(c.mode, c.video, o, v.sent.total(), u.MinutesUsed)
	client := c.sc.client
	if stage != "" {
		client += " [" + stage + "]"
	}
	c.tab.add(line{
		client: client, route: c.route, mode: c.mode, user: c.user, uid: c.uid, final: stage == "",
		requests: st.Requests, billed: u.MinutesUsed, want: want, ok: ok,
	})
	if !ok {
		var reqs []string
		for _, r := range v.requests {
			reqs = append(reqs, r.String())
		}
		t.Errorf("%s, %s route, %s: billed %.4f minutes, want %s\n"+
			"  the emulator saw %d requests and wrote %d body bytes, %d distinct, of a %d-byte file (%.4f proportional minutes):\n  %s",
			client, c.route, c.mode, u.MinutesUsed, want, st.Requests, v.written, v.sent.total(), c.video.Size,
			st.ProportionalMinutes, strings.Join(reqs, "\n  "))
	}
}

// expect is the billing rule the suite holds the gateway to: what a user
// should be billed for a client that ended with o, given the distinct bytes
// the emulator sent (sentOnce), as a readable want and whether billed meets it.
func expect(mode string, v videoSpec, o outcome, sentOnce int64, billed float64) (string, bool) {
	d := v.minutes()
	if mode == perDownload {
		// One download, however many requests: exactly one duration (the
		// ledger keeps millionths of a minute).
		return fmt.Sprintf("= %.4f", d), math.Abs(billed-d) <= 1e-5
	}
	if o.whole {
		return fmt.Sprintf("%.4f ± 1%%", d), math.Abs(billed-d) <= 0.01*d
	}
	got, what := o.received, "received"
	if got < 0 {
		got, what = sentOnce, "sent once"
	}
	most := d*float64(got)/float64(v.Size) + 0.01*d
	return fmt.Sprintf("≤ %.4f (%d B %s + 1%%)", most, got, what), billed <= most+1e-6
}

func TestExpect(t *testing.T) {
	ten := videoSpec{Duration: 600, Size: 1000}
	tests := []struct {
		name     string
		mode     string
		o        outcome
		sentOnce int64
		billed   float64
		ok       bool
	}{
		{"per-download, one duration", perDownload, outcome{whole: true}, 1000, 10, true},
		{"per-download, twice", perDownload, outcome{whole: true}, 1000, 20, false},
		{"per-download, nothing", perDownload, outcome{received: 0}, 0, 0, false},
		{"per-download, a micro-minute off", perDownload, outcome{whole: true}, 1000, 10.000001, true},
		{"whole, exact", proportional, outcome{whole: true}, 1000, 10, true},
		{"whole, within 1%", proportional, outcome{whole: true}, 1000, 10.09, true},
		{"whole, resume billed again", proportional, outcome{whole: true}, 1000, 11.7, false},
		{"whole, short", proportional, outcome{whole: true}, 1000, 9.8, false},
		{"left early, what it received", proportional, outcome{received: 250}, 1000, 2.5, true},
		{"left early, plus 1%", proportional, outcome{received: 250}, 1000, 2.6, true},
		{"left early, socket buffers billed", proportional, outcome{received: 250}, 1000, 4.2, false},
		{"stalled, nothing", proportional, outcome{received: 0}, 400, 0, true},
		{"stalled, buffers billed", proportional, outcome{received: 0}, 400, 3.9, false},
		{"unknown, bounded by what was sent once", proportional, outcome{received: -1}, 500, 5.1, true},
		{"unknown, bytes sent twice billed", proportional, outcome{received: -1}, 500, 8.75, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, ok := expect(tt.mode, ten, tt.o, tt.sentOnce, tt.billed)
			if ok != tt.ok {
				t.Errorf("billed %.4f against %s: ok %v, want %v", tt.billed, want, ok, tt.ok)
			}
		})
	}
}

// checkStreamMinutes compares, across all scenarios of a mode, the ledger's
// Stream minutes with the emulator's own count, and logs the mode's table.
func checkStreamMinutes(t *testing.T, se *streamEnv, gw *gateway, tab *table, mode string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for se.emu.InFlight() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the emulator still serves %d requests", se.emu.InFlight())
		}
		time.Sleep(20 * time.Millisecond)
	}
	rep := gw.report(t)
	total := se.emu.TotalStats()
	var streamMinutes, billed float64
	var streamBytes int64
	var missing []string
	hasBytes := true
	for _, u := range rep {
		billed += u.Minutes
		if u.StreamMinutes == nil {
			missing = append(missing, u.User)
			continue
		}
		streamMinutes += *u.StreamMinutes
		if u.StreamBytes == nil {
			hasBytes = false
		} else {
			streamBytes += *u.StreamBytes
		}
	}
	t.Logf("%s: the emulator delivered %d bytes, %.4f proportional minutes, in %d requests; the ledger billed %.4f minutes to %d users\n%s",
		mode, total.Bytes, total.ProportionalMinutes, total.Requests, billed, len(rep), tab.format(rep, se))
	switch {
	case len(rep) == 0:
		t.Errorf("%s: the usage report lists no user", mode)
	case len(missing) > 0:
		sort.Strings(missing)
		t.Errorf("%s: the usage report has no stream_minutes for %d of %d users (e.g. %s): the ledger's Stream minutes cannot be compared with the emulator's %.4f",
			mode, len(missing), len(rep), missing[0], total.ProportionalMinutes)
	default:
		if math.Abs(streamMinutes-total.ProportionalMinutes) > 0.001*total.ProportionalMinutes {
			t.Errorf("%s: the ledger's Stream minutes are %.4f, the emulator's own count %.4f: more than 0.1%% apart",
				mode, streamMinutes, total.ProportionalMinutes)
		}
		if hasBytes && math.Abs(float64(streamBytes-total.Bytes)) > 0.001*float64(total.Bytes) {
			t.Errorf("%s: the ledger's Stream bytes are %d, the emulator's own count %d: more than 0.1%% apart",
				mode, streamBytes, total.Bytes)
		}
	}
}

// line is one line of a mode's table.
type line struct {
	client   string
	route    route
	mode     string
	user     string
	uid      string
	final    bool
	requests int64
	billed   float64
	want     string
	ok       bool
}

// table collects the lines of the scenarios of a mode, which run in parallel.
type table struct {
	mu    sync.Mutex
	lines []line
}

func (tb *table) add(l line) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.lines = append(tb.lines, l)
}

// format renders the table; the Stream minutes are the users' in rep, shown
// on the last line of each scenario.
func (tb *table) format(rep map[string]reportUser, se *streamEnv) string {
	tb.mu.Lock()
	lines := append([]line(nil), tb.lines...)
	tb.mu.Unlock()
	sort.SliceStable(lines, func(i, j int) bool {
		if lines[i].user != lines[j].user {
			return lines[i].user < lines[j].user
		}
		return !lines[i].final && lines[j].final
	})
	var b strings.Builder
	fmt.Fprintf(&b, "%-48s %-5s %-13s %8s %10s %10s %10s  %-40s %s\n", "client", "route", "mode", "requests", "billed", "stream", "by Stream", "expected", "result")
	for _, l := range lines {
		stream, byStream := "-", "-"
		if u, ok := rep[l.user]; ok && l.final {
			stream = "n/a"
			if u.StreamMinutes != nil {
				stream = fmt.Sprintf("%.4f", *u.StreamMinutes)
			}
			byStream = fmt.Sprintf("%.4f", se.emu.Stats(l.uid, streamtest.Default).ProportionalMinutes)
		}
		result := "ok"
		if !l.ok {
			result = "FAIL"
		}
		fmt.Fprintf(&b, "%-48s %-5s %-13s %8d %10.4f %10s %10s  %-40s %s\n", l.client, l.route, l.mode, l.requests, l.billed, stream, byStream, l.want, result)
	}
	return b.String()
}
