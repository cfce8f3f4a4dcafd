package usage_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/usage"
	"github.com/streamgate/streamgate/usage/ledgertest"
)

// postgresEnv names the variable that points the PostgreSQL tests at a database,
// e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const postgresEnv = "STREAMGATE_TEST_POSTGRES"

// postgresURL returns the database postgresEnv names, skipping t when it is unset.
func postgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(postgresEnv)
	if base == "" {
		t.Skip(postgresEnv + " is not set: set it to a PostgreSQL URL " +
			"(e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run the PostgreSQL ledger tests")
	}
	return base
}

// freshSchema creates a schema of its own for t in the database postgresEnv names,
// drops it when t ends, and returns a DSN whose connections use it. It skips t
// when the variable is unset.
func freshSchema(t testing.TB) string {
	t.Helper()
	base := postgresURL(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to %s: %v", postgresEnv, err)
	}
	defer conn.Close(ctx)
	schema := "sgtest_" + strings.ToLower(rand.Text())
	ident := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+ident); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+ident+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return withSearchPath(t, base, schema)
}

// withSearchPath adds search_path=schema to dsn, a URL or a key=value string.
func withSearchPath(t testing.TB, dsn, schema string) string {
	t.Helper()
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return dsn + " search_path=" + schema
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("%s: %v", postgresEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func openPostgres(t *testing.T, dsn string, opts ...usage.PostgresOption) *usage.Postgres {
	t.Helper()
	l, err := usage.OpenPostgres(context.Background(), dsn, opts...)
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestPostgresLedger(t *testing.T) {
	postgresURL(t)
	ledgertest.Run(t, func(t *testing.T) usage.Ledger { return openPostgres(t, freshSchema(t)) })
}

func TestOpenPostgresErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		name, dsn string
	}{
		{"empty", ""},
		{"not a dsn", "postgres://u:secretpw@[::1/db"},
		{"nobody listening", "postgres://u:secretpw@127.0.0.1:1/db?sslmode=disable&connect_timeout=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := usage.OpenPostgres(ctx, tt.dsn)
			if err == nil {
				l.Close()
				t.Fatalf("OpenPostgres(%q) succeeded", tt.dsn)
			}
			if strings.Contains(err.Error(), "secretpw") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

// TestPostgresConcurrentMigrate starts several replicas on an empty schema at
// once: each must open, and every migration must be applied exactly once.
func TestPostgresConcurrentMigrate(t *testing.T) {
	dsn := freshSchema(t)
	const replicas = 4
	var wg sync.WaitGroup
	ledgers := make([]*usage.Postgres, replicas)
	errs := make([]error, replicas)
	for i := range replicas {
		wg.Go(func() { ledgers[i], errs[i] = usage.OpenPostgres(context.Background(), dsn) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: OpenPostgres: %v", i, err)
		}
		t.Cleanup(func() { ledgers[i].Close() })
	}
	openPostgres(t, dsn) // a later start finds nothing to do

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var versions, distinct int
	if err := conn.QueryRow(ctx, `SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_migrations`).Scan(&versions, &distinct); err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadDir("migrations/postgres")
	if err != nil {
		t.Fatal(err)
	}
	if versions != len(files) || distinct != len(files) {
		t.Fatalf("schema_migrations holds %d rows (%d versions), want one per file: %d", versions, distinct, len(files))
	}
	// Every replica works on the one schema.
	for i, l := range ledgers {
		req := ledgertest.Request("alice", billing.Whole)
		req.Video = fmt.Sprintf("%032x", i)
		ledgertest.MustOpen(t, l, ledgertest.Prop, req)
	}
	ledgertest.WantUsage(t, ledgers[0], "alice", ledgertest.Period, 0, 10*replicas)
}

// TestPostgresReplicasShareQuota opens from two pools, as two replicas would,
// against a quota that fits exactly 10 of 200 requests.
func TestPostgresReplicasShareQuota(t *testing.T) {
	dsn := freshSchema(t)
	ledgertest.OpenConcurrently(t, []usage.Ledger{openPostgres(t, dsn), openPostgres(t, dsn)})
}

// TestPostgresReplicasSegments plays aria2c -x8 with its requests alternating
// between two replicas: the download is billed once, under both rules.
func TestPostgresReplicasSegments(t *testing.T) {
	for _, rule := range []billing.Rule{ledgertest.Prop, ledgertest.PerDl} {
		t.Run(string(rule.Mode), func(t *testing.T) {
			dsn := freshSchema(t)
			ledgertest.SegmentsConcurrently(t, []usage.Ledger{openPostgres(t, dsn), openPostgres(t, dsn)}, rule)
		})
	}
}

// TestPostgresRecoveryAcrossReplicas: replica A dies with a delivery open; B,
// which serves on, settles it once it is stale, from its last checkpoint, and
// leaves its own live delivery alone.
func TestPostgresRecoveryAcrossReplicas(t *testing.T) {
	dsn := freshSchema(t)
	a := openPostgres(t, dsn, usage.StaleAfter(time.Minute))
	b := openPostgres(t, dsn, usage.StaleAfter(time.Minute))
	ctx := context.Background()
	dead := ledgertest.Request("alice", billing.Whole)
	ledgertest.MustOpen(t, a, ledgertest.Prop, dead)
	if err := a.Progress(ctx, ledgertest.Prop, dead.ID, usage.Progress{Acked: ledgertest.Size / 2, At: ledgertest.T0}); err != nil {
		t.Fatal(err)
	}
	live := ledgertest.Request("bob", billing.Whole)
	live.At = ledgertest.T0.Add(50 * time.Second)
	ledgertest.MustOpen(t, b, ledgertest.Prop, live)

	// 59 s after A's last write: nothing is stale yet.
	if out, err := b.Recover(ctx, ledgertest.Prop, ledgertest.T0.Add(59*time.Second)); err != nil || len(out) != 0 {
		t.Fatalf("Recover before the threshold = %+v, %v", out, err)
	}
	out, err := b.Recover(ctx, ledgertest.Prop, ledgertest.T0.Add(61*time.Second))
	if err != nil || len(out) != 1 || out[0].DeliveryID != dead.ID || out[0].Status != "recovered" || out[0].Acked != ledgertest.Size/2 {
		t.Fatalf("Recover = %+v, %v", out, err)
	}
	ledgertest.WantUsage(t, b, "alice", ledgertest.Period, 5, 0)
	ledgertest.WantUsage(t, a, "bob", ledgertest.Period, 0, 10)
}

// TestPostgresMeterReaper runs two replicas' meters on one shared clock: B dies
// with a delivery open; A's reaper settles it once it is stale, while A's own
// stalled delivery, kept fresh by A's heartbeat, is left alone.
func TestPostgresMeterReaper(t *testing.T) {
	dsn := freshSchema(t)
	a := newFixtureOn(t, openPostgres(t, dsn, usage.StaleAfter(2*time.Minute)), usage.MeterConfig{CheckpointBytes: 1 << 20})
	bLedger, err := usage.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	b := usage.NewMeter(bLedger, usage.MeterConfig{CheckpointBytes: 1 << 20, Now: a.clock.Now})
	ctx := context.Background()

	mine := a.start(t, req())
	if err := mine.Respond(200, size, ledgertest.ETag, billing.Interval{End: size}); err != nil {
		t.Fatal(err)
	}
	mine.Wrote(size / 10) // a checkpoint at 0:00, then nothing: a stalled client
	theirs, err := b.Start(ctx, req(func(r *usage.StartRequest) { r.User = "bob" }))
	if err != nil {
		t.Fatal(err)
	}
	if err := theirs.Respond(200, size, ledgertest.ETag, billing.Interval{End: size}); err != nil {
		t.Fatal(err)
	}
	theirs.Wrote(size * 3 / 10) // a checkpoint at 0:00
	bLedger.Close()             // B is gone: no Finish, no heartbeat

	const every = 30 * time.Second
	for range 10 { // five minutes of reaper rounds
		a.clock.Advance(every)
		if err := a.meter.Heartbeat(ctx, every); err != nil {
			t.Fatalf("Heartbeat: %v", err)
		}
		if _, err := a.meter.Recover(ctx); err != nil {
			t.Fatalf("Recover: %v", err)
		}
	}
	lines := a.logs.FilterMessage("billable download").FilterField(zap.String("status", "recovered"))
	if lines.Len() != 1 || lines.All()[0].ContextMap()["delivery_id"] != theirs.ID() {
		t.Fatalf("recovered lines %v, want one for %s", lines.All(), theirs.ID())
	}
	ledgertest.WantUsage(t, a.ledger, "bob", "2026-03", 3, 0)

	st, err := mine.Finish(usage.Complete)
	if err != nil || st.Status != "complete" || st.Acked != size/10 || !near(st.Minutes, 1) {
		t.Fatalf("A's own delivery: Finish = %+v, %v; want complete, a tenth, 1 minute", st, err)
	}
	a.wantUsage(t, 1, 0)
}

// BenchmarkPostgresDeliveries is whole deliveries through a PostgreSQL
// ledger, as BenchmarkSQLiteDeliveries.
func BenchmarkPostgresDeliveries(b *testing.B) {
	l, err := usage.OpenPostgres(context.Background(), freshSchema(b))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.SetParallelism(8)
	ledgertest.Bench(b, l)
}

// TestPostgresGroupCommit is TestSQLiteGroupCommit on PostgreSQL with
// GroupCommit, where a failed statement aborts the transaction until it rolls
// back to a savepoint.
func TestPostgresGroupCommit(t *testing.T) {
	l := openPostgres(t, freshSchema(t), usage.GroupCommit(1))
	ledgertest.FailuresAreTheirOwn(t, l)
	commits, writes := l.Commits()
	if commits == 0 || writes <= commits {
		t.Fatalf("%d writes in %d commits: no group held two writes", writes, commits)
	}
	t.Logf("%d writes in %d commits", writes, commits)
}
