package usage

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/streamgate/streamgate/stream"
)

// MeterConfig configures a [Meter]. The zero value is usable.
type MeterConfig struct {
	// Mode is how deliveries are billed. Default Proportional.
	Mode Mode
	// ResumeWindow is how long after a download was last active a ranged request
	// on the authenticated route may continue it. Requests under a grant session
	// continue that session's download for as long as the grant is valid. Default 1h.
	ResumeWindow time.Duration
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
	// Logger receives one "billable download" line per settled delivery. Default
	// zap.NewNop().
	Logger *zap.Logger
}

// Meter meters deliveries against a [Ledger]: it reserves before the first byte,
// trues up when headers arrive, checkpoints while bytes flow and settles when the
// body ends. It remembers file sizes per video and type learned from responses, so
// that later ranged requests reserve only their share.
type Meter struct {
	ledger Ledger
	cfg    MeterConfig
	sizes  sync.Map // sizeKey → int64 file size in bytes
	// open holds the deliveries this meter reserved and has not tried to settle
	// yet, by ID: the ones its heartbeat keeps alive in a shared ledger.
	open sync.Map // string → *Delivery
	// keyLocks serialise, per download key (striped), deciding which download a
	// request continues and reserving for it, so two requests of one download
	// that arrive together see each other.
	keyLocks [64]sync.Mutex
	// unsettled holds the deliveries whose settlement failed (the ledger was
	// unreachable or too slow), by ID, for RunReaper to try again: until then
	// their reservations keep counting against their users.
	unsettled sync.Map // string → settleAttempt
}

// settleAttempt is a settlement to try again.
type settleAttempt struct {
	d              *Delivery
	status, reason string
	abort          bool
}

type sizeKey struct {
	video string
	typ   stream.DownloadType
}

