package usage

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/streamgate/streamgate/stream"
)

//go:embed migrations/postgres/*.sql
var postgresMigrations embed.FS

// Postgres is the [Shared] ledger several replicas use at once, on PostgreSQL.
// Quota changes are conditional UPDATEs of the quota row, which PostgreSQL
// evaluates under the row's lock, and settlement locks the delivery row
// (SELECT … FOR UPDATE), so no check is ever a read followed by a write in Go.
type Postgres struct {
	pool       *pgxpool.Pool
	staleAfter time.Duration
}

var _ Shared = (*Postgres)(nil)

// DefaultStaleAfter is how long, by default, an open delivery's row may go
// unwritten before [Postgres.Recover] takes its process for gone.
const DefaultStaleAfter = 2 * time.Minute

// PostgresOption configures [OpenPostgres].
type PostgresOption func(*Postgres)

// StaleAfter sets how long an open delivery's row may go unwritten (no
// reservation, checkpoint or heartbeat) before Recover settles it as abandoned.
// It must be well above the meter's heartbeat interval plus the clock skew
// between replicas. Default [DefaultStaleAfter]; values <= 0 keep the default.
func StaleAfter(d time.Duration) PostgresOption {
	return func(l *Postgres) {
		if d > 0 {
			l.staleAfter = d
		}
	}
}

// OpenPostgres connects a pool to the database dsn names (a postgres:// URL or
// key=value string, as pgx parses it; pool settings such as pool_max_conns and
// run-time parameters such as search_path may ride in it) and applies the
// embedded migrations it has not applied yet. Replicas that start together
// migrate one at a time, under a PostgreSQL advisory lock.
func OpenPostgres(ctx context.Context, dsn string, opts ...PostgresOption) (*Postgres, error) {
	if dsn == "" {
		return nil, errors.New("open postgres ledger: empty dsn")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres ledger: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres ledger: %w", err)
	}
	l := &Postgres{pool: pool, staleAfter: DefaultStaleAfter}
	for _, o := range opts {
		o(l)
	}
	if err := l.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres ledger on %s/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	return l, nil
}

// StaleAfter implements [Shared].
func (l *Postgres) StaleAfter() time.Duration { return l.staleAfter }

// migrateLockKey names the advisory lock migrations run under. It is scoped to the
// schema, so deployments in separate schemas of one database do not wait on each
// other.
const migrateLockKey = `hashtextextended('streamgate.usage.migrate:' || coalesce(current_schema(), ''), 0)`

// migrate applies, in order and each in its own transaction, the embedded
// migrations not yet in schema_migrations. It holds a session advisory lock
// throughout, so that of several replicas starting at once one migrates and the
// others then find nothing left to do.
func (l *Postgres) migrate(ctx context.Context) error {
	ms, err := migrationFiles(postgresMigrations, "migrations/postgres")
	if err != nil {
		return err
	}
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(`+migrateLockKey+`)`); err != nil {
		return fmt.Errorf("lock migrations: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock(`+migrateLockKey+`)`); err != nil {
			// Ending the session releases its locks.
			_ = conn.Hijack().Close(uctx)
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER     PRIMARY KEY,
		name       TEXT        NOT NULL,
		applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
	)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	for _, m := range ms {
		body, err := postgresMigrations.ReadFile(m.path)
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var done bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`,
				m.version).Scan(&done); err != nil || done {
				return err
			}
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

// Reserve implements [Ledger].
func (l *Postgres) Reserve(ctx context.Context, d OpenDelivery, limit float64) error {
	want, lim, err := d.check(limit)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO quota_periods (user_id, period) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
			d.User, d.Period); err != nil {
			return err
		}
		// Concurrent reservations queue on the row's lock; each then re-checks the
		// condition against the row as the one before it left it.
		tag, err := tx.Exec(ctx, `UPDATE quota_periods SET reserved_micro = reserved_micro + $3::bigint
			WHERE user_id = $1 AND period = $2
			  AND ($3::bigint = 0 OR $4::bigint < 0 OR used_micro + reserved_micro + $3::bigint <= $4::bigint)`,
			d.User, d.Period, want, lim)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			u, err := pgUsage(ctx, tx, d.User, d.Period)
			if err != nil {
				return err
			}
			return &QuotaError{Usage: u.withLimit(d.Plan, limit), Requested: d.Reserve}
		}
		if d.NewDownload {
			if _, err := tx.Exec(ctx, `INSERT INTO downloads
				(id, user_id, video, type, session, mode, period, started_at, last_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)`,
				d.DownloadID, d.User, d.Video, string(d.Type), d.Session, string(d.Mode), d.Period, d.At); err != nil {
				return fmt.Errorf("record download: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO deliveries
			(id, download_id, started_download, user_id, plan, video, type, session, mode, period, duration,
			 range_start, range_end, country, client_ip, request_id, limit_micro, reserved_micro, once_micro,
			 opened_at, checkpoint_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20)`,
			d.ID, d.DownloadID, d.NewDownload, d.User, d.Plan, d.Video, string(d.Type), d.Session, string(d.Mode),
			d.Period, d.Duration, d.RangeStart, d.RangeEnd, d.Country, d.ClientIP, d.RequestID, lim, want,
			toMicro(d.Once), d.At); err != nil {
			return fmt.Errorf("record delivery: %w", err)
		}
		return nil
	})
	if err != nil {
		var qe *QuotaError
		if errors.As(err, &qe) {
			return qe
		}
		return fmt.Errorf("reserve: %w", err)
	}
	return nil
}

