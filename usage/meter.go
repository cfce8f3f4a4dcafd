package usage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/stream"
)

// MeterConfig configures a [Meter]. The zero value is usable.
type MeterConfig struct {
	// Mode is how deliveries are billed. Default Proportional.
	Mode Mode
	// ResumeWindow is how long after its last request a download stays open for
	// the next one (resumes, segments, seeks). Default 1h.
	ResumeWindow time.Duration
	// CopiesPerCharge is, per-download, how many copies of the file one charge
	// covers, repeats included. Default 2.
	CopiesPerCharge int64
	// CheckpointEvery is the longest a delivery's progress goes unrecorded while
	// bytes flow. Default 2s.
	CheckpointEvery time.Duration
	// CheckpointBytes is the most bytes a delivery sends between two checkpoints.
	// Default 8 MiB.
	CheckpointBytes int64
	// LedgerTimeout bounds each ledger write made after the request may be gone
	// (checkpoints, settlement). Default 10s.
	LedgerTimeout time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives one "billable download" line per settled delivery that
	// sent body bytes. Default zap.NewNop().
	Logger *zap.Logger
	// OnSettle, when set, is called with every delivery this meter settles
	// (recovered and direct-link ones included), after the ledger recorded it:
	// for metrics. It must not block.
	OnSettle func(Settled)
}

// Meter meters deliveries against a [Ledger]: it opens them before the first
// byte, tells the ledger of Stream's answer, checkpoints what the client
// acknowledged while bytes flow and settles when the body ends. What they cost
// is the ledger's to decide, by the meter's [billing.Rule].
type Meter struct {
	ledger Ledger
	cfg    MeterConfig
	rule   billing.Rule
	// files remembers each file's size and ETag as responses told them, so
	// that a request starting a download claims exactly what it asks for.
	files sync.Map // fileKey → fileID
	// open holds the deliveries this meter opened and has not tried to settle
	// yet, by ID: the ones its heartbeat keeps alive in a shared ledger.
	open sync.Map // string → *Delivery
	// unsettled holds the deliveries whose settlement failed (the ledger was
	// unreachable or too slow), by ID, for RunReaper to try again: until then
	// their claims keep counting against their users.
	unsettled sync.Map // string → settleAttempt
	// fence is, on a shared ledger, how long a delivery may go without a
	// successful ledger write before it stops sending (Fenced); 0 never.
	fence time.Duration
}

// settleAttempt is a settlement to try again.
type settleAttempt struct {
	d       *Delivery
	outcome Outcome
	reason  string
}

type fileKey struct {
	video string
	typ   stream.DownloadType
}

type fileID struct {
	size int64
	etag string
}

// DefaultCheckpointEvery is how often a meter checkpoints by default; config's
// metering.checkpoint_every defaults to it.
const DefaultCheckpointEvery = 2 * time.Second

// NewMeter returns a Meter writing to l, with cfg's zero fields set to their
// defaults.
func NewMeter(l Ledger, cfg MeterConfig) *Meter {
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = DefaultCheckpointEvery
	}
	if cfg.CheckpointBytes <= 0 {
		cfg.CheckpointBytes = 8 << 20
	}
	if cfg.LedgerTimeout <= 0 {
		cfg.LedgerTimeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	rule := billing.Rule{Mode: cfg.Mode, CopiesPerCharge: cfg.CopiesPerCharge, Window: cfg.ResumeWindow}.WithDefaults()
	cfg.Mode, cfg.ResumeWindow, cfg.CopiesPerCharge = rule.Mode, rule.Window, rule.CopiesPerCharge
	m := &Meter{ledger: l, cfg: cfg, rule: rule}
	if sh, ok := l.(Shared); ok {
		// Other replicas recover a row unwritten for the stale threshold; a
		// live row is written at least every two reaper intervals (a third of
		// the threshold each), so three quarters of it without a write means
		// this process has lost the ledger.
		m.fence = sh.StaleAfter() * 3 / 4
	}
	return m
}

// Mode is the meter's billing mode.
func (m *Meter) Mode() Mode { return m.rule.Mode }

// Rule is the meter's billing rule.
func (m *Meter) Rule() billing.Rule { return m.rule }

