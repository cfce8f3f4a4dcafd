package usage

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/stream"
)

// store is the ledger both SQL engines share: the same statements and the same
// transactions, written once. The dialects differ only in placeholders, in
// row locks (PostgreSQL locks the download key's row with the upsert that
// reads it; SQLite has one writer at a time anyway) and in whether open rows
// may belong to another live process.
type store struct {
	db *sql.DB
	pg bool
	// group queues writers in Go and commits them together (inTx). SQLite
	// admits one writer at a time, and a writer that finds the lock taken
	// sleeps in its busy handler instead of waking when the lock is free
	// (docs/benchmarks.md).
	group group
	// prepared holds SQLite's statements, prepared once (tx.stmt).
	prepared sync.Map // query → *sql.Stmt
	seen     sync.Map // query → true: used, not prepared yet
	// stale is, on a shared ledger, how long an open row may go unwritten before
	// Recover takes its process for gone; 0 when one process owns the ledger.
	stale   time.Duration
	rebound sync.Map // query with ? → query with $n
	// files holds, by delivery ID, the file and claim of each delivery this
	// store opened in a download of a known file and has not yet told of a
	// response: what Respond decides by whether there is anything to write.
	files sync.Map // string → openFile
}

// q is query in the dialect's placeholders.
func (s *store) q(query string) string {
	if !s.pg {
		return query
	}
	if v, ok := s.rebound.Load(query); ok {
		return v.(string)
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	s.rebound.Store(query, b.String())
	return b.String()
}

// tx is one ledger transaction, or one caller's part of a group commit.
type tx struct {
	tx  *sql.Tx
	s   *store
	ctx context.Context
}

// stmt is query prepared on the transaction's connection. SQLite would
// otherwise parse every statement again on every call (the parser was a fifth
// of a small download's CPU); pgx keeps its own cache of prepared statements.
// A query seen for the first time is prepared for this transaction only, and
// for good between groups (prepareSeen): the transaction may hold the only
// connection.
func (t tx) stmt(query string) (*sql.Stmt, error) {
	if t.s.pg {
		return nil, nil
	}
	if v, ok := t.s.prepared.Load(query); ok {
		return t.tx.StmtContext(t.ctx, v.(*sql.Stmt)), nil
	}
	t.s.seen.Store(query, true)
	return t.tx.PrepareContext(t.ctx, query)
}

// prepareSeen prepares, for good, the statements transactions used unprepared.
func (s *store) prepareSeen() {
	s.seen.Range(func(k, _ any) bool {
		query := k.(string)
		s.seen.Delete(query)
		if _, ok := s.prepared.Load(query); ok {
			return true
		}
		if ps, err := s.db.Prepare(query); err == nil {
			s.prepared.Store(query, ps)
		}
		return true
	})
}

func (t tx) exec(query string, args ...any) (sql.Result, error) {
	ps, err := t.stmt(query)
	if err != nil {
		return nil, err
	}
	if ps == nil {
		return t.tx.ExecContext(t.ctx, t.s.q(query), args...)
	}
	return ps.ExecContext(t.ctx, args...)
}

// scanner is what row returns: a *sql.Row, or the error preparing it.
type scanner interface{ Scan(...any) error }

type failedRow struct{ err error }

func (r failedRow) Scan(...any) error { return r.err }

func (t tx) row(query string, args ...any) scanner {
	ps, err := t.stmt(query)
	if err != nil {
		return failedRow{err}
	}
	if ps == nil {
		return t.tx.QueryRowContext(t.ctx, t.s.q(query), args...)
	}
	return ps.QueryRowContext(t.ctx, args...)
}

func (t tx) query(query string, args ...any) (*sql.Rows, error) {
	ps, err := t.stmt(query)
	if err != nil {
		return nil, err
	}
	if ps == nil {
		return t.tx.QueryContext(t.ctx, t.s.q(query), args...)
	}
	return ps.QueryContext(t.ctx, args...)
}

// Group commit. Each write is a function of a transaction; the writes that
// arrive while a transaction is committing queue, and the next transaction
// takes all of them (up to maxGroup), so that many reservations and
// settlements share one BEGIN, one COMMIT and the pages they both touch. Each
// caller returns once the commit that holds its write is done, so a write is
// as durable when its caller hears of it as it was alone. Every write runs
// inside a savepoint: one that fails is rolled back to it and its caller gets
// its error, and the others commit as if it had never run, which is a valid
// order of concurrent requests (it ran first and changed nothing).
//
// The caller whose write finds no transaction running leads: it runs
// transactions until the queue is empty or hands the lead to the oldest
// waiting caller, so no goroutine runs when the ledger is idle and no caller
// leads for longer than its own transaction plus one more.
//
// On SQLite one group runs at a time: SQLite has one writer anyway. On
// PostgreSQL every write runs alone by default, concurrently (GroupCommit).

// maxGroup is the most writes one transaction takes.
const maxGroup = 64

// write is one caller's transaction function waiting for its group.
type write struct {
	ctx  context.Context
	fn   func(t tx) error
	done chan written
}

// written ends a caller's wait: its result, or the lead.
type written struct {
	err  error
	lead bool
}

// group is the queue of writes waiting for the next transaction.
type group struct {
	mu    sync.Mutex
	queue []*write
	// leaders is how many groups are running; lanes is the most that may
	// run at once (0 means 1).
	leaders, lanes int
	// commits and writes count transactions and the writes they held.
	commits, writes atomic.Int64
}

// Commits reports how many transactions the ledger committed for its writes
// since it opened, and how many writes they held: writes/commits is the
// average group.
func (s *store) Commits() (commits, writes int64) {
	return s.group.commits.Load(), s.group.writes.Load()
}

// inTx runs fn in a transaction, alone or with other callers' writes, and
// returns once that transaction committed (nil) or fn's own error.
func (s *store) inTx(ctx context.Context, fn func(t tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w := &write{ctx: ctx, fn: contained(fn), done: make(chan written, 1)}
	g := &s.group
	g.mu.Lock()
	lead := g.leaders < max(g.lanes, 1)
	if lead {
		g.leaders++
	} else {
		g.queue = append(g.queue, w)
	}
	g.mu.Unlock()
	if !lead {
		r := <-w.done
		if !r.lead {
			return r.err
		}
	}
	s.lead(w)
	return (<-w.done).err
}

// contained runs fn and turns a panic of it into its error: a leader runs other
// callers' writes, and one that panicked would otherwise take the leader's
// goroutine down with the lead still held, leaving every later write waiting.
func contained(fn func(t tx) error) func(t tx) error {
	return func(t tx) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("ledger write panicked: %v", p)
			}
		}()
		return fn(t)
	}
}

