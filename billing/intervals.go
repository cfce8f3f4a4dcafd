package billing

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MaxIntervals bounds a [Set]: past it, the two intervals with the smallest gap
// between them are merged, so a set stays small whatever a client asks for. A
// merge only adds coverage (the gap's bytes count as held), so it can make a later
// delivery cheaper, never dearer.
const MaxIntervals = 64

// Interval is the bytes [Start, End) of a file.
type Interval struct {
	Start, End int64
}

// Len is the number of bytes in iv, 0 when it is empty or its end is Unknown.
func (iv Interval) Len() int64 {
	if iv.End == Unknown {
		return 0
	}
	return max(0, iv.End-iv.Start)
}

// Empty reports whether iv holds no byte. An interval whose end is Unknown
// runs to the end of a file of unknown size: not empty.
func (iv Interval) Empty() bool { return iv.End != Unknown && iv.End <= iv.Start }

func (iv Interval) String() string { return fmt.Sprintf("%d-%d", iv.Start, iv.End) }

// Set is a set of bytes as sorted, disjoint, non-adjacent intervals. The zero
// value is empty. Sets are values: methods return new sets and never change the
// receiver's backing array.
type Set []Interval

// Len is the number of bytes in s.
func (s Set) Len() int64 {
	var n int64
	for _, iv := range s {
		n += iv.Len()
	}
	return n
}

// Add returns s with iv's bytes added, coalesced and bounded by MaxIntervals.
func (s Set) Add(iv Interval) Set {
	if iv.Empty() {
		return s
	}
	out := make(Set, 0, len(s)+1)
	i := 0
	for ; i < len(s) && s[i].End < iv.Start; i++ {
		out = append(out, s[i])
	}
	for ; i < len(s) && s[i].Start <= iv.End; i++ {
		iv.Start = min(iv.Start, s[i].Start)
		iv.End = max(iv.End, s[i].End)
	}
	out = append(out, iv)
	out = append(out, s[i:]...)
	return out.bound()
}

// Union returns the bytes in s or o.
func (s Set) Union(o Set) Set {
	out := s
	for _, iv := range o {
		out = out.Add(iv)
	}
	return out
}

// Missing is the number of bytes of iv that s does not hold.
func (s Set) Missing(iv Interval) int64 {
	if iv.Empty() {
		return 0
	}
	n := iv.Len()
	for _, h := range s {
		lo, hi := max(h.Start, iv.Start), min(h.End, iv.End)
		if hi > lo {
			n -= hi - lo
		}
	}
	return n
}

// bound merges the closest neighbours until s has at most MaxIntervals.
func (s Set) bound() Set {
	for len(s) > MaxIntervals {
		best := 1
		for i := 2; i < len(s); i++ {
			if s[i].Start-s[i-1].End < s[best].Start-s[best-1].End {
				best = i
			}
		}
		s[best-1].End = s[best].End
		s = slices.Delete(s, best, best+1)
	}
	return s
}

// String is the set as the ledger stores it: "a-b,c-d", "" when empty.
func (s Set) String() string {
	var b strings.Builder
	for i, iv := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(iv.Start, 10))
		b.WriteByte('-')
		b.WriteString(strconv.FormatInt(iv.End, 10))
	}
	return b.String()
}

// ParseSet reads what String wrote. It refuses intervals that are empty,
// unordered or overlapping, so a damaged row is noticed rather than billed.
func ParseSet(text string) (Set, error) {
	if text == "" {
		return nil, nil
	}
	parts := strings.Split(text, ",")
	s := make(Set, 0, len(parts))
	for _, p := range parts {
		a, b, ok := strings.Cut(p, "-")
		if !ok {
			return nil, fmt.Errorf("byte set %q: %q is not start-end", text, p)
		}
		start, err1 := strconv.ParseInt(a, 10, 64)
		end, err2 := strconv.ParseInt(b, 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("byte set %q: %w", text, err)
		}
		if start < 0 || end <= start || (len(s) > 0 && start <= s[len(s)-1].End) {
			return nil, fmt.Errorf("byte set %q: interval %q is empty or out of order", text, p)
		}
		s = append(s, Interval{start, end})
	}
	return s, nil
}
