// Package usage is streamgate's ledger of deliveries, downloads and quota periods,
// and the meter the proxy drives while a download's bytes flow.
//
// A delivery is one HTTP response body sent to an end user. A download groups the
// deliveries that fetch one copy of a file: the first request and the ranged
// requests that resume it. Quotas are minutes per user per calendar month (UTC).
//
// Every delivery reserves what it could cost before its first byte, atomically
// against the user's quota, so concurrent requests can never overspend. When the
// response headers arrive the reservation is trued up; when the body ends the
// delivery settles: it bills what was delivered, releases the rest of its
// reservation and becomes a durable ledger row. Progress is checkpointed while bytes
// flow, so that after a crash [Ledger.Recover] settles what was open from its last
// checkpoint.
//
// # Stores
//
// [SQLite] is the embedded store, one file for one process. [Postgres] is the
// store several replicas share: quota checks are conditional UPDATEs that
// PostgreSQL evaluates under the quota row's lock, so the replicas together can
// never overspend a quota, and settlement locks the delivery row, so it happens
// once whichever replica attempts it.
//
// # Recovery
//
// A delivery left open by a process that died still holds its reservation; it
// must be settled from its last checkpoint and the rest released. With one
// process (SQLite), whatever is open at start was left by the previous run, so
// [Meter.Recover] at start settles every open delivery.
//
// With replicas sharing a ledger ([Shared]), an open row may be another
// replica's live delivery, so liveness is recorded in the row itself: every
// delivery row carries checkpoint_at, the last time its meter wrote it. It is
// written when the delivery is reserved, at each checkpoint while bytes flow, and
// by a heartbeat that [Meter.RunReaper] sends every interval, in one statement,
// for the meter's open deliveries that nothing else wrote during the interval
// (a stalled client, a slow upstream, headers not yet in). A live delivery's row
// is therefore never older than about two intervals. [Postgres.Recover] settles
// only open rows whose checkpoint_at is older than the stale threshold
// ([StaleAfter], default 2 minutes), re-checking under the row lock so that a row
// written meanwhile is left alone, and skipping rows another replica holds
// locked. A replica that starts recovers what the others abandoned long enough
// ago, never their live deliveries; and as every replica runs RunReaper, the
// deliveries of a replica that dies and never returns are settled by the others
// within the stale threshold plus one interval, each logged once, as a "billable
// download" line with status "recovered".
//
// Times in rows come from the replicas' clocks (the Meter's Now), so the stale
// threshold must exceed two heartbeat intervals plus the clock skew between
// replicas; RunReaper shortens an interval longer than a third of the threshold.
// A delivery whose settlement failed stops being heartbeated, so the reapers
// settle it from its last checkpoint. A replica cut off from the database for
// longer than the threshold may find its deliveries recovered by the others; its
// own settlement then returns the recovered row, logs a warning and bills
// nothing twice.
//
// Minutes are exposed as float64 and stored as integer micro-minutes, so that sums
// over many deliveries are exact.
package usage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/streamgate/streamgate/stream"
)

// Mode is how deliveries are billed.
type Mode string

const (
	// Proportional bills a response body duration × bytes delivered / file size,
	// as Stream prices delivery. Resumes pay only for what they fetch.
	Proportional Mode = "proportional"
	// PerDownload bills a download its full duration once; the ranged requests
	// that continue it are not billed again.
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

// Period is the quota period t falls in: its calendar month in UTC, "2006-01".
func Period(t time.Time) string { return t.UTC().Format("2006-01") }

// ErrQuotaExceeded is matched by every [*QuotaError].
var ErrQuotaExceeded = errors.New("quota exceeded")

// ErrNotFound is returned for a delivery ID the ledger does not hold.
var ErrNotFound = errors.New("delivery not found")

// ErrSettled is returned when a settled delivery's reservation is adjusted.
var ErrSettled = errors.New("delivery already settled")

// Usage is a user's standing in one quota period.
type Usage struct {
	Period string `json:"period"`
	Plan   string `json:"plan,omitempty"`
	// MinutesLimit is the plan's monthly minutes; -1 is unlimited.
	MinutesLimit float64 `json:"minutes_limit"`
	// MinutesUsed is what settled deliveries billed.
	MinutesUsed float64 `json:"minutes_used"`
	// MinutesReserved is what open deliveries hold.
	MinutesReserved float64 `json:"minutes_reserved"`
	// MinutesRemaining is limit - used - reserved, never below 0; -1 when unlimited.
	MinutesRemaining float64 `json:"minutes_remaining"`
}

// withLimit fills in the plan, limit and remaining minutes.
func (u Usage) withLimit(plan string, limit float64) Usage {
	u.Plan = plan
	if limit < 0 {
		u.MinutesLimit, u.MinutesRemaining = -1, -1
		return u
	}
	u.MinutesLimit = limit
	u.MinutesRemaining = fromMicro(max(0, toMicro(limit)-toMicro(u.MinutesUsed)-toMicro(u.MinutesReserved)))
	return u
}

// QuotaError refuses a reservation that would take a user past the plan's limit.
type QuotaError struct {
	// Usage is the user's standing when the reservation was refused.
	Usage Usage
	// Requested is the minutes the refused reservation asked for.
	Requested float64
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("quota exceeded for %s: %.2f of %.2f minutes used, %.2f reserved, %.2f remaining, %.2f requested",
		e.Usage.Period, e.Usage.MinutesUsed, e.Usage.MinutesLimit, e.Usage.MinutesReserved, e.Usage.MinutesRemaining, e.Requested)
}

// Is reports whether target is [ErrQuotaExceeded].
func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }

