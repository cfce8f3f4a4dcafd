// Package usage is streamgate's ledger of downloads, deliveries and quota
// periods, and the meter the proxy drives while a download's bytes flow.
//
// A delivery is one HTTP response body sent to an end user. A download is one
// user's viewing of one file: the deliveries of the same user, video and type
// that arrive within the resume window of each other, however the client splits
// its requests (resumes, parallel segments, probes, seeks). What a download costs
// is decided by package billing, over the byte intervals delivered in it; this
// package stores that state and applies the rule to it atomically, so concurrent
// requests of one download, on one process or on replicas sharing PostgreSQL,
// neither overspend a quota nor pay twice.
//
// # One delivery
//
//   - [Ledger.Open], before the first byte: the request joins its download (or
//     starts one), claims the bytes it asked for, and the download's reservation
//     rises to what its open claims could still cost, against the user's quota.
//   - [Ledger.Respond], when Stream's headers arrive: the claim becomes the bytes
//     the response carries (none for an answer without a body), and the file's
//     size and ETag are learnt; a different file starts a new download.
//   - [Ledger.Progress], at checkpoints while bytes flow: the bytes the client has
//     acknowledged are delivered into the download and billed as they go, so a
//     crash loses at most one checkpoint interval, never a bill.
//   - [Ledger.Settle], when the body ends: the last bytes are delivered and the
//     claim released with the rest of the reservation.
//
// Every change to a download happens in one transaction under its key's row
// (download_keys), which is the lock requests of one download queue on.
//
// # Recovery
//
// A delivery left open by a process that died holds its claim, and so part of its
// download's reservation; everything up to its last checkpoint is billed
// already. Recovering it is settling it with nothing more delivered. With one
// process (SQLite), whatever is open at start was left by the previous run, so
// [Meter.Recover] at start settles every open delivery. With replicas sharing a
// ledger ([Shared]) a row is recovered only once no replica has written it for
// the stale threshold: every open row carries beat_at, written at each
// checkpoint and by the heartbeat of [Meter.RunReaper].
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

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/stream"
)

// Mode is how deliveries are billed: [billing.Mode].
type Mode = billing.Mode

const (
	// Proportional bills a delivery duration × new bytes / file size.
	Proportional = billing.Proportional
	// PerDownload bills a download its full duration once per CopiesPerCharge
	// copies of the file it sends.
	PerDownload = billing.PerDownload
)

// ParseMode accepts "proportional" and "per-download"; "" is Proportional.
func ParseMode(s string) (Mode, error) { return billing.ParseMode(s) }

// Period is the quota period t falls in: its calendar month in UTC, "2006-01".
func Period(t time.Time) string { return t.UTC().Format("2006-01") }

// ErrQuotaExceeded is matched by every [*QuotaError].
var ErrQuotaExceeded = errors.New("quota exceeded")

// ErrNotFound is returned for a delivery ID the ledger does not hold.
var ErrNotFound = errors.New("delivery not found")

// ErrSettled is returned when a settled delivery is told of a response.
var ErrSettled = errors.New("delivery already settled")

// ErrLinkUsedUp refuses a request that would start a download with a link
// whose uses are all spent. Open records nothing.
var ErrLinkUsedUp = errors.New("link used up")

// ErrLinkRevoked refuses a request whose link was revoked, by its ID or by a
// revocation of its user (and video) after it was issued. Open records nothing.
var ErrLinkRevoked = errors.New("link revoked")

