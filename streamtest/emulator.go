package streamtest

import (
	"crypto/rsa"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oschwald/geoip2-golang/v2"
)

// Options configure an Emulator. The zero value is usable.
type Options struct {
	// AccountID is the only account the API answers for. Default "test-account".
	AccountID string
	// APIToken is the bearer token the API requires. Default "test-token".
	APIToken string
	// DeliveryBase is the origin used in the download "url" fields of API results,
	// for example the URL of the httptest server that serves DeliveryHandler. It may
	// be set later with SetDeliveryBase. Default: the origin of the API request.
	DeliveryBase string
	// ReadyAfter is how long a download takes from "inprogress" (rising
	// percentComplete) to "ready". Default 0: ready at once.
	ReadyAfter time.Duration
	// Leeway is the tolerance applied to a token's exp and nbf. Default 5s; a
	// negative value means none.
	Leeway time.Duration
	// GeoIP is a MaxMind-format Country database (e.g. from CountryDB) used for
	// ip.geoip.country access rules. Default nil: countries are unknown, and country
	// rules never match. New panics on a database it cannot open.
	GeoIP []byte
	// Now is the clock for tokens, download progress and rate limits. Default
	// time.Now.
	Now func() time.Time
	// RateLimit is the number of API requests allowed per 5 minutes and bearer
	// token. Default 0: no limit.
	RateLimit int
	// NoDownloads is how GET .../downloads answers for a known video with no
	// download enabled: NoDownloadsEmpty (default, 200 with {}) or
	// NoDownloadsNotFound (404). May be changed later with SetNoDownloads.
	NoDownloads NoDownloads
}

// Video is a video the emulator knows.
type Video struct {
	// UID is the video's ID, 32 lowercase hex characters.
	UID string
	// Duration is in seconds; -1 means unknown.
	Duration float64
	// Size is the length in bytes of default.mp4.
	Size int64
	// AudioSize is the length in bytes of audio.m4a. Default 0: Size/8.
	AudioSize int64
	// RequireSignedURLs makes the video private: only a token delivers it.
	RequireSignedURLs bool
	// ReadyToStream must be true before downloads can be enabled.
	ReadyToStream bool
	// Name is reported as meta.name. Default: the UID.
	Name string
	// Layout is how default.mp4 and audio.m4a are built: Synthetic bytes (the
	// default), or real media of Duration seconds with the moov box first
	// (FastStart) or last (MoovAtEnd). See OpenFile.
	Layout Layout `json:",omitempty"`
}

// size is the length of the download file of type t.
func (v Video) size(t DownloadType) int64 {
	if t == Audio {
		if v.AudioSize > 0 {
			return v.AudioSize
		}
		return v.Size / 8
	}
	return v.Size
}

// minutes is the video's billable duration in minutes; an unknown duration is 0.
func (v Video) minutes() float64 {
	if v.Duration <= 0 {
		return 0
	}
	return v.Duration / 60
}

// Stats count what the emulator delivered. See the package documentation for the
// exact rules.
type Stats struct {
	// Requests is the number of authorized delivery requests.
	Requests int64
	// Bytes is the number of body bytes written to clients.
	Bytes int64
	// DownloadMinutes bills duration/60 per GET that starts a download (no range,
	// or a range starting at byte 0): the seed's per-download rule.
	DownloadMinutes float64
	// ProportionalMinutes bills duration/60 × bytes delivered / file size.
	ProportionalMinutes float64
	// Refused is the number of delivery requests answered 401 or 403.
	Refused int64
}

func (s *Stats) add(o Stats) {
	s.Requests += o.Requests
	s.Bytes += o.Bytes
	s.DownloadMinutes += o.DownloadMinutes
	s.ProportionalMinutes += o.ProportionalMinutes
	s.Refused += o.Refused
}

// Fault is misbehaviour injected into one video's deliveries. The zero Fault is
// none.
type Fault struct {
	// Delay is waited before the response headers are written.
	Delay time.Duration
	// Status, when not 0, answers every authorized request with this status and a
	// small JSON body instead of the download.
	Status int
	// ResetAfter, when above 0, closes the connection abruptly after this many
	// body bytes.
	ResetAfter int64
	// BytesPerSecond, when above 0, limits the rate the body is written at.
	BytesPerSecond int64
}

// Emulator is an in-memory Cloudflare Stream account. It is safe for concurrent
// use.
type Emulator struct {
	accountID   string
	apiToken    string
	readyAfter  time.Duration
	leeway      time.Duration
	now         func() time.Time
	geo         *geoip2.Reader
	rateLimit   int
	noDownloads NoDownloads

	inflight atomic.Int64

	mu           sync.Mutex
	deliveryBase string
	videos       map[string]*video
	downloads    map[dlKey]*download
	keys         map[string]*signingKey
	faults       map[string]Fault
	stats        map[dlKey]*Stats
	total        Stats
	windows      map[string]*rateWindow
	tokenKey     *tokenKey // the account's own key for POST /{uid}/token
	hook         *webhookSub
	hookLog      []WebhookDelivery
	hooks        sync.WaitGroup // webhooks being sent
}

type video struct {
	Video
	created time.Time
	// readySent is set once the video has been ready to stream, when its
	// webhook went out (or would have, with none subscribed).
	readySent bool
}

type dlKey struct {
	uid string
	typ DownloadType
}

type download struct {
	created time.Time
	ready   bool // forced ready
	failed  bool
}

type signingKey struct {
	pub     *rsa.PublicKey
	created time.Time
}

type rateWindow struct {
	start time.Time
	n     int
}

