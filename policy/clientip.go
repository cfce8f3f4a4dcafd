package policy

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// ClientIP finds the address of the end user behind a chain of trusted
// reverse proxies.
//
// The connection's peer address is the client, unless the peer is a trusted
// proxy. Only then is X-Forwarded-For read, from the right: each trusted
// proxy appends the address it saw, so the rightmost entry that is not a
// trusted proxy is the first address nobody we trust vouches for beyond, and
// everything to its left may be forged by the client. If every entry is
// trusted the leftmost one is the client (a request from inside the trusted
// network). An entry that does not parse ends the walk, and the last address
// that did parse (or the peer) is used: nothing left of garbage is believed.
//
// A request from an untrusted peer is judged by the peer address alone,
// whatever headers it carries.
type ClientIP struct {
	trusted []netip.Prefix
}

// NewClientIP returns a ClientIP that trusts X-Forwarded-For from the given
// proxies, each a CIDR prefix ("10.0.0.0/8", "fd00::/8") or a bare address
// ("192.0.2.10"). IPv4-mapped IPv6 forms are treated as IPv4. With no
// proxies, the peer address is always the client. Every bad entry is
// reported, by value.
func NewClientIP(trustedProxies []string) (*ClientIP, error) {
	c := &ClientIP{trusted: make([]netip.Prefix, 0, len(trustedProxies))}
	var errs []error
	for _, s := range trustedProxies {
		p, err := parseTrusted(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.trusted = append(c.trusted, p)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

func parseTrusted(s string) (netip.Prefix, error) {
	t := strings.TrimSpace(s)
	if strings.Contains(t, "/") {
		p, err := netip.ParsePrefix(t)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("trusted proxy %q: not an IP address or CIDR prefix", s)
		}
		a, bits := p.Addr(), p.Bits()
		if a.Is4In6() {
			if bits < 96 {
				return netip.Prefix{}, fmt.Errorf("trusted proxy %q: IPv4-mapped prefix shorter than /96", s)
			}
			a, bits = a.Unmap(), bits-96
		}
		return netip.PrefixFrom(a, bits).Masked(), nil
	}
	a, err := netip.ParseAddr(t)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("trusted proxy %q: not an IP address or CIDR prefix", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Trusted reports whether ip belongs to a trusted proxy.
func (c *ClientIP) Trusted(ip netip.Addr) bool {
	if c == nil || !ip.IsValid() {
		return false
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range c.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// FromRequest returns the client address of r, unmapped (IPv4 in IPv6 is
// returned as IPv4) and without a zone. It returns the zero Addr only when
// r.RemoteAddr is not an IP address (a Unix socket, a hand-built request),
// so callers must treat !IsValid() as "unknown". A nil *ClientIP trusts no
// proxy.
func (c *ClientIP) FromRequest(r *http.Request) netip.Addr {
	peer := parseHostPort(r.RemoteAddr)
	if !peer.IsValid() || !c.Trusted(peer) {
		return peer
	}
	// Walk X-Forwarded-For from the right, across all header lines (which
	// together form one comma-separated list), without splitting into a
	// slice.
	best := peer
	values := r.Header.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for {
			entry := v
			cut := strings.LastIndexByte(v, ',')
			if cut >= 0 {
				entry, v = v[cut+1:], v[:cut]
			}
			a := parseForwarded(entry)
			if !a.IsValid() {
				return best
			}
			if !c.Trusted(a) {
				return a
			}
			best = a
			if cut < 0 {
				break
			}
		}
	}
	return best
}

// parseHostPort parses r.RemoteAddr ("ip:port", "[ip6]:port", or a bare IP).
func parseHostPort(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}

// parseForwarded parses one X-Forwarded-For entry. Besides a bare address it
// accepts the forms some proxies write: "ip:port", "[ip6]" and "[ip6]:port".
func parseForwarded(s string) netip.Addr {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone("")
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return a.Unmap().WithZone("")
		}
	}
	return netip.Addr{}
}