// StartRequest describes a download request about to be forwarded.
type StartRequest struct {
	User string
	Plan string
	// LimitMinutes is the plan's monthly minutes; < 0 is unlimited.
	LimitMinutes float64
	Video        string
	Type         stream.DownloadType
	// Duration is the video's billable duration in seconds, from the Stream API.
	// An unknown duration must be refused by the caller; Start refuses a
	// negative one too.
	Duration float64
	// Range is the bytes asked for; billing.Whole without a Range header.
	Range billing.Range
	// Link is the link the request came with; the zero Link when none.
	Link      Link
	Country   string
	ClientIP  string
	RequestID string
}

// Start opens a delivery before any byte is forwarded: the request joins its
// user's download of the file or starts one, and the download's reservation
// grows by what the request could add to its cost. A request that asks only
// for bytes its download holds (proportional) or has paid for (per-download)
// reserves nothing and is never refused. A refusal is a *QuotaError.
func (m *Meter) Start(ctx context.Context, req StartRequest) (*Delivery, error) {
	switch {
	case req.User == "" || req.Video == "":
		return nil, errors.New("start delivery: user and video are required")
	case !(req.Duration > 0) || math.IsInf(req.Duration, 0):
		return nil, fmt.Errorf("start delivery of %s: unknown duration", req.Video)
	}
	if _, err := stream.ParseDownloadType(string(req.Type)); err != nil {
		return nil, fmt.Errorf("start delivery: %w", err)
	}
	// The ledger's transaction must not end with the client: a commit cut
	// short by a cancelled context may have happened all the same, leaving an
	// open delivery nobody settles. It runs to its end, bounded in time.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.LedgerTimeout)
	defer cancel()
	now := m.cfg.Now()
	f, _ := m.files.Load(fileKey{req.Video, req.Type})
	known, _ := f.(fileID)
	d := &Delivery{m: m, req: req, id: newID()}
	op, err := m.ledger.Open(ctx, m.rule, OpenRequest{
		ID:            d.id,
		NewDownloadID: newID(),
		User:          req.User,
		Plan:          req.Plan,
		Video:         req.Video,
		Type:          req.Type,
		Limit:         req.LimitMinutes,
		Period:        Period(now),
		Duration:      req.Duration,
		Range:         req.Range,
		Size:          known.size,
		ETag:          known.etag,
		Link:          req.Link,
		Country:       req.Country,
		ClientIP:      req.ClientIP,
		RequestID:     req.RequestID,
		At:            now,
	})
	if err != nil {
		var qe *QuotaError
		if errors.As(err, &qe) {
			return nil, err
		}
		return nil, fmt.Errorf("start delivery: %w", err)
	}
	d.opened = op
	d.cpAt.Store(now.UnixNano())
	d.beatAt.Store(now.UnixNano())
	m.open.Store(d.id, d)
	return d, nil
}

// Charge bills a link whose bytes the gateway never sees (direct link mode): the
// user fetches the file from Stream, so the video's full duration is billed at
// once, with outcome DirectLink, when the link is handed out. A refusal is a
// *QuotaError and writes nothing.
func (m *Meter) Charge(ctx context.Context, req StartRequest) (Settled, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.LedgerTimeout)
	defer cancel()
	now := m.cfg.Now()
	st, err := m.ledger.Charge(ctx, OpenRequest{
		ID: newID(), NewDownloadID: newID(), User: req.User, Plan: req.Plan, Video: req.Video, Type: req.Type,
		Limit: req.LimitMinutes, Period: Period(now), Duration: req.Duration, Range: billing.Whole,
		Country: req.Country, ClientIP: req.ClientIP, RequestID: req.RequestID, At: now,
	}, DirectLink)
	if err != nil {
		var qe *QuotaError
		if errors.As(err, &qe) {
			return Settled{}, err
		}
		return Settled{}, fmt.Errorf("charge link: %w", err)
	}
	m.settled(st)
	return st, nil
}

// Usage is the user's standing in the current period under a plan of limit minutes
// (< 0 unlimited).
func (m *Meter) Usage(ctx context.Context, user, plan string, limit float64) (Usage, error) {
	u, err := m.ledger.Usage(ctx, user, Period(m.cfg.Now()))
	if err != nil {
		return Usage{}, err
	}
	return u.withLimit(plan, limit), nil
}

// Recover settles the deliveries a previous process left open, as of their
// last checkpoints (everything up to there is billed already), releases their
// claims, and logs a "billable download" line for each with status
// "recovered". Call it once at start-up, before serving. On a [Shared] ledger
// it settles only the deliveries no replica has written for the stale
// threshold; [Meter.RunReaper] settles the rest when they go stale.
func (m *Meter) Recover(ctx context.Context) ([]Settled, error) {
	out, err := m.ledger.Recover(ctx, m.rule, m.cfg.Now())
	for _, s := range out {
		m.settled(s)
	}
	return out, err
}

