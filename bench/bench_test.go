package bench_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamgate/streamgate/bench"
	"github.com/streamgate/streamgate/streamtest"
)

// The files the benchmarks download.
const (
	smallSize = 64 << 10
	largeSize = 16 << 20
)

var (
	smallVideo = bench.DefaultVideos(1, smallSize, 60)[0]
	largeVideo = bench.DefaultVideos(1, largeSize, 600)[0]
)

// parallelism is RunParallel's goroutines per GOMAXPROCS: 16 concurrent clients
// on a 2-core machine.
const parallelism = 8

// Stacks are built once per test binary and shared by the benchmarks that need
// the same options; TestMain closes them.
var stacks = struct {
	sync.Mutex
	m map[string]*bench.Stack
}{m: map[string]*bench.Stack{}}

func TestMain(m *testing.M) {
	code := m.Run()
	stacks.Lock()
	for _, st := range stacks.m {
		st.Close()
	}
	stacks.Unlock()
	os.Exit(code)
}

func sharedStack(b *testing.B, name string, opts bench.Options) *bench.Stack {
	b.Helper()
	stacks.Lock()
	defer stacks.Unlock()
	if st, ok := stacks.m[name]; ok {
		return st
	}
	st, err := bench.New(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
	stacks.m[name] = st
	return st
}

// mainStack serves the small and the large video with the gateway's defaults.
func mainStack(b *testing.B) *bench.Stack {
	return sharedStack(b, "main", bench.Options{Videos: []streamtest.Video{smallVideo, largeVideo}})
}

func userToken(b *testing.B, st *bench.Stack, user string) string {
	b.Helper()
	tok, err := st.UserToken(user)
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

// download is one iteration: a whole file, checked for status and length.
func download(c *http.Client, url, bearer string, size int64) error {
	got, err := bench.Get{URL: url, Bearer: bearer, Limit: -1}.Do(context.Background(), c)
	switch {
	case err != nil:
		return err
	case got.Status != http.StatusOK:
		return &bench.StatusError{Op: "download", Status: got.Status}
	case got.Bytes != size:
		return fmt.Errorf("download: %d bytes, want %d", got.Bytes, size)
	}
	return nil
}

// benchDownloads runs serial and parallel downloads of url; bearer, when not nil,
// makes the portal credential of each client.
func benchDownloads(b *testing.B, url string, bearer func(client string) string, size int64) {
	b.Run("serial", func(b *testing.B) {
		c := bench.NewClient(4)
		tok := bearer("serial")
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			if err := download(c, url, tok, size); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		c := bench.NewClient(64)
		var n atomic.Int64
		b.SetBytes(size)
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.RunParallel(func(pb *testing.PB) {
			tok := bearer(fmt.Sprintf("parallel-%d", n.Add(1)))
			for pb.Next() {
				if err := download(c, url, tok, size); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func gatewayBearer(b *testing.B, st *bench.Stack) func(string) string {
	return func(client string) string { return userToken(b, st, client) }
}

// BenchmarkDownloadSmall is a full authenticated download of a 64 KiB file
// through the gateway: JWT, policy, quota reservation, token, proxying, settlement.
func BenchmarkDownloadSmall(b *testing.B) {
	st := mainStack(b)
	benchDownloads(b, st.DownloadURL(smallVideo.UID), gatewayBearer(b, st), smallSize)
}

// BenchmarkDownloadLarge is the same with a 16 MiB file.
func BenchmarkDownloadLarge(b *testing.B) {
	st := mainStack(b)
	benchDownloads(b, st.DownloadURL(largeVideo.UID), gatewayBearer(b, st), largeSize)
}

// BenchmarkDirectEmulator downloads the same files straight from the emulator
// with a signed URL: the baseline the gateway's overhead is measured against.
func BenchmarkDirectEmulator(b *testing.B) {
	st := mainStack(b)
	none := func(string) string { return "" }
	for _, f := range []struct {
		name string
		v    streamtest.Video
	}{{"Small", smallVideo}, {"Large", largeVideo}} {
		url, err := st.DirectURL(f.v.UID, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(f.name, func(b *testing.B) { benchDownloads(b, url, none, f.v.Size) })
	}
}

// BenchmarkLinkDownload downloads the 64 KiB file through a link grant instead of
// a portal JWT.
func BenchmarkLinkDownload(b *testing.B) {
	st := mainStack(b)
	c := bench.NewClient(4)
	link, err := bench.CreateLink(context.Background(), c, st.LinksURL(smallVideo.UID), userToken(b, st, "linker"))
	if err != nil {
		b.Fatal(err)
	}
	benchDownloads(b, link, func(string) string { return "" }, smallSize)
}

// BenchmarkLinkCreate is POST /v1/videos/{uid}/links: JWT, policy, a signed grant.
func BenchmarkLinkCreate(b *testing.B) {
	st := mainStack(b)
	url := st.LinksURL(smallVideo.UID)
	b.Run("serial", func(b *testing.B) {
		c := bench.NewClient(4)
		tok := userToken(b, st, "links-serial")
		b.ReportAllocs()
		for b.Loop() {
			if _, err := bench.CreateLink(context.Background(), c, url, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		c := bench.NewClient(64)
		var n atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.RunParallel(func(pb *testing.PB) {
			tok := userToken(b, st, fmt.Sprintf("links-parallel-%d", n.Add(1)))
			for pb.Next() {
				if _, err := bench.CreateLink(context.Background(), c, url, tok); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkTokenMint downloads the 64 KiB file through the gateway with its
// Stream token cache (one RS256 signature per video per half token life) and
// without it (a 1ns token life: one signature per request). stream's
// BenchmarkMint measures the signature alone.
func BenchmarkTokenMint(b *testing.B) {
	for _, bc := range []struct {
		name string
		st   func(*testing.B) *bench.Stack
	}{
		{"cached", mainStack},
		{"uncached", func(b *testing.B) *bench.Stack {
			return sharedStack(b, "uncached", bench.Options{Videos: []streamtest.Video{smallVideo}, TokenTTL: time.Nanosecond})
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			st := bc.st(b)
			c := bench.NewClient(4)
			url, tok := st.DownloadURL(smallVideo.UID), userToken(b, st, "mint-"+bc.name)
			// Warm the caches so that the figure is the steady state.
			if err := download(c, url, tok, smallSize); err != nil {
				b.Fatal(err)
			}
			mints := st.Mints()
			b.SetBytes(smallSize)
			b.ReportAllocs()
			for b.Loop() {
				if err := download(c, url, tok, smallSize); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(st.Mints()-mints)/float64(b.N), "mints/op")
		})
	}
}
