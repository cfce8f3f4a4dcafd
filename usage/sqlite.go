package usage

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/streamgate/streamgate/stream"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// SQLite is the embedded [Ledger]: one file in WAL mode, for one process.
// Write transactions begin IMMEDIATE, so they queue on SQLite's write lock (for up
// to the busy timeout) instead of failing when two of them meet. Within the
// process, writers first queue on a Go mutex: SQLite admits one writer at a time,
// and a writer that finds its lock taken sleeps in the busy handler (1, 2, 5 …
// 100 ms) instead of waking when the lock is free, which under many concurrent
// downloads costs far more than the wait (docs/benchmarks.md). Reads run beside
// the writer under WAL.
type SQLite struct {
	db     *sql.DB
	writes sync.Mutex
	stmts  sync.Map // query → *sql.Stmt, prepared once on the pool
}

// txer is what the statements of a transaction run on.
type txer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// stmtTx runs a transaction's statements from the ledger's prepared ones:
// parsing the same few statements again on every call was a sizeable share of
// a small download's CPU (docs/benchmarks.md). A statement not prepared yet runs
// as it is and is prepared once the transaction has ended: preparing it inside
// would take a second connection, which a one-connection (:memory:) ledger does
// not have.
type stmtTx struct {
	*sql.Tx
	l      *SQLite
	misses *[]string
}

func (l *SQLite) begin(ctx context.Context) (stmtTx, error) {
	tx, err := l.db.BeginTx(ctx, nil)
	return stmtTx{Tx: tx, l: l, misses: new([]string)}, err
}

// stmt is query's prepared statement, if it has one yet.
func (l *SQLite) stmt(query string) *sql.Stmt {
	if st, ok := l.stmts.Load(query); ok {
		return st.(*sql.Stmt)
	}
	return nil
}

// prepare prepares query on the pool, once; a failure leaves it to run
// unprepared.
func (l *SQLite) prepare(ctx context.Context, query string) *sql.Stmt {
	if st := l.stmt(query); st != nil {
		return st
	}
	st, err := l.db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	if prev, loaded := l.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt)
	}
	return st
}

// exec and queryRow run a statement outside a transaction, prepared.
func (l *SQLite) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := l.prepare(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return l.db.ExecContext(ctx, query, args...)
}

func (l *SQLite) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if st := l.prepare(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return l.db.QueryRowContext(ctx, query, args...)
}

func (t stmtTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.l.stmt(query); st != nil {
		return t.Tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	*t.misses = append(*t.misses, query)
	return t.Tx.ExecContext(ctx, query, args...)
}

func (t stmtTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.l.stmt(query); st != nil {
		return t.Tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	*t.misses = append(*t.misses, query)
	return t.Tx.QueryRowContext(ctx, query, args...)
}

// Commit commits and then prepares what the transaction ran unprepared.
func (t stmtTx) Commit() error {
	err := t.Tx.Commit()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), sqliteBusyTimeout)
		defer cancel()
		for _, q := range *t.misses {
			t.l.prepare(ctx, q)
		}
	}
	return err
}

var _ Ledger = (*SQLite)(nil)

// sqliteBusyTimeout is how long a statement waits for SQLite's write lock.
const sqliteBusyTimeout = 10 * time.Second

// OpenSQLite opens (creating when missing) the ledger at path and applies the
// embedded migrations it has not applied yet. path is a file name, a "file:" URI,
// or ":memory:" for a private in-memory ledger (one connection, gone on Close).
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	if path == "" {
		return nil, errors.New("open sqlite ledger: empty path")
	}
	memory := path == ":memory:" || strings.Contains(path, "mode=memory") || strings.HasPrefix(path, "file::memory:")
	if !strings.HasPrefix(path, "file:") && strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open sqlite ledger: path %q must not contain ? or #", path)
	}
	params := "_txlock=immediate" +
		"&_pragma=busy_timeout(" + strconv.Itoa(int(sqliteBusyTimeout/time.Millisecond)) + ")" +
		"&_pragma=foreign_keys(1)" +
		"&_pragma=synchronous(NORMAL)"
	if !memory {
		params += "&_pragma=journal_mode(WAL)"
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	db, err := sql.Open("sqlite", path+sep+params)
	if err != nil {
		return nil, fmt.Errorf("open sqlite ledger: %w", err)
	}
	if memory {
		// Every connection to ":memory:" is a database of its own: keep exactly one,
		// and never let it be closed for idling.
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		db.SetConnMaxLifetime(0)
		db.SetConnMaxIdleTime(0)
	} else {
		// SQLite has one writer at a time anyway; a few connections let reads
		// proceed beside it under WAL.
		db.SetMaxOpenConns(8)
		db.SetMaxIdleConns(8)
	}
	l := &SQLite{db: db}
	if err := l.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite ledger %s: %w", path, err)
	}
	return l, nil
}