// NewMeter returns a Meter writing to l, with cfg's zero fields set to their
// defaults.
func NewMeter(l Ledger, cfg MeterConfig) *Meter {
	if cfg.Mode == "" {
		cfg.Mode = Proportional
	}
	if cfg.ResumeWindow <= 0 {
		cfg.ResumeWindow = time.Hour
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = 2 * time.Second
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
	return &Meter{ledger: l, cfg: cfg}
}

// Mode is the meter's billing mode.
func (m *Meter) Mode() Mode { return m.cfg.Mode }

// StartRequest describes a download request about to be forwarded.
type StartRequest struct {
	User string
	Plan string
	// LimitMinutes is the plan's monthly minutes; < 0 is unlimited.
	LimitMinutes float64
	Video        string
	Type         stream.DownloadType
	// Duration is the video's billable duration in seconds, from the Stream API.
	// Unknown durations (-1) must be refused by the caller; Start refuses them too.
	Duration float64
	// RangeStart is the first byte asked for; -1 without a Range header. A suffix
	// range (bytes=-N) is passed as -1: it is treated as a whole-file request.
	RangeStart int64
	// RangeEnd is the last byte asked for, inclusive; -1 when open-ended or none.
	RangeEnd int64
	// Session is the link grant's session ID; "" on the authenticated route. A
	// ranged request under the same session continues that session's download.
	Session   string
	Country   string
	ClientIP  string
	RequestID string
}

// Start decides which download the request belongs to and reserves what it could
// cost, before any byte is forwarded. A request without Range, with a range at byte
// 0, or whose range continues no known download starts a new download; a range not
// at 0 continues the latest download of the same user, video, type and session (on
// the authenticated route: if active within ResumeWindow) when the range fits in
// what that download has left to send: from where it started to the end of the
// file, less what its deliveries sent, give or take bytes lost in interruptions
// (see resumeSlack). A range that does not fit starts, and bills, a new
// download, so no range trick fetches a file twice for one charge.
//
// It reserves, proportional: the range's share of the duration when the file size
// is known from an earlier response, else the full duration; per-download: the full
// duration when the request starts a download or continues one not billed yet
// (whose first delivery sent nothing), nothing when it continues a billed one. A
// zero reservation is never refused, so a continuation of a paid download is
// served even when the quota is spent.
// A refusal is a *QuotaError.
func (m *Meter) Start(ctx context.Context, req StartRequest) (*Delivery, error) {
	switch {
	case req.User == "" || req.Video == "":
		return nil, errors.New("start delivery: user and video are required")
	case req.Duration < 0:
		return nil, fmt.Errorf("start delivery of %s: unknown duration", req.Video)
	}
	if _, err := stream.ParseDownloadType(string(req.Type)); err != nil {
		return nil, fmt.Errorf("start delivery: %w", err)
	}
	now := m.cfg.Now()
	key := DownloadKey{User: req.User, Video: req.Video, Type: req.Type, Session: req.Session}
	mu := m.keyLock(key)
	mu.Lock()
	defer mu.Unlock()

	starts, downloadID, billed := true, "", false
	if req.RangeStart > 0 {
		since := now.Add(-m.cfg.ResumeWindow)
		if req.Session != "" {
			since = time.Time{}
		}
		dl, ok, err := m.ledger.FindDownload(ctx, key, since)
		if err != nil {
			return nil, fmt.Errorf("start delivery: %w", err)
		}
		// The size as this process learned it, else as the ledger kept it (another
		// replica, or before a restart).
		size := m.size(req.Video, req.Type)
		if size <= 0 {
			size = dl.Size
		}
		if ok && (size <= 0 || rangeLen(req.RangeStart, req.RangeEnd, size) <= dl.allowance(size)-m.openClaims(dl.ID, size)) {
			starts, downloadID, billed = false, dl.ID, dl.Billed
		}
	}
	if starts {
		downloadID = newID()
	}

	full := req.Duration / 60
	var reserve, once float64
	switch m.cfg.Mode {
	case PerDownload:
		once = full
		if starts || !billed {
			reserve = full
		}
	default:
		reserve = full
		if size := m.size(req.Video, req.Type); size > 0 {
			reserve = share(full, rangeLen(req.RangeStart, req.RangeEnd, size), size)
		}
	}

	d := &Delivery{
		m:          m,
		req:        req,
		id:         newID(),
		downloadID: downloadID,
		starts:     starts,
		billed:     billed,
		period:     Period(now),
		reserved:   reserve,
	}
	d.total.Store(m.size(req.Video, req.Type))
	d.cpAt.Store(now.UnixNano())
	d.beatAt.Store(now.UnixNano())
	err := m.ledger.Reserve(ctx, OpenDelivery{
		ID:          d.id,
		DownloadID:  downloadID,
		NewDownload: starts,
		User:        req.User,
		Plan:        req.Plan,
		Video:       req.Video,
		Type:        req.Type,
		Session:     req.Session,
		Mode:        m.cfg.Mode,
		Period:      d.period,
		Duration:    req.Duration,
		Reserve:     reserve,
		Once:        once,
		RangeStart:  req.RangeStart,
		RangeEnd:    req.RangeEnd,
		Country:     req.Country,
		ClientIP:    req.ClientIP,
		RequestID:   req.RequestID,
		At:          now,
	}, req.LimitMinutes)
	if err != nil {
		var qe *QuotaError
		if errors.As(err, &qe) {
			return nil, err
		}
		return nil, fmt.Errorf("start delivery: %w", err)
	}
	m.open.Store(d.id, d)
	if !starts {
		if err := m.ledger.TouchDownload(ctx, downloadID, now); err != nil {
			m.cfg.Logger.Warn("touch download", zap.String("download_id", downloadID), zap.Error(err))
		}
	}
	return d, nil
}

// Charge bills a link whose bytes the gateway never sees (direct link mode): the
// user fetches the file from Stream, so the video's full duration is reserved and
// settled at once, with status "direct_link", when the link is handed out. A
// refusal is a *QuotaError and writes nothing.
func (m *Meter) Charge(ctx context.Context, req StartRequest) (Settled, error) {
	req.RangeStart, req.RangeEnd = -1, -1
	d, err := m.Start(ctx, req)
	if err != nil {
		return Settled{}, err
	}
	defer m.open.Delete(d.id)
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Settlement{Status: "direct_link", At: m.cfg.Now()}
	if m.cfg.Mode == PerDownload {
		s.Once = true
	} else {
		s.Minutes = req.Duration / 60
	}
	st, err := m.ledger.Settle(ctx, d.id, s)
	if err != nil {
		// The link is not handed out, so nothing is to be billed: RunReaper
		// releases the reservation once the ledger answers again.
		m.unsettled.Store(d.id, settleAttempt{d: d, status: "aborted", reason: "link not handed out", abort: true})
		return Settled{}, fmt.Errorf("charge link: %w", err)
	}
	d.done, d.settled, d.reserved = true, st, 0
	m.logSettled(st)
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

// Recover settles the deliveries a previous process left open, from their last
// checkpoints, and logs a "billable download" line for each with status
// "recovered". Call it once at start-up, before serving. On a [Shared] ledger it
// settles only the deliveries no replica has written for the stale threshold;
// [Meter.RunReaper] settles the rest when they go stale.
func (m *Meter) Recover(ctx context.Context) ([]Settled, error) {
	out, err := m.ledger.Recover(ctx, m.cfg.Now())
	for _, s := range out {
		m.logSettled(s)
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
		if _, err := a.d.settle(a.status, a.reason, a.abort); err != nil {
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

func (m *Meter) size(video string, t stream.DownloadType) int64 {
	if v, ok := m.sizes.Load(sizeKey{video, t}); ok {
		return v.(int64)
	}
	return 0
}

func (m *Meter) logSettled(s Settled) {
	m.cfg.Logger.Info("billable download",
		zap.String("user", s.User),
		zap.String("video", s.Video),
		zap.String("type", string(s.Type)),
		zap.Float64("minutes", s.Minutes),
		zap.Int64("bytes", s.Bytes),
		zap.String("status", s.Status),
		zap.String("country", s.Country),
		zap.String("download_id", s.DownloadID),
		zap.String("delivery_id", s.DeliveryID),
		zap.String("mode", string(s.Mode)),
		zap.String("period", s.Period),
		zap.String("request_id", s.RequestID),
	)
}

// Delivery is one response body being metered. Headers, Add and Finish are called
// by the goroutine serving the response; Finish and Abort are idempotent and safe
// to call from a defer.
type Delivery struct {
	m          *Meter
	req        StartRequest
	id         string
	downloadID string
	starts     bool
	billed     bool // it continues a download that was billed already
	period     string

	bytes  atomic.Int64 // body bytes written to the client
	total  atomic.Int64 // file size; 0 unknown
	noBill atomic.Bool  // a non-2xx response: nothing is billed
	// fullCharge: per-download, a continuation that Stream answered with the
	// whole file (200, an If-Range that no longer matched) is a download of its
	// own and bills the full duration itself.
	fullCharge atomic.Bool

	cpBytes atomic.Int64 // bytes at the last checkpoint
	cpAt    atomic.Int64 // time of the last checkpoint, Unix nanoseconds
	cpBusy  atomic.Bool
	beatAt  atomic.Int64 // last time the ledger row was written, Unix nanoseconds

	mu       sync.Mutex
	reserved float64 // minutes, guarded by mu
	done     bool
	settled  Settled
}

// ID is the delivery's ledger ID.
func (d *Delivery) ID() string { return d.id }

// DownloadID is the download the delivery belongs to.
func (d *Delivery) DownloadID() string { return d.downloadID }

// StartsDownload reports whether this delivery started its download.
func (d *Delivery) StartsDownload() bool { return d.starts }

// Reserved is the minutes the delivery holds against the quota.
func (d *Delivery) Reserved() float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reserved
}

// Bytes is the body bytes counted so far.
func (d *Delivery) Bytes() int64 { return d.bytes.Load() }

// Headers records the upstream response's status, Content-Length (-1 unknown) and
// the file's total size (from Content-Range; -1 unknown; a 200's Content-Length is
// taken as the total). It learns the file's size and trues up the reservation:
// proportional, to duration × contentLength / total. A non-2xx status bills nothing
// and releases the reservation. A *QuotaError means the response costs more than
// the quota allows; the caller should Abort.
func (d *Delivery) Headers(status int, contentLength, totalSize int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return nil
	}
	if status < 200 || status > 299 {
		d.noBill.Store(true)
		return d.adjustLocked(0)
	}
	total := totalSize
	if total <= 0 && status == 200 {
		total = contentLength
	}
	if total > 0 {
		d.total.Store(total)
		d.m.sizes.Store(sizeKey{d.req.Video, d.req.Type}, total)
	}
	if d.m.cfg.Mode == PerDownload && !d.starts && status == 200 {
		d.fullCharge.Store(true)
		if err := d.adjustLocked(d.req.Duration / 60); err != nil {
			return err
		}
	}
	if d.m.cfg.Mode != Proportional || total <= 0 {
		return nil
	}
	length := contentLength
	if length < 0 {
		if status == 200 {
			length = total
		} else {
			length = rangeLen(d.req.RangeStart, d.req.RangeEnd, total)
		}
	}
	return d.adjustLocked(share(d.req.Duration/60, length, total))
}

func (d *Delivery) adjustLocked(minutes float64) error {
	if toMicro(minutes) == toMicro(d.reserved) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.m.cfg.LedgerTimeout)
	defer cancel()
	if err := d.m.ledger.Adjust(ctx, d.id, minutes); err != nil {
		return err
	}
	d.reserved = minutes
	return nil
}

// Add counts n body bytes written to the client. When CheckpointBytes have been
// written or CheckpointEvery has passed since the last checkpoint, it records the
// progress in the ledger before returning; otherwise it only adds to a counter.
func (d *Delivery) Add(n int64) {
	if n <= 0 {
		return
	}
	b := d.bytes.Add(n)
	if d.noBill.Load() {
		return
	}
	now := d.m.cfg.Now().UnixNano()
	if b-d.cpBytes.Load() < d.m.cfg.CheckpointBytes && now-d.cpAt.Load() < int64(d.m.cfg.CheckpointEvery) {
		return
	}
	if !d.cpBusy.CompareAndSwap(false, true) {
		return // another goroutine is writing a checkpoint
	}
	defer d.cpBusy.Store(false)
	b = d.bytes.Load()
	ctx, cancel := context.WithTimeout(context.Background(), d.m.cfg.LedgerTimeout)
	defer cancel()
	if err := d.m.ledger.Checkpoint(ctx, d.id, b, d.minutes(b), d.total.Load(), time.Unix(0, now)); err != nil {
		d.m.cfg.Logger.Warn("checkpoint delivery", zap.String("delivery_id", d.id), zap.Error(err))
	} else {
		d.beat(now)
	}
	d.cpBytes.Store(b)
	d.cpAt.Store(now)
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

// minutes is what b bytes bill on this delivery itself: proportionalMinutes,
// or the full duration for a per-download continuation of a billed download
// that Stream answered in full. The download's once-only charge is billed
// through the ledger (once), which is what a full answer to a download not
// billed yet pays: that keeps a crash from billing it twice, checkpoint and
// charge.
func (d *Delivery) minutes(b int64) float64 {
	if d.fullCharge.Load() && d.billed && b > 0 {
		return d.req.Duration / 60
	}
	return d.proportionalMinutes(b)
}

// once reports whether settling b bytes bills the download's once-only charge.
func (d *Delivery) once(b int64) bool {
	if d.m.cfg.Mode != PerDownload || b <= 0 {
		return false
	}
	return !d.fullCharge.Load() || !d.billed
}

// proportionalMinutes is what b bytes bill in proportional mode: duration × b /
// size, the full duration when the size is unknown, never more than the full
// duration. 0 in per-download mode, where the download's charge is billed once
// through the ledger.
func (d *Delivery) proportionalMinutes(b int64) float64 {
	if d.m.cfg.Mode != Proportional || b <= 0 {
		return 0
	}
	full := d.req.Duration / 60
	total := d.total.Load()
	if total <= 0 {
		return full
	}
	return min(share(full, b, total), full)
}

// Finish settles the delivery: status says why the body ended ("complete",
// "client_gone", "upstream_failed", "shutdown"). Proportional: bills duration ×
// bytes / size; per-download: the full duration once per download, when at least
// one byte was delivered (a continuation of a billed download bills 0). It releases
// the rest of the reservation, writes the ledger row and logs one "billable
// download" line. Later calls return the first result.
func (d *Delivery) Finish(status string) (Settled, error) {
	return d.settle(status, "", false)
}

// Abort closes a delivery that failed before its first byte: it bills nothing,
// releases the reservation and closes the row with 0 minutes and status "aborted".
// A delivery that already sent bytes is settled as by Finish(reason) instead, so
// that no delivered byte goes unbilled.
func (d *Delivery) Abort(reason string) {
	if d.bytes.Load() > 0 {
		d.settle(reason, "", false)
		return
	}
	d.settle("aborted", reason, true)
}

func (d *Delivery) settle(status, reason string, abort bool) (Settled, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return d.settled, nil
	}
	// From the first attempt on, the heartbeat leaves the row alone: should this
	// settlement fail, the row goes stale and a reaper settles it.
	d.m.open.Delete(d.id)
	b := d.bytes.Load()
	if abort || d.noBill.Load() {
		b = 0
	}
	s := Settlement{
		Status:    status,
		Reason:    reason,
		Bytes:     b,
		TotalSize: d.total.Load(),
		Minutes:   d.minutes(b),
		Once:      d.once(b),
		At:        d.m.cfg.Now(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.m.cfg.LedgerTimeout)
	defer cancel()
	st, err := d.m.ledger.Settle(ctx, d.id, s)
	if err != nil {
		// The row stays open: RunReaper tries again, or, should the process stop
		// first, the next start's Recover (or another replica's) settles it.
		d.m.unsettled.Store(d.id, settleAttempt{d: d, status: status, reason: reason, abort: abort})
		d.m.cfg.Logger.Error("settle delivery", zap.String("delivery_id", d.id), zap.String("user", d.req.User),
			zap.String("video", d.req.Video), zap.String("status", status), zap.Int64("bytes", b), zap.Error(err))
		return Settled{}, err
	}
	d.done, d.settled, d.reserved = true, st, 0
	if st.Status != s.Status {
		// Recovered by a replica that took this one for gone: that replica logged
		// the billable line; the bytes sent since the last checkpoint go unbilled.
		d.m.cfg.Logger.Warn("delivery was settled elsewhere while its body was open",
			zap.String("delivery_id", d.id), zap.String("user", d.req.User), zap.String("video", d.req.Video),
			zap.String("status", st.Status), zap.Int64("bytes", b), zap.Int64("bytes_billed", st.Bytes))
		return st, nil
	}
	if abort {
		d.m.cfg.Logger.Debug("delivery aborted", zap.String("delivery_id", d.id), zap.String("user", d.req.User),
			zap.String("video", d.req.Video), zap.String("reason", reason))
	} else {
		d.m.logSettled(st)
	}
	return st, nil
}

// keyLock is the lock of key's stripe.
func (m *Meter) keyLock(k DownloadKey) *sync.Mutex {
	h := fnv.New32a()
	for _, s := range []string{k.User, k.Video, string(k.Type), k.Session} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return &m.keyLocks[h.Sum32()%uint32(len(m.keyLocks))]
}

// openClaims is what this meter's open deliveries of download id may still
// send, beyond what they have checkpointed (which the ledger counts already):
// without it, requests running beside each other would each fit in what the
// download has left.
func (m *Meter) openClaims(id string, size int64) int64 {
	var sum int64
	m.open.Range(func(_, v any) bool {
		if d := v.(*Delivery); d.downloadID == id {
			sum += max(0, rangeLen(d.req.RangeStart, d.req.RangeEnd, size)-d.cpBytes.Load())
		}
		return true
	})
	return sum
}

// allowance is how many more bytes a download of a file of size bytes may send
// as continuations: one file's worth (it pays the full duration, wherever it
// started), less what its deliveries sent, plus what they may have left in
// socket buffers (resumeSlack).
func (dl DownloadState) allowance(size int64) int64 {
	return size - dl.Bytes + min(dl.Lost, resumeSlack(size))
}

// resumeSlack bounds how many of a download's sent bytes may be discounted as
// never kept by the client when judging what it has left. Bytes are counted as
// the kernel took them: when a client goes away, the tail of what the gateway
// wrote may still sit in socket buffers, and the client resumes from what it
// kept, so without a discount a genuine resume would be billed twice. The
// discount is what the deliveries sent, at most LostPerDelivery each and at
// most the larger of LostPerDelivery and a tenth of what the download had to
// send in all (never more than that). A continuation must fit in what is left
// after it, so re-fetching a finished file larger than the discount starts a new
// download, and one charge fetches at most about two copies of a small file.
func resumeSlack(remaining int64) int64 {
	if remaining <= 0 {
		return 0
	}
	return min(remaining, max(LostPerDelivery, remaining/10))
}

// rangeLen is the number of bytes a range asks for from a file of size bytes.
func rangeLen(start, end, size int64) int64 {
	if start < 0 {
		return size
	}
	if start >= size {
		return 0
	}
	last := size - 1
	if end >= 0 && end < last {
		last = end
	}
	if last < start {
		return 0
	}
	return last - start + 1
}

// share is full × part / whole, in minutes.
func share(full float64, part, whole int64) float64 {
	if whole <= 0 {
		return full
	}
	return full * float64(part) / float64(whole)
}

func newID() string { return rand.Text() }