// Heartbeat records in the ledger, at the meter's clock and in one call, that
// this meter still meters its open deliveries whose rows nothing wrote for idle or
// longer (no checkpoint: a stalled client, a slow upstream, headers not yet in).
// [Meter.RunReaper] calls it every interval.
func (m *Meter) Heartbeat(ctx context.Context, idle time.Duration) error {
	now := m.cfg.Now()
	cut := now.Add(-idle).UnixNano()
	var ids []string
	var ds []*Delivery
	m.open.Range(func(_, v any) bool {
		if d := v.(*Delivery); d.beatAt.Load() <= cut {
			ids, ds = append(ids, d.id), append(ds, d)
		}
		return true
	})
	if len(ids) == 0 {
		return nil
	}
	if err := m.ledger.Heartbeat(ctx, ids, now); err != nil {
		return err
	}
	for _, d := range ds {
		d.beat(now.UnixNano())
	}
	return nil
}

// RunReaper keeps settlement going until ctx ends. Every interval it settles
// again the deliveries of this meter whose settlement failed, and, on a [Shared]
// ledger, heartbeats this meter's open deliveries that nothing wrote during the
// interval, so that no replica takes them for abandoned, then settles, from their
// last checkpoints, the deliveries no replica has written for the ledger's stale
// threshold (those of replicas that died and did not come back), logging a
// "billable download" line with status "recovered" for each. Run it on every
// replica, for as long as it serves.
//
// On a shared ledger a live delivery's row may be up to two intervals old, so
// every is shortened to a third of the stale threshold when longer; every <= 0 is
// a quarter of it, or 10s on a ledger that is not shared. There Recover is never
// called: it settles every open delivery, the process's own live ones included,
// so it runs only at start.
func (m *Meter) RunReaper(ctx context.Context, every time.Duration) {
	shared, ok := m.ledger.(Shared)
	if ok {
		stale := shared.StaleAfter()
		switch {
		case every <= 0:
			every = stale / 4
		case every > stale/3:
			m.cfg.Logger.Warn("reaper interval shortened to a third of the ledger's stale threshold",
				zap.Duration("interval", every), zap.Duration("stale_after", stale), zap.Duration("using", stale/3))
			every = stale / 3
		}
	} else if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ok {
			m.reap(ctx, every)
		}
		m.retrySettles(ctx)
	}
}

// retrySettles settles again what failed to settle, stopping at the first
// failure (the ledger is still unwell: the next round tries again) or when ctx
// ends.
func (m *Meter) retrySettles(ctx context.Context) {
	m.unsettled.Range(func(id, v any) bool {
		if ctx.Err() != nil {
			return false
		}
		a := v.(settleAttempt)
		if _, err := a.d.settle(a.outcome, a.reason); err != nil {
			return false
		}
		m.unsettled.Delete(id)
		return true
	})
}

func (m *Meter) reap(ctx context.Context, every time.Duration) {
	hctx, cancel := context.WithTimeout(ctx, m.cfg.LedgerTimeout)
	err := m.Heartbeat(hctx, every)
	cancel()
	if err != nil && ctx.Err() == nil {
		m.cfg.Logger.Warn("heartbeat open deliveries", zap.Error(err))
	}
	rctx, cancel := context.WithTimeout(ctx, m.cfg.LedgerTimeout)
	out, err := m.Recover(rctx)
	cancel()
	if err != nil && ctx.Err() == nil {
		m.cfg.Logger.Warn("recover abandoned deliveries", zap.Int("recovered", len(out)), zap.Error(err))
	}
	if len(out) > 0 {
		m.cfg.Logger.Info("settled deliveries abandoned by another process", zap.Int("deliveries", len(out)))
	}
}

// settled reports a settled delivery: its log line when it sent the file's
// bytes or billed, and OnSettle.
func (m *Meter) settled(s Settled) {
	if m.cfg.OnSettle != nil {
		m.cfg.OnSettle(s)
	}
	if s.Acked > 0 || s.Minutes > 0 {
		m.logSettled(s)
	}
}

