package policy

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// testGeoDB builds a MaxMind DB of type dbType mapping each network to a
// record shaped like a GeoIP2 Country record.
func testGeoDB(t testing.TB, dbType string, networks map[string]mmdbtype.Map) []byte {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            dbType,
		IncludeReservedNetworks: true,
		RecordSize:              24,
	})
	if err != nil {
		t.Fatalf("mmdbwriter.New: %v", err)
	}
	for cidr, rec := range networks {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatalf("ParseCIDR(%q): %v", cidr, err)
		}
		if err := tree.Insert(n, rec); err != nil {
			t.Fatalf("Insert(%s): %v", cidr, err)
		}
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	return buf.Bytes()
}

func countryRecord(iso string) mmdbtype.Map {
	return mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String(iso)}}
}

var testNetworks = map[string]mmdbtype.Map{
	"127.0.0.0/8":     countryRecord("GB"),
	"81.2.69.0/24":    countryRecord("GB"),
	"2001:db8::/32":   countryRecord("DE"),
	"198.51.100.0/24": {"registered_country": mmdbtype.Map{"iso_code": mmdbtype.String("US")}},
	"203.0.113.0/24":  countryRecord("gb"), // not a valid code: treated as unknown
}

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "geo.mmdb")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestGeoIPCountry(t *testing.T) {
	for _, dbType := range []string{"GeoIP2-Country", "GeoLite2-City"} {
		t.Run(dbType, func(t *testing.T) {
			g, err := OpenGeoIP(writeFile(t, testGeoDB(t, dbType, testNetworks)))
			if err != nil {
				t.Fatalf("OpenGeoIP: %v", err)
			}
			t.Cleanup(func() {
				if err := g.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			if got := g.DatabaseType(); got != dbType {
				t.Errorf("DatabaseType() = %q, want %q", got, dbType)
			}
			tests := []struct {
				ip   string
				want string
			}{
				{"127.0.0.1", "GB"},
				{"::ffff:127.0.0.1", "GB"},
				{"81.2.69.142", "GB"},
				{"2001:db8::1", "DE"},
				{"192.0.2.1", ""},       // not in the database
				{"2001:db9::1", ""},     // not in the database
				{"198.51.100.1", ""},    // registered country only
				{"203.0.113.1", ""},     // malformed code
				{"fe80::1%eth0", ""},    // not in the database, zone dropped
				{"2001:db8::1%1", "DE"}, // zone dropped
			}
			for _, tt := range tests {
				if got := g.Country(netip.MustParseAddr(tt.ip)); got != tt.want {
					t.Errorf("Country(%s) = %q, want %q", tt.ip, got, tt.want)
				}
			}
			if got := g.Country(netip.Addr{}); got != "" {
				t.Errorf("Country(zero Addr) = %q, want \"\"", got)
			}
		})
	}
}

func TestGeoIPFromBytes(t *testing.T) {
	g, err := NewGeoIPFromBytes(testGeoDB(t, "GeoIP2-Country", testNetworks))
	if err != nil {
		t.Fatalf("NewGeoIPFromBytes: %v", err)
	}
	defer g.Close()
	if got := g.Country(netip.MustParseAddr("127.0.0.1")); got != "GB" {
		t.Errorf("Country(127.0.0.1) = %q, want GB", got)
	}
}

func TestGeoIPNil(t *testing.T) {
	var g *GeoIP
	if got := g.Country(netip.MustParseAddr("127.0.0.1")); got != "" {
		t.Errorf("nil GeoIP: Country = %q, want \"\"", got)
	}
	if err := g.Close(); err != nil {
		t.Errorf("nil GeoIP: Close = %v", err)
	}
}

func TestOpenGeoIPErrors(t *testing.T) {
	good := testGeoDB(t, "GeoIP2-Country", testNetworks)
	tests := []struct {
		name string
		file []byte
		want []string
	}{
		{name: "not a database", file: []byte("this is not a MaxMind DB file"), want: []string{"open GeoIP database", "invalid MaxMind DB"}},
		{name: "empty", file: nil, want: []string{"open GeoIP database"}},
		{name: "truncated", file: good[:len(good)/2], want: []string{"open GeoIP database"}},
		{name: "ASN database", file: testGeoDB(t, "GeoLite2-ASN", nil), want: []string{`"GeoLite2-ASN" is not a Country or City database`}},
		{name: "unknown type", file: testGeoDB(t, "Streamgate-Test", nil), want: []string{`"Streamgate-Test" is not a Country or City database`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.file)
			g, err := OpenGeoIP(path)
			if err == nil {
				g.Close()
				t.Fatal("OpenGeoIP: got nil error")
			}
			for _, w := range append(tt.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("OpenGeoIP error %q does not contain %q", err, w)
				}
			}
			if _, err := NewGeoIPFromBytes(tt.file); err == nil {
				t.Error("NewGeoIPFromBytes: got nil error")
			}
		})
	}
	if _, err := OpenGeoIP(filepath.Join(t.TempDir(), "missing.mmdb")); err == nil || !strings.Contains(err.Error(), "missing.mmdb") {
		t.Errorf("OpenGeoIP(missing file) error = %v, want one naming the file", err)
	}
}

func BenchmarkGeoIPCountry(b *testing.B) {
	g, err := NewGeoIPFromBytes(testGeoDB(b, "GeoIP2-Country", testNetworks))
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	ip := netip.MustParseAddr("81.2.69.142")
	b.ReportAllocs()
	for b.Loop() {
		if g.Country(ip) != "GB" {
			b.Fatal("wrong country")
		}
	}
}
