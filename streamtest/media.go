package streamtest

import (
	"cmp"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"sync"
)

// Layout is how the emulator builds a video's download files.
type Layout int

const (
	// Synthetic files are pseudo-random bytes (see Content) of exactly the size
	// asked for: no media, but free to produce at any size. The default.
	Synthetic Layout = iota
	// FastStart files are real MP4 (H.264 + AAC) and M4A (AAC) files with the moov
	// box before the media data, as Stream's downloads are.
	FastStart
	// MoovAtEnd files are real MP4 and M4A files with the media data first and the
	// moov box last, so players and ffprobe read the end of the file before they
	// can play it.
	MoovAtEnd
)

var layoutNames = [...]string{Synthetic: "synthetic", FastStart: "faststart", MoovAtEnd: "moov-at-end"}

func (l Layout) String() string {
	if l >= 0 && int(l) < len(layoutNames) {
		return layoutNames[l]
	}
	return "Layout(" + strconv.Itoa(int(l)) + ")"
}

// MarshalText writes the layout's name: synthetic, faststart or moov-at-end.
func (l Layout) MarshalText() ([]byte, error) {
	if l < 0 || int(l) >= len(layoutNames) {
		return nil, fmt.Errorf("streamtest: unknown layout %d", int(l))
	}
	return []byte(layoutNames[l]), nil
}

// UnmarshalText reads a name written by MarshalText.
func (l *Layout) UnmarshalText(b []byte) error {
	for i, n := range layoutNames {
		if string(b) == n {
			*l = Layout(i)
			return nil
		}
	}
	return fmt.Errorf("streamtest: unknown layout %q", b)
}

// maxMediaDuration bounds the duration of a real file, so that a mistaken
// Duration cannot make the emulator build sample tables of gigabytes.
const maxMediaDuration = 24 * 60 * 60

// The clip every real file repeats; testdata/README.md says how it was made.
//
//go:embed testdata/clip.mp4
var clipFile []byte

var loadClip = sync.OnceValues(func() (*clipMedia, error) { return parseClip(clipFile) })

// File is one download file as the emulator serves it: Synthetic bytes, or a real
// MP4 or M4A built from the embedded clip. It is safe for concurrent use.
type File struct {
	size int64
	etag string
	blk  []byte     // pseudo-random block of the video and type
	plan *mediaPlan // nil for Synthetic
}

// OpenFile returns the file the emulator serves as the download of type t of v,
// laid out as v.Layout says. A real file is built on first use, from its sample
// tables only (its media bytes are the clip's, found by offset when read), and
// kept for later calls with the same type, layout, size and duration.
func OpenFile(v Video, typ TypeName) (*File, error) {
	t := typeOf(typ)
	size := v.size(t)
	f := &File{size: size, blk: block(v.UID, t)}
	if v.Layout == Synthetic {
		f.etag = etag(v.UID, t, size)
		return f, nil
	}
	p, err := cachedPlan(planKey{audio: t == Audio, layout: v.Layout, size: size, duration: v.Duration})
	if err != nil {
		return nil, err
	}
	f.plan, f.size = p, p.size
	sum := sha256.Sum256([]byte(v.UID + "/" + string(t) + "/" + v.Layout.String() + "/" +
		strconv.FormatInt(p.size, 10) + "/" + strconv.FormatFloat(v.Duration, 'g', -1, 64)))
	f.etag = `"` + hex.EncodeToString(sum[:8]) + `"`
	return f, nil
}

// Size is the file's length in bytes. For a real file it is the size asked for
// (Video.Size or the audio size), or the media's own size when that is larger.
func (f *File) Size() int64 { return f.size }

// ETag is the strong entity tag the emulator sends for the file, quotes included.
// It differs between videos, types, layouts, sizes and durations.
func (f *File) ETag() string { return f.etag }

// ReadAt reads the file's bytes at off, as io.ReaderAt does.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("streamtest: negative offset")
	}
	if off >= f.size {
		return 0, io.EOF
	}
	var err error
	if rest := f.size - off; int64(len(p)) > rest {
		p, err = p[:rest], io.EOF
	}
	if f.plan == nil {
		fill(f.blk, p, off)
	} else {
		f.plan.readAt(p, off, f.blk)
	}
	return len(p), err
}

