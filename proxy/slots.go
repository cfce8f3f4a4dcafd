package proxy

import (
	"sync"

	"github.com/streamgate/streamgate/stream"
)

// downloadSlots makes the requests of one client's download share one slot of
// the user's concurrency cap: aria2c's eight segments, a player's overlapping
// ranges and ffprobe's three requests are one file being fetched, and each
// taking a slot of its own would refuse most of them. The first request of a
// user's file from a client address takes the slot; the others join it, and
// the last to end gives it back. The same file fetched from another address
// takes a slot of its own: the cap still limits one account used from many
// places. Sharing holds in this process: requests of one download served by
// two replicas take a slot on each.
type downloadSlots struct {
	cap ConcurrencyCap
	mu  sync.Mutex
	in  map[slotKey]*sharedSlot
}

type slotKey struct {
	user, video, client string
	typ                 stream.DownloadType
}

type sharedSlot struct {
	users int // under downloadSlots.mu
	// mu orders the requests that find the slot not held yet: one asks the
	// cap (which may ask Redis) while the others wait, without holding up
	// other users' downloads.
	mu      sync.Mutex
	held    bool
	release func()
}

func newDownloadSlots(c ConcurrencyCap) *downloadSlots {
	return &downloadSlots{cap: c, in: make(map[slotKey]*sharedSlot)}
}

// acquire takes, or joins, the slot of user's download of video as typ from
// the client address client. When ok, release gives it up (once; later calls
// do nothing).
func (d *downloadSlots) acquire(user, video string, typ stream.DownloadType, client string, max int) (release func(), ok bool) {
	k := slotKey{user: user, video: video, client: client, typ: typ}
	d.mu.Lock()
	sl := d.in[k]
	if sl == nil {
		sl = &sharedSlot{}
		d.in[k] = sl
	}
	sl.users++
	d.mu.Unlock()

	sl.mu.Lock()
	if !sl.held {
		if sl.release, sl.held = d.cap.Acquire(user, max); !sl.held {
			sl.mu.Unlock()
			d.leave(k, sl)
			return func() {}, false
		}
	}
	sl.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { d.leave(k, sl) }) }, true
}

// leave ends one request's share of the slot; the last gives the slot back.
func (d *downloadSlots) leave(k slotKey, sl *sharedSlot) {
	d.mu.Lock()
	sl.users--
	last := sl.users == 0
	d.mu.Unlock()
	if !last {
		return
	}
	// The cap's slot is given back before the key leaves the map: a request
	// that comes meanwhile joins this slot and waits on sl.mu, then takes a
	// new one, rather than taking a second slot for the file while this one
	// is still counted.
	sl.mu.Lock()
	defer sl.mu.Unlock()
	d.mu.Lock()
	joined := sl.users > 0
	d.mu.Unlock()
	if joined {
		return // the newcomer shares the slot as it stands
	}
	if sl.held {
		sl.held = false
		sl.release()
	}
	d.mu.Lock()
	if sl.users == 0 && d.in[k] == sl {
		delete(d.in, k)
	}
	d.mu.Unlock()
}