// Adjust implements [Ledger].
func (l *Postgres) Adjust(ctx context.Context, deliveryID string, reserved float64) error {
	want := toMicro(max(reserved, 0))
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var (
			user, plan, period string
			held, lim          int64
			settled            bool
		)
		err := tx.QueryRow(ctx, `SELECT user_id, plan, period, reserved_micro, limit_micro, settled_at IS NOT NULL
			FROM deliveries WHERE id = $1 FOR UPDATE`, deliveryID).Scan(&user, &plan, &period, &held, &lim, &settled)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		if settled {
			return ErrSettled
		}
		delta := want - held
		if delta == 0 {
			return nil
		}
		// Lowering is unconditional; raising must fit under the limit.
		tag, err := tx.Exec(ctx, `UPDATE quota_periods SET reserved_micro = reserved_micro + $3::bigint
			WHERE user_id = $1 AND period = $2
			  AND ($3::bigint <= 0 OR $4::bigint < 0 OR used_micro + reserved_micro + $3::bigint <= $4::bigint)`,
			user, period, delta, lim)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			u, err := pgUsage(ctx, tx, user, period)
			if err != nil {
				return err
			}
			limit := -1.0
			if lim >= 0 {
				limit = fromMicro(lim)
			}
			return &QuotaError{Usage: u.withLimit(plan, limit), Requested: fromMicro(delta)}
		}
		_, err = tx.Exec(ctx, `UPDATE deliveries SET reserved_micro = $2 WHERE id = $1`, deliveryID, want)
		return err
	})
	var qe *QuotaError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &qe):
		return qe
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrSettled):
		return fmt.Errorf("adjust %s: %w", deliveryID, err)
	}
	return fmt.Errorf("adjust: %w", err)
}

// Checkpoint implements [Ledger]. It also records at as the row's last sign of
// life, which keeps the delivery from being recovered by another replica.
func (l *Postgres) Checkpoint(ctx context.Context, deliveryID string, bytes int64, minutes float64, totalSize int64, at time.Time) error {
	if at.IsZero() {
		at = time.Now()
	}
	_, err := l.pool.Exec(ctx, `UPDATE deliveries
		SET bytes = $2, minutes_micro = $3, checkpoint_at = GREATEST(checkpoint_at, $4),
			total_size = GREATEST(total_size, $5)
		WHERE id = $1 AND settled_at IS NULL AND bytes <= $2`,
		deliveryID, bytes, toMicro(minutes), at, max(totalSize, 0))
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// Heartbeat implements [Ledger]: one UPDATE for all of ids.
func (l *Postgres) Heartbeat(ctx context.Context, ids []string, at time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := l.pool.Exec(ctx, `UPDATE deliveries SET checkpoint_at = $2
		WHERE id = ANY($1) AND settled_at IS NULL AND checkpoint_at < $2`, ids, at)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// Settle implements [Ledger]. The delivery row is locked (SELECT … FOR UPDATE)
// before it is read, so of two settlements racing, the second finds the first's
// result and returns it.
func (l *Postgres) Settle(ctx context.Context, deliveryID string, s Settlement) (Settled, error) {
	if s.At.IsZero() {
		s.At = time.Now()
	}
	var out Settled
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		cur, err := pgScanDelivery(tx.QueryRow(ctx, `SELECT `+pgDeliveryCols+` FROM deliveries WHERE id = $1 FOR UPDATE`, deliveryID))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		if cur.open {
			if cur, err = pgSettleTx(ctx, tx, cur, s); err != nil {
				return err
			}
		}
		out = cur.Settled
		return nil
	})
	if err != nil {
		return Settled{}, fmt.Errorf("settle %s: %w", deliveryID, err)
	}
	return out, nil
}