func (m *Meter) logSettled(s Settled) {
	m.cfg.Logger.Info("billable download",
		zap.String("user", s.User),
		zap.String("video", s.Video),
		zap.String("type", string(s.Type)),
		zap.Float64("minutes", s.Minutes),
		zap.Float64("stream_minutes", s.StreamMinutes),
		zap.Int64("bytes", s.Acked),
		zap.Int64("bytes_written", s.Written),
		zap.Int64("stream_bytes", s.StreamBytes),
		zap.String("delivered_by", s.AckedSource),
		zap.String("range", s.Range),
		zap.String("status", s.Status),
		zap.String("country", s.Country),
		zap.String("download_id", s.DownloadID),
		zap.String("delivery_id", s.DeliveryID),
		zap.Bool("started_download", s.StartedDownload),
		zap.String("mode", string(s.Mode)),
		zap.String("period", s.Period),
		zap.String("request_id", s.RequestID),
	)
}

// Delivery is one response body being metered. Respond, Wrote and Finish are
// called by the goroutine serving the response; Finish and Abort are
// idempotent and safe to call from a defer.
type Delivery struct {
	m      *Meter
	req    StartRequest
	id     string
	opened Opened

	counter atomic.Pointer[func() Progress]
	written atomic.Int64 // body bytes written, when no counter is set
	noBody  atomic.Bool  // an answer without the file's bytes: nothing to bill

	cpAt   atomic.Int64 // time of the last checkpoint, Unix nanoseconds
	cpAt0  atomic.Int64 // written bytes at the last checkpoint
	cpBusy atomic.Bool
	beatAt atomic.Int64 // last time the ledger row was written, Unix nanoseconds

	mu      sync.Mutex
	done    bool
	settled Settled
}

// ID is the delivery's ledger ID.
func (d *Delivery) ID() string { return d.id }

// DownloadID is the download the delivery belongs to when it opened.
func (d *Delivery) DownloadID() string { return d.opened.DownloadID }

// StartsDownload reports whether this delivery started its download.
func (d *Delivery) StartsDownload() bool { return d.opened.Started }

// Reserved is the minutes the delivery added to its download's reservation
// when it opened.
func (d *Delivery) Reserved() float64 { return d.opened.Reserved }

// Count sets how the delivery learns its progress: the body bytes the client
// acknowledged, written and read from Stream. Without it, bytes passed to
// Wrote count as delivered.
func (d *Delivery) Count(progress func() Progress) { d.counter.Store(&progress) }

// progress is the delivery's progress now.
func (d *Delivery) progress() Progress {
	if f := d.counter.Load(); f != nil {
		p := (*f)()
		p.At = d.m.cfg.Now()
		return p
	}
	w := d.written.Load()
	return Progress{Acked: w, Written: w, StreamBytes: w, Source: "written", At: d.m.cfg.Now()}
}

// Respond tells the delivery Stream's answer: its status, the file's size and
// ETag (0, "" unknown) and the bytes of the file its body carries. Anything but
// 200 and 206 carries none. It trues up the claim; a *QuotaError means the
// answer carries more than the quota allows (a range Stream answered in full)
// and the caller should Abort.
func (d *Delivery) Respond(status int, size int64, etag string, body billing.Interval) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return nil
	}
	if status != 200 && status != 206 {
		d.noBody.Store(true)
		body = billing.Interval{}
	} else if size > 0 {
		d.m.files.Store(fileKey{d.req.Video, d.req.Type}, fileID{size: size, etag: etag})
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.m.cfg.LedgerTimeout)
	defer cancel()
	return d.m.ledger.Respond(ctx, d.m.rule, d.id, Response{Size: size, ETag: etag, Body: body, At: d.m.cfg.Now()})
}

// Wrote counts n body bytes written to the client. When CheckpointBytes have
// been written or CheckpointEvery has passed since the last checkpoint, it
// records the progress in the ledger, which bills what the client has
// acknowledged so far; otherwise it only adds to a counter.
func (d *Delivery) Wrote(n int64) {
	if n <= 0 {
		return
	}
	w := d.written.Add(n)
	if d.noBody.Load() {
		return
	}
	now := d.m.cfg.Now().UnixNano()
	if w-d.cpAt0.Load() < d.m.cfg.CheckpointBytes && now-d.cpAt.Load() < int64(d.m.cfg.CheckpointEvery) {
		return
	}
	if !d.cpBusy.CompareAndSwap(false, true) {
		return // another goroutine is writing a checkpoint
	}
	defer d.cpBusy.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), d.m.cfg.LedgerTimeout)
	defer cancel()
	if err := d.m.ledger.Progress(ctx, d.m.rule, d.id, d.progress()); err != nil {
		d.m.cfg.Logger.Warn("checkpoint delivery", zap.String("delivery_id", d.id), zap.Error(err))
	} else {
		d.beat(now)
	}
	d.cpAt0.Store(w)
	d.cpAt.Store(now)
}