// New builds an emulator with no videos and no signing keys.
func New(opts Options) *Emulator {
	e := &Emulator{
		accountID:    opts.AccountID,
		apiToken:     opts.APIToken,
		readyAfter:   opts.ReadyAfter,
		leeway:       opts.Leeway,
		now:          opts.Now,
		rateLimit:    opts.RateLimit,
		noDownloads:  opts.NoDownloads,
		deliveryBase: strings.TrimRight(opts.DeliveryBase, "/"),
		videos:       map[string]*video{},
		downloads:    map[dlKey]*download{},
		keys:         map[string]*signingKey{},
		faults:       map[string]Fault{},
		stats:        map[dlKey]*Stats{},
		windows:      map[string]*rateWindow{},
	}
	if e.accountID == "" {
		e.accountID = "test-account"
	}
	if e.apiToken == "" {
		e.apiToken = "test-token"
	}
	switch {
	case e.leeway == 0:
		e.leeway = 5 * time.Second
	case e.leeway < 0:
		e.leeway = 0
	}
	if e.now == nil {
		e.now = time.Now
	}
	if opts.GeoIP != nil {
		r, err := geoip2.OpenBytes(opts.GeoIP)
		if err != nil {
			panic(fmt.Sprintf("streamtest: open GeoIP database: %v", err))
		}
		e.geo = r
	}
	return e
}

// AccountID is the account the API answers for.
func (e *Emulator) AccountID() string { return e.accountID }

// APIToken is the bearer token the API requires.
func (e *Emulator) APIToken() string { return e.apiToken }

// AddVideo adds v, or replaces the settings of the video with the same UID (its
// downloads, faults and stats are kept). A video that becomes ready to stream
// (added ready, or replaced by a ready one) sends the subscribed webhook, once.
// It panics on a UID that is not 32
// lowercase hex characters, a mistake in the calling test.
func (e *Emulator) AddVideo(v Video) {
	if !isUID(v.UID) {
		panic(fmt.Sprintf("streamtest: AddVideo: invalid uid %q", v.UID))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old, ok := e.videos[v.UID]
	if ok {
		old.Video = v
	} else {
		old = &video{Video: v, created: e.now().UTC().Truncate(time.Second)}
		e.videos[v.UID] = old
	}
	if v.ReadyToStream && !old.readySent {
		old.readySent = true
		e.sendWebhook(old)
	}
}

// SetDownloadReady creates the download of type t for video uid, already ready,
// as if it had been enabled long ago. It panics on an unknown video.
func (e *Emulator) SetDownloadReady(uid string, t TypeName) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.videos[uid]; !ok {
		panic(fmt.Sprintf("streamtest: SetDownloadReady: unknown video %q", uid))
	}
	e.downloads[dlKey{uid, typeOf(t)}] = &download{created: e.now(), ready: true}
}

// FailDownload puts the download of type t for video uid in the "error" state,
// creating it if needed. It panics on an unknown video.
func (e *Emulator) FailDownload(uid string, t TypeName) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.videos[uid]; !ok {
		panic(fmt.Sprintf("streamtest: FailDownload: unknown video %q", uid))
	}
	e.downloads[dlKey{uid, typeOf(t)}] = &download{created: e.now(), failed: true}
}

// AddSigningKey registers a public key under id, as if created through the API.
func (e *Emulator) AddSigningKey(id string, pub *rsa.PublicKey) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.keys[id] = &signingKey{pub: pub, created: e.now().UTC()}
}

// RevokeSigningKey deletes the key: every token signed with it stops working.
func (e *Emulator) RevokeSigningKey(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.keys, id)
}

// SetDeliveryBase sets the origin used in download URLs of API results.
func (e *Emulator) SetDeliveryBase(base string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.deliveryBase = strings.TrimRight(base, "/")
}

// SetFault injects f into every delivery of video uid; the zero Fault clears it.
func (e *Emulator) SetFault(uid string, f Fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if f == (Fault{}) {
		delete(e.faults, uid)
		return
	}
	e.faults[uid] = f
}

// Stats reports what was delivered of video uid's download of type t.
func (e *Emulator) Stats(uid string, t TypeName) Stats {
	k := dlKey{uid, typeOf(t)}
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.stats[k]; s != nil {
		return *s
	}
	return Stats{}
}

// TotalStats reports what was delivered altogether, refusals of tokens that name
// no known video included.
func (e *Emulator) TotalStats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.total
}

// InFlight is the number of delivery requests being served. Tests that cut a
// client off wait for it to reach 0 before reading Stats.
func (e *Emulator) InFlight() int { return int(e.inflight.Load()) }

// count adds s to the stats of k and to the total. The caller holds no lock.
func (e *Emulator) count(k dlKey, s Stats) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.total.add(s)
	if k.uid == "" {
		return
	}
	st := e.stats[k]
	if st == nil {
		st = &Stats{}
		e.stats[k] = st
	}
	st.add(s)
}

// downloadState reports a download's status and percentComplete at now. The
// caller holds e.mu.
func (e *Emulator) downloadState(d *download, now time.Time) (string, float64) {
	switch {
	case d.failed:
		return "error", 0
	case d.ready || e.readyAfter <= 0:
		return "ready", 100
	}
	elapsed := now.Sub(d.created)
	if elapsed >= e.readyAfter {
		return "ready", 100
	}
	if elapsed < 0 {
		elapsed = 0
	}
	pct := float64(elapsed) / float64(e.readyAfter) * 100
	return "inprogress", float64(int(pct*10)) / 10
}