// Usage is a user's standing in one quota period.
type Usage struct {
	Period string `json:"period"`
	Plan   string `json:"plan,omitempty"`
	// MinutesLimit is the plan's monthly minutes; -1 is unlimited.
	MinutesLimit float64 `json:"minutes_limit"`
	// MinutesUsed is what deliveries billed.
	MinutesUsed float64 `json:"minutes_used"`
	// MinutesReserved is what open downloads hold for bytes they may still send.
	MinutesReserved float64 `json:"minutes_reserved"`
	// MinutesRemaining is limit - used - reserved, never below 0; -1 when unlimited.
	MinutesRemaining float64 `json:"minutes_remaining"`
	// StreamMinutes is what Stream bills the operator for the same deliveries:
	// the share of each file it sent.
	StreamMinutes float64 `json:"stream_minutes"`
	// DeliveriesOpen counts the user's responses still being sent in the
	// period. One that asks only for bytes already paid for holds no minutes,
	// so MinutesReserved alone does not tell that everything has settled.
	DeliveriesOpen int64 `json:"deliveries_open"`
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

// QuotaError refuses a request that would take a user past the plan's limit.
type QuotaError struct {
	// Usage is the user's standing when the request was refused.
	Usage Usage
	// Requested is the minutes the request needed reserved.
	Requested float64
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("quota exceeded for %s: %.2f of %.2f minutes used, %.2f reserved, %.2f remaining, %.2f needed",
		e.Usage.Period, e.Usage.MinutesUsed, e.Usage.MinutesLimit, e.Usage.MinutesReserved, e.Usage.MinutesRemaining, e.Requested)
}

// Is reports whether target is [ErrQuotaExceeded].
func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }

// Ledger is the durable store of downloads, deliveries and quota periods. Every
// method is safe for concurrent use. Each change is one transaction that holds
// the download key's row lock while it applies the billing rule, and quota
// checks are conditional UPDATEs, never a read followed by a write in Go, so that
// several replicas can share one ledger.
//
// ledgertest.Run is the conformance suite every implementation must pass.
type Ledger interface {
	// Open records req as an open delivery: it joins the user's download of the
	// video and type when rule.Continues it, else starts one, claims the bytes
	// req asks for, and raises the download's reservation to rule.Reserve
	// against req.Limit. On refusal it records nothing and returns a *QuotaError.
	Open(ctx context.Context, rule billing.Rule, req OpenRequest) (Opened, error)
	// Respond records Stream's answer to an open delivery: the file's size and
	// ETag, and the bytes the body carries (Response.Body; empty without a
	// body), which replace its claim. A response of another file than its
	// download's moves the delivery to a new download. A claim that grows is
	// checked against the delivery's limit and may return a *QuotaError,
	// leaving everything as it was.
	Respond(ctx context.Context, rule billing.Rule, id string, r Response) error
	// Progress records what an open delivery has delivered so far and bills its
	// new bytes. Figures never go back. A settled delivery is left as it is.
	Progress(ctx context.Context, rule billing.Rule, id string, p Progress) error
	// Settle records the delivery's final progress, bills it, releases its claim
	// and closes it. Settling a settled delivery changes nothing and returns it
	// as it was settled.
	Settle(ctx context.Context, rule billing.Rule, id string, s Settlement) (Settled, error)
	// Charge bills req's full duration at once as a settled delivery of a
	// download of its own (a direct link, whose bytes the gateway never sees),
	// against req.Limit; a refusal is a *QuotaError and records nothing.
	Charge(ctx context.Context, req OpenRequest, status Outcome) (Settled, error)
	// Heartbeat records at as the last sign of life of the open deliveries ids;
	// settled and unknown IDs are ignored. A ledger one process owns may do
	// nothing.
	Heartbeat(ctx context.Context, ids []string, at time.Time) error
	// Recover settles the open deliveries no process is metering any more, as
	// of their last progress, with outcome Recovered, at now, and returns them.
	// A ledger one process owns settles every open delivery, and is called once
	// at start-up; a [Shared] ledger settles only those unwritten for its stale
	// threshold, and may be called by any replica at any time.
	Recover(ctx context.Context, rule billing.Rule, now time.Time) ([]Settled, error)
	// Usage is the user's used, reserved and Stream minutes in period; the
	// limit fields are left for the caller, who knows the plan.
	Usage(ctx context.Context, user, period string) (Usage, error)
	// Report sums the settled deliveries of period per user, ordered by user.
	Report(ctx context.Context, period string) ([]ReportRow, error)
	// Ping checks that the store answers.
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error
}

