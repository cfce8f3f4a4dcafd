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
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// SQLite is the embedded [Ledger]: one file in WAL mode, for one process.
// Write transactions begin IMMEDIATE, so they queue on SQLite's write lock
// instead of failing when two of them meet; within the process, writers first
// queue on a Go mutex. Reads run beside the writer under WAL.
type SQLite struct {
	store
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
	l := &SQLite{store: store{db: db}}
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

// Close implements [Ledger].
func (l *SQLite) Close() error { return l.db.Close() }
