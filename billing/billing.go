// Package billing is streamgate's billing rule: what a download costs, given the
// bytes its deliveries have delivered and may still deliver. It is pure: no I/O, no
// clock, no store. The ledger (package usage) keeps a download's state and applies
// these functions to it inside one transaction, so that concurrent requests, on one
// process or several, see each other.
//
// # The model
//
// A download is one user's viewing of one file (user, video, type; the file's size
// and ETag). It stays open while its requests keep arriving within the resume
// window, and it owns the set of byte intervals already delivered in it. A
// delivery's new bytes are those it delivered that its download did not hold yet.
//
//   - Proportional: a download costs duration × held bytes / size, so a delivery
//     bills duration × new bytes / size. Resumes, seeks back, probes and parallel
//     segments of one download pay only for bytes not delivered before.
//   - Per-download: a download costs its full duration once, at its first
//     delivered byte, and one more duration each time the bytes sent in all,
//     repeats included, pass another CopiesPerCharge × size.
//
// Delivered means received by the client (see package acked), so what was left
// in socket buffers when a client went away is neither billed nor held.
//
// Before its first byte a request claims the bytes it asked for; the download's
// reservation is what its open claims could still add to its cost ([Rule.Reserve]).
// As bytes are delivered ([Rule.Deliver]) the cost grows and the reservation
// shrinks by at least as much, so the bill never outruns what was reserved.
//
// Minutes are integer micro-minutes (1e-6 minute) here, as the ledger keeps them.
package billing

import (
	"fmt"
	"math"
	"time"
)

// Mode is how a download's bytes are priced.
type Mode string

const (
	// Proportional prices a download at duration × held bytes / size, as Stream
	// prices delivery.
	Proportional Mode = "proportional"
	// PerDownload prices a download at its full duration, once per
	// CopiesPerCharge copies of the file it sends.
	PerDownload Mode = "per-download"
)

// ParseMode accepts "proportional" and "per-download"; "" is Proportional.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "":
		return Proportional, nil
	case Proportional, PerDownload:
		return Mode(s), nil
	}
	return "", fmt.Errorf("unknown metering mode %q (want %s or %s)", s, Proportional, PerDownload)
}

// Defaults of a [Rule]'s zero fields.
const (
	DefaultCopiesPerCharge = 2
	DefaultWindow          = time.Hour
)

// Rule is the billing rule. The zero value is proportional with the defaults.
type Rule struct {
	// Mode is how bytes are priced. Default Proportional.
	Mode Mode
	// CopiesPerCharge is, per-download, how many copies of the file one charge
	// covers, repeats included. Default 2.
	CopiesPerCharge int64
	// Window is how long after its last request a download stays open for the
	// next one. Default 1h.
	Window time.Duration
}

// WithDefaults returns r with its zero fields set to their defaults.
func (r Rule) WithDefaults() Rule {
	if r.Mode == "" {
		r.Mode = Proportional
	}
	if r.CopiesPerCharge <= 0 {
		r.CopiesPerCharge = DefaultCopiesPerCharge
	}
	if r.Window <= 0 {
		r.Window = DefaultWindow
	}
	return r
}

// Unknown is an Interval end, or a size, that is not known yet.
const Unknown = -1

// Download is a download's state, as the ledger keeps it.
type Download struct {
	// Full is the video's full duration in micro-minutes.
	Full int64
	// Size is the file's size in bytes; 0 while no response has told it.
	Size int64
	// Held is the bytes delivered in the download.
	Held Set
	// Sent is the bytes delivered in the download, repeats included.
	Sent int64
	// Billed is what the download has billed, micro-minutes.
	Billed int64
}

// Claim is one open delivery of a download: the bytes it may send and how many
// of them it has delivered, from Range.Start on. Range.End is Unknown while the
// file's size is.
type Claim struct {
	Range Interval
	Acked int64
}

// remaining is what c may still deliver.
func (c Claim) remaining() Interval {
	return Interval{Start: c.Range.Start + c.Acked, End: c.Range.End}
}

// Continues reports whether a request at now joins a download last active at
// last that has open deliveries open (those keep it alive however long they run).
func (r Rule) Continues(last time.Time, open int, now time.Time) bool {
	r = r.WithDefaults()
	return open > 0 || !now.After(last.Add(r.Window))
}

