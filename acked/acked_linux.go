//go:build linux

package acked

import (
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sysConn reads a Linux TCP socket's acknowledgements through its raw
// descriptor, without duplicating it or changing its blocking mode.
type sysConn struct {
	raw syscall.RawConn // nil when c is not a TCP socket with a descriptor
	// base is tcpi_bytes_acked when the connection was wrapped. An accepted
	// socket starts at 0, but a dialed one has its SYN counted as 1 byte,
	// and neither is a byte this package counted as written.
	base   int64
	baseOK bool
}

func probe(c net.Conn) sysConn {
	if _, ok := c.LocalAddr().(*net.TCPAddr); !ok {
		return sysConn{}
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return sysConn{}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return sysConn{}
	}
	s := sysConn{raw: raw}
	var info *unix.TCPInfo
	var gerr error
	err = raw.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err == nil && gerr == nil {
		s.base, s.baseOK = int64(info.Bytes_acked), true
	}
	return s
}

// unacked reads the kernel's figure; ok is false when it cannot (the socket
// is closed, or neither TCP_INFO nor SIOCOUTQ answers).
func (s sysConn) unacked(written *atomic.Int64) (n int64, src Source, ok bool) {
	return s.read(written, true)
}

// read is unacked with TCP_INFO left out when tryInfo is false, so that tests
// can hold the two kernel figures against each other.
func (s sysConn) read(written *atomic.Int64, tryInfo bool) (n int64, src Source, ok bool) {
	if s.raw == nil {
		return 0, SourceWritten, false
	}
	var (
		acked     int64
		haveAcked bool
		outq      int
		haveOutq  bool
	)
	err := s.raw.Control(func(fd uintptr) {
		if tryInfo {
			info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			// Kernels before 4.1 return a shorter tcp_info without the byte
			// counters, which then read 0. A server has received its request
			// by the time it answers, so both at 0 means "not there" (or
			// nothing happened yet, which SIOCOUTQ tells as well).
			if err == nil && s.baseOK && (info.Bytes_acked != 0 || info.Bytes_received != 0) {
				acked, haveAcked = int64(info.Bytes_acked)-s.base, true
				return
			}
		}
		q, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		outq, haveOutq = q, err == nil
	})
	// Loaded after the kernel's figure: a write racing with this call makes
	// the result larger (bills less), never smaller.
	w := written.Load()
	switch {
	case err != nil:
		return 0, SourceWritten, false
	case haveAcked:
		// A FIN this side sent is acknowledged as one more byte.
		return clamp(w-acked, w), SourceTCPInfo, true
	case haveOutq:
		return clamp(int64(outq), w), SourceOutq, true
	}
	return 0, SourceWritten, false
}

// cut arms an abortive close and reads the bytes written that the kernel has
// not sent (SIOCOUTQNSD), on a connection that is still open both ways or
// half-closed by the peer; ok is false otherwise. Linger is set first: from
// then on, closing discards the queue, and the figure is read as late as
// possible before the close.
func (s sysConn) cut(written *atomic.Int64) (n int64, ok bool) {
	if s.raw == nil {
		return 0, false
	}
	var (
		unsent int
		live   bool
		ierr   error
	)
	err := s.raw.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil || (info.State != unix.BPF_TCP_ESTABLISHED && info.State != unix.BPF_TCP_CLOSE_WAIT) {
			return
		}
		if err := unix.SetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
			return
		}
		live = true
		unsent, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQNSD)
	})
	if err != nil || !live || ierr != nil {
		return 0, false
	}
	return clamp(int64(unsent), written.Load()), true
}

func clamp(n, hi int64) int64 {
	return min(max(n, 0), hi)
}

// unread is the bytes the kernel has received on c (and acknowledged to the
// sender) that nobody has read yet: SIOCINQ.
func unread(c net.Conn) (int64, bool) {
	raw, ok := rawOf(c)
	if !ok {
		return 0, false
	}
	var n int
	var ierr error
	if err := raw.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil || ierr != nil {
		return 0, false
	}
	return int64(n), true
}

// drain reads and discards what c's socket holds unread, without blocking,
// and returns how many bytes that was. It asks for an immediate acknowledgement
// first, so that the sender hears of everything read.
func drain(c net.Conn, limit int64) (int64, bool) {
	raw, ok := rawOf(c)
	if !ok {
		return 0, false
	}
	var total int64
	buf := make([]byte, 64<<10)
	// Control, not Read: another goroutine may be parked reading this
	// connection (a transport waiting for headers), and Read would wait for it.
	// The descriptor is non-blocking, so this read never waits.
	err := raw.Control(func(fd uintptr) {
		// The smallest receive buffer first: reading frees space, and the
		// window the sender is offered must not grow with it, or bytes would
		// keep arriving (and be acknowledged) between the last read and the
		// close.
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 0)
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
		// The window advertised before the buffer shrank still lets the
		// sender's bytes in flight arrive, and the kernel acknowledges them:
		// they are delivered. Read until none has come for drainQuiet, for at
		// most drainFor.
		end := time.Now().Add(drainFor)
		for total < limit {
			n, err := unix.Read(int(fd), buf[:min(int64(len(buf)), limit-total)])
			if n > 0 {
				total += int64(n)
				continue
			}
			if err != unix.EAGAIN || !time.Now().Before(end) {
				break
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if k, _ := unix.Poll(pfd, int(drainQuiet/time.Millisecond)); k <= 0 || pfd[0].Revents&unix.POLLIN == 0 {
				break
			}
		}
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	})
	return total, err == nil
}

// How long drain waits for bytes still in flight.
const (
	drainQuiet = time.Millisecond
	drainFor   = 20 * time.Millisecond
)

// rawOf is c's descriptor, when it has one.
func rawOf(c net.Conn) (syscall.RawConn, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false
	}
	raw, err := sc.SyscallConn()
	return raw, err == nil
}