// Ledger is the durable store of deliveries, downloads and quota periods. Every
// method is safe for concurrent use, and quota checks happen inside the store (a
// conditional UPDATE in one transaction), never as a read followed by a write in Go,
// so that several replicas can share one ledger.
//
// ledgertest.Run is the conformance suite every implementation must pass.
type Ledger interface {
	// Reserve adds d.Reserve minutes to the user's reservation for d.Period if
	// used + reserved + d.Reserve <= limit (limit < 0 is unlimited; a zero
	// reservation is never refused), and records d as an open delivery, and its
	// download when d.NewDownload, all in one transaction. On refusal it records
	// nothing and returns a *QuotaError.
	Reserve(ctx context.Context, d OpenDelivery, limit float64) error
	// Adjust sets an open delivery's reservation to reserved minutes. Lowering
	// always succeeds; raising is checked against the limit given to Reserve and
	// may return a *QuotaError, leaving the reservation as it was.
	Adjust(ctx context.Context, deliveryID string, reserved float64) error
	// Checkpoint records an open delivery's progress at at: body bytes delivered so
	// far, the minutes they bill and the file's size when known (0: unknown; kept
	// so that a delivery settled by recovery still tells the size). It never
	// lowers the recorded bytes, and is a no-op on a settled or unknown delivery.
	// A shared ledger also keeps at as the row's last sign of life.
	Checkpoint(ctx context.Context, deliveryID string, bytes int64, minutes float64, totalSize int64, at time.Time) error
	// Heartbeat records at as the last sign of life of the open deliveries ids,
	// which the calling process is still metering; settled and unknown IDs are
	// ignored. A ledger one process owns may do nothing.
	Heartbeat(ctx context.Context, ids []string, at time.Time) error
	// Settle bills s.Minutes (plus the delivery's once-per-download minutes when
	// s.Once and its download has not been billed them yet), releases the whole
	// reservation and closes the row. Settling a settled delivery changes nothing
	// and returns the row as it was settled.
	Settle(ctx context.Context, deliveryID string, s Settlement) (Settled, error)
	// Recover settles the open deliveries no process is metering any more, from
	// their last checkpoints, with status "recovered", at now, and returns what it
	// settled. A ledger one process owns settles every open delivery, and is
	// called once at start-up, before any delivery starts; a [Shared] ledger
	// settles only those untouched for its stale threshold, and may be called by
	// any replica at any time.
	Recover(ctx context.Context, now time.Time) ([]Settled, error)
	// Usage is the user's used and reserved minutes in period; the limit fields
	// are left for the caller, who knows the plan.
	Usage(ctx context.Context, user, period string) (Usage, error)
	// Report sums the settled deliveries of period per user, ordered by user.
	Report(ctx context.Context, period string) ([]ReportRow, error)
	// FindDownload returns the most recently active download of key that was
	// active at or after since, with whether it was billed and the body bytes
	// its deliveries have sent so far.
	FindDownload(ctx context.Context, key DownloadKey, since time.Time) (d DownloadState, ok bool, err error)
	// TouchDownload marks a download active at at, extending its resume window.
	TouchDownload(ctx context.Context, id string, at time.Time) error
	// Ping checks that the store answers.
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error
}

// Shared is a [Ledger] that several processes use at once. Its Recover settles
// only the open deliveries whose rows no process has written (reserved,
// checkpointed or heartbeated) for StaleAfter, so that it is safe to call while
// deliveries are served; each process keeps its own deliveries' rows fresh with
// [Meter.RunReaper].
type Shared interface {
	Ledger
	// StaleAfter is how long an open delivery's row may go unwritten before
	// Recover takes its process for gone.
	StaleAfter() time.Duration
}