// migrate applies, in order and each in its own transaction, the embedded
// migrations whose version (the number before "_" in the file name) is not yet in
// schema_migrations.
func (l *SQLite) migrate(ctx context.Context) error {
	if _, err := l.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	ms, err := migrationFiles(sqliteMigrations, "migrations/sqlite")
	if err != nil {
		return err
	}
	for _, m := range ms {
		if err := l.apply(ctx, m.version, m.path); err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

// migration is one embedded migration file.
type migration struct {
	version int    // the number before "_" in the file name
	name    string // the file name
	path    string // the path in the embedded file system
}

// migrationFiles lists the .sql files in dir of fsys, ordered by version.
func migrationFiles(fsys fs.FS, dir string) ([]migration, error) {
	names, err := fs.Glob(fsys, dir+"/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, n := range names {
		base := path.Base(n)
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: file name must start with a version number", base)
		}
		ms = append(ms, migration{version: v, name: base, path: n})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

func (l *SQLite) apply(ctx context.Context, version int, name string) error {
	body, err := sqliteMigrations.ReadFile(name)
	if err != nil {
		return err
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		version, path.Base(name), time.Now().UnixMicro()); err != nil {
		return err
	}
	return tx.Commit()
}

// Reserve implements [Ledger].
func (l *SQLite) Reserve(ctx context.Context, d OpenDelivery, limit float64) error {
	l.writes.Lock()
	defer l.writes.Unlock()
	want, lim, err := d.check(limit)
	if err != nil {
		return err
	}

	tx, err := l.begin(ctx)
	if err != nil {
		return fmt.Errorf("reserve: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO quota_periods (user_id, period) VALUES (?, ?) ON CONFLICT DO NOTHING`,
		d.User, d.Period); err != nil {
		return fmt.Errorf("reserve: %w", err)
	}
	res, err := tx.ExecContext(ctx, `UPDATE quota_periods SET reserved_micro = reserved_micro + ?
		WHERE user_id = ? AND period = ? AND (? = 0 OR ? < 0 OR used_micro + reserved_micro + ? <= ?)`,
		want, d.User, d.Period, want, lim, want, lim)
	if err != nil {
		return fmt.Errorf("reserve: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("reserve: %w", err)
	} else if n == 0 {
		u, err := usageTx(ctx, tx, d.User, d.Period)
		if err != nil {
			return fmt.Errorf("reserve: %w", err)
		}
		return &QuotaError{Usage: u.withLimit(d.Plan, limit), Requested: d.Reserve}
	}
	at := d.At.UnixMicro()
	if d.NewDownload {
		if _, err := tx.ExecContext(ctx, `INSERT INTO downloads
			(id, user_id, video, type, session, mode, period, started_at, last_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			d.DownloadID, d.User, d.Video, string(d.Type), d.Session, string(d.Mode), d.Period, at, at); err != nil {
			return fmt.Errorf("reserve: record download: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO deliveries
		(id, download_id, started_download, user_id, plan, video, type, session, mode, period, duration,
		 range_start, range_end, country, client_ip, request_id, limit_micro, reserved_micro, once_micro, opened_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.ID, d.DownloadID, d.NewDownload, d.User, d.Plan, d.Video, string(d.Type), d.Session, string(d.Mode), d.Period, d.Duration,
		d.RangeStart, d.RangeEnd, d.Country, d.ClientIP, d.RequestID, lim, want, toMicro(d.Once), at); err != nil {
		return fmt.Errorf("reserve: record delivery: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("reserve: %w", err)
	}
	return nil
}

// Adjust implements [Ledger].
func (l *SQLite) Adjust(ctx context.Context, deliveryID string, reserved float64) error {
	l.writes.Lock()
	defer l.writes.Unlock()
	if reserved < 0 {
		reserved = 0
	}
	want := toMicro(reserved)
	tx, err := l.begin(ctx)
	if err != nil {
		return fmt.Errorf("adjust: %w", err)
	}
	defer tx.Rollback()
	var (
		user, plan, period string
		held, lim          int64
		settled            sql.NullInt64
	)
	err = tx.QueryRowContext(ctx, `SELECT user_id, plan, period, reserved_micro, limit_micro, settled_at
		FROM deliveries WHERE id = ?`, deliveryID).Scan(&user, &plan, &period, &held, &lim, &settled)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("adjust %s: %w", deliveryID, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("adjust: %w", err)
	}
	if settled.Valid {
		return fmt.Errorf("adjust %s: %w", deliveryID, ErrSettled)
	}
	delta := want - held
	if delta == 0 {
		return nil
	}
	// Lowering is unconditional; raising must fit under the limit.
	res, err := tx.ExecContext(ctx, `UPDATE quota_periods SET reserved_micro = reserved_micro + ?
		WHERE user_id = ? AND period = ? AND (? <= 0 OR ? < 0 OR used_micro + reserved_micro + ? <= ?)`,
		delta, user, period, delta, lim, delta, lim)
	if err != nil {
		return fmt.Errorf("adjust: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("adjust: %w", err)
	} else if n == 0 {
		u, err := usageTx(ctx, tx, user, period)
		if err != nil {
			return fmt.Errorf("adjust: %w", err)
		}
		limit := -1.0
		if lim >= 0 {
			limit = fromMicro(lim)
		}
		return &QuotaError{Usage: u.withLimit(plan, limit), Requested: fromMicro(delta)}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE deliveries SET reserved_micro = ? WHERE id = ?`, want, deliveryID); err != nil {
		return fmt.Errorf("adjust: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("adjust: %w", err)
	}
	return nil
}

// Checkpoint implements [Ledger]. at is not kept: one process owns the file, so
// no other process needs to tell its live deliveries from abandoned ones.
func (l *SQLite) Checkpoint(ctx context.Context, deliveryID string, bytes int64, minutes float64, totalSize int64, at time.Time) error {
	l.writes.Lock()
	defer l.writes.Unlock()
	_, err := l.exec(ctx, `UPDATE deliveries SET bytes = ?, minutes_micro = ?, total_size = MAX(total_size, ?)
		WHERE id = ? AND settled_at IS NULL AND bytes <= ?`,
		bytes, toMicro(minutes), max(totalSize, 0), deliveryID, bytes)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// Heartbeat implements [Ledger]. It does nothing: one process owns the file, and
// [SQLite.Recover] runs before it serves.
func (l *SQLite) Heartbeat(ctx context.Context, ids []string, at time.Time) error { return nil }

// Settle implements [Ledger].
func (l *SQLite) Settle(ctx context.Context, deliveryID string, s Settlement) (Settled, error) {
	l.writes.Lock()
	defer l.writes.Unlock()
	if s.At.IsZero() {
		s.At = time.Now()
	}
	tx, err := l.begin(ctx)
	if err != nil {
		return Settled{}, fmt.Errorf("settle: %w", err)
	}
	defer tx.Rollback()
	cur, err := deliveryTx(ctx, tx, deliveryID)
	if err != nil {
		return Settled{}, fmt.Errorf("settle %s: %w", deliveryID, err)
	}
	if cur.open {
		if err := settleTx(ctx, tx, cur, s); err != nil {
			return Settled{}, fmt.Errorf("settle %s: %w", deliveryID, err)
		}
		if cur, err = deliveryTx(ctx, tx, deliveryID); err != nil {
			return Settled{}, fmt.Errorf("settle %s: %w", deliveryID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return Settled{}, fmt.Errorf("settle: %w", err)
	}
	return cur.Settled, nil
}

// settleTx bills, releases and closes the open delivery cur inside tx.
func settleTx(ctx context.Context, tx txer, cur delivery, s Settlement) error {
	bill := toMicro(max(s.Minutes, 0))
	if s.Once && cur.onceMicro > 0 {
		res, err := tx.ExecContext(ctx, `UPDATE downloads SET billed_by = ? WHERE id = ? AND billed_by IS NULL`,
			cur.DeliveryID, cur.DownloadID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			bill += cur.onceMicro
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE quota_periods
		SET used_micro = used_micro + ?, reserved_micro = reserved_micro - ?
		WHERE user_id = ? AND period = ?`,
		bill, cur.reservedMicro, cur.User, cur.Period); err != nil {
		return err
	}
	// The download was active until now: its resume window runs from here.
	if _, err := tx.ExecContext(ctx, `UPDATE downloads SET last_at = MAX(last_at, ?) WHERE id = ?`,
		s.At.UnixMicro(), cur.DownloadID); err != nil {
		return err
	}
	bytes := max(s.Bytes, 0)
	_, err := tx.ExecContext(ctx, `UPDATE deliveries
		SET status = ?, reason = ?, bytes = ?, total_size = ?, minutes_micro = ?, settled_at = ?
		WHERE id = ? AND settled_at IS NULL`,
		s.Status, s.Reason, bytes, max(s.TotalSize, 0), bill, s.At.UnixMicro(), cur.DeliveryID)
	return err
}

// Recover implements [Ledger]. It settles every open delivery: the file belongs
// to one process, so whatever is open when that process starts was left by its
// previous run. It must not be called while deliveries are being served, and
// [Meter.RunReaper] never calls it.
func (l *SQLite) Recover(ctx context.Context, now time.Time) ([]Settled, error) {
	l.writes.Lock()
	defer l.writes.Unlock()
	rows, err := l.db.QueryContext(ctx, `SELECT id FROM deliveries WHERE settled_at IS NULL ORDER BY opened_at, id`)
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
	out := make([]Settled, 0, len(ids))
	for _, id := range ids {
		st, err := l.recoverOne(ctx, id, now)
		if err != nil {
			return out, err
		}
		if st != nil {
			out = append(out, *st)
		}
	}
	return out, nil
}

// recoverOne settles one open delivery from its checkpoint; nil when it was settled
// meanwhile.
func (l *SQLite) recoverOne(ctx context.Context, id string, now time.Time) (*Settled, error) {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	defer tx.Rollback()
	cur, err := deliveryTx(ctx, tx, id)
	if err != nil {
		return nil, fmt.Errorf("recover %s: %w", id, err)
	}
	if !cur.open {
		return nil, nil
	}
	s := Settlement{
		Status:    "recovered",
		Reason:    "settled from the last checkpoint after a restart",
		Bytes:     cur.Bytes,
		TotalSize: cur.TotalSize,
		Minutes:   fromMicro(cur.minutesMicro),
		Once:      cur.Bytes > 0,
		At:        now,
	}
	if err := settleTx(ctx, tx, cur, s); err != nil {
		return nil, fmt.Errorf("recover %s: %w", id, err)
	}
	if cur, err = deliveryTx(ctx, tx, id); err != nil {
		return nil, fmt.Errorf("recover %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	return &cur.Settled, nil
}

// Usage implements [Ledger].
func (l *SQLite) Usage(ctx context.Context, user, period string) (Usage, error) {
	var u Usage
	var used, reserved int64
	err := l.queryRow(ctx, `SELECT used_micro, reserved_micro FROM quota_periods WHERE user_id = ? AND period = ?`,
		user, period).Scan(&used, &reserved)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return u, fmt.Errorf("usage: %w", err)
	}
	u.Period, u.MinutesUsed, u.MinutesReserved = period, fromMicro(used), fromMicro(reserved)
	return u, nil
}

// Report implements [Ledger].
func (l *SQLite) Report(ctx context.Context, period string) ([]ReportRow, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT user_id,
			COUNT(DISTINCT CASE WHEN bytes > 0 THEN download_id END),
			COALESCE(SUM(CASE WHEN bytes > 0 THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(minutes_micro), 0),
			COALESCE(SUM(bytes), 0)
		FROM deliveries
		WHERE period = ? AND settled_at IS NOT NULL
		GROUP BY user_id
		ORDER BY user_id`, period)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	defer rows.Close()
	var out []ReportRow
	for rows.Next() {
		var r ReportRow
		var minutes int64
		if err := rows.Scan(&r.User, &r.Downloads, &r.Deliveries, &minutes, &r.Bytes); err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		r.Minutes = fromMicro(minutes)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return out, nil
}

// FindDownload implements [Ledger].
func (l *SQLite) FindDownload(ctx context.Context, key DownloadKey, since time.Time) (DownloadState, bool, error) {
	var d DownloadState
	err := l.queryRow(ctx, `SELECT d.id, d.billed_by IS NOT NULL,
			COALESCE((SELECT SUM(bytes) FROM deliveries WHERE download_id = d.id), 0),
			COALESCE((SELECT MAX(total_size) FROM deliveries WHERE download_id = d.id), 0),
			COALESCE((SELECT SUM(MIN(bytes, ?)) FROM deliveries WHERE download_id = d.id), 0)
		FROM downloads d
		WHERE d.user_id = ? AND d.video = ? AND d.type = ? AND d.session = ? AND d.last_at >= ?
		ORDER BY d.last_at DESC, d.started_at DESC LIMIT 1`,
		LostPerDelivery, key.User, key.Video, string(key.Type), key.Session, since.UnixMicro()).
		Scan(&d.ID, &d.Billed, &d.Bytes, &d.Size, &d.Lost)
	if errors.Is(err, sql.ErrNoRows) {
		return DownloadState{}, false, nil
	} else if err != nil {
		return DownloadState{}, false, fmt.Errorf("find download: %w", err)
	}
	return d, true, nil
}

// TouchDownload implements [Ledger].
func (l *SQLite) TouchDownload(ctx context.Context, id string, at time.Time) error {
	l.writes.Lock()
	defer l.writes.Unlock()
	_, err := l.exec(ctx, `UPDATE downloads SET last_at = MAX(last_at, ?) WHERE id = ?`, at.UnixMicro(), id)
	if err != nil {
		return fmt.Errorf("touch download: %w", err)
	}
	return nil
}

// Ping implements [Ledger].
func (l *SQLite) Ping(ctx context.Context) error { return l.db.PingContext(ctx) }

// Close implements [Ledger].
func (l *SQLite) Close() error {
	l.stmts.Range(func(_, st any) bool {
		st.(*sql.Stmt).Close()
		return true
	})
	return l.db.Close()
}

// delivery is a deliveries row with the columns Settled does not expose.
type delivery struct {
	Settled
	open          bool
	reservedMicro int64
	minutesMicro  int64
	onceMicro     int64
}

func deliveryTx(ctx context.Context, tx txer, id string) (delivery, error) {
	var (
		d                    delivery
		typ, mode            string
		opened               int64
		settled              sql.NullInt64
		startedDownload      bool
		duration             float64
		reservedM, minutesM  int64
		onceM, bytes, totalS int64
	)
	err := tx.QueryRowContext(ctx, `SELECT id, download_id, started_download, user_id, plan, video, type, session, mode,
			period, duration, range_start, range_end, country, client_ip, request_id, reserved_micro, once_micro,
			bytes, minutes_micro, total_size, status, reason, opened_at, settled_at
		FROM deliveries WHERE id = ?`, id).Scan(
		&d.DeliveryID, &d.DownloadID, &startedDownload, &d.User, &d.Plan, &d.Video, &typ, &d.Session, &mode,
		&d.Period, &duration, &d.RangeStart, &d.RangeEnd, &d.Country, &d.ClientIP, &d.RequestID, &reservedM, &onceM,
		&bytes, &minutesM, &totalS, &d.Status, &d.Reason, &opened, &settled)
	if errors.Is(err, sql.ErrNoRows) {
		return d, ErrNotFound
	} else if err != nil {
		return d, err
	}
	d.StartedDownload = startedDownload
	d.Type, d.Mode, d.Duration = stream.DownloadType(typ), Mode(mode), duration
	d.Bytes, d.TotalSize = bytes, totalS
	d.reservedMicro, d.minutesMicro, d.onceMicro = reservedM, minutesM, onceM
	d.Minutes, d.Reserved = fromMicro(minutesM), fromMicro(reservedM)
	d.OpenedAt = time.UnixMicro(opened).UTC()
	d.open = !settled.Valid
	if settled.Valid {
		d.SettledAt = time.UnixMicro(settled.Int64).UTC()
	}
	return d, nil
}

func usageTx(ctx context.Context, tx txer, user, period string) (Usage, error) {
	var used, reserved int64
	err := tx.QueryRowContext(ctx, `SELECT used_micro, reserved_micro FROM quota_periods WHERE user_id = ? AND period = ?`,
		user, period).Scan(&used, &reserved)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Usage{}, err
	}
	return Usage{Period: period, MinutesUsed: fromMicro(used), MinutesReserved: fromMicro(reserved)}, nil
}
