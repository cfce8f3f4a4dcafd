package usage_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/streamgate/streamgate/usage"
	"github.com/streamgate/streamgate/usage/ledgertest"
)

// postgresEnv names the variable that points the PostgreSQL tests at a database,
// e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const postgresEnv = "STREAMGATE_TEST_POSTGRES"

// postgresURL returns the database postgresEnv names, skipping t when it is unset.
func postgresURL(t *testing.T) string {
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
func freshSchema(t *testing.T) string {
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
func withSearchPath(t *testing.T, dsn, schema string) string {
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
		if err := l.Reserve(ctx, ledgertest.Open("alice", 1), 10); err != nil {
			t.Fatalf("replica %d: Reserve: %v", i, err)
		}
	}
	ledgertest.WantUsage(t, ledgers[0], "alice", usage.Period(ledgertest.T0), 0, replicas)
}

// TestPostgresReplicasShareQuota reserves from two pools, as two replicas would,
// against a quota that fits exactly 10 of 200 reservations.
func TestPostgresReplicasShareQuota(t *testing.T) {
	dsn := freshSchema(t)
	ledgertest.ReserveConcurrently(t, []usage.Ledger{openPostgres(t, dsn), openPostgres(t, dsn)})
}

// TestPostgresReplicasSettleOnce settles one delivery from both replicas at once,
// and two deliveries of one per-download download: each is billed once.
func TestPostgresReplicasSettleOnce(t *testing.T) {
	dsn := freshSchema(t)
	replicas := []usage.Ledger{openPostgres(t, dsn), openPostgres(t, dsn)}
	ctx := context.Background()
	p := usage.Period(ledgertest.T0)

	d := ledgertest.Open("alice", 10)
	if err := replicas[0].Reserve(ctx, d, 100); err != nil {
		t.Fatal(err)
	}
	const n = 20
	results := make([]usage.Settled, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			st, err := replicas[i%2].Settle(ctx, d.ID, usage.Settlement{
				Status: "complete", Bytes: int64(i + 1), Minutes: float64(i + 1), At: ledgertest.T0.Add(time.Minute),
			})
			if err != nil {
				t.Errorf("Settle %d: %v", i, err)
			}
			results[i] = st
		})
	}
	wg.Wait()
	for i := range results {
		if results[i] != results[0] {
			t.Fatalf("settlements differ: %+v and %+v", results[0], results[i])
		}
	}
	ledgertest.WantUsage(t, replicas[1], "alice", p, results[0].Minutes, 0)

	start := ledgertest.Open("bob", 10)
	start.Mode, start.Once = usage.PerDownload, 10
	cont := ledgertest.Open("bob", 0)
	cont.Mode, cont.Once, cont.DownloadID, cont.NewDownload = usage.PerDownload, 10, start.DownloadID, false
	for _, o := range []usage.OpenDelivery{start, cont} {
		if err := replicas[0].Reserve(ctx, o, 100); err != nil {
			t.Fatal(err)
		}
	}
	var billed [2]float64
	for i, o := range []usage.OpenDelivery{start, cont} {
		wg.Go(func() {
			st, err := replicas[i].Settle(ctx, o.ID, usage.Settlement{Status: "complete", Bytes: 1, Once: true})
			if err != nil {
				t.Errorf("Settle: %v", err)
			}
			billed[i] = st.Minutes
		})
	}
	wg.Wait()
	if billed[0]+billed[1] != 10 || billed[0]*billed[1] != 0 {
		t.Fatalf("the download's deliveries billed %v, want 10 once", billed)
	}
	ledgertest.WantUsage(t, replicas[0], "bob", p, 10, 0)
}

