package main

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/streamgate/streamgate/bench"
	"github.com/streamgate/streamgate/stream"
)

func writeKey(path string, key *rsa.PrivateKey) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY",
		Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
}

// serveSign is the peer of link creation: it verifies the caller's HS256 JWT
// and signs a fresh RS256 Stream token for every link, which is all a direct
// link needs, with nothing else around it.
func serveSign(ln net.Listener, keyFile, secret, delivery string) error {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return errors.New("sign: no PEM block in the key file")
	}
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		return err
	}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST a link", http.StatusMethodNotAllowed)
			return
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
		claims := jwt.MapClaims{}
		_, err := parser.ParseWithClaims(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), claims,
			func(*jwt.Token) (any, error) { return []byte(secret), nil })
		if err != nil {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		uid := strings.TrimPrefix(r.URL.Path, "/v1/videos/")
		uid, _, _ = strings.Cut(uid, "/")
		now := time.Now()
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
			"sub": uid, "kid": "sign", "exp": now.Add(15 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(),
			"downloadable": true,
			"accessRules":  []map[string]any{{"type": "ip.geoip.country", "action": "allow", "country": []string{"GB"}}},
		})
		s, err := tok.SignedString(key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]string{"url": delivery + "/" + s + "/downloads/default.mp4"})
	})
	return (&http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
}

// target is how one variant is asked for a file.
type target struct {
	url, bearer string
}

// userToken is a portal JWT for user.
func (s *setup) userToken(user string) string {
	now := time.Now()
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "plan": "bench", "iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix(),
	}).SignedString([]byte(s.secret))
	return tok
}

// fileTarget is how p serves uid's MP4 to user: streamgate's own route with
// the user's JWT, the others the emulator's signed path.
func (s *setup) fileTarget(p *proc, uid, user string) (target, error) {
	if _, ok := s.gateways[p.name]; ok {
		return target{url: p.url + "/v1/videos/" + uid + "/downloads/default.mp4", bearer: s.userToken(user)}, nil
	}
	now := time.Now()
	tok, err := s.signer.Mint(stream.Claims{Video: uid, NotBefore: now.Add(-time.Minute),
		ExpiresAt: now.Add(2 * time.Hour), Downloadable: true}, now)
	if err != nil {
		return target{}, err
	}
	u, err := stream.DeliveryURL(p.url, tok, stream.Default, "")
	return target{url: u}, err
}

// rate is requests made for a while by clients at once.
type rate struct {
	n         int64
	elapsed   time.Duration
	latencies []time.Duration
	cpu       time.Duration
}

