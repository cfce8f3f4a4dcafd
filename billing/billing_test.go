package billing

import (
	"testing"
	"time"
)

const (
	mib  = 1 << 20
	size = 24 * mib
	full = 10_000_000 // 10 minutes in micro-minutes
)

// step is one thing a client does to a download: open a request (its range), or
// have an open request deliver bytes, or end one.
type step struct {
	open    *Range // open a request with this range
	deliver int    // request index: deliver n more bytes
	n       int64
	close   int // request index + 1: the request ends
}

func open(first, last int64) step { return step{open: &Range{First: first, Last: last}} }
func whole() step                 { return step{open: &Whole} }
func deliver(i int, n int64) step { return step{deliver: i + 1, n: n} }
func end(i int) step              { return step{close: i + 1} }

// run plays steps against one download of a size-byte file and returns what it
// billed. It checks, at every step, that the bill never outruns what was
// reserved: the ledger relies on it to keep quotas exact.
func run(t *testing.T, r Rule, fileSize int64, steps []step) (billed, maxReserved int64) {
	t.Helper()
	d := Download{Full: full, Size: fileSize}
	var claims []Claim
	var openIdx []int // claims index by request, -1 once closed
	reserved := int64(0)
	for k, s := range steps {
		switch {
		case s.open != nil:
			claims = append(claims, Claim{Range: ClaimFor(*s.open, fileSize)})
			openIdx = append(openIdx, len(claims)-1)
		case s.deliver > 0:
			c := &claims[openIdx[s.deliver-1]]
			from := c.Range.Start + c.Acked
			n := min(s.n, c.Range.End-from)
			var bill int64
			d, bill = r.Deliver(d, Interval{from, from + n})
			c.Acked += n
			if bill > reserved {
				t.Fatalf("step %d: billed %d with %d reserved", k, bill, reserved)
			}
			reserved -= bill
		case s.close > 0:
			claims[openIdx[s.close-1]].Range = Interval{} // ended: claims nothing more
		}
		var live []Claim
		for _, c := range claims {
			if !c.Range.Empty() {
				live = append(live, c)
			}
		}
		want := r.Reserve(d, live)
		if s.open == nil && want > reserved {
			t.Fatalf("step %d: reservation grew from %d to %d without a new request", k, reserved, want)
		}
		reserved = want
		maxReserved = max(maxReserved, reserved)
	}
	if d.Billed != r.Cost(d) {
		t.Fatalf("billed %d, cost %d", d.Billed, r.Cost(d))
	}
	return d.Billed, maxReserved
}

// The clients of the metering issue's table, as the requests they send
// (shared/reference/clients.md), each against a 24 MiB, 10-minute file.
func TestClients(t *testing.T) {
	const (
		lost  = 3 * mib // in socket buffers when the client left
		moov  = 23 * mib
		probe = 2
	)
	seg := func(i int) (int64, int64) { return int64(i) * 3 * mib, int64(i+1)*3*mib - 1 }
	aria := []step{whole(), deliver(0, 2*mib)}
	for i := range 8 {
		a, b := seg(i)
		aria = append(aria, open(a, b))
	}
	aria = append(aria, end(0))
	for i := range 8 {
		aria = append(aria, deliver(i+1, 3*mib), end(i+1))
	}
	// aria2c interrupted: a first GET, segments that each get half way, then
	// aria2c -c: a GET again, then the missing halves.
	ariaC := []step{whole(), deliver(0, mib), end(0)}
	for i := range 8 {
		a, b := seg(i)
		ariaC = append(ariaC, open(a, b), deliver(1+i, 3*mib/2), end(1+i))
	}
	ariaC = append(ariaC, whole(), deliver(9, mib/2), end(9))
	for i := range 8 {
		a, b := seg(i)
		ariaC = append(ariaC, open(a+3*mib/2, b), deliver(10+i, 3*mib/2), end(10+i))
	}
	tests := []struct {
		name    string
		steps   []step
		propMin int64 // proportional bill, micro-minutes
		perDl   int64 // per-download bill
	}{
		{"curl whole", []step{whole(), deliver(0, size), end(0)}, full, full},
		{"curl cut then curl -C -", []step{
			whole(), deliver(0, 10*mib), end(0), // 10 MiB acknowledged, more written but lost
			open(10*mib, -1), deliver(1, 14*mib), end(1),
		}, full, full},
		{"wget -c after a kill, client kept less than acknowledged", []step{
			whole(), deliver(0, 10*mib), end(0),
			open(10*mib-lost, -1), deliver(1, 14*mib+lost), end(1),
		}, full, full},
		{"aria2c -x8 -s8 -k3M", aria, full, full},
		{"aria2c interrupted then aria2c -c", ariaC, full, full},
		{"chromium play and three seeks", []step{
			open(0, -1), deliver(0, 4*mib), end(0), // no moov at the start: abandoned
			open(moov, -1), deliver(1, mib), end(1), // the index
			open(0, -1), deliver(2, 12*mib), end(2), // play
			open(6*mib, -1), deliver(3, 10*mib), end(3), // seek back: sent again
			open(18*mib, -1), deliver(4, 3*mib), end(4),
			open(2*mib, -1), deliver(5, 6*mib), end(5),
		}, Share(full, 20*mib, size), full}, // held: 0-16, 18-21, 23-24 MiB
		{"ffprobe moov at the end", []step{
			open(0, -1), open(moov, -1), open(48, -1),
			deliver(0, 2*mib), deliver(1, mib), deliver(2, mib/2), end(0), end(1), end(2),
		}, Share(full, 3*mib, size), full},
		{"ffmpeg -c copy", []step{
			open(0, -1), open(moov, -1), open(48, -1),
			deliver(0, 2*mib), deliver(1, mib), end(0), end(1), deliver(2, size-48), end(2),
		}, full, full},
		{"safari probe then the file", []step{
			open(0, 1), deliver(0, probe), end(0), open(0, size-1), deliver(1, size), end(1),
		}, full, full},
		{"stall after 0 bytes", []step{whole(), end(0)}, 0, 0},
		{"client leaves at 5 MiB", []step{whole(), deliver(0, 5*mib), end(0)}, Share(full, 5*mib, size), full},
		{"re-download loop: three copies", []step{
			whole(), deliver(0, size), end(0), whole(), deliver(1, size), end(1), whole(), deliver(2, size), end(2),
		}, full, 2 * full},
		{"suffix range", []step{{open: &Range{First: -1, Last: -1, Suffix: mib}}, deliver(0, mib), end(0)}, Share(full, mib, size), full},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := run(t, Rule{Mode: Proportional}, size, tt.steps)
			if got != tt.propMin {
				t.Errorf("proportional: billed %.4f minutes, want %.4f", FromMicro(got), FromMicro(tt.propMin))
			}
			got, _ = run(t, Rule{Mode: PerDownload}, size, tt.steps)
			if got != tt.perDl {
				t.Errorf("per-download: billed %.4f minutes, want %.4f", FromMicro(got), FromMicro(tt.perDl))
			}
		})
	}
}

