package usage

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

//go:embed migrations/postgres/*.sql
var postgresMigrations embed.FS

// Postgres is the [Shared] ledger several replicas use at once, on PostgreSQL.
// Quota changes are conditional UPDATEs of the quota row, which PostgreSQL
// evaluates under the row's lock, and every change to a download holds its
// key's row lock (download_keys), so no check is ever a read followed by a
// write in Go, and the requests of one download are decided one at a time
// whichever replicas serve them.
type Postgres struct {
	store
	pool *pgxpool.Pool
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
			l.stale = d
		}
	}
}

// GroupCommit lets up to lanes groups of concurrent writes each share one
// transaction, as SQLite's do (one group at a time there). Default: no groups;
// each write is a transaction of its own, run concurrently on the pool.
// PostgreSQL already shares one WAL flush among commits that arrive together,
// and a write's cost here is its statements' round trips, which a group only
// runs one after another: measured, grouping made whole deliveries slower, not
// faster (docs/benchmarks.md). Groups in several lanes may also deadlock with
// each other on unrelated users' rows (PostgreSQL resolves it after
// deadlock_timeout; the write it cancels runs again alone).
func GroupCommit(lanes int) PostgresOption {
	return func(l *Postgres) {
		if lanes > 0 {
			l.group.lanes = lanes
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
	l := &Postgres{store: store{db: stdlib.OpenDBFromPool(pool), pg: true, stale: DefaultStaleAfter}, pool: pool}
	l.group.lanes = math.MaxInt
	for _, o := range opts {
		o(l)
	}
	if err := l.migrate(ctx); err != nil {
		l.Close()
		return nil, fmt.Errorf("open postgres ledger on %s/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	return l, nil
}

// StaleAfter implements [Shared].
func (l *Postgres) StaleAfter() time.Duration { return l.stale }

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

// Close implements [Ledger].
func (l *Postgres) Close() error {
	err := l.db.Close()
	l.pool.Close()
	return err
}