// Revoker is a [Ledger] that keeps link revocations, which its Open then
// enforces with [ErrLinkRevoked], in the same transaction that opens the
// delivery: a revocation holds on every process sharing the ledger as soon as
// it commits.
type Revoker interface {
	// RevokeLinks refuses every link of user issued before before; with
	// video, only that video's links. A later revocation moves the time
	// forward, never back. Links carry their issue time to the second, so a
	// link issued in the same second as before is refused too.
	RevokeLinks(ctx context.Context, user, video string, before time.Time) error
	// RevokeLink refuses the link id. until is when the link expires anyway:
	// the revocation is kept until then.
	RevokeLink(ctx context.Context, id string, until time.Time) error
}

// RevokedBefore is the earliest issue time of a link that a revocation at t
// spares: t rounded up to a whole second, since a link issued within t's
// second, carrying only that second, may have been issued before t.
func RevokedBefore(t time.Time) time.Time {
	s := time.Unix(t.Unix(), 0).UTC()
	if t.After(s) {
		s = s.Add(time.Second)
	}
	return s
}

// Shared is a [Ledger] that several processes use at once. Its Recover settles
// only the open deliveries whose rows no process has written (opened,
// progressed or heartbeated) for StaleAfter, so that it is safe to call while
// deliveries are served; each process keeps its own deliveries' rows fresh with
// [Meter.RunReaper].
type Shared interface {
	Ledger
	// StaleAfter is how long an open delivery's row may go unwritten before
	// Recover takes its process for gone.
	StaleAfter() time.Duration
}

// OpenRequest is a delivery as it is opened, before its first byte.
type OpenRequest struct {
	// ID identifies the delivery; unique.
	ID string
	// NewDownloadID is the ID the download gets if the delivery starts one.
	NewDownloadID string

	User  string
	Plan  string
	Video string
	Type  stream.DownloadType
	// Limit is the plan's monthly minutes; < 0 unlimited.
	Limit float64
	// Period is the quota period a new download's reservation and bill go to.
	Period string
	// Duration is the video's billable duration, seconds.
	Duration float64
	// Range is the bytes asked for.
	Range billing.Range
	// Size and ETag are the file's as last seen (0 and "" unknown): a download
	// started by this delivery takes them, so its claim is exact from the start.
	Size int64
	ETag string

	// Link is the link the request came with; the zero Link when none.
	Link Link

	Country   string
	ClientIP  string
	RequestID string
	At        time.Time
}

// Link is the link (a grant) a request comes with, as far as the ledger
// checks it: Open refuses a revoked link, and a request that starts a download
// spends one of its uses.
type Link struct {
	// ID identifies the link; "" = no link, nothing is checked or spent.
	ID string
	// IssuedAt is when the link was made (to the second); the zero time is an
	// unknown time, before every revocation.
	IssuedAt time.Time
	// MaxUses is how many downloads the link may start; 0 = unlimited.
	MaxUses int
	// ExpiresAt is when the link stops working: its count of uses is kept
	// until then.
	ExpiresAt time.Time
}

// issued is the link's issue time in Unix seconds; 0 when unknown.
func (l Link) issued() int64 {
	if l.IssuedAt.IsZero() {
		return 0
	}
	return l.IssuedAt.Unix()
}

// Opened is what Open decided.
type Opened struct {
	DownloadID string
	// Started is true when the delivery started its download.
	Started bool
	// Claim is the bytes claimed (End billing.Unknown: to the end of the file).
	Claim billing.Interval
	// Reserved is the minutes the request added to its download's reservation.
	Reserved float64
}

// Response is Stream's answer to a delivery's request.
type Response struct {
	// Size and ETag identify the file (0, "": not told).
	Size int64
	ETag string
	// Body is the bytes of the file the body carries; empty when it carries
	// none of the file (an error, 304, 416).
	Body billing.Interval
	At   time.Time
}

// Progress is what a delivery has delivered so far.
type Progress struct {
	// Acked is the body bytes the client has received (acknowledged).
	Acked int64
	// Written is the body bytes written to the client's connection.
	Written int64
	// StreamBytes is the body bytes read from Stream.
	StreamBytes int64
	// Source says how Acked was measured: "tcp_info", "outq" or "written".
	Source string
	At     time.Time
}

// Outcome is how a delivery ended.
type Outcome int

