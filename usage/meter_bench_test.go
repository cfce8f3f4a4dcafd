package usage_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/usage"
	"github.com/streamgate/streamgate/usage/ledgertest"
)

// benchMeter is whole 64 KiB deliveries through a meter, as the proxy makes
// them (Start, Respond, Wrote, Finish), each of a user of its own, of a file
// the meter knows: from 8 goroutines on one CPU (-cpu 1) or 16 on two (-cpu 2): SetParallelism 8.
func benchMeter(b *testing.B, l usage.Ledger) {
	const small = 64 << 10
	m := usage.NewMeter(l, usage.MeterConfig{})
	start := func(u string) (*usage.Delivery, error) {
		return m.Start(context.Background(), usage.StartRequest{
			User: u, Plan: "basic", LimitMinutes: 1e9, Video: ledgertest.Video, Type: "default",
			Duration: ledgertest.Duration, Range: billing.Whole,
		})
	}
	whole := func(u string) error {
		d, err := start(u)
		if err != nil {
			return err
		}
		if err := d.Respond(200, small, ledgertest.ETag, billing.Interval{End: small}); err != nil {
			return err
		}
		d.Wrote(small)
		_, err = d.Finish(usage.Complete)
		return err
	}
	if err := whole("bench-learn"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	var users atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := whole(fmt.Sprintf("bench-%d", users.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkSQLiteMeterDeliveries(b *testing.B) {
	l, err := usage.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "ledger.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	benchMeter(b, l)
}

func BenchmarkPostgresMeterDeliveries(b *testing.B) {
	l, err := usage.OpenPostgres(context.Background(), freshSchema(b))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	benchMeter(b, l)
}
