package main

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pgProxy relays TCP connections to a PostgreSQL server, and stands in for
// that server going away and coming back without stopping it (other tests
// share it). Stop closes every relayed connection and the listening socket,
// so connections in use break and new ones are refused, which is what the
// gateway sees of a stopped server; Start listens on the same address again.
type pgProxy struct {
	t      *testing.T
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// newPGProxy starts a relay to target (host:port) on a loopback port; it stops
// with the test.
func newPGProxy(t *testing.T, target string) *pgProxy {
	t.Helper()
	ln, err := net.Listen("tcp", ipLocal+":0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{t: t, target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	t.Cleanup(func() {
		p.Stop()
		p.wg.Wait()
	})
	return p
}

// Addr is the relay's host:port.
func (p *pgProxy) Addr() string { return p.addr }

func (p *pgProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.relay(c)
		}
	}()
}

// relay dials the server for the client connection c and copies both ways
// until either side ends; closing one closes both.
func (p *pgProxy) relay(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // stopped meanwhile
		p.mu.Unlock()
		c.Close()
		s.Close()
		return
	}
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	p.mu.Unlock()
	pipe := func(dst, src net.Conn) {
		defer p.wg.Done()
		_, _ = io.Copy(dst, src)
		p.drop(c, s)
	}
	p.wg.Add(2)
	go pipe(s, c)
	go pipe(c, s)
}

func (p *pgProxy) drop(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(p.conns, c)
	}
}

// Stop closes the listening socket and every relayed connection.
func (p *pgProxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return
	}
	p.ln.Close()
	p.ln = nil
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Start listens on the relay's address again after Stop.
func (p *pgProxy) Start() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	// The port was just released; a listener is not always free to bind it
	// again at once.
	for i := 0; errors.Is(err, syscall.EADDRINUSE) && i < 50; i++ {
		time.Sleep(20 * time.Millisecond)
		ln, err = net.Listen("tcp", p.addr)
	}
	if err != nil {
		p.t.Fatalf("restart the PostgreSQL relay on %s: %v", p.addr, err)
	}
	p.serve(ln)
}
