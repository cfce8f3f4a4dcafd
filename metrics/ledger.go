package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/usage"
)

// ledgerOps are the operation label values of the ledger metrics: the
// [usage.Ledger] methods, lower-cased.
var ledgerOps = []string{
	"open", "respond", "progress", "settle", "charge", "heartbeat", "recover", "usage", "report", "ping",
}

func isRefusal(err error) bool {
	return errors.Is(err, usage.ErrQuotaExceeded) || errors.Is(err, usage.ErrLinkUsedUp) || errors.Is(err, usage.ErrLinkRevoked)
}

// Ledger returns l with every call timed into streamgate_ledger_call_duration_seconds
// and its failures counted. A [usage.Shared] ledger stays Shared, so the meter
// still fences and recovers as it would without metrics. With a nil m, l is
// returned as it is.
func (m *Metrics) Ledger(l usage.Ledger) usage.Ledger {
	if m == nil {
		return l
	}
	tl := &timedLedger{l: l, m: m}
	if sh, ok := l.(usage.Shared); ok {
		return &timedShared{timedLedger: tl, sh: sh}
	}
	return tl
}

type timedLedger struct {
	l usage.Ledger
	m *Metrics
}

var (
	_ usage.Ledger = (*timedLedger)(nil)
	_ usage.Shared = (*timedShared)(nil)
)

// timedShared is a timed ledger that several processes share.
type timedShared struct {
	*timedLedger
	sh usage.Shared
}

func (t *timedShared) StaleAfter() time.Duration { return t.sh.StaleAfter() }

// observe records a call of op that started at start and returned err.
func (t *timedLedger) observe(op string, start time.Time, err error) {
	t.m.LedgerCall(op, time.Since(start), err)
}

func (t *timedLedger) Open(ctx context.Context, rule billing.Rule, req usage.OpenRequest) (o usage.Opened, err error) {
	defer func(start time.Time) { t.observe("open", start, err) }(time.Now())
	return t.l.Open(ctx, rule, req)
}

func (t *timedLedger) Respond(ctx context.Context, rule billing.Rule, id string, r usage.Response) (err error) {
	defer func(start time.Time) { t.observe("respond", start, err) }(time.Now())
	return t.l.Respond(ctx, rule, id, r)
}

func (t *timedLedger) Progress(ctx context.Context, rule billing.Rule, id string, p usage.Progress) (err error) {
	defer func(start time.Time) { t.observe("progress", start, err) }(time.Now())
	return t.l.Progress(ctx, rule, id, p)
}

func (t *timedLedger) Settle(ctx context.Context, rule billing.Rule, id string, s usage.Settlement) (_ usage.Settled, err error) {
	defer func(start time.Time) { t.observe("settle", start, err) }(time.Now())
	return t.l.Settle(ctx, rule, id, s)
}

func (t *timedLedger) Charge(ctx context.Context, req usage.OpenRequest, status usage.Outcome) (_ usage.Settled, err error) {
	defer func(start time.Time) { t.observe("charge", start, err) }(time.Now())
	return t.l.Charge(ctx, req, status)
}

func (t *timedLedger) Heartbeat(ctx context.Context, ids []string, at time.Time) (err error) {
	defer func(start time.Time) { t.observe("heartbeat", start, err) }(time.Now())
	return t.l.Heartbeat(ctx, ids, at)
}

func (t *timedLedger) Recover(ctx context.Context, rule billing.Rule, now time.Time) (_ []usage.Settled, err error) {
	defer func(start time.Time) { t.observe("recover", start, err) }(time.Now())
	return t.l.Recover(ctx, rule, now)
}

func (t *timedLedger) Usage(ctx context.Context, user, period string) (_ usage.Usage, err error) {
	defer func(start time.Time) { t.observe("usage", start, err) }(time.Now())
	return t.l.Usage(ctx, user, period)
}

func (t *timedLedger) Report(ctx context.Context, period string) (_ []usage.ReportRow, err error) {
	defer func(start time.Time) { t.observe("report", start, err) }(time.Now())
	return t.l.Report(ctx, period)
}

func (t *timedLedger) Ping(ctx context.Context) (err error) {
	defer func(start time.Time) { t.observe("ping", start, err) }(time.Now())
	return t.l.Ping(ctx)
}

func (t *timedLedger) Close() error { return t.l.Close() }
