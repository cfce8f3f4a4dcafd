package streamtest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/oschwald/geoip2-golang/v2"

	"github.com/streamgate/streamgate/stream"
)

func TestContent(t *testing.T) {
	whole := Content(uidPublic, stream.Default, 0, 3*blockSize+123)
	for _, r := range []struct{ off, n int64 }{{0, 1}, {5, 100}, {blockSize - 3, 10}, {2*blockSize + 7, blockSize}, {3 * blockSize, 123}} {
		if got := Content(uidPublic, stream.Default, r.off, r.n); !bytes.Equal(got, whole[r.off:r.off+r.n]) {
			t.Errorf("Content(%d, %d) differs from the same range of the whole", r.off, r.n)
		}
	}
	if bytes.Equal(whole[:blockSize], whole[blockSize:2*blockSize]) {
		t.Error("consecutive blocks are equal: a body served from the wrong offset would pass")
	}
	if bytes.Equal(whole[:1000], Content(uidPublic, stream.Audio, 0, 1000)) {
		t.Error("default and audio have the same bytes")
	}
	if bytes.Equal(whole[:1000], Content(uidPrivate, stream.Default, 0, 1000)) {
		t.Error("two videos have the same bytes")
	}
	if Content(uidPublic, stream.Default, 0, 0) != nil {
		t.Error("Content of 0 bytes is not empty")
	}

	r := NewContentReader(uidPublic, stream.Default, int64(len(whole)))
	if n, err := r.Seek(-500, io.SeekEnd); err != nil || n != int64(len(whole))-500 {
		t.Fatalf("Seek end: %d, %v", n, err)
	}
	tail, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(tail, whole[len(whole)-500:]) {
		t.Errorf("tail: %d bytes, %v", len(tail), err)
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Error("negative seek accepted")
	}
}

func TestCountryDB(t *testing.T) {
	path := filepath.Join(t.TempDir(), "country.mmdb")
	err := WriteCountryDB(path, map[string]string{
		"127.0.0.2/32":  "GB",
		"127.0.0.3":     "US",
		"10.0.0.0/8":    "DE",
		"10.1.0.0/16":   "FR",
		"2001:db8::/32": "NL",
	})
	if err != nil {
		t.Fatalf("WriteCountryDB: %v", err)
	}
	db, err := geoip2.Open(path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer db.Close()
	for ip, want := range map[string]string{
		"127.0.0.2": "GB", "127.0.0.3": "US", "127.0.0.1": "", "10.9.9.9": "DE", "10.1.2.3": "FR",
		"2001:db8::1": "NL", "8.8.8.8": "",
	} {
		c, err := db.Country(netip.MustParseAddr(ip))
		if err != nil {
			t.Fatalf("Country(%s): %v", ip, err)
		}
		if c.Country.ISOCode != want {
			t.Errorf("Country(%s) = %q, want %q", ip, c.Country.ISOCode, want)
		}
	}
	if _, err := CountryDB(map[string]string{"nonsense": "GB"}); err == nil {
		t.Error("bad network accepted")
	}
	if _, err := CountryDB(map[string]string{"1.2.3.4": "gb"}); err == nil {
		t.Error("bad country accepted")
	}
	if _, err := os.Stat(path); err != nil {
		t.Error(err)
	}
}

// Fuzz the delivery path and token parser: never a panic, never a 2xx for a path
// that is not a bare public UID or a token signed by a registered key.
func FuzzDeliveryPath(f *testing.F) {
	e := New(Options{Now: func() time.Time { return t0 }})
	e.AddVideo(Video{UID: uidPrivate, Duration: 60, Size: 100, RequireSignedURLs: true, ReadyToStream: true})
	e.SetDownloadReady(uidPrivate, stream.Default)
	s := newSigner(f, "k1", rsaKey(f))
	e.AddSigningKey("k1", s.PublicKey())
	tok, err := s.Mint(stream.Claims{Video: uidPrivate, ExpiresAt: t0.Add(time.Hour), Downloadable: true}, t0)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{tok, uidPrivate, "a.b.c", "eyJhbGciOiJub25lIn0.e30.", tok[:len(tok)-5]} {
		f.Add(seed)
	}
	h := e.DeliveryHandler()
	f.Fuzz(func(t *testing.T, seg string) {
		req, err := http.NewRequest(http.MethodGet, "http://stream.test/"+seg+"/downloads/default.mp4", nil)
		if err != nil {
			return
		}
		req.RemoteAddr = "127.0.0.1:1234"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code/100 == 2 && seg != tok {
			t.Errorf("%q answered %d", seg, rec.Code)
		}
	})
}

func BenchmarkContentReader(b *testing.B) {
	const size = 256 << 20
	b.ReportAllocs()
	b.SetBytes(size)
	buf := make([]byte, 32<<10)
	for b.Loop() {
		r := NewContentReader(uidPublic, stream.Default, size)
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, buf); err != nil {
			b.Fatal(err)
		}
	}
}
