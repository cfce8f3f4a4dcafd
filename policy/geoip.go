package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/oschwald/geoip2-golang/v2"
)

// GeoIP maps an IP address to its country with a MaxMind DB file: a GeoIP2
// or GeoLite2 Country or City database (or a compatible one, such as
// DB-IP's). Lookups are safe for concurrent use.
type GeoIP struct {
	r *geoip2.Reader
}

// probeAddr is looked up once when a database is opened, so that a file whose
// search tree or data section is broken fails at start, not on the first
// request. It is an IPv4 address because IPv4 lookups work in every database.
var probeAddr = netip.AddrFrom4([4]byte{1, 1, 1, 1})

// OpenGeoIP opens the database at path (memory-mapped). It fails, naming the
// path, when the file is not a MaxMind DB, when its type is neither a Country
// nor a City database, or when a probe lookup fails.
func OpenGeoIP(path string) (*GeoIP, error) {
	r, err := geoip2.Open(path)
	g, err := checkGeoIP(r, err)
	if err != nil {
		return nil, fmt.Errorf("open GeoIP database %s: %w", path, err)
	}
	return g, nil
}

// NewGeoIPFromBytes opens a database held in memory; b must not be modified
// afterwards. It fails like OpenGeoIP.
func NewGeoIPFromBytes(b []byte) (*GeoIP, error) {
	r, err := geoip2.OpenBytes(b)
	g, err := checkGeoIP(r, err)
	if err != nil {
		return nil, fmt.Errorf("open GeoIP database: %w", err)
	}
	return g, nil
}

func checkGeoIP(r *geoip2.Reader, openErr error) (*GeoIP, error) {
	if openErr != nil {
		// geoip2 returns an open reader alongside an unknown-type error.
		if r != nil {
			_ = r.Close()
		}
		var unknown geoip2.UnknownDatabaseTypeError
		if errors.As(openErr, &unknown) {
			return nil, fmt.Errorf("database type %q is not a Country or City database", unknown.DatabaseType)
		}
		return nil, openErr
	}
	dbType := r.Metadata().DatabaseType
	if !strings.Contains(dbType, "Country") && !strings.Contains(dbType, "City") {
		_ = r.Close()
		return nil, fmt.Errorf("database type %q is not a Country or City database", dbType)
	}
	if _, err := r.Country(probeAddr); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("database type %q: probe lookup failed: %w", dbType, err)
	}
	return &GeoIP{r: r}, nil
}

// Country returns the ISO 3166-1 alpha-2 code of the country where ip is
// located, or "" when it is unknown: the zero Addr, an address the database
// does not cover, a record without a location country, or a lookup error.
// It does not fall back to the registered country, which names the ISP's
// home, not the user's. A nil *GeoIP knows no countries.
func (g *GeoIP) Country(ip netip.Addr) string {
	if g == nil || !ip.IsValid() {
		return ""
	}
	rec, err := g.r.Country(ip.Unmap().WithZone(""))
	if err != nil {
		return ""
	}
	if code := rec.Country.ISOCode; validCountryCode(code) {
		return code
	}
	return ""
}

// DatabaseType returns the type recorded in the database metadata, for logs.
func (g *GeoIP) DatabaseType() string {
	if g == nil {
		return ""
	}
	return g.r.Metadata().DatabaseType
}

// Close releases the database. A nil *GeoIP closes without error.
func (g *GeoIP) Close() error {
	if g == nil {
		return nil
	}
	return g.r.Close()
}
