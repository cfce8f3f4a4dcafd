package proxy

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
)

// BenchmarkLinkToken is the token of a direct link, shared (the cache) or
// signed for each link, from parallel callers with the same claims.
func BenchmarkLinkToken(b *testing.B) {
	testKeys(b)
	signer, err := stream.NewSignerFromKey(streamKeyID, streamKey)
	if err != nil {
		b.Fatal(err)
	}
	const ttl = 15 * time.Minute
	rules := countryRules("GB")
	for _, bc := range []struct {
		name string
		max  int
	}{{"shared", maxLinkTokens}, {"signed", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			c := newLinkTokens(signer, ttl, bc.max)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					now := time.Now()
					if _, _, err := c.token(uidPublic, stream.Default, rules, now.Add(ttl), now); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "links/s")
		})
	}
}

// BenchmarkDirectLinks is POST /v1/videos/{uid}/links in direct mode through
// the whole handler (portal JWT, policy, quota charge in SQLite, token),
// from parallel callers, with tokens shared and signed per link.
func BenchmarkDirectLinks(b *testing.B) {
	for _, bc := range []struct {
		name string
		max  int
	}{{"shared", maxLinkTokens}, {"signed", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEnv(b, envOptions{})
			gw := e.gateway(func(c *Config, _ *Deps) {
				c.LinkMode = "direct"
				c.Plans["unlimited"] = Plan{MinutesPerMonth: -1}
			})
			gw.srv.links = newLinkTokens(gw.srv.Signer, gw.srv.cfg.LinkTTL, bc.max)
			var users atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				tok := e.jwt("bench"+strconv.FormatInt(users.Add(1), 10), "unlimited", nil)
				for pb.Next() {
					req := httptest.NewRequest("POST", "/v1/videos/"+uidPublic+"/links", nil)
					req.Header.Set("Authorization", "Bearer "+tok)
					rec := httptest.NewRecorder()
					gw.srv.ServeHTTP(rec, req)
					if rec.Code != http.StatusCreated {
						b.Errorf("status %d: %s", rec.Code, rec.Body)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "links/s")
		})
	}
}
