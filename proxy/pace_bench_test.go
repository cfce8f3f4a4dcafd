package proxy

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

// BenchmarkPacedDownload downloads a 4 MiB file through a plan paced at
// 1 MiB/s, each time as a new user, and reports how long a download took
// against the 4 s the rate implies (paced/expected: 1.00 is exact). Run it
// with a fixed count, as each download takes seconds:
//
//	go test -run '^$' -bench PacedDownload -benchtime 5x ./proxy/
func BenchmarkPacedDownload(b *testing.B) {
	const (
		bps  = 1 << 20
		size = 4 << 20
		uid  = "5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f"
	)
	e := newEnv(b, envOptions{})
	e.emu.AddVideo(streamtest.Video{UID: uid, Duration: 60, Size: size, ReadyToStream: true})
	e.emu.SetDownloadReady(uid, stream.Default)
	gw := e.gateway(func(c *Config, _ *Deps) {
		c.Plans["paced"] = Plan{MinutesPerMonth: -1, MaxBytesPerSecond: bps}
	})
	u := gw.url + "/v1/videos/" + uid + "/downloads/default.mp4"
	c := e.client(addrGB)
	expected := time.Duration(float64(size) / bps * float64(time.Second))
	var total, worst time.Duration
	b.ReportAllocs()
	b.SetBytes(size)
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		r := do(b, c, "GET", u, bearer(e.jwt("user"+strconv.Itoa(i), "paced", nil)), nil)
		took := time.Since(start)
		if r.status != http.StatusOK || len(r.body) != size {
			b.Fatalf("paced download: %d, %d bytes", r.status, len(r.body))
		}
		total += took
		if d := (took - expected).Abs(); d > worst {
			worst = d
		}
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/download")
	b.ReportMetric(total.Seconds()/float64(b.N)/expected.Seconds(), "paced/expected")
	b.ReportMetric(worst.Seconds()/expected.Seconds(), "worst-deviation")
}