// pgSettleTx bills, releases and closes the open delivery cur, locked by tx, and
// returns the row as settled.
func pgSettleTx(ctx context.Context, tx pgx.Tx, cur delivery, s Settlement) (delivery, error) {
	bill := toMicro(max(s.Minutes, 0))
	if s.Once && cur.onceMicro > 0 {
		tag, err := tx.Exec(ctx, `UPDATE downloads SET billed_by = $1 WHERE id = $2 AND billed_by IS NULL`,
			cur.DeliveryID, cur.DownloadID)
		if err != nil {
			return cur, err
		}
		if tag.RowsAffected() == 1 {
			bill += cur.onceMicro
		}
	}
	tag, err := tx.Exec(ctx, `UPDATE quota_periods
		SET used_micro = used_micro + $3::bigint, reserved_micro = reserved_micro - $4::bigint
		WHERE user_id = $1 AND period = $2`,
		cur.User, cur.Period, bill, cur.reservedMicro)
	if err != nil {
		return cur, err
	}
	if tag.RowsAffected() != 1 {
		return cur, fmt.Errorf("no quota period %s for user %s", cur.Period, cur.User)
	}
	// The download was active until now: its resume window runs from here.
	if _, err := tx.Exec(ctx, `UPDATE downloads SET last_at = GREATEST(last_at, $2) WHERE id = $1`,
		cur.DownloadID, s.At); err != nil {
		return cur, err
	}
	return pgScanDelivery(tx.QueryRow(ctx, `UPDATE deliveries
		SET status = $2, reason = $3, bytes = $4, total_size = $5, minutes_micro = $6, settled_at = $7
		WHERE id = $1 AND settled_at IS NULL
		RETURNING `+pgDeliveryCols,
		cur.DeliveryID, s.Status, s.Reason, max(s.Bytes, 0), max(s.TotalSize, 0), bill, s.At))
}

// Recover implements [Ledger]. It settles, from their last checkpoints, only the
// open deliveries whose rows no process has written for the stale threshold: a
// live replica writes its open deliveries' rows at least every heartbeat, so what
// is older belongs to a replica that is gone. Each row is settled in its own
// transaction under FOR UPDATE SKIP LOCKED, with the staleness checked again under
// the lock, so replicas reaping at once settle each row once, and a row whose
// replica wrote it meanwhile is left alone.
func (l *Postgres) Recover(ctx context.Context, now time.Time) ([]Settled, error) {
	cutoff := now.Add(-l.staleAfter)
	rows, err := l.pool.Query(ctx, `SELECT id FROM deliveries
		WHERE settled_at IS NULL AND checkpoint_at < $1 ORDER BY checkpoint_at, id`, cutoff)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	reason := fmt.Sprintf("settled from the last checkpoint: no process wrote it for %s", l.staleAfter)
	out := make([]Settled, 0, len(ids))
	for _, id := range ids {
		var st *Settled
		err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
			cur, err := pgScanDelivery(tx.QueryRow(ctx, `SELECT `+pgDeliveryCols+` FROM deliveries
				WHERE id = $1 AND settled_at IS NULL AND checkpoint_at < $2
				FOR UPDATE SKIP LOCKED`, id, cutoff))
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // settled, written or being settled meanwhile
			} else if err != nil {
				return err
			}
			cur, err = pgSettleTx(ctx, tx, cur, Settlement{
				Status:    "recovered",
				Reason:    reason,
				Bytes:     cur.Bytes,
				TotalSize: cur.TotalSize,
				Minutes:   fromMicro(cur.minutesMicro),
				Once:      cur.Bytes > 0,
				At:        now,
			})
			if err != nil {
				return err
			}
			st = &cur.Settled
			return nil
		})
		if err != nil {
			return out, fmt.Errorf("recover %s: %w", id, err)
		}
		if st != nil {
			out = append(out, *st)
		}
	}
	return out, nil
}

// Usage implements [Ledger].
func (l *Postgres) Usage(ctx context.Context, user, period string) (Usage, error) {
	u, err := pgUsage(ctx, l.pool, user, period)
	if err != nil {
		return Usage{}, fmt.Errorf("usage: %w", err)
	}
	return u, nil
}

