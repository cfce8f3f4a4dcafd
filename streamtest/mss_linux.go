//go:build linux

package streamtest

import (
	"net"

	"golang.org/x/sys/unix"
)

// setMSS sets the largest segment the connections ln accepts send.
func setMSS(ln net.Listener, mss int) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return
	}
	raw, err := tl.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss) })
}