// lead runs one group, w first, then hands the lead on to the oldest waiting
// write's caller, or gives it up when none waits. The write handed the lead
// leaves the queue with it, so no other group takes it meanwhile.
func (s *store) lead(w *write) {
	g := &s.group
	g.mu.Lock()
	n := min(len(g.queue), maxGroup-1)
	batch := append([]*write{w}, g.queue[:n]...)
	g.queue = g.queue[n:]
	g.mu.Unlock()

	s.commit(batch)
	if !s.pg {
		s.prepareSeen()
	}

	g.mu.Lock()
	if len(g.queue) == 0 {
		g.leaders--
		g.queue = nil
		g.mu.Unlock()
		return
	}
	next := g.queue[0]
	g.queue = g.queue[1:]
	g.mu.Unlock()
	next.done <- written{lead: true}
}

// commit runs batch's writes in one transaction and answers their callers.
// When the transaction itself fails (BEGIN, a savepoint or COMMIT; a lost
// connection, a deadlock with another replica), no write of it counts, and
// each runs again alone, in a transaction of its own.
func (s *store) commit(batch []*write) {
	s.group.commits.Add(1)
	s.group.writes.Add(int64(len(batch)))
	if len(batch) == 1 {
		w := batch[0]
		w.done <- written{err: s.alone(w.ctx, w.fn)}
		return
	}
	errs, err := s.together(batch)
	if err != nil {
		// The transaction failed as a whole: every write runs again alone.
		errs = make([]error, len(batch))
	}
	for i, w := range batch {
		if err != nil || errs[i] == errAlone {
			errs[i] = s.alone(w.ctx, w.fn)
		}
		w.done <- written{err: errs[i]}
	}
}

// errAlone marks a write that must run again in a transaction of its own.
var errAlone = errors.New("run alone")

// together runs batch in one transaction, each write in a savepoint, and
// returns each write's error. An error of its own is the transaction's.
func (s *store) together(batch []*write) ([]error, error) {
	ctx, cancel := groupContext(batch)
	defer cancel()
	sqlTx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	t := tx{tx: sqlTx, s: s, ctx: ctx}
	errs := make([]error, len(batch))
	for i, w := range batch {
		if errs[i] = w.ctx.Err(); errs[i] != nil {
			continue
		}
		if _, err := t.exec(`SAVEPOINT write`); err != nil {
			_ = sqlTx.Rollback()
			return nil, err
		}
		wctx := w.ctx
		if !s.pg {
			// An interrupted SQLite write rolls back the whole transaction:
			// a caller that gives up waits for its group instead.
			wctx = context.WithoutCancel(wctx)
		}
		if errs[i] = w.fn(tx{tx: sqlTx, s: s, ctx: wctx}); errs[i] != nil {
			if retryable(errs[i]) {
				errs[i] = errAlone
			}
			if _, err := t.exec(`ROLLBACK TO SAVEPOINT write`); err != nil {
				_ = sqlTx.Rollback()
				return nil, err
			}
		}
		if _, err := t.exec(`RELEASE SAVEPOINT write`); err != nil {
			_ = sqlTx.Rollback()
			return nil, err
		}
	}
	if err := sqlTx.Commit(); err != nil {
		return nil, err
	}
	return errs, nil
}

// groupContext bounds a group's transaction by the latest deadline of its
// writes (none if one has none), and is never cancelled by one caller alone.
func groupContext(batch []*write) (context.Context, context.CancelFunc) {
	var last time.Time
	for _, w := range batch {
		d, ok := w.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.Background())
		}
		if d.After(last) {
			last = d
		}
	}
	return context.WithDeadline(context.Background(), last)
}

// retryable reports whether err is PostgreSQL's deadlock or serialization
// failure, after which the same transaction may succeed when run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// alone runs fn in a transaction of its own and commits it. On PostgreSQL a
// deadlock or serialization failure runs it again, a few times.
func (s *store) alone(ctx context.Context, fn func(t tx) error) error {
	for attempt := 1; ; attempt++ {
		sqlTx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err = fn(tx{tx: sqlTx, s: s, ctx: ctx}); err == nil {
			if err = sqlTx.Commit(); err == nil {
				return nil
			}
		} else {
			_ = sqlTx.Rollback()
		}
		if !s.pg || attempt >= 4 || !retryable(err) {
			return err
		}
	}
}

// lockKey returns, on PostgreSQL, the download the key's next request may join
// ("" none) and holds the key's row lock until the transaction ends: every
// change to a download goes through it, so the requests of one download are
// decided one at a time on every replica. SQLite runs one write transaction
// at a time and needs no lock (keyDownload reads the key there).
func (t tx) lockKey(user, video string, typ stream.DownloadType) (string, error) {
	var id string
	err := t.row(`INSERT INTO download_keys (user_id, video, type) VALUES (?, ?, ?)
		ON CONFLICT (user_id, video, type) DO UPDATE SET download_id = download_keys.download_id
		RETURNING download_id`, user, video, string(typ)).Scan(&id)
	return id, err
}

// setKey makes download id its key's current one, creating the key's row
// when it has none yet (on SQLite, nothing before it does).
func (t tx) setKey(user, video string, typ stream.DownloadType, id string) error {
	_, err := t.exec(`INSERT INTO download_keys (user_id, video, type, download_id) VALUES (?, ?, ?, ?)
		ON CONFLICT (user_id, video, type) DO UPDATE SET download_id = excluded.download_id`,
		user, video, string(typ), id)
	return err
}

