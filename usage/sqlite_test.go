package usage_test

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/usage"
	"github.com/streamgate/streamgate/usage/ledgertest"
)

func openMemory(t *testing.T) *usage.SQLite {
	t.Helper()
	l, err := usage.OpenSQLite(context.Background(), ":memory:")
	if err != nil {
		t.Fatalf("OpenSQLite(:memory:): %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func openFile(t *testing.T, path string) *usage.SQLite {
	t.Helper()
	l, err := usage.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatalf("OpenSQLite(%s): %v", path, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestSQLiteLedgerMemory(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) usage.Ledger { return openMemory(t) })
}

func TestSQLiteLedgerFile(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) usage.Ledger {
		return openFile(t, filepath.Join(t.TempDir(), "ledger.db"))
	})
}

func TestOpenSQLite(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")

	// Opening twice applies the migrations once and keeps the data.
	l := openFile(t, path)
	ledgertest.MustOpen(t, l, ledgertest.Prop, ledgertest.Request("alice", billing.Whole))
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	l = openFile(t, path)
	ledgertest.WantUsage(t, l, "alice", usage.Period(ledgertest.T0), 0, 10)

	tests := []struct {
		name, path string
	}{
		{"empty", ""},
		{"query in a plain path", filepath.Join(t.TempDir(), "x.db?mode=ro")},
		{"missing directory", filepath.Join(t.TempDir(), "no", "such", "dir", "x.db")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if l, err := usage.OpenSQLite(ctx, tt.path); err == nil {
				l.Close()
				t.Fatalf("OpenSQLite(%q) succeeded", tt.path)
			}
		})
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

// BenchmarkSQLiteDeliveries is whole deliveries through a ledger file, from
// 8 goroutines on one CPU (-cpu 1) or 16 on two (-cpu 2): SetParallelism 8.
func BenchmarkSQLiteDeliveries(b *testing.B) {
	l, err := usage.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "ledger.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.SetParallelism(8)
	ledgertest.Bench(b, l)
}

// TestSQLiteGroupCommit checks that concurrent writes share transactions, and
// that failing writes among them cost the others nothing.
func TestSQLiteGroupCommit(t *testing.T) {
	l := openFile(t, filepath.Join(t.TempDir(), "ledger.db"))
	ledgertest.FailuresAreTheirOwn(t, l)
	commits, writes := l.Commits()
	if commits == 0 || writes <= commits {
		t.Fatalf("%d writes in %d commits: no group held two writes", writes, commits)
	}
	t.Logf("%d writes in %d commits", writes, commits)
}
