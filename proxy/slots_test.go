package proxy

import (
	"sync"
	"testing"

	"github.com/streamgate/streamgate/policy"
	"github.com/streamgate/streamgate/stream"
)

// TestDownloadSlots: the requests of one download share one slot of the cap;
// another file takes another; the slot is given back when the last ends.
func TestDownloadSlots(t *testing.T) {
	c := policy.NewConcurrency()
	d := newDownloadSlots(c)
	var releases []func()
	for range 8 { // aria2c's segments
		rel, ok := d.acquire("u", "v1", stream.Default, "192.0.2.1", 2)
		if !ok {
			t.Fatal("a segment of a download in flight was refused")
		}
		releases = append(releases, rel)
	}
	if n := c.InUse("u"); n != 1 {
		t.Fatalf("eight requests of one download hold %d slots, want 1", n)
	}
	audio, ok := d.acquire("u", "v1", stream.Audio, "192.0.2.1", 2)
	if !ok || c.InUse("u") != 2 {
		t.Fatalf("another file: ok %v, %d slots; want a second slot", ok, c.InUse("u"))
	}
	if _, ok := d.acquire("u", "v1", stream.Default, "198.51.100.7", 2); ok {
		t.Fatal("the same file from another address passed a cap of 2")
	}
	if _, ok := d.acquire("other", "v2", stream.Default, "192.0.2.1", 2); !ok {
		t.Fatal("another user was refused")
	}
	for i, rel := range releases {
		rel()
		rel() // twice is harmless
		if want := 2; i < len(releases)-1 && c.InUse("u") != want {
			t.Fatalf("after %d of 8 segments ended, %d slots; want %d", i+1, c.InUse("u"), want)
		}
	}
	if n := c.InUse("u"); n != 1 {
		t.Fatalf("after the download ended %d slots, want 1 (the audio)", n)
	}
	audio()
	if n := c.InUse("u"); n != 0 || len(d.in) != 1 {
		t.Fatalf("all ended: %d slots, %d keys tracked; want 0 slots and only the other user's key", n, len(d.in))
	}
}

// TestDownloadSlotsConcurrently races the requests of a few downloads: no more
// slots than files are ever taken, and all are given back.
func TestDownloadSlotsConcurrently(t *testing.T) {
	c := policy.NewConcurrency()
	d := newDownloadSlots(c)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			video := []string{"a", "b", "c"}[i%3]
			rel, ok := d.acquire("u", video, stream.Default, "192.0.2.1", 3)
			if !ok {
				t.Error("refused with a cap of 3 and 3 files")
				return
			}
			if n := c.InUse("u"); n > 3 {
				t.Errorf("%d slots in use for 3 files", n)
			}
			rel()
		})
	}
	wg.Wait()
	if n := c.InUse("u"); n != 0 || len(d.in) != 0 {
		t.Fatalf("%d slots, %d keys left", n, len(d.in))
	}
}
