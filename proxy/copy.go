package proxy

import (
	"io"
	"sync"
	"time"
)

// Copy buffers fit the reader: a buffer holds about what the client takes in
// copySlice, between minCopyBuffer and maxCopyBuffer. A fast client's
// gigabytes then cross in few system calls, while the many slow downloads a
// gateway holds at once each keep a small buffer for most of their lives.
// What the client takes is what its TCP acknowledged (package acked), not
// what the kernel accepted from the gateway: a slow reader's socket buffers
// take the first megabytes at once, and only its acknowledgements show that
// it is slow.
const (
	minCopyBuffer = 8 << 10
	maxCopyBuffer = 256 << 10
	copySlice     = 4 * time.Millisecond
	// firstCopyBuffer is where a download starts, unless the whole body fits
	// in smallBody: then it crosses in one write.
	firstCopyBuffer = 16 << 10
	smallBody       = 64 << 10
	// copyGrowAfter is how much a client must have acknowledged before its
	// buffer grows: more than a slow reader's socket takes at once.
	copyGrowAfter = 512 << 10
	// copyCheckEvery is the least time between two looks at the client's
	// acknowledgements (a system call each).
	copyCheckEvery = 2 * time.Millisecond
)

// copyBuffers holds a pool per buffer size, minCopyBuffer to maxCopyBuffer.
var copyBuffers = func() map[int]*sync.Pool {
	m := map[int]*sync.Pool{}
	for size := minCopyBuffer; size <= maxCopyBuffer; size *= 2 {
		m[size] = &sync.Pool{New: func() any { b := make([]byte, size); return &b }}
	}
	return m
}()

func getCopyBuffer(size int) *[]byte { return copyBuffers[size].Get().(*[]byte) }
func putCopyBuffer(b *[]byte)        { copyBuffers[len(*b)].Put(b) }

// nextCopyBuffer is the buffer size after a check that found the client
// taking bytesPerSec: one step (a doubling or a halving) towards what the
// client takes in copySlice, so that neither a burst nor a pause of a client
// moves it far.
func nextCopyBuffer(size int, bytesPerSec float64) int {
	want := bytesPerSec * copySlice.Seconds()
	fit := minCopyBuffer
	for fit < maxCopyBuffer && float64(fit) < want {
		fit *= 2
	}
	switch {
	case fit > size:
		return 2 * size
	case fit < size:
		return size / 2
	}
	return size
}

// startCopyBuffer is the first buffer for a body of length bytes (-1
// unknown): the smallest that holds a body of up to smallBody, or
// firstCopyBuffer.
func startCopyBuffer(length int64) int {
	if length < 0 || length > smallBody {
		return firstCopyBuffer
	}
	size := minCopyBuffer
	for int64(size) < length {
		size *= 2
	}
	return size
}

// copyBody passes Stream's body of length bytes (-1 unknown) to the client
// through w, flushing each write so that the client and the meter see the
// bytes as they arrive. acked reports how many of the bytes written the client
// has acknowledged (all of them when that cannot be known), now the time.
// It returns the first write error (the client left) or read error (a
// readError) other than the body's end.
func copyBody(w io.Writer, flush func() error, body io.Reader, length int64, acked func() int64, now func() time.Time) error {
	size := startCopyBuffer(length)
	buf := getCopyBuffer(size)
	defer func() { putCopyBuffer(buf) }()
	lastAcked, lastAt := acked(), now()
	for {
		n, rerr := body.Read(*buf)
		if n > 0 {
			if _, err := w.Write((*buf)[:n]); err != nil {
				return err
			}
			if err := flush(); err != nil {
				return err
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil
			}
			return readError{rerr}
		}
		// A fast client's writes take microseconds and it is looked at every
		// copyCheckEvery; a slow client's take that long each, so its buffer
		// shrinks within a few writes.
		at := now()
		d := at.Sub(lastAt)
		if d < copyCheckEvery {
			continue
		}
		a := acked()
		next := nextCopyBuffer(size, float64(a-lastAcked)/d.Seconds())
		if next > size && a < copyGrowAfter {
			next = size
		}
		if next != size {
			putCopyBuffer(buf)
			size, buf = next, getCopyBuffer(next)
		}
		lastAcked, lastAt = a, at
	}
}

// readError is a failure to read Stream's body, as against writing to the client.
type readError struct{ err error }

func (e readError) Error() string { return "reading the body from Stream: " + e.err.Error() }
func (e readError) Unwrap() error { return e.err }
