package streamtest

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// CountryDB builds a MaxMind GeoIP2-Country database that maps each network of
// nets (a CIDR or a single address, IPv4 or IPv6) to an ISO 3166-1 alpha-2 country
// code. Reserved networks (loopback, private ranges) may be mapped, so tests can
// give 127.0.0.2 a country. Where networks overlap, the more specific one wins.
func CountryDB(nets map[string]string) ([]byte, error) {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            "GeoIP2-Country",
		Description:             map[string]string{"en": "streamtest country database"},
		IncludeReservedNetworks: true,
		Languages:               []string{"en"},
		RecordSize:              28,
	})
	if err != nil {
		return nil, fmt.Errorf("new country database: %w", err)
	}
	// Insert wider networks first, so narrower ones override them.
	type entry struct {
		p       netip.Prefix
		country string
	}
	entries := make([]entry, 0, len(nets))
	for cidr, country := range nets {
		if !isCountry(country) {
			return nil, fmt.Errorf("country %q for %s: want two uppercase letters", country, cidr)
		}
		p, err := parsePrefix(cidr)
		if err != nil {
			return nil, fmt.Errorf("network %q: %w", cidr, err)
		}
		entries = append(entries, entry{p, country})
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].p.Bits() != entries[j].p.Bits() {
			return entries[i].p.Bits() < entries[j].p.Bits()
		}
		return entries[i].p.Addr().Less(entries[j].p.Addr())
	})
	for _, en := range entries {
		ipnet := &net.IPNet{
			IP:   net.IP(en.p.Addr().AsSlice()),
			Mask: net.CIDRMask(en.p.Bits(), en.p.Addr().BitLen()),
		}
		rec := mmdbtype.Map{"iso_code": mmdbtype.String(en.country), "names": mmdbtype.Map{"en": mmdbtype.String(en.country)}}
		if err := tree.Insert(ipnet, mmdbtype.Map{"country": rec, "registered_country": rec}); err != nil {
			return nil, fmt.Errorf("insert %s: %w", en.p, err)
		}
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("write country database: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteCountryDB writes CountryDB(nets) to path.
func WriteCountryDB(path string, nets map[string]string) error {
	b, err := CountryDB(nets)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// parsePrefix accepts a CIDR or a single address (a /32 or /128), IPv4-mapped IPv6
// addresses taken as IPv4.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// country looks the address up in the GeoIP database; "" when unknown.
func (e *Emulator) country(a netip.Addr) string {
	if e.geo == nil || !a.IsValid() {
		return ""
	}
	c, err := e.geo.Country(a)
	if err != nil || c == nil {
		return ""
	}
	return c.Country.ISOCode
}