// OpenDelivery is a delivery as it is reserved, before its first byte.
type OpenDelivery struct {
	// ID identifies the delivery; unique.
	ID string
	// DownloadID is the download the delivery belongs to.
	DownloadID string
	// NewDownload records DownloadID as a new download, started by this delivery.
	NewDownload bool

	User    string
	Plan    string
	Video   string
	Type    stream.DownloadType
	Session string // grant session, "" for the authenticated route
	Mode    Mode
	// Period is the quota period the reservation and the bill go to.
	Period string
	// Duration is the video's billable duration, seconds.
	Duration float64
	// Reserve is the minutes reserved against the quota.
	Reserve float64
	// Once is the minutes billed once per download (per-download mode: the full
	// duration), by the first of its deliveries to settle with Settlement.Once.
	Once float64

	RangeStart int64 // -1 without a Range header
	RangeEnd   int64 // inclusive; -1 open-ended or none

	Country   string
	ClientIP  string
	RequestID string
	At        time.Time
}

// Settlement is how a delivery ended.
type Settlement struct {
	// Status says why the body ended: "complete", "client_gone",
	// "upstream_failed", "shutdown", "recovered", "aborted".
	Status string
	// Reason is free text kept with the row, for example why a delivery aborted.
	Reason string
	// Bytes is the body bytes delivered to the client.
	Bytes int64
	// TotalSize is the file's size when known, else 0.
	TotalSize int64
	// Minutes is billed to this delivery.
	Minutes float64
	// Once bills the delivery's once-per-download minutes too, unless another
	// delivery of the same download already carried them.
	Once bool
	At   time.Time
}

// Settled is a settled delivery, as the ledger keeps it.
type Settled struct {
	DeliveryID string
	DownloadID string
	// StartedDownload is true when this delivery started its download.
	StartedDownload bool

	User       string
	Plan       string
	Video      string
	Type       stream.DownloadType
	Session    string
	Mode       Mode
	Period     string
	Duration   float64
	RangeStart int64
	RangeEnd   int64
	Country    string
	ClientIP   string
	RequestID  string

	Status    string
	Reason    string
	Bytes     int64
	TotalSize int64
	// Minutes is what the delivery billed.
	Minutes float64
	// Reserved is the reservation the delivery held until it settled.
	Reserved  float64
	OpenedAt  time.Time
	SettledAt time.Time
}

// check refuses a malformed reservation, fills in At, and returns the
// reservation and the limit (-1: none) in micro-minutes, as the stores keep them.
func (d *OpenDelivery) check(limit float64) (want, lim int64, err error) {
	switch {
	case d.ID == "", d.DownloadID == "", d.User == "", d.Period == "":
		return 0, 0, errors.New("reserve: delivery needs an ID, a download ID, a user and a period")
	case d.Reserve < 0, d.Once < 0, d.Duration < 0:
		return 0, 0, errors.New("reserve: negative minutes or duration")
	}
	if d.At.IsZero() {
		d.At = time.Now()
	}
	lim = -1
	if limit >= 0 {
		lim = toMicro(limit)
	}
	return toMicro(d.Reserve), lim, nil
}

// DownloadState is what a later request needs to know of a download it might
// continue.
type DownloadState struct {
	ID string
	// Billed is true once a delivery carried the download's charge.
	Billed bool
	// Bytes is the body bytes its deliveries have sent (settled, or as last
	// checkpointed).
	Bytes int64
	// Size is the file's size as its deliveries learned it; 0 unknown.
	Size int64
	// Lost is what its deliveries may have sent without the client keeping it:
	// their bytes, at most LostPerDelivery each. A delivery the gateway finished
	// writing may still have left its tail in socket buffers when the client went
	// away, so completed ones count too, and open ones at their last checkpoint.
	Lost int64
}

// LostPerDelivery is the most bytes one delivery is taken to have left in
// socket buffers (the gateway's send buffer, the client's receive buffer)
// without the client keeping them.
const LostPerDelivery = 16 << 20

// DownloadKey identifies the downloads a later request may continue.
type DownloadKey struct {
	User    string
	Video   string
	Type    stream.DownloadType
	Session string // "" for the authenticated route
}

// ReportRow is one user's deliveries in a period.
type ReportRow struct {
	User string `json:"user"`
	// Downloads counts distinct downloads that delivered at least one byte.
	Downloads int64 `json:"downloads"`
	// Deliveries counts settled deliveries that delivered at least one byte.
	Deliveries int64   `json:"deliveries"`
	Minutes    float64 `json:"minutes"`
	Bytes      int64   `json:"bytes"`
}

// micro is the number of stored units in one minute.
const micro = 1_000_000

func toMicro(minutes float64) int64 { return int64(math.Round(minutes * micro)) }

func fromMicro(m int64) float64 { return float64(m) / micro }
