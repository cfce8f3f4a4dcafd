package streamtest

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Clock is a settable time source for tests: hand its Now to every component
// that takes a clock (the emulator, the meter, grants, the gateway) and move them
// all at once with Advance.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// ClientFrom returns an HTTP client whose connections leave from the local
// address src (127.0.0.x on loopback), so servers see src as the client's
// address: with a database from CountryDB, that is how a test picks a client's
// country. It follows no redirects; call CloseIdleConnections on its transport
// when done (it is an *http.Transport).
func ClientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 64,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