// Report implements [Ledger].
func (l *Postgres) Report(ctx context.Context, period string) ([]ReportRow, error) {
	rows, err := l.pool.Query(ctx, `SELECT user_id,
			COUNT(DISTINCT CASE WHEN bytes > 0 THEN download_id END),
			COUNT(*) FILTER (WHERE bytes > 0),
			COALESCE(SUM(minutes_micro), 0)::bigint,
			COALESCE(SUM(bytes), 0)::bigint
		FROM deliveries
		WHERE period = $1 AND settled_at IS NOT NULL
		GROUP BY user_id
		ORDER BY user_id`, period)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ReportRow, error) {
		var r ReportRow
		var minutes int64
		err := row.Scan(&r.User, &r.Downloads, &r.Deliveries, &minutes, &r.Bytes)
		r.Minutes = fromMicro(minutes)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// FindDownload implements [Ledger].
func (l *Postgres) FindDownload(ctx context.Context, key DownloadKey, since time.Time) (DownloadState, bool, error) {
	var d DownloadState
	// The download is chosen first, so the sums read its deliveries through
	// their download_id index rather than every open delivery of the ledger.
	err := l.pool.QueryRow(ctx, `WITH c AS (
			SELECT id, billed_by FROM downloads
			WHERE user_id = $1 AND video = $2 AND type = $3 AND session = $4 AND last_at >= $5
			ORDER BY last_at DESC, started_at DESC LIMIT 1)
		SELECT c.id, c.billed_by IS NOT NULL,
			COALESCE(SUM(x.bytes), 0)::bigint,
			COALESCE(MAX(x.total_size), 0)::bigint,
			COALESCE(SUM(LEAST(x.bytes, $6)), 0)::bigint
		FROM c LEFT JOIN deliveries x ON x.download_id = c.id
		GROUP BY c.id, c.billed_by`,
		key.User, key.Video, string(key.Type), key.Session, since, int64(LostPerDelivery)).
		Scan(&d.ID, &d.Billed, &d.Bytes, &d.Size, &d.Lost)
	if errors.Is(err, pgx.ErrNoRows) {
		return DownloadState{}, false, nil
	} else if err != nil {
		return DownloadState{}, false, fmt.Errorf("find download: %w", err)
	}
	return d, true, nil
}

// TouchDownload implements [Ledger].
func (l *Postgres) TouchDownload(ctx context.Context, id string, at time.Time) error {
	if _, err := l.pool.Exec(ctx, `UPDATE downloads SET last_at = GREATEST(last_at, $2) WHERE id = $1`, id, at); err != nil {
		return fmt.Errorf("touch download: %w", err)
	}
	return nil
}

// Ping implements [Ledger].
func (l *Postgres) Ping(ctx context.Context) error { return l.pool.Ping(ctx) }

// Close implements [Ledger]. It waits for connections in use to be returned.
func (l *Postgres) Close() error {
	l.pool.Close()
	return nil
}

// pgDeliveryCols are the deliveries columns pgScanDelivery reads, in its order.
const pgDeliveryCols = `id, download_id, started_download, user_id, plan, video, type, session, mode,
	period, duration, range_start, range_end, country, client_ip, request_id, reserved_micro, once_micro,
	bytes, minutes_micro, total_size, status, reason, opened_at, settled_at`

func pgScanDelivery(row pgx.Row) (delivery, error) {
	var (
		d         delivery
		typ, mode string
		opened    time.Time
		settled   *time.Time
	)
	err := row.Scan(&d.DeliveryID, &d.DownloadID, &d.StartedDownload, &d.User, &d.Plan, &d.Video, &typ, &d.Session,
		&mode, &d.Period, &d.Duration, &d.RangeStart, &d.RangeEnd, &d.Country, &d.ClientIP, &d.RequestID,
		&d.reservedMicro, &d.onceMicro, &d.Bytes, &d.minutesMicro, &d.TotalSize, &d.Status, &d.Reason,
		&opened, &settled)
	if err != nil {
		return d, err
	}
	d.Type, d.Mode = stream.DownloadType(typ), Mode(mode)
	d.Minutes, d.Reserved = fromMicro(d.minutesMicro), fromMicro(d.reservedMicro)
	d.OpenedAt = opened.UTC()
	d.open = settled == nil
	if settled != nil {
		d.SettledAt = settled.UTC()
	}
	return d, nil
}

// pgUsage reads a quota period; a period with no row is all zero.
func pgUsage(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, user, period string) (Usage, error) {
	var used, reserved int64
	err := q.QueryRow(ctx, `SELECT used_micro, reserved_micro FROM quota_periods WHERE user_id = $1 AND period = $2`,
		user, period).Scan(&used, &reserved)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return Usage{}, err
	}
	return Usage{Period: period, MinutesUsed: fromMicro(used), MinutesReserved: fromMicro(reserved)}, nil
}
