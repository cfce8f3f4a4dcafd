package policy

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

var testTrusted = []string{
	"10.0.0.0/8",
	"192.0.2.10",
	"2001:db8:ffff::/48",
	"::ffff:172.16.0.0/108", // 172.16.0.0/12
}

func TestClientIPFromRequest(t *testing.T) {
	c, err := NewClientIP(testTrusted)
	if err != nil {
		t.Fatalf("NewClientIP: %v", err)
	}
	tests := []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{name: "untrusted peer, no header", remote: "203.0.113.5:1234", want: "203.0.113.5"},
		{name: "untrusted peer, spoofed header ignored", remote: "203.0.113.5:1234", xff: []string{"1.2.3.4"}, want: "203.0.113.5"},
		{name: "untrusted peer, header naming a trusted proxy ignored", remote: "203.0.113.5:1234", xff: []string{"10.0.0.1"}, want: "203.0.113.5"},
		{name: "trusted peer, no header", remote: "10.0.0.1:80", want: "10.0.0.1"},
		{name: "trusted peer honoured", remote: "10.0.0.1:80", xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "trusted bare address", remote: "192.0.2.10:80", xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "neighbour of a trusted bare address", remote: "192.0.2.11:80", xff: []string{"198.51.100.7"}, want: "192.0.2.11"},
		{name: "chain of trusted proxies", remote: "10.0.0.1:80", xff: []string{"198.51.100.7, 10.1.1.1, 192.0.2.10"}, want: "198.51.100.7"},
		{name: "client-supplied entries left of the client ignored", remote: "10.0.0.1:80", xff: []string{"6.6.6.6, 7.7.7.7, 198.51.100.7, 10.1.1.1"}, want: "198.51.100.7"},
		{name: "all trusted: leftmost", remote: "10.0.0.1:80", xff: []string{"10.9.9.9, 10.1.1.1"}, want: "10.9.9.9"},
		{name: "garbage rightmost: peer", remote: "10.0.0.1:80", xff: []string{"198.51.100.7, garbage"}, want: "10.0.0.1"},
		{name: "garbage in the middle: last good", remote: "10.0.0.1:80", xff: []string{"198.51.100.7, bogus, 10.1.1.1"}, want: "10.1.1.1"},
		{name: "empty entry stops the walk", remote: "10.0.0.1:80", xff: []string{"198.51.100.7,,10.1.1.1"}, want: "10.1.1.1"},
		{name: "unknown keyword stops the walk", remote: "10.0.0.1:80", xff: []string{"unknown"}, want: "10.0.0.1"},
		{name: "empty header", remote: "10.0.0.1:80", xff: []string{""}, want: "10.0.0.1"},
		{name: "entry with port", remote: "10.0.0.1:80", xff: []string{"198.51.100.7:5555"}, want: "198.51.100.7"},
		{name: "IPv6 peer and client", remote: "[2001:db8:ffff::1]:443", xff: []string{"2001:db8:1::5"}, want: "2001:db8:1::5"},
		{name: "IPv6 entry in brackets with port", remote: "[2001:db8:ffff::1]:443", xff: []string{"[2001:db8:1::5]:8080"}, want: "2001:db8:1::5"},
		{name: "IPv6 entry in brackets", remote: "10.0.0.1:80", xff: []string{"[2001:db8:1::5]"}, want: "2001:db8:1::5"},
		{name: "untrusted IPv6 peer", remote: "[2001:db8:1::9]:443", xff: []string{"198.51.100.7"}, want: "2001:db8:1::9"},
		{name: "IPv6 peer with zone", remote: "[fe80::1%eth0]:443", want: "fe80::1"},
		{name: "4in6 peer unmapped and trusted", remote: "[::ffff:10.0.0.1]:80", xff: []string{"::ffff:198.51.100.7"}, want: "198.51.100.7"},
		{name: "4in6 trusted prefix", remote: "172.16.5.5:80", xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "4in6 untrusted peer unmapped", remote: "[::ffff:203.0.113.5]:80", want: "203.0.113.5"},
		{name: "multiple headers, client in the first", remote: "10.0.0.1:80", xff: []string{"6.6.6.6, 198.51.100.7", "10.1.1.1"}, want: "198.51.100.7"},
		{name: "multiple headers, client in the last", remote: "10.0.0.1:80", xff: []string{"198.51.100.7", "203.0.113.9, 10.1.1.1"}, want: "203.0.113.9"},
		{name: "multiple headers, all trusted", remote: "10.0.0.1:80", xff: []string{"10.3.3.3", "10.2.2.2, 10.1.1.1"}, want: "10.3.3.3"},
		{name: "remote address without port", remote: "10.0.0.1", xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "remote address not an IP", remote: "@", xff: []string{"198.51.100.7"}, want: "invalid IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := c.FromRequest(r).String(); got != tt.want {
				t.Errorf("FromRequest(remote %q, XFF %q) = %s, want %s", tt.remote, tt.xff, got, tt.want)
			}
		})
	}
}