// Cost is what d should have billed for what it delivered, micro-minutes.
func (r Rule) Cost(d Download) int64 {
	r = r.WithDefaults()
	if d.Sent <= 0 {
		return 0
	}
	if r.Mode == PerDownload {
		return d.Full * r.charges(d.Sent, d.Size)
	}
	if d.Size <= 0 {
		return d.Full
	}
	return Share(d.Full, d.Held.Len(), d.Size)
}

// charges is how many durations sent bytes of a file of size bytes cost,
// per-download: one for the first byte, one more per CopiesPerCharge copies.
func (r Rule) charges(sent, size int64) int64 {
	if sent <= 0 {
		return 0
	}
	if size <= 0 {
		return 1
	}
	per := r.CopiesPerCharge * size
	return (sent + per - 1) / per
}

// Deliver records that a delivery delivered iv (a part of its claim not
// recorded before) and returns the new state and what it bills, micro-minutes.
// The bill never makes Billed exceed Cost; it is 0 for bytes already held
// (proportional) or within the copies paid for (per-download).
func (r Rule) Deliver(d Download, iv Interval) (Download, int64) {
	if iv.Empty() {
		return d, 0
	}
	if d.Size > 0 {
		iv.End = min(iv.End, d.Size)
		if iv.Empty() {
			return d, 0
		}
	}
	d.Held = d.Held.Add(iv)
	d.Sent += iv.Len()
	bill := max(0, r.Cost(d)-d.Billed)
	d.Billed += bill
	return d, bill
}

// Reserve is the most the open claims can still add to d's bill: what d would
// cost once each delivered all it may, less what d has billed. A request that
// only asks for bytes its download holds (proportional) or has paid for
// (per-download) adds nothing, so it is never refused for quota.
func (r Rule) Reserve(d Download, open []Claim) int64 {
	r = r.WithDefaults()
	if len(open) == 0 {
		return 0
	}
	if d.Size <= 0 {
		// Nothing is known of the file yet: each claim may be all of it.
		if r.Mode == PerDownload {
			per := r.CopiesPerCharge
			n := int64(len(open))
			return max(0, d.Full*((n+per-1)/per)-d.Billed)
		}
		return max(0, d.Full-d.Billed)
	}
	after := d
	for _, c := range open {
		iv := c.remaining()
		if iv.End == Unknown || iv.End > d.Size {
			iv.End = d.Size
		}
		if iv.Empty() {
			continue
		}
		after.Held = after.Held.Add(iv)
		after.Sent += iv.Len()
	}
	return max(0, r.Cost(after)-d.Billed)
}

// ClaimFor is the bytes a request of r asks for from a file of size bytes (0:
// unknown). A request without a range, or one Stream will answer in full, asks
// for the whole file.
func ClaimFor(rg Range, size int64) Interval {
	end := int64(Unknown)
	if size > 0 {
		end = size
	}
	switch {
	case rg.Suffix > 0:
		if size <= 0 {
			return Interval{0, Unknown}
		}
		return Interval{max(0, size-rg.Suffix), size}
	case rg.First < 0:
		return Interval{0, end}
	}
	iv := Interval{Start: rg.First, End: end}
	if rg.Last >= 0 && (end == Unknown || rg.Last+1 < end) {
		iv.End = rg.Last + 1
	}
	if end != Unknown && iv.Start >= end {
		return Interval{end, end}
	}
	return iv
}

// Range is one request's byte range: First..Last inclusive (Last -1: to the
// end), or the last Suffix bytes. First -1 and Suffix 0 is no range.
type Range struct {
	First, Last int64
	Suffix      int64
}

// Whole is a request without a range.
var Whole = Range{First: -1, Last: -1}

// SameFile reports whether a response of size bytes with etag is the file a
// download of wantSize and wantETag holds bytes of. An unknown size or ETag on
// either side matches.
func SameFile(wantSize int64, wantETag string, size int64, etag string) bool {
	if wantSize > 0 && size > 0 && wantSize != size {
		return false
	}
	return wantETag == "" || etag == "" || wantETag == etag
}

// Share is full × part / whole, rounded to the micro-minute; full when whole is
// unknown.
func Share(full, part, whole int64) int64 {
	if whole <= 0 {
		return full
	}
	return int64(math.Round(float64(full) * float64(part) / float64(whole)))
}

// Micro is minutes in micro-minutes; FromMicro the other way.
func Micro(minutes float64) int64 { return int64(math.Round(minutes * 1e6)) }

// FromMicro is micro-minutes in minutes.
func FromMicro(m int64) float64 { return float64(m) / 1e6 }