// Fenced reports whether the delivery must stop sending: on a shared ledger,
// nothing this process wrote for it (checkpoint or heartbeat) has succeeded
// for three quarters of the ledger's stale threshold, so another replica may
// soon take it for abandoned and settle it. Stopping first keeps what is
// delivered bounded by what is billed; the owner's late settlement then bills
// the rest (Ledger.Settle tops up a recovered delivery).
func (d *Delivery) Fenced() bool {
	return d.m.fence > 0 && d.m.cfg.Now().UnixNano()-d.beatAt.Load() > int64(d.m.fence)
}

// beat records that the delivery's ledger row was written at at (Unix
// nanoseconds), never moving the record back.
func (d *Delivery) beat(at int64) {
	for {
		cur := d.beatAt.Load()
		if cur >= at || d.beatAt.CompareAndSwap(cur, at) {
			return
		}
	}
}

// Finish settles the delivery with outcome o: what the client acknowledged is
// delivered into its download and billed by the rule, the claim is released,
// the ledger row closed, and one "billable download" line logged when body
// bytes were sent. Later calls return the first result.
func (d *Delivery) Finish(o Outcome) (Settled, error) {
	return d.settle(o, "")
}

// Abort closes a delivery that failed before its first byte: it bills nothing
// and releases its claim, with outcome Aborted. A delivery that already sent
// bytes is settled as by Finish(ClientGone) instead, so that no delivered byte
// goes unbilled.
func (d *Delivery) Abort(reason string) {
	if d.written.Load() > 0 || d.progress().Written > 0 {
		d.settle(ClientGone, reason)
		return
	}
	d.settle(Aborted, reason)
}

func (d *Delivery) settle(o Outcome, reason string) (Settled, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return d.settled, nil
	}
	// From the first attempt on, the heartbeat leaves the row alone: should this
	// settlement fail, the row goes stale and a reaper settles it.
	d.m.open.Delete(d.id)
	p := Progress{At: d.m.cfg.Now()}
	switch {
	case o == Aborted:
		// Nothing reached the client, but what Stream had delivered into the
		// gateway's socket before the request was given up is on Stream's bill.
		p.StreamBytes = d.progress().StreamBytes
	case !d.noBody.Load():
		p = d.progress()
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.m.cfg.LedgerTimeout)
	defer cancel()
	st, err := d.m.ledger.Settle(ctx, d.m.rule, d.id, Settlement{Progress: p, Outcome: o, Reason: reason})
	if err != nil {
		// The row stays open: RunReaper tries again, or, should the process stop
		// first, the next start's Recover (or another replica's) settles it.
		d.m.unsettled.Store(d.id, settleAttempt{d: d, outcome: o, reason: reason})
		d.m.cfg.Logger.Error("settle delivery", zap.String("delivery_id", d.id), zap.String("user", d.req.User),
			zap.String("video", d.req.Video), zap.Stringer("status", o), zap.Int64("bytes", p.Acked), zap.Error(err))
		return Settled{}, err
	}
	d.done, d.settled = true, st
	if st.Status != o.String() {
		// Recovered by a replica that took this one for gone: that replica logged
		// the billable line from the last checkpoint, and this settlement billed
		// what was delivered since.
		d.m.cfg.Logger.Warn("delivery was settled elsewhere while its body was open",
			zap.String("delivery_id", d.id), zap.String("user", d.req.User), zap.String("video", d.req.Video),
			zap.String("status", st.Status), zap.Int64("bytes", p.Acked), zap.Int64("bytes_billed", st.Acked))
		return st, nil
	}
	if st.Acked == 0 && st.Minutes == 0 {
		d.m.cfg.Logger.Debug("delivery settled without body bytes", zap.String("delivery_id", d.id),
			zap.String("user", d.req.User), zap.String("video", d.req.Video), zap.Stringer("status", o),
			zap.String("reason", reason))
	}
	d.m.settled(st)
	return st, nil
}