// requests runs clients that each repeat op for d, and counts the requests.
func requests(ctx context.Context, p *proc, clients int, d time.Duration, op func(ctx context.Context, i int) error) (rate, error) {
	var r rate
	var mu sync.Mutex
	var firstErr error
	var n atomic.Int64
	cpu0 := p.cpu()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			var lat []time.Duration
			for ctx.Err() == nil {
				t0 := time.Now()
				err := op(ctx, i)
				if ctx.Err() != nil {
					break
				}
				if err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					break
				}
				lat = append(lat, time.Since(t0))
				n.Add(1)
			}
			mu.Lock()
			r.latencies = append(r.latencies, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	r.cpu = p.cpu() - cpu0
	r.n = n.Load()
	if firstErr != nil {
		return r, fmt.Errorf("%s: %w", p.name, firstErr)
	}
	if r.n == 0 {
		return r, fmt.Errorf("%s: no request completed in %s", p.name, d)
	}
	slices.Sort(r.latencies)
	return r, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (r rate) perSecond() float64 { return float64(r.n) / r.elapsed.Seconds() }
func (r rate) p50() time.Duration { return r.latencies[len(r.latencies)/2] }

// small measures whole downloads of the small file at clients at once.
func (s *setup) small(ctx context.Context, p *proc, clients int, d time.Duration) (rate, error) {
	c := bench.NewClient(clients)
	defer c.CloseIdleConnections()
	targets := make([]target, clients)
	for i := range targets {
		var err error
		if targets[i], err = s.fileTarget(p, s.smallVideo.UID, fmt.Sprintf("small-%d", i)); err != nil {
			return rate{}, err
		}
	}
	return requests(ctx, p, clients, d, func(ctx context.Context, i int) error {
		return fetch(ctx, c, targets[i], s.smallVideo.Size, 0)
	})
}

// fetch downloads t whole, at most at bytesPerSec (0 unpaced).
func fetch(ctx context.Context, c *http.Client, t target, size, bytesPerSec int64) error {
	got, err := bench.Get{URL: t.url, Bearer: t.bearer, Limit: -1, Rate: bytesPerSec}.Do(ctx, c)
	switch {
	case err != nil:
		return err
	case got.Status != http.StatusOK:
		return &bench.StatusError{Op: "download", Status: got.Status}
	case got.Bytes != size:
		return fmt.Errorf("download: %d bytes, want %d", got.Bytes, size)
	}
	return nil
}

// large is clients downloading the large file once each, at once.
type large struct {
	mbps     float64 // 10^6 bytes per second, all clients together
	cpuPerGB float64 // CPU-seconds of the proxy per 10^9 bytes
}

func (s *setup) large(ctx context.Context, p *proc, clients int) (large, error) {
	c := bench.NewClient(clients)
	defer c.CloseIdleConnections()
	targets := make([]target, clients)
	for i := range targets {
		var err error
		if targets[i], err = s.fileTarget(p, s.largeVideo.UID, fmt.Sprintf("large-%d", i)); err != nil {
			return large{}, err
		}
	}
	cpu0 := p.cpu()
	start := time.Now()
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { errs[i] = fetch(ctx, c, targets[i], s.largeVideo.Size, 0) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := p.cpu() - cpu0
	if err := errors.Join(errs...); err != nil {
		return large{}, fmt.Errorf("%s: %w", p.name, err)
	}
	bytes := float64(s.largeVideo.Size) * float64(clients)
	return large{mbps: bytes / elapsed.Seconds() / 1e6, cpuPerGB: cpu.Seconds() / (bytes / 1e9)}, nil
}

// slow starts n downloads of the large file that read at bytesPerSec, waits
// until all are in flight, and returns the proxy's resident memory then above
// what it held before, per download.
func (s *setup) slow(ctx context.Context, p *proc, n int, bytesPerSec int64) (float64, error) {
	c := bench.NewClient(n)
	defer c.CloseIdleConnections()
	targets := make([]target, n)
	for i := range targets {
		var err error
		if targets[i], err = s.fileTarget(p, s.largeVideo.UID, fmt.Sprintf("slow-%d", i)); err != nil {
			return 0, err
		}
	}
	base := p.rss()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var started atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			t := targets[i]
			got, err := bench.Get{URL: t.url, Bearer: t.bearer, Limit: -1, Rate: bytesPerSec}.Do(
				withFirstByte(ctx, &started), c)
			if ctx.Err() == nil && (err != nil || got.Status != http.StatusOK) {
				errs <- fmt.Errorf("slow download: status %d: %v", got.Status, err)
			}
		})
	}
	// Wait for every download to be under way, then let the buffers fill.
	deadline := time.Now().Add(30 * time.Second)
	for started.Load() < int64(n) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	var peak int64
	for range 10 {
		time.Sleep(200 * time.Millisecond)
		peak = max(peak, p.rss())
	}
	inFlight := started.Load()
	if s.whileSlow != nil {
		if err := s.whileSlow(); err != nil {
			return 0, err
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, fmt.Errorf("%s: %w", p.name, err)
	}
	if inFlight < int64(n) {
		return 0, fmt.Errorf("%s: %d of %d slow downloads started", p.name, inFlight, n)
	}
	// Let the proxy settle what was cut before the next measurement.
	time.Sleep(500 * time.Millisecond)
	return float64(max(peak-base, 0)) / float64(n), nil
}

// withFirstByte counts, in n, the requests that received their first byte.
func withFirstByte(ctx context.Context, n *atomic.Int64) context.Context {
	return withTrace(ctx, func() { n.Add(1) })
}

// links creates links through p (streamgate or the sign peer) at clients at once.
func (s *setup) links(ctx context.Context, p *proc, clients int, d time.Duration) (rate, error) {
	c := bench.NewClient(clients)
	defer c.CloseIdleConnections()
	tokens := make([]string, clients)
	for i := range tokens {
		tokens[i] = s.userToken(fmt.Sprintf("links-%d", i))
	}
	u := p.url + "/v1/videos/" + s.smallVideo.UID + "/links"
	return requests(ctx, p, clients, d, func(ctx context.Context, i int) error {
		_, err := bench.CreateLink(ctx, c, u, tokens[i])
		return err
	})
}