// TestPostgresRecoveryAcrossReplicas: replica B's Recover leaves replica A's live
// deliveries alone (checkpointed or heartbeated within the stale threshold) and
// settles the stale one from its checkpoint, releasing its reservation.
func TestPostgresRecoveryAcrossReplicas(t *testing.T) {
	dsn := freshSchema(t)
	a := openPostgres(t, dsn, usage.StaleAfter(2*time.Minute))
	b := openPostgres(t, dsn, usage.StaleAfter(2*time.Minute))
	ctx := context.Background()
	p := usage.Period(ledgertest.T0)
	t0 := ledgertest.T0
	if got := b.StaleAfter(); got != 2*time.Minute {
		t.Fatalf("StaleAfter = %v", got)
	}

	flowing := ledgertest.Open("alice", 10) // checkpointed a minute ago
	stalled := ledgertest.Open("alice", 10) // no byte for long, but heartbeated
	dead := ledgertest.Open("alice", 10)    // its replica is gone
	for _, d := range []usage.OpenDelivery{flowing, stalled, dead} {
		if err := a.Reserve(ctx, d, 100); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Checkpoint(ctx, dead.ID, 500, 5, 0, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := a.Checkpoint(ctx, flowing.ID, 900, 9, 0, t0.Add(9*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := a.Heartbeat(ctx, []string{stalled.ID}, t0.Add(8*time.Minute+time.Second)); err != nil {
		t.Fatal(err)
	}

	now := t0.Add(10 * time.Minute) // stale: written before 0:08
	got, err := b.Recover(ctx, now)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if len(got) != 1 {
		t.Fatalf("Recover settled %d deliveries, want only %s: %+v", len(got), dead.ID, got)
	}
	if s := got[0]; s.DeliveryID != dead.ID || s.Status != "recovered" || s.Bytes != 500 || !near(s.Minutes, 5) ||
		!s.SettledAt.Equal(now) || !near(s.Reserved, 10) {
		t.Fatalf("recovered %+v, want %s recovered from its checkpoint (500 bytes, 5 minutes) at %v", s, dead.ID, now)
	}
	ledgertest.WantUsage(t, a, "alice", p, 5, 20)
	if again, err := a.Recover(ctx, now); err != nil || len(again) != 0 {
		t.Fatalf("Recover on A = %+v, %v; want nothing", again, err)
	}

	// A's live deliveries settle as A says.
	for _, d := range []usage.OpenDelivery{flowing, stalled} {
		st, err := a.Settle(ctx, d.ID, usage.Settlement{Status: "complete", Bytes: 1000, Minutes: 10, At: now})
		if err != nil || st.Status != "complete" {
			t.Fatalf("Settle(%s) = %+v, %v", d.ID, st, err)
		}
	}
	ledgertest.WantUsage(t, b, "alice", p, 25, 0)
}

// TestPostgresMeterReaper runs two replicas' meters on one shared clock: B dies
// with a delivery open; A's reaper settles it once it is stale, while A's own
// stalled delivery, kept fresh by A's heartbeat, is left alone.
func TestPostgresMeterReaper(t *testing.T) {
	dsn := freshSchema(t)
	a := newFixtureOn(t, openPostgres(t, dsn, usage.StaleAfter(2*time.Minute)), usage.MeterConfig{CheckpointBytes: 100})
	bLedger, err := usage.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	b := usage.NewMeter(bLedger, usage.MeterConfig{CheckpointBytes: 100, Now: a.clock.Now})
	ctx := context.Background()

	mine := a.start(t, req())
	if err := mine.Headers(200, size, -1); err != nil {
		t.Fatal(err)
	}
	mine.Add(100) // a checkpoint at 0:00, then nothing: a stalled client
	theirs, err := b.Start(ctx, req(func(r *usage.StartRequest) { r.User = "bob" }))
	if err != nil {
		t.Fatal(err)
	}
	if err := theirs.Headers(200, size, -1); err != nil {
		t.Fatal(err)
	}
	theirs.Add(300) // a checkpoint at 0:00
	bLedger.Close() // B is gone: no Finish, no heartbeat

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

	st, err := mine.Finish("complete")
	if err != nil || st.Status != "complete" || st.Bytes != 100 || !near(st.Minutes, 1) {
		t.Fatalf("A's own delivery: Finish = %+v, %v; want complete, 100 bytes, 1 minute", st, err)
	}
	a.wantUsage(t, 1, 0)
}

// TestPostgresMeterSettledElsewhere: a replica whose delivery was recovered by
// another (it was cut off for longer than the stale threshold) gets the
// recovered row back from Finish, and logs no second billable line.
func TestPostgresMeterSettledElsewhere(t *testing.T) {
	dsn := freshSchema(t)
	a := newFixtureOn(t, openPostgres(t, dsn), usage.MeterConfig{CheckpointBytes: 100})
	b := openPostgres(t, dsn)
	d := a.start(t, req())
	if err := d.Headers(200, size, -1); err != nil {
		t.Fatal(err)
	}
	d.Add(200)
	if _, err := b.Recover(context.Background(), a.clock.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	d.Add(300)
	st, err := d.Finish("complete")
	if err != nil || st.Status != "recovered" || st.Bytes != 200 {
		t.Fatalf("Finish = %+v, %v; want the recovered row (200 bytes)", st, err)
	}
	if n := a.logs.FilterMessage("billable download").Len(); n != 0 {
		t.Fatalf("%d billable lines from the replica whose delivery was recovered elsewhere, want 0", n)
	}
	if n := a.logs.FilterMessage("delivery was settled elsewhere while its body was open").FilterLevelExact(zapcore.WarnLevel).Len(); n != 1 {
		t.Fatalf("%d warnings, want 1", n)
	}
	a.wantUsage(t, 2, 0)
}

// TestPostgresRunReaper runs the reaper on the real clock with a short stale
// threshold.
func TestPostgresRunReaper(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about a second")
	}
	dsn := freshSchema(t)
	const stale = time.Second
	core, logs := observer.New(zapcore.DebugLevel)
	la := openPostgres(t, dsn, usage.StaleAfter(stale))
	a := usage.NewMeter(la, usage.MeterConfig{Logger: zap.New(core)})
	lb, err := usage.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	b := usage.NewMeter(lb, usage.MeterConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	mine, err := a.Start(ctx, req()) // stalled: no byte ever
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := b.Start(ctx, req(func(r *usage.StartRequest) { r.User = "bob" }))
	if err != nil {
		t.Fatal(err)
	}
	lb.Close() // B is gone

	done := make(chan struct{})
	go func() {
		defer close(done)
		a.RunReaper(ctx, 100*time.Millisecond)
	}()
	recovered := func() []observer.LoggedEntry {
		return logs.FilterMessage("billable download").FilterField(zap.String("status", "recovered")).All()
	}
	for deadline := time.Now().Add(10 * time.Second); len(recovered()) == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if got := recovered(); len(got) != 1 || got[0].ContextMap()["delivery_id"] != theirs.ID() {
		t.Fatalf("recovered lines %v, want one for %s", got, theirs.ID())
	}
	if st, err := mine.Finish("client_gone"); err != nil || st.Status != "client_gone" {
		t.Fatalf("A's own stalled delivery: Finish = %+v, %v; want it still open until now", st, err)
	}
}

// TestRunReaperNotShared: on SQLite the reaper leaves the process's live
// deliveries alone (SQLite's Recover would settle them) and settles again what
// failed to settle, so its reservation does not hold the quota until a restart.
func TestRunReaperNotShared(t *testing.T) {
	sq := openMemory(t)
	fl := &failingSettle{Ledger: sq}
	f := newFixtureOn(t, fl, usage.MeterConfig{Mode: usage.Proportional})
	live := f.start(t, req())
	failed := f.start(t, req(func(r *usage.StartRequest) { r.User = "bob" }))
	if err := failed.Headers(200, size, size); err != nil {
		t.Fatal(err)
	}
	failed.Add(size)
	fl.fail.Store(1)
	if _, err := failed.Finish("complete"); err == nil {
		t.Fatal("Finish succeeded though the ledger failed it")
	}
	ledgertest.WantUsage(t, sq, "bob", usage.Period(f.clock.Now()), 0, 10)

	reapUntilReleased(t, f, sq, "bob")
	ledgertest.WantUsage(t, sq, "bob", usage.Period(f.clock.Now()), 10, 0)
	if st, err := live.Finish("complete"); err != nil || st.Status != "complete" {
		t.Fatalf("Finish = %+v, %v; want the live delivery still open", st, err)
	}
}

// reapUntilReleased runs f's reaper until user holds no reservation in l.
func reapUntilReleased(t *testing.T, f *fixture, l usage.Ledger, user string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.meter.RunReaper(ctx, time.Millisecond)
	}()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		u, err := l.Usage(context.Background(), user, usage.Period(f.clock.Now()))
		if err == nil && u.MinutesReserved == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reaper left %s's reservation held: %+v, %v", user, u, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// failingSettle fails the next fail calls of Settle.
type failingSettle struct {
	usage.Ledger
	fail atomic.Int32
}

func (l *failingSettle) Settle(ctx context.Context, id string, s usage.Settlement) (usage.Settled, error) {
	if l.fail.Add(-1) >= 0 {
		return usage.Settled{}, errors.New("ledger unavailable")
	}
	return l.Ledger.Settle(ctx, id, s)
}

// TestChargeFailureReleased: a direct link whose charge could not be written is
// not handed out, and the reaper releases its reservation without billing it.
func TestChargeFailureReleased(t *testing.T) {
	sq := openMemory(t)
	fl := &failingSettle{Ledger: sq}
	f := newFixtureOn(t, fl, usage.MeterConfig{Mode: usage.Proportional})
	fl.fail.Store(1)
	if _, err := f.meter.Charge(context.Background(), req()); err == nil {
		t.Fatal("Charge succeeded though the ledger failed it")
	}
	ledgertest.WantUsage(t, sq, "alice", usage.Period(f.clock.Now()), 0, 10)
	reapUntilReleased(t, f, sq, "alice")
	ledgertest.WantUsage(t, sq, "alice", usage.Period(f.clock.Now()), 0, 0)
}
