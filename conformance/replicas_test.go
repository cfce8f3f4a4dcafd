package conformance

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestReplicas runs two gateways on one PostgreSQL ledger behind a front that
// hands connections to them in turn, and fetches one file through it with
// `aria2c -x8 -s8 -k1M`, whose requests thereby reach both: the download is
// billed once, in both modes and on both routes.
//
// The front is a TCP proxy written here, not nginx: it passes each client
// connection whole to one replica, as an L4 load balancer does, so each replica
// sees the client's requests and connections as sent (nginx would end them,
// buffer bodies and reuse its own upstream connections), and it needs nothing
// installed.
func TestReplicas(t *testing.T) {
	base := os.Getenv("STREAMGATE_TEST_POSTGRES")
	if base == "" {
		t.Skip("STREAMGATE_TEST_POSTGRES is not set: set it (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable; .ci/run does) to run two replicas on one PostgreSQL ledger")
	}
	requireTools(t, aria2Tool)
	for _, mode := range []string{perDownload, proportional} {
		t.Run(mode, func(t *testing.T) {
			dsn := freshSchema(t, base)
			se := newStreamEnv(t)
			front := newFront(t)
			o := gwOptions{Metering: mode, LedgerDSN: dsn, PublicURL: "http://" + front.addr()}
			replicas := []*gateway{startGateway(t, se, o), startGateway(t, se, o)}
			front.serve(replicas)
			tab := &table{}
			sc := scenario{name: "aria2c-x8-k1M", client: "aria2c -x8 -s8 -k1M, two replicas", video: tenMinutes,
				run: aria2([]string{"--min-split-size=1M"})}
			for _, rt := range bothRoutes {
				t.Run(string(rt), func(t *testing.T) {
					// The front stands for both replicas: links and the
					// authenticated route go through it.
					fg := &gateway{base: "http://" + front.addr(), cfgPath: replicas[0].cfgPath, logs: replicas[0].logs}
					c := newRun(t, mode, se, fg, tab, sc, rt)
					o := sc.run(t, c)
					c.checkStage(t, "", o)
					for i, g := range replicas {
						n := 0
						for _, l := range logLines(g.logs.String(), "request") {
							route, _ := l["route"].(string)
							if l["user"] == c.user && (strings.Contains(route, "/downloads/") || strings.HasPrefix(route, "GET /dl/")) {
								n++
							}
						}
						if n == 0 {
							t.Errorf("replica %d (%s) logged no download request of %s: the front did not spread the download (connections per replica: %v)",
								i, g.base, c.user, front.counts())
						}
						t.Logf("replica %d served %d download requests of %s", i, n, c.user)
					}
				})
			}
			t.Logf("%s, two replicas:\n%s", mode, tab.format(replicas[0].report(t), se))
		})
	}
}

// freshSchema makes a schema of the test's own in the database at base and
// returns a DSN whose search_path is that schema. It is dropped when t ends.
func freshSchema(t *testing.T, base string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to STREAMGATE_TEST_POSTGRES: %v", err)
	}
	defer conn.Close(ctx)
	schema := "sgconformance_" + strings.ToLower(rand.Text())
	ident := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+ident); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop schema: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+ident+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// front is a round-robin TCP proxy: the n-th connection it accepts goes to
// backend n mod len(backends), whole.
type front struct {
	ln net.Listener
	wg sync.WaitGroup

	mu       sync.Mutex
	perIndex []int
	open     map[net.Conn]struct{}
}

func newFront(t *testing.T) *front {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &front{ln: ln, open: map[net.Conn]struct{}{}}
	t.Cleanup(func() {
		ln.Close()
		// Idle keep-alive connections would otherwise stay open.
		f.mu.Lock()
		for c := range f.open {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *front) addr() string { return f.ln.Addr().String() }

func (f *front) counts() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.perIndex...)
}

// serve starts handing connections to the backends.
func (f *front) serve(backends []*gateway) {
	f.perIndex = make([]int, len(backends))
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for n := 0; ; n++ {
			client, err := f.ln.Accept()
			if err != nil {
				return
			}
			i := n % len(backends)
			f.mu.Lock()
			f.perIndex[i]++
			f.open[client] = struct{}{}
			f.mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer func() {
					f.mu.Lock()
					delete(f.open, client)
					f.mu.Unlock()
					client.Close()
				}()
				backend, err := net.Dial("tcp", strings.TrimPrefix(backends[i].base, "http://"))
				if err != nil {
					return
				}
				defer backend.Close()
				done := make(chan struct{})
				go func() {
					_, _ = io.Copy(backend, client)
					if tc, ok := backend.(*net.TCPConn); ok {
						_ = tc.CloseWrite()
					}
					close(done)
				}()
				_, _ = io.Copy(client, backend)
				client.Close()
				<-done
			}()
		}
	}()
}