// NewReader returns a reader over the whole file.
func (f *File) NewReader() *io.SectionReader { return io.NewSectionReader(f, 0, f.size) }

// planKey names a real file's structure, which does not depend on the video's UID.
type planKey struct {
	audio    bool
	layout   Layout
	size     int64
	duration float64
}

type planEntry struct {
	once sync.Once
	plan *mediaPlan
	err  error
}

// maxPlans bounds the plans kept: each holds a moov, under a megabyte for an hour.
const maxPlans = 32

var plans struct {
	sync.Mutex
	m map[planKey]*planEntry
}

func cachedPlan(k planKey) (*mediaPlan, error) {
	plans.Lock()
	e := plans.m[k]
	if e == nil {
		if plans.m == nil {
			plans.m = map[planKey]*planEntry{}
		}
		for old := range plans.m {
			if len(plans.m) < maxPlans {
				break
			}
			delete(plans.m, old)
		}
		e = &planEntry{}
		plans.m[k] = e
	}
	plans.Unlock()
	e.once.Do(func() {
		c, err := loadClip()
		if err != nil {
			e.err = fmt.Errorf("streamtest: embedded clip: %w", err)
			return
		}
		e.plan, e.err = buildPlan(c, k)
	})
	return e.plan, e.err
}

// mediaPlan is a real file: its head and tail bytes, and between them the mdat
// payload, which is not stored. The payload holds the clip's samples back to back,
// period after period, its tracks interleaved in chunks of at most
// maxChunkSeconds, as a muxer writes them, so that readers read it in one pass.
// To reach the size asked for, the samples of one track (the video, or the audio
// of an M4A) grow by padding that decoders skip (see readSample), the same in
// every period, so the file's bytes stay spread over its duration as a real file's
// are: a client that plays half the video, or seeks to its middle, reads about
// half the file, or the middle. What the padding cannot take, a few bytes per
// period, is in the free box before the mdat, which holds at least freeMin bytes:
// the synthetic content at their offset, so that the files of two videos differ.
type mediaPlan struct {
	size       int64
	layout     Layout
	head       []byte // ftyp, moov (FastStart), free, mdat header
	tail       []byte // moov (MoovAtEnd)
	payloadLen int64
	full       int64   // full periods; a partial one may follow
	stride     int64   // bytes of a full period
	fullPieces []piece // a full period's samples in file order
	partPieces []piece // the partial period's
	tracks     []*trackPlan
	moovAt     int64 // offset of the moov box
	freeAt     int64 // offset of the free box
	freeLen    int64 // bytes of the free box, its header included
}

// freeMin is the fewest bytes the free box holds after its header.
const freeMin = 32

