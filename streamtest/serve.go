package streamtest

import (
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/streamgate/streamgate/acked"
)

// Server is an http.Server for the emulator's Handler (or a handler that wraps
// it) that lets the emulator count what a delivery's receiver acknowledged
// rather than what was handed to the kernel: serve it on [Listen]'s listener.
// Without them the emulator counts the bytes it wrote.
func Server(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ConnContext: acked.ConnContext}
}

// Listen wraps ln so that [Server]'s connections count their bytes. Where it
// can (Linux), it also gives them the segment size of a real network path
// (1448 bytes, Ethernet less IP and TCP headers with timestamps) instead of
// loopback's 64 KiB: a receiver holds back the acknowledgement of at most one
// segment, and what a receiver that went away never acknowledged, though its
// socket had it, stays as small as it would be across a network.
func Listen(ln net.Listener) net.Listener {
	return acked.Listen(RealMSS(ln))
}

// RealMSS gives the connections ln accepts the segment size of a real network
// path, as [Listen] does, and returns ln: for a gateway under test, which wraps
// its listener itself, so that what a client that leaves never acknowledged is
// no more than it would be across a network.
func RealMSS(ln net.Listener) net.Listener {
	setMSS(ln, realMSS)
	return ln
}

// realMSS is the segment size of a path with a 1500-byte MTU.
const realMSS = 1448

// NewServer starts an httptest server for h (the emulator's Handler, or one
// that wraps it) set up as [Server] is.
func NewServer(h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = Listen(srv.Listener)
	srv.Config.ConnContext = acked.ConnContext
	srv.Config.ReadHeaderTimeout = 10 * time.Second
	srv.Start()
	return srv
}