func TestClientIPNoTrust(t *testing.T) {
	for _, c := range []*ClientIP{nil, mustClientIP(t, nil)} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = "10.0.0.1:80"
		r.Header.Set("X-Forwarded-For", "198.51.100.7")
		if got, want := c.FromRequest(r), netip.MustParseAddr("10.0.0.1"); got != want {
			t.Errorf("FromRequest = %v, want %v", got, want)
		}
	}
}

func mustClientIP(t *testing.T, trusted []string) *ClientIP {
	t.Helper()
	c, err := NewClientIP(trusted)
	if err != nil {
		t.Fatalf("NewClientIP(%q): %v", trusted, err)
	}
	return c
}

func TestNewClientIPErrors(t *testing.T) {
	bad := []string{"10.0.0.0/33", "not-an-ip", "fe80::1%eth0", "::ffff:0:0/90", ""}
	_, err := NewClientIP(append([]string{"10.0.0.0/8", " 192.0.2.1 "}, bad...))
	if err == nil {
		t.Fatal("NewClientIP: got nil error, want one naming each bad entry")
	}
	for _, b := range bad {
		if !strings.Contains(err.Error(), `"`+b+`"`) {
			t.Errorf("error %q does not name entry %q", err, b)
		}
	}
	if strings.Contains(err.Error(), "10.0.0.0/8") {
		t.Errorf("error %q names a good entry", err)
	}
}

func TestClientIPTrusted(t *testing.T) {
	c := mustClientIP(t, []string{"10.0.0.0/8", "2001:db8::1"})
	tests := []struct {
		ip   string
		want bool
	}{
		{"10.255.0.1", true},
		{"::ffff:10.1.2.3", true},
		{"11.0.0.1", false},
		{"2001:db8::1", true},
		{"2001:db8::2", false},
	}
	for _, tt := range tests {
		if got := c.Trusted(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("Trusted(%s) = %v, want %v", tt.ip, got, tt.want)
		}
	}
	if c.Trusted(netip.Addr{}) {
		t.Error("Trusted(zero Addr) = true, want false")
	}
}

func FuzzClientIPFromRequest(f *testing.F) {
	for _, s := range []string{"198.51.100.7, 10.1.1.1", "garbage", ",,", "[::1]:80", "::ffff:1.2.3.4", "10.1.1.1, 10.2.2.2"} {
		f.Add("10.0.0.1:80", s)
		f.Add("203.0.113.5:1", s)
	}
	c, err := NewClientIP(testTrusted)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": {xff}}}
		got := c.FromRequest(r)
		peer := parseHostPort(remote)
		if !c.Trusted(peer) && got != peer {
			t.Fatalf("untrusted peer %v: got %v", peer, got)
		}
		if got.IsValid() && (got.Is4In6() || got.Zone() != "") {
			t.Fatalf("got %v, want unmapped and zoneless", got)
		}
	})
}