// buildPlan lays out the file named by k.
func buildPlan(c *clipMedia, k planKey) (*mediaPlan, error) {
	if k.layout != FastStart && k.layout != MoovAtEnd {
		return nil, fmt.Errorf("streamtest: unknown layout %d", int(k.layout))
	}
	if k.duration > maxMediaDuration {
		return nil, fmt.Errorf("streamtest: duration %gs is longer than the %ds a real file may have", k.duration, maxMediaDuration)
	}
	tracks := []*clipTrack{c.video, c.audio}
	ftyp := c.ftyp
	if k.audio {
		tracks = tracks[1:]
		w := &mp4Writer{}
		p := w.open("ftyp")
		w.b = append(w.b, "M4A "...)
		w.u32(512)
		w.b = append(w.b, "M4A isomiso2mp41"...)
		w.close(p)
		ftyp = w.b
	}
	tps := planTracks(c, tracks, k.duration)
	p := &mediaPlan{layout: k.layout, tracks: tps, full: tps[0].full}
	windows := chunkWindows(c)
	_, _, fullLen, partLen := layoutPeriods(tps, windows)
	media := p.full*fullLen + partLen // without padding

	// The moov's size depends on neither the padding nor the offsets.
	wide, mdatHdr := false, int64(8)
	var payloadAt, moovLen, leftover int64
	for {
		m, err := writeMoov(c, tps, 0, 0, wide)
		if err != nil {
			return nil, err
		}
		moovLen = int64(len(m))
		extra := k.size - (int64(len(ftyp)) + moovLen + 8 + freeMin + mdatHdr + media)
		leftover = freeMin + max(0, extra-tps[0].padTo(extra))
		if last := tps[0].pad; last != nil && int64(slices.Max(tps[0].t.sizes))+last[len(last)-1] > math.MaxUint32 {
			return nil, fmt.Errorf("streamtest: %d bytes are too many for a file of %gs", k.size, k.duration)
		}
		p.fullPieces, p.partPieces, p.stride, partLen = layoutPeriods(tps, windows)
		p.payloadLen = p.full*p.stride + partLen
		if mdatHdr == 8 && p.payloadLen+8 > math.MaxUint32 {
			mdatHdr = 16
			continue
		}
		payloadAt = int64(len(ftyp)) + 8 + leftover + mdatHdr
		if k.layout == FastStart {
			payloadAt += moovLen
		}
		if !wide && payloadAt+p.payloadLen > math.MaxUint32 {
			wide = true
			continue
		}
		break
	}
	moov, err := writeMoov(c, tps, payloadAt, p.stride, wide)
	if err != nil {
		return nil, err
	}
	if int64(len(moov)) != moovLen {
		return nil, errors.New("streamtest: moov size changed with its offsets")
	}

	head := append([]byte(nil), ftyp...)
	if k.layout == FastStart {
		p.moovAt = int64(len(head))
		head = append(head, moov...)
	}
	p.freeAt, p.freeLen = int64(len(head)), 8+leftover
	head = binary.BigEndian.AppendUint32(head, uint32(8+leftover))
	head = append(head, "free"...)
	head = append(head, make([]byte, leftover)...)
	if mdatHdr == 8 {
		head = binary.BigEndian.AppendUint32(head, uint32(8+p.payloadLen))
		head = append(head, "mdat"...)
	} else {
		head = binary.BigEndian.AppendUint32(head, 1)
		head = append(head, "mdat"...)
		head = binary.BigEndian.AppendUint64(head, uint64(16+p.payloadLen))
	}
	if int64(len(head)) != payloadAt {
		return nil, errors.New("streamtest: file head does not end where the payload starts")
	}
	p.head = head
	if k.layout == MoovAtEnd {
		p.moovAt = payloadAt + p.payloadLen
		p.tail = moov
	}
	p.size = int64(len(p.head)) + p.payloadLen + int64(len(p.tail))
	return p, nil
}

// readAt fills dst with the file's bytes at off; the caller keeps off+len(dst)
// within the file. The free box's payload is the synthetic content at its
// offset (blk).
func (p *mediaPlan) readAt(dst []byte, off int64, blk []byte) {
	for len(dst) > 0 {
		var n int
		switch rel := off - int64(len(p.head)); {
		case rel < 0:
			n = copy(dst, p.head[off:])
			if from, to := max(off, p.freeAt+8), min(off+int64(n), p.freeAt+p.freeLen); from < to {
				fill(blk, dst[from-off:to-off], from)
			}
		case rel < p.payloadLen:
			n = p.readPayload(dst, rel)
		default:
			n = copy(dst, p.tail[rel-p.payloadLen:])
		}
		dst = dst[n:]
		off += int64(n)
	}
}

// readPayload reads from rel bytes into the mdat payload, at most to the end of
// the sample it falls in, and returns how many bytes it read.
func (p *mediaPlan) readPayload(dst []byte, rel int64) int {
	period := min(rel/p.stride, p.full)
	at := rel - period*p.stride
	ps := p.fullPieces
	if period == p.full {
		ps = p.partPieces
	}
	j, _ := slices.BinarySearchFunc(ps, at, func(pc piece, at int64) int { return cmp.Compare(pc.at, at+1) })
	pc := ps[j-1] // the last sample starting at or before at
	tp := p.tracks[pc.track]
	var pad int64
	if tp.pad != nil {
		pad = tp.pad[pc.sample]
	}
	return tp.t.readSample(dst, pc.sample, at-pc.at, pad)
}