const (
	// Complete: the whole body was sent.
	Complete Outcome = iota + 1
	// ClientGone: the client left or stopped reading.
	ClientGone
	// UpstreamFailed: Stream's body broke off or stalled.
	UpstreamFailed
	// Shutdown: the gateway stopped while the body was flowing.
	Shutdown
	// Aborted: no body was sent (an error before the first byte).
	Aborted
	// Recovered: settled from its last checkpoint after its process was gone.
	Recovered
	// DirectLink: a direct link handed out, billed in full at once.
	DirectLink
	// Fenced: the gateway stopped the body itself, having been out of touch
	// with a shared ledger for too long (see [Delivery.Fenced]).
	Fenced
)

var outcomeNames = map[Outcome]string{
	Complete: "complete", ClientGone: "client_gone", UpstreamFailed: "upstream_failed", Shutdown: "shutdown",
	Aborted: "aborted", Recovered: "recovered", DirectLink: "direct_link", Fenced: "fenced",
}

func (o Outcome) String() string {
	if s, ok := outcomeNames[o]; ok {
		return s
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// ParseOutcome is the Outcome whose String is s.
func ParseOutcome(s string) (Outcome, bool) {
	for o, n := range outcomeNames {
		if n == s {
			return o, true
		}
	}
	return 0, false
}

// Settlement is how a delivery ended: its last progress and why.
type Settlement struct {
	Progress
	Outcome Outcome
	// Reason is free text kept with the row, for example why a delivery aborted.
	Reason string
}

// Settled is a settled delivery, as the ledger keeps it.
type Settled struct {
	DeliveryID string
	DownloadID string
	// StartedDownload is true when this delivery started its download.
	StartedDownload bool

	User      string
	Plan      string
	Video     string
	Type      stream.DownloadType
	Mode      Mode
	Period    string
	Duration  float64
	Range     string // as asked, "bytes=0-", "" for none
	Claim     billing.Interval
	Country   string
	ClientIP  string
	RequestID string

	Status string
	Reason string
	// Acked is the body bytes the client received; Written what was written to
	// its connection; AckedSource how Acked was measured.
	Acked       int64
	Written     int64
	AckedSource string
	// StreamBytes is the body bytes read from Stream; StreamMinutes what Stream
	// bills for them.
	StreamBytes   int64
	StreamMinutes float64
	// Size is the file's size (0 unknown).
	Size int64
	// Minutes is what the delivery billed.
	Minutes   float64
	OpenedAt  time.Time
	SettledAt time.Time
}

// check refuses a malformed request and fills in At.
func (r *OpenRequest) check() error {
	switch {
	case r.ID == "", r.NewDownloadID == "", r.User == "", r.Video == "", r.Period == "":
		return errors.New("open delivery: it needs an ID, a download ID, a user, a video and a period")
	case !(r.Duration > 0) || math.IsInf(r.Duration, 0):
		return errors.New("open delivery: unknown duration")
	case r.Link.MaxUses < 0, r.Link.MaxUses > 0 && (r.Link.ID == "" || r.Link.ExpiresAt.IsZero()):
		return errors.New("open delivery: a use-limited link needs an ID and an expiry")
	}
	if r.At.IsZero() {
		r.At = time.Now()
	}
	return nil
}

// ReportRow is one user's deliveries in a period.
type ReportRow struct {
	User string `json:"user"`
	// Downloads counts distinct downloads that delivered at least one byte.
	Downloads int64 `json:"downloads"`
	// Deliveries counts settled deliveries that delivered at least one byte.
	Deliveries int64 `json:"deliveries"`
	// Minutes is what the user was billed.
	Minutes float64 `json:"minutes"`
	// StreamMinutes is what Stream bills the operator for the same deliveries.
	StreamMinutes float64 `json:"stream_minutes"`
	// Bytes is the body bytes the user received.
	Bytes int64 `json:"bytes"`
	// StreamBytes is the body bytes read from Stream for them.
	StreamBytes int64 `json:"stream_bytes"`
}

func toMicro(minutes float64) int64 { return billing.Micro(minutes) }

func fromMicro(m int64) float64 { return billing.FromMicro(m) }