// keyDownload is the download the key's next request may join (found false:
// none), with the key locked as lockKey does. On SQLite it is one read.
func (t tx) keyDownload(user, video string, typ stream.DownloadType) (d dlRow, found bool, err error) {
	if t.s.pg {
		id, err := t.lockKey(user, video, typ)
		if err != nil || id == "" {
			return d, false, err
		}
		d, err = t.download(id)
		return d, err == nil, err
	}
	var held string
	err = t.row(`SELECT dl.id, `+dlCols+` FROM download_keys k JOIN downloads dl ON dl.id = k.download_id
		WHERE k.user_id = ? AND k.video = ? AND k.type = ?`, user, video, string(typ)).
		Scan(append([]any{&d.id}, d.scanned(&held)...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return dlRow{}, false, nil
	}
	if err != nil {
		return d, false, fmt.Errorf("download key: %w", err)
	}
	return d, true, d.parse(held)
}

// dlRow is a downloads row.
type dlRow struct {
	id, user, video, typ, mode, period string
	duration                           float64
	state                              billing.Download
	etag                               string
	reserved                           int64
	startedAt, lastAt                  int64 // Unix microseconds
}

// dlCols are a downloads row's columns as dlRow.scan reads them, for a query
// that names the table dl.
const dlCols = `dl.user_id, dl.video, dl.type, dl.mode, dl.period, dl.duration, dl.full_micro, dl.size, dl.etag, dl.held,
	dl.sent, dl.billed_micro, dl.reserved_micro, dl.started_at, dl.last_at`

// scanned is where the columns dlCols names are read into; parse finishes
// the row.
func (d *dlRow) scanned(held *string) []any {
	return []any{&d.user, &d.video, &d.typ, &d.mode, &d.period, &d.duration,
		&d.state.Full, &d.state.Size, &d.etag, held, &d.state.Sent, &d.state.Billed, &d.reserved, &d.startedAt, &d.lastAt}
}

func (d *dlRow) parse(held string) error {
	var err error
	if d.state.Held, err = billing.ParseSet(held); err != nil {
		return fmt.Errorf("download %s: %w", d.id, err)
	}
	return nil
}

func (t tx) download(id string) (dlRow, error) {
	d := dlRow{id: id}
	var held string
	if err := t.row(`SELECT `+dlCols+` FROM downloads dl WHERE dl.id = ?`, id).Scan(d.scanned(&held)...); err != nil {
		return d, fmt.Errorf("download %s: %w", id, err)
	}
	return d, d.parse(held)
}

func (t tx) insertDownload(d dlRow) error {
	_, err := t.exec(`INSERT INTO downloads (id, user_id, video, type, mode, period, duration, full_micro, size, etag,
			held, sent, billed_micro, reserved_micro, started_at, last_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.id, d.user, d.video, d.typ, d.mode, d.period, d.duration, d.state.Full, d.state.Size, d.etag,
		d.state.Held.String(), d.state.Sent, d.state.Billed, d.reserved, d.startedAt, d.lastAt)
	return err
}

func (t tx) saveDownload(d dlRow) error {
	_, err := t.exec(`UPDATE downloads SET size = ?, etag = ?, held = ?, sent = ?, billed_micro = ?, reserved_micro = ?,
			last_at = ? WHERE id = ?`,
		d.state.Size, d.etag, d.state.Held.String(), d.state.Sent, d.state.Billed, d.reserved, d.lastAt, d.id)
	return err
}

// claimRow is an open delivery's claim.
type claimRow struct {
	id    string
	claim billing.Claim
}

// claims are the claims of download id's open deliveries.
func (t tx) claims(id string) ([]claimRow, error) {
	rows, err := t.query(`SELECT id, claim_start, claim_end, acked
		FROM deliveries WHERE download_id = ? AND settled_at IS NULL ORDER BY opened_at, id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []claimRow
	for rows.Next() {
		var c claimRow
		if err := rows.Scan(&c.id, &c.claim.Range.Start, &c.claim.Range.End, &c.claim.Acked); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// only is the claims without the empty ones.
func only(cs []claimRow) []billing.Claim {
	out := make([]billing.Claim, 0, len(cs))
	for _, c := range cs {
		if !c.claim.Range.Empty() {
			out = append(out, c.claim)
		}
	}
	return out
}

// spend adds used and reserved micro-minutes to the user's period, creating
// its row, in one statement. A change that lowers the total always succeeds;
// one that raises it must fit under lim (-1: no limit), checked by the
// statement itself, or it returns a *QuotaError and changes nothing. Callers
// change one of the two at a time.
func (t tx) spend(user, period, plan string, used, reserved, lim int64) error {
	add := used + reserved
	if used < 0 || reserved < 0 {
		// A release follows the reservation that created the row. (PostgreSQL
		// checks the row an upsert would insert against the table's CHECK
		// constraints before it finds the conflict, so a negative change
		// cannot go through the upsert.)
		_, err := t.exec(`UPDATE quota_periods SET used_micro = used_micro + CAST(? AS BIGINT),
			reserved_micro = reserved_micro + CAST(? AS BIGINT) WHERE user_id = ? AND period = ?`,
			used, reserved, user, period)
		return err
	}
	// The SELECT's condition stands for the insert of a new row, the DO
	// UPDATE's for an existing one. The parameters are cast: PostgreSQL would
	// otherwise type a parameter compared with a literal as a 32-bit integer.
	res, err := t.exec(`INSERT INTO quota_periods (user_id, period, used_micro, reserved_micro)
		SELECT ?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT)
		WHERE CAST(? AS BIGINT) <= 0 OR CAST(? AS BIGINT) < 0 OR CAST(? AS BIGINT) <= CAST(? AS BIGINT)
		ON CONFLICT (user_id, period) DO UPDATE SET
			used_micro = quota_periods.used_micro + excluded.used_micro,
			reserved_micro = quota_periods.reserved_micro + excluded.reserved_micro
		WHERE CAST(? AS BIGINT) <= 0 OR CAST(? AS BIGINT) < 0
			OR quota_periods.used_micro + quota_periods.reserved_micro + CAST(? AS BIGINT) <= CAST(? AS BIGINT)`,
		user, period, used, reserved,
		add, lim, add, lim,
		add, lim, add, lim)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		u, err := t.usage(user, period)
		if err != nil {
			return err
		}
		return &QuotaError{Usage: u.withLimit(plan, limitMinutes(lim)), Requested: fromMicro(add)}
	}
	return nil
}

// moveReservation changes the reservation of a period whose row exists by
// delta micro-minutes, as spend does.
func (t tx) moveReservation(user, period, plan string, delta, lim int64) error {
	if delta == 0 {
		return nil
	}
	return t.spend(user, period, plan, 0, delta, lim)
}

func (t tx) usage(user, period string) (Usage, error) {
	return readUsage(t.row(usageQuery, user, period, user, period), period)
}

// usageQuery reads a user's standing in a period: its quota row (maybe none)
// and how many of its deliveries are open.
const usageQuery = `SELECT COALESCE(MAX(used_micro), 0), COALESCE(MAX(reserved_micro), 0), COALESCE(MAX(stream_micro), 0),
		(SELECT COUNT(*) FROM deliveries WHERE user_id = ? AND period = ? AND settled_at IS NULL)
	FROM quota_periods WHERE user_id = ? AND period = ?`

func readUsage(r scanner, period string) (Usage, error) {
	var used, reserved, streamM, open int64
	if err := r.Scan(&used, &reserved, &streamM, &open); err != nil {
		return Usage{}, err
	}
	return Usage{Period: period, MinutesUsed: fromMicro(used), MinutesReserved: fromMicro(reserved),
		StreamMinutes: fromMicro(streamM), DeliveriesOpen: open}, nil
}

func limitMicro(limit float64) int64 {
	if limit < 0 {
		return -1
	}
	return toMicro(limit)
}

func limitMinutes(lim int64) float64 {
	if lim < 0 {
		return -1
	}
	return fromMicro(lim)
}

func newID() string { return rand.Text() }

// Open implements [Ledger].
func (s *store) Open(ctx context.Context, rule billing.Rule, req OpenRequest) (Opened, error) {
	if err := req.check(); err != nil {
		return Opened{}, err
	}
	rule = rule.WithDefaults()
	at := req.At.UnixMicro()
	var out Opened
	var file openFile
	err := s.inTx(ctx, func(t tx) error {
		if err := t.checkLink(req); err != nil {
			return err
		}
		d, found, err := t.keyDownload(req.User, req.Video, req.Type)
		if err != nil {
			return err
		}
		var open []claimRow
		join := false
		if found {
			if open, err = t.claims(d.id); err != nil {
				return err
			}
			join = d.mode == string(rule.Mode) && rule.Continues(time.UnixMicro(d.lastAt), len(open), req.At)
		}
		if !join || refetch(d.state, open, req.Range) {
			if err := t.spendLinkUse(req.Link, req.At); err != nil {
				return err
			}
		}
		if !join {
			d = dlRow{
				id: req.NewDownloadID, user: req.User, video: req.Video, typ: string(req.Type), mode: string(rule.Mode),
				period: req.Period, duration: req.Duration, etag: req.ETag, startedAt: at, lastAt: at,
				state: billing.Download{Full: toMicro(req.Duration / 60), Size: max(req.Size, 0)},
			}
			open = nil
		}
		claim := billing.ClaimFor(req.Range, d.state.Size)
		target := rule.Reserve(d.state, append(only(open), billing.Claim{Range: claim}))
		delta := target - d.reserved
		// Always written, even unchanged: it creates the period's row, which
		// the settlement's bill is added to.
		if err := t.spend(d.user, d.period, req.Plan, 0, delta, limitMicro(req.Limit)); err != nil {
			return err
		}
		d.reserved, d.lastAt = target, max(d.lastAt, at)
		if join {
			if err := t.saveDownload(d); err != nil {
				return err
			}
		} else {
			// A new download is written once, with its reservation.
			if err := t.insertDownload(d); err != nil {
				return err
			}
			if err := t.setKey(req.User, req.Video, req.Type, d.id); err != nil {
				return err
			}
		}
		if _, err := t.exec(`INSERT INTO deliveries (id, download_id, started, user_id, plan, video, type, mode, period,
				duration, range_text, claim_start, claim_end, limit_micro, country, client_ip, request_id, opened_at, beat_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			req.ID, d.id, boolInt(!join), req.User, req.Plan, req.Video, string(req.Type), d.mode, d.period,
			req.Duration, rangeText(req.Range), claim.Start, claim.End, limitMicro(req.Limit),
			req.Country, req.ClientIP, req.RequestID, at, at); err != nil {
			return fmt.Errorf("record delivery: %w", err)
		}
		out = Opened{DownloadID: d.id, Started: !join, Claim: claim, Reserved: fromMicro(max(delta, 0))}
		file = openFile{size: d.state.Size, etag: d.etag, claim: claim}
		return nil
	})
	if err != nil {
		var qe *QuotaError
		switch {
		case errors.As(err, &qe):
			return Opened{}, qe
		case errors.Is(err, ErrLinkUsedUp), errors.Is(err, ErrLinkRevoked):
			return Opened{}, err
		}
		return Opened{}, fmt.Errorf("open delivery: %w", err)
	}
	if file.size > 0 && file.etag != "" {
		s.files.Store(req.ID, file)
	}
	return out, nil
}

// checkLink refuses a request whose link was revoked: by its ID, or by a
// revocation of its user, or its user and video, made after it was issued.
func (t tx) checkLink(req OpenRequest) error {
	if req.Link.ID == "" {
		return nil
	}
	return linkRevoked(t.row(linkRevokedQuery, req.User, req.Video, req.Link.issued(), req.Link.ID))
}

// linkRevokedQuery counts what revokes a link: a revocation of its user, or
// user and video, made after it was issued, and its own ID's.
const linkRevokedQuery = `SELECT
	(SELECT COUNT(*) FROM link_revocations
		WHERE user_id = ? AND (video = '' OR video = ?) AND not_before > CAST(? AS BIGINT))
	+ (SELECT COUNT(*) FROM revoked_links WHERE id = ?)`

// linkRevoked reads linkRevokedQuery's count: ErrLinkRevoked when anything
// revokes the link.
func linkRevoked(r scanner) error {
	var n int64
	if err := r.Scan(&n); err != nil {
		return fmt.Errorf("check link: %w", err)
	}
	if n > 0 {
		return ErrLinkRevoked
	}
	return nil
}

// refetch reports whether a request for rg, joining download d with its open
// deliveries open, asks for the whole file again, with nothing else open, after
// the download sent a whole copy. It is billed as the download's rule says,
// but a use-limited link spends a use on it as on a download it starts;
// otherwise every fetch of a link within the resume window would be its first
// use. A range of part of the file (a player's probe, a seek) is no re-fetch.
func refetch(d billing.Download, open []claimRow, rg billing.Range) bool {
	whole := rg == billing.Whole || (rg.Suffix == 0 && rg.First == 0 && (rg.Last < 0 || rg.Last >= d.Size-1))
	return whole && len(open) == 0 && d.Size > 0 && d.Sent >= d.Size
}

// spendLinkUse spends one use of a use-limited link for a download it starts,
// in one conditional upsert: a link whose uses are all spent gets no row back,
// and the request is refused with ErrLinkUsedUp. A link's first use also
// clears the counts of links that have expired.
func (t tx) spendLinkUse(l Link, at time.Time) error {
	if l.MaxUses <= 0 {
		return nil
	}
	var uses int64
	err := t.row(`INSERT INTO link_uses (id, uses, expires_at) VALUES (?, 1, ?)
		ON CONFLICT (id) DO UPDATE SET uses = link_uses.uses + 1 WHERE link_uses.uses < CAST(? AS BIGINT)
		RETURNING uses`, l.ID, l.ExpiresAt.Unix(), l.MaxUses).Scan(&uses)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ErrLinkUsedUp
	case err != nil:
		return fmt.Errorf("spend link use: %w", err)
	case uses == 1:
		return t.clearExpiredLinks(at)
	}
	return nil
}

// linkClockSkew is how long after its expiry a link's rows are kept, so that a
// replica whose clock is behind never finds the count of a link it still
// accepts cleared.
const linkClockSkew = 5 * time.Minute

// clearExpiredLinks deletes the use counts and revocations of links that
// expired before at, less linkClockSkew: such links are refused anyway.
func (t tx) clearExpiredLinks(at time.Time) error {
	cut := at.Add(-linkClockSkew).Unix()
	if _, err := t.exec(`DELETE FROM link_uses WHERE expires_at < ?`, cut); err != nil {
		return fmt.Errorf("clear expired link uses: %w", err)
	}
	if _, err := t.exec(`DELETE FROM revoked_links WHERE until < ?`, cut); err != nil {
		return fmt.Errorf("clear expired link revocations: %w", err)
	}
	return nil
}

// RevokeLinks implements [Revoker].
func (s *store) RevokeLinks(ctx context.Context, user, video string, before time.Time) error {
	if user == "" {
		return errors.New("revoke links: a user is required")
	}
	err := s.inTx(ctx, func(t tx) error {
		_, err := t.exec(`INSERT INTO link_revocations (user_id, video, not_before) VALUES (?, ?, ?)
			ON CONFLICT (user_id, video) DO UPDATE SET not_before = CASE
				WHEN excluded.not_before > link_revocations.not_before THEN excluded.not_before
				ELSE link_revocations.not_before END`,
			user, video, notBefore(before))
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke links of %s: %w", user, err)
	}
	return nil
}

// notBefore is RevokedBefore(before) in Unix seconds.
func notBefore(before time.Time) int64 { return RevokedBefore(before).Unix() }

// RevokeLink implements [Revoker]. Its row is cleared once the link has
// expired, when another link is first used.
func (s *store) RevokeLink(ctx context.Context, id string, until time.Time) error {
	if id == "" {
		return errors.New("revoke link: an ID is required")
	}
	err := s.inTx(ctx, func(t tx) error {
		_, err := t.exec(`INSERT INTO revoked_links (id, until) VALUES (?, ?)
			ON CONFLICT (id) DO UPDATE SET until = CASE
				WHEN excluded.until > revoked_links.until THEN excluded.until ELSE revoked_links.until END`,
			id, until.Unix())
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke link: %w", err)
	}
	return nil
}

// dvRow is a deliveries row.
type dvRow struct {
	Settled
	open    bool
	limit   int64
	minutes int64 // micro
	streamM int64 // micro
	beatAt  int64
}

const dvCols = `dv.id, dv.download_id, dv.started, dv.user_id, dv.plan, dv.video, dv.type, dv.mode, dv.period, dv.duration,
	dv.range_text, dv.claim_start, dv.claim_end, dv.limit_micro, dv.acked, dv.acked_source, dv.written, dv.stream_bytes,
	dv.minutes_micro, dv.stream_micro, dv.country, dv.client_ip, dv.request_id, dv.status, dv.reason, dv.opened_at,
	dv.beat_at, dv.settled_at, dl.size`

func scanDelivery(r interface{ Scan(...any) error }, more ...any) (dvRow, error) {
	var (
		d                dvRow
		started          int64
		typ, mode        string
		opened           int64
		settled          sql.NullInt64
		minutes, streamM int64
	)
	err := r.Scan(append([]any{&d.DeliveryID, &d.DownloadID, &started, &d.User, &d.Plan, &d.Video, &typ, &mode, &d.Period,
		&d.Duration, &d.Range, &d.Claim.Start, &d.Claim.End, &d.limit, &d.Acked, &d.AckedSource, &d.Written,
		&d.StreamBytes, &minutes, &streamM, &d.Country, &d.ClientIP, &d.RequestID, &d.Status, &d.Reason, &opened,
		&d.beatAt, &settled, &d.Size}, more...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return d, ErrNotFound
	} else if err != nil {
		return d, err
	}
	d.StartedDownload = started != 0
	d.Type, d.Mode = stream.DownloadType(typ), Mode(mode)
	d.minutes, d.streamM = minutes, streamM
	d.Minutes, d.StreamMinutes = fromMicro(minutes), fromMicro(streamM)
	d.OpenedAt = time.UnixMicro(opened).UTC()
	d.open = !settled.Valid
	if settled.Valid {
		d.SettledAt = time.UnixMicro(settled.Int64).UTC()
	}
	return d, nil
}

func (t tx) delivery(id string) (dvRow, error) {
	return scanDelivery(t.row(`SELECT `+dvCols+` FROM deliveries dv JOIN downloads dl ON dl.id = dv.download_id
		WHERE dv.id = ?`, id))
}

// deliveryIn reads delivery id and its download in one statement.
func (t tx) deliveryIn(id string) (dvRow, dlRow, error) {
	var d dlRow
	var held string
	dv, err := scanDelivery(t.row(`SELECT `+dvCols+`, `+dlCols+` FROM deliveries dv JOIN downloads dl ON dl.id = dv.download_id
		WHERE dv.id = ?`, id), d.scanned(&held)...)
	if err != nil {
		return dv, d, err
	}
	d.id = dv.DownloadID
	return dv, d, d.parse(held)
}

// lockDelivery reads delivery id and its download under the download key's
// lock.
func (t tx) lockDelivery(id string) (dvRow, dlRow, error) {
	dv, d, err := t.deliveryIn(id)
	if err != nil || (!dv.open && dv.Status != Recovered.String()) || !t.s.pg {
		// SQLite's transaction is the only writer: what it read stands.
		return dv, d, err
	}
	if _, err := t.lockKey(dv.User, dv.Video, dv.Type); err != nil {
		return dv, d, err
	}
	// Read again under the lock: another replica may have settled it meanwhile.
	return t.deliveryIn(id)
}

// Respond implements [Ledger]. A response that changes nothing is not
// written (openFile.answers), which spares a delivery that ends before its
// first checkpoint one transaction of three.
func (s *store) Respond(ctx context.Context, rule billing.Rule, id string, r Response) error {
	if v, ok := s.files.LoadAndDelete(id); ok && v.(openFile).answers(r) {
		return nil
	}
	if r.At.IsZero() {
		r.At = time.Now()
	}
	err := s.inTx(ctx, func(t tx) error { return t.respond(rule, id, r) })
	if err != nil {
		var qe *QuotaError
		if errors.As(err, &qe) {
			return qe
		}
		return fmt.Errorf("respond %s: %w", id, err)
	}
	return nil
}

// openFile is the file a delivery's download had when the delivery opened
// (size and ETag both known), and the bytes the delivery claimed.
type openFile struct {
	size  int64
	etag  string
	claim billing.Interval
}

// answers reports whether r changes nothing of the delivery opened with f:
// it is of the same file and carries exactly the bytes claimed. Nothing else
// can have changed them meanwhile: a download's size and ETag, once known,
// change only when another file's response moves its responding delivery out
// (never the download itself while another delivery is open in it), and a
// delivery's claim changes only by its own writes. Its reservation is then
// what the rule makes of the same download and claims, as Open left it. A
// write would only move the row's last-written times, which the delivery's
// checkpoints and settlement write anyway.
func (f openFile) answers(r Response) bool {
	return r.Size == f.size && r.ETag == f.etag && r.Body == f.claim && !r.Body.Empty()
}

// respond records r as Stream's answer to delivery id (Ledger.Respond).
func (t tx) respond(rule billing.Rule, id string, r Response) error {
	dv, d, err := t.lockDelivery(id)
	if err != nil {
		return err
	}
	if !dv.open {
		return ErrSettled
	}
	rule = rule.WithDefaults()
	rule.Mode = Mode(d.mode)
	open, err := t.claims(d.id)
	if err != nil {
		return err
	}
	body := r.Body
	if body.Empty() {
		body = billing.Interval{Start: dv.Claim.Start, End: dv.Claim.Start}
	}
	if !body.Empty() && !billing.SameFile(d.state.Size, d.etag, r.Size, r.ETag) {
		if d.state.Sent == 0 && len(open) == 1 {
			// Nothing was delivered of the file this download took: it
			// simply becomes a download of the new one.
			d.state.Size, d.etag = 0, ""
		} else {
			if d, open, err = t.rehome(rule, dv, d, open, r); err != nil {
				return err
			}
		}
	}
	if d.state.Size == 0 && r.Size > 0 {
		d.state.Size = r.Size
	}
	if d.etag == "" {
		d.etag = r.ETag
	}
	for i := range open {
		if open[i].id == id {
			open[i].claim.Range = body
		}
	}
	target := rule.Reserve(d.state, only(open))
	if err := t.moveReservation(d.user, d.period, dv.Plan, target-d.reserved, dv.limit); err != nil {
		return err
	}
	d.reserved = target
	d.lastAt = max(d.lastAt, r.At.UnixMicro())
	if err := t.saveDownload(d); err != nil {
		return err
	}
	_, err = t.exec(`UPDATE deliveries SET download_id = ?, claim_start = ?, claim_end = ?, beat_at = ? WHERE id = ?`,
		d.id, body.Start, body.End, r.At.UnixMicro(), id)
	return err
}

// rehome moves delivery dv out of download d, whose file was another, into a
// new download of the file r describes, which becomes its key's current one.
func (t tx) rehome(rule billing.Rule, dv dvRow, d dlRow, open []claimRow, r Response) (dlRow, []claimRow, error) {
	var rest []claimRow
	var mine claimRow
	for _, c := range open {
		if c.id == dv.DeliveryID {
			mine = c
		} else {
			rest = append(rest, c)
		}
	}
	target := rule.Reserve(d.state, only(rest))
	if err := t.moveReservation(d.user, d.period, dv.Plan, target-d.reserved, dv.limit); err != nil {
		return d, nil, err
	}
	d.reserved = target
	if err := t.saveDownload(d); err != nil {
		return d, nil, err
	}
	at := r.At.UnixMicro()
	nd := dlRow{
		id: newID(), user: d.user, video: d.video, typ: d.typ, mode: d.mode, period: d.period,
		duration: d.duration, etag: r.ETag, startedAt: at, lastAt: at,
		state: billing.Download{Full: d.state.Full, Size: r.Size},
	}
	if err := t.insertDownload(nd); err != nil {
		return d, nil, err
	}
	if err := t.setKey(d.user, d.video, stream.DownloadType(d.typ), nd.id); err != nil {
		return d, nil, err
	}
	if _, err := t.exec(`UPDATE deliveries SET download_id = ?, started = 1 WHERE id = ?`, nd.id, dv.DeliveryID); err != nil {
		return d, nil, err
	}
	return nd, []claimRow{mine}, nil
}

// Progress implements [Ledger].
func (s *store) Progress(ctx context.Context, rule billing.Rule, id string, p Progress) error {
	err := s.inTx(ctx, func(t tx) error {
		_, err := t.advance(rule, id, p, nil, 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("progress %s: %w", id, err)
	}
	return nil
}

// Settle implements [Ledger].
func (s *store) Settle(ctx context.Context, rule billing.Rule, id string, st Settlement) (Settled, error) {
	var out dvRow
	err := s.inTx(ctx, func(t tx) error {
		var err error
		out, err = t.advance(rule, id, st.Progress, &st, 0)
		return err
	})
	if err != nil {
		return Settled{}, fmt.Errorf("settle %s: %w", id, err)
	}
	s.files.Delete(id)
	return out.Settled, nil
}

// advance delivers what p adds to delivery id's progress into its download,
// bills it, and, with st, closes the delivery. staleBefore > 0 leaves alone a
// delivery written at or after it (recovery: its process is alive). It returns
// the row as it stands after.
func (t tx) advance(rule billing.Rule, id string, p Progress, st *Settlement, staleBefore int64) (dvRow, error) {
	if p.At.IsZero() {
		p.At = time.Now()
	}
	dv, d, err := t.lockDelivery(id)
	// A delivery another process recovered while its owner was cut off from
	// the ledger is topped up by the owner's own settlement: the bytes it sent
	// after its last checkpoint are billed then, once.
	topUp := !dv.open && st != nil && dv.Status == Recovered.String() && st.Outcome != Recovered && p.Acked > dv.Acked
	if err != nil || (!dv.open && !topUp) || (staleBefore > 0 && dv.beatAt >= staleBefore) {
		return dv, err
	}
	rule = rule.WithDefaults()
	rule.Mode = Mode(d.mode)

	claimLen := dv.Claim.End - dv.Claim.Start
	switch {
	case dv.Claim.End != billing.Unknown:
	case d.state.Size > 0:
		claimLen = max(d.state.Size-dv.Claim.Start, 0)
	default:
		claimLen = p.Acked // a body of unknown length: nothing to bound it by
	}
	acked := min(max(p.Acked, dv.Acked), max(claimLen, dv.Acked))
	var bill int64
	if acked > dv.Acked {
		d.state, bill = rule.Deliver(d.state, billing.Interval{Start: dv.Claim.Start + dv.Acked, End: dv.Claim.Start + acked})
	}
	streamBytes := max(p.StreamBytes, dv.StreamBytes)
	streamM := dv.streamM
	if d.state.Size > 0 {
		streamM = billing.Share(d.state.Full, streamBytes, d.state.Size)
	}
	open, err := t.claims(d.id)
	if err != nil {
		return dv, err
	}
	var still []claimRow
	for _, c := range open {
		if c.id == id {
			if st != nil {
				continue
			}
			c.claim.Acked = acked
		}
		still = append(still, c)
	}
	target := rule.Reserve(d.state, only(still))
	at := p.At.UnixMicro()
	if _, err := t.exec(`UPDATE quota_periods SET used_micro = used_micro + ?, reserved_micro = reserved_micro + ?,
			stream_micro = stream_micro + ? WHERE user_id = ? AND period = ?`,
		bill, target-d.reserved, streamM-dv.streamM, d.user, d.period); err != nil {
		return dv, err
	}
	d.reserved = target
	d.lastAt = max(d.lastAt, at)
	if err := t.saveDownload(d); err != nil {
		return dv, err
	}
	source := p.Source
	if source == "" {
		source = dv.AckedSource
	}
	// The row as it stands after, built here rather than read back.
	out := dv
	out.Acked, out.AckedSource, out.Written, out.StreamBytes = acked, source, max(p.Written, dv.Written), streamBytes
	out.minutes, out.streamM, out.beatAt, out.Size = dv.minutes+bill, streamM, at, d.state.Size
	out.Minutes, out.StreamMinutes = fromMicro(out.minutes), fromMicro(out.streamM)
	switch {
	case topUp:
		out.Reason = dv.Reason + "; its owner billed the rest when it settled (" + st.Outcome.String() + ")"
	case st != nil:
		out.Status, out.Reason, out.SettledAt, out.open = st.Outcome.String(), st.Reason, time.UnixMicro(at).UTC(), false
	}
	var settledAt sql.NullInt64
	if !out.open {
		settledAt = sql.NullInt64{Int64: out.SettledAt.UnixMicro(), Valid: true}
	}
	if _, err := t.exec(`UPDATE deliveries SET acked = ?, acked_source = ?, written = ?, stream_bytes = ?,
			minutes_micro = ?, stream_micro = ?, beat_at = ?, status = ?, reason = ?, settled_at = ? WHERE id = ?`,
		out.Acked, out.AckedSource, out.Written, out.StreamBytes, out.minutes, out.streamM, at, out.Status, out.Reason,
		settledAt, id); err != nil {
		return dv, err
	}
	return out, nil
}

// Charge implements [Ledger].
func (s *store) Charge(ctx context.Context, req OpenRequest, status Outcome) (Settled, error) {
	if err := req.check(); err != nil {
		return Settled{}, err
	}
	full := toMicro(req.Duration / 60)
	at := req.At.UnixMicro()
	var out dvRow
	err := s.inTx(ctx, func(t tx) error {
		lim := limitMicro(req.Limit)
		if err := t.spend(req.User, req.Period, req.Plan, full, 0, lim); err != nil {
			return err
		}
		if err := t.insertDownload(dlRow{
			id: req.NewDownloadID, user: req.User, video: req.Video, typ: string(req.Type), mode: "direct",
			period: req.Period, duration: req.Duration, startedAt: at, lastAt: at,
			state: billing.Download{Full: full, Billed: full},
		}); err != nil {
			return err
		}
		if _, err := t.exec(`INSERT INTO deliveries (id, download_id, started, user_id, plan, video, type, mode, period,
				duration, claim_start, claim_end, limit_micro, minutes_micro, country, client_ip, request_id,
				status, opened_at, beat_at, settled_at)
			VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			req.ID, req.NewDownloadID, req.User, req.Plan, req.Video, string(req.Type), "direct", req.Period,
			req.Duration, lim, full, req.Country, req.ClientIP, req.RequestID, status.String(), at, at, at); err != nil {
			return err
		}
		var err error
		out, err = t.delivery(req.ID)
		return err
	})
	if err != nil {
		var qe *QuotaError
		if errors.As(err, &qe) {
			return Settled{}, qe
		}
		return Settled{}, fmt.Errorf("charge: %w", err)
	}
	return out.Settled, nil
}

// Heartbeat implements [Ledger]. A ledger one process owns keeps no sign of
// life: it recovers only at start.
func (s *store) Heartbeat(ctx context.Context, ids []string, at time.Time) error {
	if s.stale == 0 || len(ids) == 0 {
		return nil
	}
	// One statement per call; IDs travel as one comma-joined parameter so the
	// statement reads the same in both dialects.
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE deliveries SET beat_at = ?
		WHERE settled_at IS NULL AND id = ANY(string_to_array(?, ','))`), at.UnixMicro(), strings.Join(ids, ","))
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// Recover implements [Ledger].
func (s *store) Recover(ctx context.Context, rule billing.Rule, now time.Time) ([]Settled, error) {
	query := `SELECT id FROM deliveries WHERE settled_at IS NULL ORDER BY opened_at, id`
	var args []any
	var cutoff int64
	reason := "settled from the last checkpoint after a restart"
	if s.stale > 0 {
		cutoff = now.Add(-s.stale).UnixMicro()
		query = `SELECT id FROM deliveries WHERE settled_at IS NULL AND beat_at < ? ORDER BY beat_at, id`
		args = append(args, cutoff)
		reason = fmt.Sprintf("settled from the last checkpoint: no process wrote it for %s", s.stale)
	}
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("recover: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	var out []Settled
	for _, id := range ids {
		var dv dvRow
		var done bool
		err := s.inTx(ctx, func(t tx) error {
			cur, _, err := t.lockDelivery(id)
			if err != nil || !cur.open {
				return err
			}
			st := Settlement{Outcome: Recovered, Reason: reason,
				Progress: Progress{Acked: cur.Acked, Written: cur.Written, StreamBytes: cur.StreamBytes, At: now}}
			dv, err = t.advance(rule, id, st.Progress, &st, cutoff)
			done = err == nil && !dv.open
			return err
		})
		if err != nil {
			return out, fmt.Errorf("recover %s: %w", id, err)
		}
		if done {
			s.files.Delete(id)
			out = append(out, dv.Settled)
		}
	}
	return out, nil
}

// Usage implements [Ledger].
func (s *store) Usage(ctx context.Context, user, period string) (Usage, error) {
	u, err := readUsage(s.db.QueryRowContext(ctx, s.q(usageQuery), user, period, user, period), period)
	if err != nil {
		return Usage{}, fmt.Errorf("usage: %w", err)
	}
	return u, nil
}

// Report implements [Ledger].
func (s *store) Report(ctx context.Context, period string) ([]ReportRow, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT user_id,
			COUNT(DISTINCT CASE WHEN acked > 0 OR minutes_micro > 0 THEN download_id END),
			SUM(CASE WHEN acked > 0 OR minutes_micro > 0 THEN 1 ELSE 0 END),
			CAST(COALESCE(SUM(minutes_micro), 0) AS BIGINT),
			CAST(COALESCE(SUM(stream_micro), 0) AS BIGINT),
			CAST(COALESCE(SUM(acked), 0) AS BIGINT),
			CAST(COALESCE(SUM(stream_bytes), 0) AS BIGINT)
		FROM deliveries
		WHERE period = ? AND settled_at IS NOT NULL
		GROUP BY user_id
		ORDER BY user_id`), period)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	defer rows.Close()
	var out []ReportRow
	for rows.Next() {
		var r ReportRow
		var minutes, streamM int64
		if err := rows.Scan(&r.User, &r.Downloads, &r.Deliveries, &minutes, &streamM, &r.Bytes, &r.StreamBytes); err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		r.Minutes, r.StreamMinutes = fromMicro(minutes), fromMicro(streamM)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return out, nil
}

// Ping implements [Ledger].
func (s *store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// rangeText is the range as a request header's value, "" for none.
func rangeText(r billing.Range) string {
	switch {
	case r.Suffix > 0:
		return "bytes=-" + strconv.FormatInt(r.Suffix, 10)
	case r.First < 0:
		return ""
	case r.Last < 0:
		return "bytes=" + strconv.FormatInt(r.First, 10) + "-"
	}
	return "bytes=" + strconv.FormatInt(r.First, 10) + "-" + strconv.FormatInt(r.Last, 10)
}

var (
	_ Revoker = (*SQLite)(nil)
	_ Revoker = (*Postgres)(nil)
)