func TestReserve(t *testing.T) {
	paid := Download{Full: full, Size: size, Held: Set{{0, size}}, Sent: size, Billed: full}
	half := Download{Full: full, Size: size, Held: Set{{0, size / 2}}, Sent: size / 2, Billed: full / 2}
	tests := []struct {
		name string
		rule Rule
		d    Download
		open []Claim
		want int64
	}{
		{"nothing open", Rule{}, half, nil, 0},
		{"size unknown: the whole duration", Rule{}, Download{Full: full}, []Claim{{Range: Interval{0, Unknown}}}, full},
		{"size unknown, per-download, three open", Rule{Mode: PerDownload}, Download{Full: full},
			[]Claim{{Range: Interval{0, Unknown}}, {Range: Interval{0, Unknown}}, {Range: Interval{0, Unknown}}}, 2 * full},
		{"held bytes are free", Rule{}, half, []Claim{{Range: Interval{0, size / 2}}}, 0},
		{"new half", Rule{}, half, []Claim{{Range: Interval{0, size}}}, full / 2},
		{"two claims overlap: counted once", Rule{}, half,
			[]Claim{{Range: Interval{size / 2, size}}, {Range: Interval{size / 2, size}}}, full / 2},
		{"acked part of a claim is held already", Rule{}, half,
			[]Claim{{Range: Interval{size / 2, size}, Acked: size / 4}}, full / 4},
		{"paid download, per-download: within two copies", Rule{Mode: PerDownload}, paid, []Claim{{Range: Interval{0, size}}}, 0},
		{"paid download, per-download: past two copies", Rule{Mode: PerDownload}, paid,
			[]Claim{{Range: Interval{0, size}}, {Range: Interval{0, size}}}, full},
		{"paid download, proportional", Rule{}, paid, []Claim{{Range: Interval{0, size}}}, 0},
		{"unpaid, per-download", Rule{Mode: PerDownload}, Download{Full: full, Size: size}, []Claim{{Range: Interval{0, 2}}}, full},
		{"unknown end is the file's end", Rule{}, Download{Full: full, Size: size}, []Claim{{Range: Interval{size / 2, Unknown}}}, full / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rule.Reserve(tt.d, tt.open); got != tt.want {
				t.Errorf("Reserve = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestClaimFor(t *testing.T) {
	tests := []struct {
		rg   Range
		size int64
		want Interval
	}{
		{Whole, 100, Interval{0, 100}},
		{Whole, 0, Interval{0, Unknown}},
		{Range{First: 10, Last: -1}, 100, Interval{10, 100}},
		{Range{First: 10, Last: 19}, 100, Interval{10, 20}},
		{Range{First: 10, Last: 500}, 100, Interval{10, 100}},
		{Range{First: 10, Last: 19}, 0, Interval{10, 20}},
		{Range{First: 10, Last: -1}, 0, Interval{10, Unknown}},
		{Range{First: 200, Last: -1}, 100, Interval{100, 100}},
		{Range{First: -1, Last: -1, Suffix: 30}, 100, Interval{70, 100}},
		{Range{First: -1, Last: -1, Suffix: 300}, 100, Interval{0, 100}},
		{Range{First: -1, Last: -1, Suffix: 30}, 0, Interval{0, Unknown}},
	}
	for _, tt := range tests {
		if got := ClaimFor(tt.rg, tt.size); got != tt.want {
			t.Errorf("ClaimFor(%+v, %d) = %v, want %v", tt.rg, tt.size, got, tt.want)
		}
	}
}

func TestContinues(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r := Rule{Window: time.Hour}
	for _, tt := range []struct {
		open int
		now  time.Time
		want bool
	}{
		{0, t0.Add(59 * time.Minute), true},
		{0, t0.Add(time.Hour), true},
		{0, t0.Add(61 * time.Minute), false},
		{1, t0.Add(5 * time.Hour), true},
	} {
		if got := r.Continues(t0, tt.open, tt.now); got != tt.want {
			t.Errorf("Continues(open %d, +%v) = %v, want %v", tt.open, tt.now.Sub(t0), got, tt.want)
		}
	}
}

func TestSameFile(t *testing.T) {
	for _, tt := range []struct {
		ws   int64
		we   string
		s    int64
		e    string
		want bool
	}{
		{100, `"a"`, 100, `"a"`, true},
		{100, `"a"`, 100, `"b"`, false},
		{100, `"a"`, 101, `"a"`, false},
		{0, "", 100, `"a"`, true},
		{100, "", 100, `"a"`, true},
	} {
		if got := SameFile(tt.ws, tt.we, tt.s, tt.e); got != tt.want {
			t.Errorf("SameFile(%d %s, %d %s) = %v", tt.ws, tt.we, tt.s, tt.e, got)
		}
	}
}

func TestSet(t *testing.T) {
	tests := []struct {
		add  []Interval
		want string
	}{
		{nil, ""},
		{[]Interval{{0, 10}}, "0-10"},
		{[]Interval{{0, 10}, {10, 20}}, "0-20"},
		{[]Interval{{20, 30}, {0, 10}}, "0-10,20-30"},
		{[]Interval{{0, 10}, {20, 30}, {5, 25}}, "0-30"},
		{[]Interval{{0, 10}, {20, 30}, {40, 50}, {12, 18}}, "0-10,12-18,20-30,40-50"},
		{[]Interval{{5, 5}}, ""},
	}
	for _, tt := range tests {
		var s Set
		for _, iv := range tt.add {
			s = s.Add(iv)
		}
		if got := s.String(); got != tt.want {
			t.Errorf("add %v = %q, want %q", tt.add, got, tt.want)
		}
		back, err := ParseSet(s.String())
		if err != nil || back.String() != tt.want {
			t.Errorf("ParseSet(%q) = %v, %v", tt.want, back, err)
		}
	}
	if (Interval{5, Unknown}).Empty() || !(Interval{5, 5}).Empty() || (Interval{5, Unknown}).Len() != 0 {
		t.Error("an interval to an unknown end must be non-empty, of no known length")
	}
	s := Set{{0, 10}, {20, 30}}
	if got := s.Missing(Interval{5, 25}); got != 10 {
		t.Errorf("Missing = %d, want 10", got)
	}
	if got := s.Len(); got != 20 {
		t.Errorf("Len = %d", got)
	}
	for _, bad := range []string{"5", "a-b", "10-5", "0-10,5-20", "-1-4"} {
		if _, err := ParseSet(bad); err == nil {
			t.Errorf("ParseSet(%q) accepted", bad)
		}
	}
}

func TestSetBounded(t *testing.T) {
	var s Set
	total := int64(0)
	for i := range 200 {
		iv := Interval{int64(i) * 100, int64(i)*100 + 10 + int64(i%7)}
		s = s.Add(iv)
		total += iv.Len()
	}
	if len(s) > MaxIntervals {
		t.Fatalf("%d intervals, want at most %d", len(s), MaxIntervals)
	}
	if s.Len() < total {
		t.Fatalf("bounding lost coverage: %d bytes held, %d added", s.Len(), total)
	}
	for i := range 200 {
		iv := Interval{int64(i) * 100, int64(i)*100 + 10}
		if s.Missing(iv) != 0 {
			t.Fatalf("interval %v no longer held", iv)
		}
	}
}

func TestShare(t *testing.T) {
	if got := Share(full, size/2, size); got != full/2 {
		t.Errorf("Share half = %d", got)
	}
	if got := Share(full, 1, 0); got != full {
		t.Errorf("Share of unknown whole = %d", got)
	}
	// Big files and long videos do not overflow.
	if got := Share(24*60*1_000_000, 1<<40, 1<<41); got != 12*60*1_000_000 {
		t.Errorf("Share large = %d", got)
	}
}
