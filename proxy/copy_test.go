package proxy

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"time"
)

func TestNextCopyBuffer(t *testing.T) {
	const k = 1 << 10
	const mb = 1e6
	tests := []struct {
		name string
		size int
		rate float64 // bytes per second the client took
		want int
	}{
		{"slow client stays smallest", 8 * k, 256 * k, 8 * k},
		{"stalled client stays smallest", 8 * k, 0, 8 * k},
		{"a client at 4 MB/s fits 16 KiB", 16 * k, 4 * mb, 16 * k},
		{"fast client: one doubling per check", 8 * k, 1000 * mb, 16 * k},
		{"fast client at 128 KiB: to the largest", 128 * k, 1000 * mb, 256 * k},
		{"largest stays largest", 256 * k, 1000 * mb, 256 * k},
		{"a client at 10 MB/s fits 64 KiB", 64 * k, 10 * mb, 64 * k},
		{"a client at 10 MB/s grows from 16 KiB", 16 * k, 10 * mb, 32 * k},
		{"fast client turned slow: one halving per check", 256 * k, 512 * k, 128 * k},
		{"a client at 25 MB/s fits 128 KiB", 256 * k, 25 * mb, 128 * k},
		{"the smallest stays the smallest", 8 * k, 512 * k, 8 * k},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nextCopyBuffer(tt.size, tt.rate); got != tt.want {
				t.Errorf("nextCopyBuffer(%d, %.0f) = %d, want %d", tt.size, tt.rate, got, tt.want)
			}
		})
	}
}

// client is a writer that stands for a client and its socket: the client's
// application reads rate(written) bytes per second of a clock that writes
// move, and its TCP acknowledges what it read and window bytes more; the
// gateway's kernel takes writes at once while what is unacknowledged fits in
// socket bytes, and a write waits for the application to read the rest. Each
// write takes perWrite at least.
type client struct {
	bytes.Buffer
	writes   []int
	flushes  int
	fail     error
	rate     func(written int) float64
	perWrite time.Duration
	socket   int
	window   int
	clock    time.Time
	read     float64
}

func (c *client) Write(p []byte) (int, error) {
	if c.fail != nil {
		return 0, c.fail
	}
	rate := c.rate(c.Len())
	dt := c.perWrite
	if excess := float64(c.Len()+len(p)) - float64(c.acked()) - float64(c.socket); excess > 0 {
		dt += time.Duration(excess / rate * float64(time.Second))
	}
	c.clock = c.clock.Add(dt)
	c.read = min(c.read+rate*dt.Seconds(), float64(c.Len()+len(p)))
	c.writes = append(c.writes, len(p))
	return c.Buffer.Write(p)
}

func (c *client) acked() int64 { return min(int64(c.read)+int64(c.window), int64(c.Len())) }

func (c *client) flush() error { c.flushes++; return nil }

func (c *client) now() time.Time { return c.clock }

func (c *client) peak() int {
	p := 0
	for _, n := range c.writes {
		p = max(p, n)
	}
	return p
}

func newClient(rate func(written int) float64) *client {
	return &client{rate: rate, perWrite: 20 * time.Microsecond, socket: 512 << 10, window: 256 << 10, clock: time.Unix(0, 0)}
}

func TestStartCopyBuffer(t *testing.T) {
	for _, tt := range []struct {
		length int64
		want   int
	}{
		{-1, firstCopyBuffer}, {0, minCopyBuffer}, {100, minCopyBuffer}, {8 << 10, 8 << 10},
		{8<<10 + 1, 16 << 10}, {20 << 10, 32 << 10}, {64 << 10, 64 << 10}, {64<<10 + 1, firstCopyBuffer},
		{1 << 30, firstCopyBuffer},
	} {
		if got := startCopyBuffer(tt.length); got != tt.want {
			t.Errorf("startCopyBuffer(%d) = %d, want %d", tt.length, got, tt.want)
		}
	}
}

func TestCopyBody(t *testing.T) {
	src := bytes.Repeat([]byte("0123456789abcdef"), 32<<20/16) // 32 MiB
	t.Run("a fast client gets the largest buffer", func(t *testing.T) {
		c := newClient(func(int) float64 { return 7e8 })
		if err := copyBody(c, c.flush, bytes.NewReader(src), -1, c.acked, c.now); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.Bytes(), src) {
			t.Fatal("the copy differs from the body")
		}
		if c.flushes != len(c.writes) {
			t.Errorf("%d flushes for %d writes, want one each", c.flushes, len(c.writes))
		}
		if c.writes[0] != firstCopyBuffer || c.peak() != maxCopyBuffer {
			t.Errorf("writes went from %d to %d bytes, want %d to %d", c.writes[0], c.peak(), firstCopyBuffer, maxCopyBuffer)
		}
	})
	t.Run("a slow client keeps the smallest", func(t *testing.T) {
		c := newClient(func(int) float64 { return 256 << 10 })
		if err := copyBody(c, c.flush, bytes.NewReader(src), -1, c.acked, c.now); err != nil {
			t.Fatal(err)
		}
		// Its sockets take the first bytes at once, and its TCP acknowledges
		// a window of them as fast as they come: that is no reason to grow.
		// Once the writes wait for it, it goes down to the smallest buffer
		// and keeps it.
		if c.peak() > firstCopyBuffer {
			t.Errorf("a write of %d bytes for a client taking 256 KiB/s", c.peak())
		}
		first := (c.socket+c.window)/firstCopyBuffer + 4
		for i, n := range c.writes[first:] {
			if n != minCopyBuffer {
				t.Fatalf("write %d of %d bytes for a client taking 256 KiB/s", first+i, n)
			}
		}
		if !bytes.Equal(c.Bytes(), src) {
			t.Fatal("the copy differs from the body")
		}
	})
	t.Run("a client that slows down shrinks back", func(t *testing.T) {
		c := newClient(func(written int) float64 {
			if written < 16<<20 {
				return 7e8
			}
			return 1 << 20
		})
		if err := copyBody(c, c.flush, bytes.NewReader(src), -1, c.acked, c.now); err != nil {
			t.Fatal(err)
		}
		if last := c.writes[len(c.writes)-1]; c.peak() != maxCopyBuffer || last != minCopyBuffer {
			t.Errorf("peak write %d, last %d: want %d, then back to %d", c.peak(), last, maxCopyBuffer, minCopyBuffer)
		}
	})
	t.Run("a failed write is the client's", func(t *testing.T) {
		gone := errors.New("client gone")
		c := newClient(func(int) float64 { return 1 })
		c.fail = gone
		err := copyBody(c, c.flush, bytes.NewReader(src), -1, c.acked, c.now)
		var re readError
		if !errors.Is(err, gone) || errors.As(err, &re) {
			t.Errorf("err %v, want the write's error, not a readError", err)
		}
	})
	t.Run("a failed read is Stream's", func(t *testing.T) {
		c := newClient(func(int) float64 { return 7e8 })
		body := io.MultiReader(bytes.NewReader(src[:100<<10]), iotest.ErrReader(io.ErrUnexpectedEOF))
		err := copyBody(c, c.flush, body, -1, c.acked, c.now)
		var re readError
		if !errors.As(err, &re) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("err %v, want a readError of io.ErrUnexpectedEOF", err)
		}
		if c.Len() != 100<<10 {
			t.Errorf("%d bytes passed on before the failure, want %d", c.Len(), 100<<10)
		}
	})
}
