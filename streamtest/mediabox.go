package streamtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// This file reads the embedded clip's ISO BMFF boxes and writes the moov of a long
// file made of the clip repeated: just what the emulator needs, not a general MP4
// library.

// mp4Box is one box: its type, its payload and the whole box with its header.
type mp4Box struct {
	typ  string
	data []byte
	raw  []byte
}

// parseBoxes splits b into the boxes it holds, one level deep.
func parseBoxes(b []byte) ([]mp4Box, error) {
	var out []mp4Box
	for len(b) > 0 {
		if len(b) < 8 {
			return nil, errors.New("mp4: truncated box header")
		}
		size, hdr := uint64(binary.BigEndian.Uint32(b)), uint64(8)
		switch size {
		case 0:
			size = uint64(len(b))
		case 1:
			if len(b) < 16 {
				return nil, errors.New("mp4: truncated box header")
			}
			size, hdr = binary.BigEndian.Uint64(b[8:]), 16
		}
		if size < hdr || size > uint64(len(b)) {
			return nil, fmt.Errorf("mp4: box %q: bad size %d", b[4:8], size)
		}
		out = append(out, mp4Box{typ: string(b[4:8]), data: b[hdr:size], raw: b[:size]})
		b = b[size:]
	}
	return out, nil
}

// findBox returns the first box of type typ in bs.
func findBox(bs []mp4Box, typ string) (mp4Box, bool) {
	for _, b := range bs {
		if b.typ == typ {
			return b, true
		}
	}
	return mp4Box{}, false
}

// path descends through the boxes named, each a child of the one before.
func boxPath(bs []mp4Box, typs ...string) (mp4Box, error) {
	var b mp4Box
	for i, typ := range typs {
		var ok bool
		if b, ok = findBox(bs, typ); !ok {
			return mp4Box{}, fmt.Errorf("mp4: no %s box", typ)
		}
		if i < len(typs)-1 {
			var err error
			if bs, err = parseBoxes(b.data); err != nil {
				return mp4Box{}, err
			}
		}
	}
	return b, nil
}

// fullBox is a reader over a full box's payload, past its version and flags.
type fullBox struct {
	version byte
	b       []byte
	err     error
}

func newFullBox(b mp4Box) *fullBox {
	if len(b.data) < 4 {
		return &fullBox{err: fmt.Errorf("mp4: %s box too short", b.typ)}
	}
	return &fullBox{version: b.data[0], b: b.data[4:]}
}

func (r *fullBox) take(n int) []byte {
	if r.err != nil {
		return make([]byte, n)
	}
	if len(r.b) < n {
		r.err = errors.New("mp4: box too short")
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *fullBox) u32() uint32 { return binary.BigEndian.Uint32(r.take(4)) }
func (r *fullBox) u64() uint64 { return binary.BigEndian.Uint64(r.take(8)) }

// count reads an entry count and checks that n bytes per entry follow.
func (r *fullBox) count(n int) int {
	c := r.u32()
	if r.err == nil && uint64(c)*uint64(n) > uint64(len(r.b)) {
		r.err = errors.New("mp4: table longer than its box")
		return 0
	}
	return int(c)
}

// clipTrack is one track of the clip, cut to one period of the repetition.
type clipTrack struct {
	handler   string   // "vide" or "soun"
	index     int      // the trak's position among moov's children
	trak      []mp4Box // the trak's children, copied into every file
	timescale uint32
	sizes     []uint32 // per sample of the period
	deltas    []uint32 // per sample: decode duration
	cts       []int32  // per sample: composition offset; nil without ctts
	cttsV     byte     // ctts version
	sync      []bool   // per sample; nil without stss (every sample is sync)
	sdi       uint32   // the sample description index of every sample
	data      []byte   // the period's sample bytes, back to back
	offs      []int    // per sample: where it starts in data
	period    uint64   // the period in the track's timescale
	mediaTime int64    // the edit list's media_time; -1 for no edit list
	entry     string   // the sample entry's type: "avc1", "mp4a"
	nalLen    int      // avc1: bytes of a NAL unit's length prefix
	aacEnd    []int    // mp4a: per sample, the bit where its END element starts
}

// clipMedia is the parsed clip.
type clipMedia struct {
	ftyp           []byte
	moov           []mp4Box // moov's children
	movieTimescale uint32
	video, audio   *clipTrack
}

// parseClip reads file, an MP4 with one video and one audio track, and cuts both
// tracks to the video track's duration.
func parseClip(file []byte) (*clipMedia, error) {
	top, err := parseBoxes(file)
	if err != nil {
		return nil, err
	}
	ftyp, ok := findBox(top, "ftyp")
	if !ok {
		return nil, errors.New("mp4: no ftyp box")
	}
	moov, ok := findBox(top, "moov")
	if !ok {
		return nil, errors.New("mp4: no moov box")
	}
	c := &clipMedia{ftyp: ftyp.raw}
	if c.moov, err = parseBoxes(moov.data); err != nil {
		return nil, err
	}
	mvhd, err := boxPath(c.moov, "mvhd")
	if err != nil {
		return nil, err
	}
	r := newFullBox(mvhd)
	if r.version == 1 {
		r.take(16)
	} else {
		r.take(8)
	}
	if c.movieTimescale = r.u32(); r.err != nil || c.movieTimescale == 0 {
		return nil, errors.New("mp4: bad mvhd")
	}
	var tracks []*clipTrack
	for i, b := range c.moov {
		if b.typ != "trak" {
			continue
		}
		t, err := parseTrack(file, b)
		if err != nil {
			return nil, err
		}
		t.index = i
		switch {
		case t.handler == "vide" && c.video == nil:
			c.video = t
		case t.handler == "soun" && c.audio == nil:
			c.audio = t
		default:
			return nil, fmt.Errorf("mp4: unexpected %s track", t.handler)
		}
		tracks = append(tracks, t)
	}
	if c.video == nil || c.audio == nil {
		return nil, errors.New("mp4: the clip needs a video and an audio track")
	}
	if len(c.video.sync) > 0 && !c.video.sync[0] {
		return nil, errors.New("mp4: the clip's first video sample is not a sync sample")
	}
	var vdur uint64
	for _, d := range c.video.deltas {
		vdur += uint64(d)
	}
	for _, t := range tracks {
		p := vdur * uint64(t.timescale)
		if p%uint64(c.video.timescale) != 0 {
			return nil, fmt.Errorf("mp4: the %s track's timescale does not divide the clip's duration", t.handler)
		}
		if err := t.cut(p / uint64(c.video.timescale)); err != nil {
			return nil, err
		}
	}
	if c.video.entry != "avc1" || c.video.nalLen != 4 {
		return nil, errors.New("mp4: the clip's video is not H.264 with 4-byte NAL lengths")
	}
	if c.audio.entry != "mp4a" {
		return nil, errors.New("mp4: the clip's audio is not AAC")
	}
	if err := c.audio.findAACEnds(); err != nil {
		return nil, err
	}
	return c, nil
}

// findAACEnds finds where each AAC frame's END element starts. A raw_data_block
// ends with END (the 3 bits 111) and then zero bits up to a byte boundary, so END
// is the last set bit and the two before it.
func (t *clipTrack) findAACEnds() error {
	t.aacEnd = make([]int, len(t.sizes))
	for i := range t.sizes {
		s := t.data[t.offs[i] : t.offs[i]+int(t.sizes[i])]
		// The alignment is under 8 bits, so END's last bit is in the last byte.
		if len(s) == 0 || s[len(s)-1] == 0 {
			return fmt.Errorf("mp4: AAC frame %d does not end with an END element", i)
		}
		end := 8*len(s) - 1 - bits.TrailingZeros8(s[len(s)-1]) - 2
		if end < 0 || bitAt(s, end) != 1 || bitAt(s, end+1) != 1 {
			return fmt.Errorf("mp4: AAC frame %d does not end with an END element", i)
		}
		t.aacEnd[i] = end
	}
	return nil
}

// bitAt is bit i of b, counted from the first byte's most significant bit.
func bitAt(b []byte, i int) byte { return b[i/8] >> (7 - i%8) & 1 }

// parseTrack reads a trak box and the bytes of its samples in file.
func parseTrack(file []byte, trak mp4Box) (*clipTrack, error) {
	t := &clipTrack{mediaTime: -1}
	var err error
	if t.trak, err = parseBoxes(trak.data); err != nil {
		return nil, err
	}
	mdhd, err := boxPath(t.trak, "mdia", "mdhd")
	if err != nil {
		return nil, err
	}
	r := newFullBox(mdhd)
	if r.version == 1 {
		r.take(16)
	} else {
		r.take(8)
	}
	if t.timescale = r.u32(); r.err != nil || t.timescale == 0 {
		return nil, errors.New("mp4: bad mdhd")
	}
	hdlr, err := boxPath(t.trak, "mdia", "hdlr")
	if err != nil {
		return nil, err
	}
	if len(hdlr.data) < 12 {
		return nil, errors.New("mp4: bad hdlr")
	}
	t.handler = string(hdlr.data[8:12])
	if elst, err := boxPath(t.trak, "edts", "elst"); err == nil {
		r := newFullBox(elst)
		if n := r.u32(); n == 1 {
			if r.version == 1 {
				r.u64()
				t.mediaTime = int64(r.u64())
			} else {
				r.u32()
				t.mediaTime = int64(int32(r.u32()))
			}
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	stbl, err := boxPath(t.trak, "mdia", "minf", "stbl")
	if err != nil {
		return nil, err
	}
	kids, err := parseBoxes(stbl.data)
	if err != nil {
		return nil, err
	}
	table := func(typ string) (*fullBox, bool) {
		b, ok := findBox(kids, typ)
		if !ok {
			return nil, false
		}
		return newFullBox(b), true
	}

	if err := t.readEntry(kids); err != nil {
		return nil, err
	}

	r, ok := table("stsz")
	if !ok {
		return nil, errors.New("mp4: no stsz box")
	}
	fixed := r.u32()
	n := int(r.u32())
	if fixed == 0 && r.err == nil && uint64(n)*4 > uint64(len(r.b)) {
		return nil, errors.New("mp4: stsz longer than its box")
	}
	t.sizes = make([]uint32, n)
	for i := range t.sizes {
		if fixed != 0 {
			t.sizes[i] = fixed
		} else {
			t.sizes[i] = r.u32()
		}
	}
	if r.err != nil {
		return nil, r.err
	}

	if r, ok = table("stts"); !ok {
		return nil, errors.New("mp4: no stts box")
	}
	for range r.count(8) {
		c, d := r.u32(), r.u32()
		for range c {
			if len(t.deltas) == n {
				return nil, errors.New("mp4: stts has more samples than stsz")
			}
			t.deltas = append(t.deltas, d)
		}
	}
	if r.err != nil || len(t.deltas) != n {
		return nil, errors.New("mp4: stts does not cover every sample")
	}

	if r, ok = table("ctts"); ok {
		t.cttsV = r.version
		for range r.count(8) {
			c, o := r.u32(), int32(r.u32())
			for range c {
				if len(t.cts) == n {
					return nil, errors.New("mp4: ctts has more samples than stsz")
				}
				t.cts = append(t.cts, o)
			}
		}
		if r.err != nil || len(t.cts) != n {
			return nil, errors.New("mp4: ctts does not cover every sample")
		}
	}

	if r, ok = table("stss"); ok {
		t.sync = make([]bool, n)
		for range r.count(4) {
			s := r.u32()
			if s == 0 || int(s) > n {
				return nil, errors.New("mp4: stss names a sample that does not exist")
			}
			t.sync[s-1] = true
		}
		if r.err != nil {
			return nil, r.err
		}
	}

	var chunks []uint64
	if r, ok = table("stco"); ok {
		for range r.count(4) {
			chunks = append(chunks, uint64(r.u32()))
		}
	} else if r, ok = table("co64"); ok {
		for range r.count(8) {
			chunks = append(chunks, r.u64())
		}
	} else {
		return nil, errors.New("mp4: no stco or co64 box")
	}
	if r.err != nil {
		return nil, r.err
	}
	if r, ok = table("stsc"); !ok {
		return nil, errors.New("mp4: no stsc box")
	}
	type run struct{ first, per, sdi uint32 }
	var runs []run
	for range r.count(12) {
		runs = append(runs, run{r.u32(), r.u32(), r.u32()})
	}
	if r.err != nil || len(runs) == 0 {
		return nil, errors.New("mp4: bad stsc")
	}
	t.sdi = runs[0].sdi
	offsets := make([]uint64, 0, n)
	for i, ru := range runs {
		if ru.sdi != t.sdi {
			return nil, errors.New("mp4: more than one sample description")
		}
		last := uint32(len(chunks))
		if i+1 < len(runs) {
			last = runs[i+1].first - 1
		}
		if ru.first == 0 || last > uint32(len(chunks)) {
			return nil, errors.New("mp4: stsc names a chunk that does not exist")
		}
		for ch := ru.first; ch <= last; ch++ {
			off := chunks[ch-1]
			for range ru.per {
				if len(offsets) == n {
					return nil, errors.New("mp4: stsc has more samples than stsz")
				}
				offsets = append(offsets, off)
				off += uint64(t.sizes[len(offsets)-1])
			}
		}
	}
	if len(offsets) != n {
		return nil, errors.New("mp4: stsc does not cover every sample")
	}
	t.offs = make([]int, n)
	for i, off := range offsets {
		end := off + uint64(t.sizes[i])
		if end > uint64(len(file)) {
			return nil, errors.New("mp4: a sample lies past the end of the file")
		}
		t.offs[i] = len(t.data)
		t.data = append(t.data, file[off:end]...)
	}
	return t, nil
}

// visualEntryLen is the length of a VisualSampleEntry's fields before its boxes.
const visualEntryLen = 78

// readEntry reads the type of the track's first sample description and, for
// H.264, the length of its NAL units' prefix from the avcC box.
func (t *clipTrack) readEntry(stbl []mp4Box) error {
	stsd, ok := findBox(stbl, "stsd")
	if !ok {
		return errors.New("mp4: no stsd box")
	}
	if len(stsd.data) < 8 {
		return errors.New("mp4: stsd box too short")
	}
	entries, err := parseBoxes(stsd.data[8:])
	if err != nil || len(entries) == 0 {
		return errors.New("mp4: bad stsd")
	}
	e := entries[0]
	t.entry = e.typ
	if e.typ != "avc1" {
		return nil
	}
	if len(e.data) < visualEntryLen {
		return errors.New("mp4: avc1 box too short")
	}
	kids, err := parseBoxes(e.data[visualEntryLen:])
	if err != nil {
		return err
	}
	avcC, ok := findBox(kids, "avcC")
	if !ok || len(avcC.data) < 5 {
		return errors.New("mp4: avc1 without an avcC box")
	}
	t.nalLen = int(avcC.data[4]&3) + 1
	return nil
}

// cut keeps the samples that start before period (in the track's timescale) and
// checks that they fill it exactly.
func (t *clipTrack) cut(period uint64) error {
	var dts uint64
	n := 0
	for n < len(t.deltas) && dts < period {
		dts += uint64(t.deltas[n])
		n++
	}
	if n == 0 || dts != period {
		return fmt.Errorf("mp4: the %s track's samples do not fill the clip's %d ticks", t.handler, period)
	}
	var size int
	for _, s := range t.sizes[:n] {
		size += int(s)
	}
	t.sizes, t.deltas, t.data, t.offs, t.period = t.sizes[:n], t.deltas[:n], t.data[:size], t.offs[:n], period
	if t.cts != nil {
		t.cts = t.cts[:n]
	}
	if t.sync != nil {
		t.sync = t.sync[:n]
	}
	return nil
}

// trackPlan is how one track of a long file repeats its clip track: full periods,
// then a partial one holding the first part samples. Sample i of every period may
// be grown by pad[i] bytes that decoders skip (see readSample).
type trackPlan struct {
	t          *clipTrack
	full       int64   // number of full periods
	part       int     // samples in the partial period after them; 0 for none
	pad        []int64 // per sample of the clip: bytes added to it; nil for none
	fullChunks []chunk // a full period's chunks, in file order
	partChunks []chunk // the partial period's chunks
	fullBytes  int64   // bytes of a full period's samples
	partBytes  int64   // bytes of the partial period's samples
}

// chunk is a run of one track's samples stored back to back in one period.
type chunk struct {
	first, n int   // the clip's samples first to first+n-1
	at       int64 // where the chunk starts, from the start of its period
}

// samples is the track's sample count.
func (p *trackPlan) samples() int64 { return p.full*int64(len(p.t.sizes)) + int64(p.part) }

// size is the size in the file of the clip's sample i, padding included.
func (p *trackPlan) size(i int) int64 {
	if p.pad == nil {
		return int64(p.t.sizes[i])
	}
	return int64(p.t.sizes[i]) + p.pad[i]
}

// chunks is the track's chunk count.
func (p *trackPlan) chunks() int64 {
	return p.full*int64(len(p.fullChunks)) + int64(len(p.partChunks))
}

// eachChunk calls f for every chunk of the track, with the period it is in.
func (p *trackPlan) eachChunk(f func(period int64, c chunk)) {
	for k := range p.full {
		for _, c := range p.fullChunks {
			f(k, c)
		}
	}
	for _, c := range p.partChunks {
		f(p.full, c)
	}
}

// mediaDuration is the track's duration in its timescale.
func (p *trackPlan) mediaDuration() uint64 {
	d := uint64(p.full) * p.t.period
	for _, x := range p.t.deltas[:p.part] {
		d += uint64(x)
	}
	return d
}

// each calls f for every sample of the track: its index in the clip's period.
func (p *trackPlan) each(f func(i int)) {
	for range p.full {
		for i := range p.t.sizes {
			f(i)
		}
	}
	for i := range p.part {
		f(i)
	}
}

// minPad is the fewest bytes a sample of the track can grow by: a filler NAL unit
// of an empty payload (length, header, trailing bits), or one byte of an AAC fill
// element.
func (t *clipTrack) minPad() int64 {
	if t.entry == "avc1" {
		return int64(t.nalLen) + 2
	}
	return 1
}

// padTo grows the track's samples by at most extra bytes in all, as evenly as
// the smallest padding allows: every period by the same bytes, spread over its
// last samples, so that the samples of a partial period, its first ones, grow by
// no more than their share. It returns the bytes added.
func (p *trackPlan) padTo(extra int64) int64 {
	p.pad = nil
	n, total := int64(len(p.t.sizes)), p.samples()
	if extra <= 0 || total == 0 {
		return 0
	}
	per := extra/total*n + extra%total*n/total // bytes per full period
	m := min(n, per/p.t.minPad())
	if m == 0 {
		return 0
	}
	p.pad = make([]int64, n)
	for i := n - m; i < n; i++ {
		p.pad[i] = per / m
		if i >= n-per%m {
			p.pad[i]++
		}
	}
	var added int64
	p.each(func(i int) { added += p.pad[i] })
	return added
}

// planTracks works out how many samples of each track a file of dur seconds holds:
// whole periods, then the video samples that start before dur and, for every other
// track, the samples that start before the end of the last video sample.
func planTracks(c *clipMedia, tracks []*clipTrack, dur float64) []*trackPlan {
	v := c.video
	target := uint64(math.Round(dur * float64(v.timescale)))
	if dur <= 0 || math.IsNaN(dur) || target == 0 {
		target = v.period
	}
	full, rem := int64(target/v.period), target%v.period
	vpart, vrem := 0, uint64(0)
	for vrem < rem {
		vrem += uint64(v.deltas[vpart])
		vpart++
	}
	plans := make([]*trackPlan, len(tracks))
	for k, t := range tracks {
		p := &trackPlan{t: t, full: full}
		if vrem > 0 {
			r := (vrem*uint64(t.timescale) + uint64(v.timescale) - 1) / uint64(v.timescale)
			var d uint64
			for p.part < len(t.deltas) && d < r {
				d += uint64(t.deltas[p.part])
				p.part++
			}
		}
		plans[k] = p
	}
	return plans
}

// maxChunkSeconds bounds the time a chunk covers. Muxers interleave their tracks
// finely, and readers count on it: ffmpeg reads samples in file order only while
// the tracks' times are within a second of each other, and seeks otherwise, which
// over HTTP is a new request.
const maxChunkSeconds = 0.4

// chunkWindows is how many windows of at most maxChunkSeconds a period of the
// clip is cut into; each window holds one chunk of each track.
func chunkWindows(c *clipMedia) int {
	return int(math.Ceil(float64(c.video.period)/float64(c.video.timescale)/maxChunkSeconds - 1e-9))
}

// piece is one sample as a period lays it out: sample sample of track track, at
// at bytes from the period's start.
type piece struct {
	track, sample int
	at            int64
}

// layoutPeriods sets the chunks of every track in a full and in the partial
// period: windows windows of the period in turn, each holding the samples of each
// track that start in it, padded, back to back. It returns both periods' samples
// in file order and their lengths.
func layoutPeriods(tps []*trackPlan, windows int) (full, part []piece, fullLen, partLen int64) {
	lay := func(partial bool) ([]piece, int64) {
		var ps []piece
		var at int64
		next := make([]int, len(tps))
		dts := make([]uint64, len(tps))
		for w := range windows {
			for j, tp := range tps {
				n := len(tp.t.sizes)
				if partial {
					n = tp.part
				}
				c := chunk{first: next[j], at: at}
				for next[j] < n && dts[j]*uint64(windows) < uint64(w+1)*tp.t.period {
					i := next[j]
					ps = append(ps, piece{track: j, sample: i, at: at})
					at += tp.size(i)
					dts[j] += uint64(tp.t.deltas[i])
					next[j]++
				}
				if c.n = next[j] - c.first; c.n == 0 {
					continue
				}
				if partial {
					tp.partChunks = append(tp.partChunks, c)
					tp.partBytes += at - c.at
				} else {
					tp.fullChunks = append(tp.fullChunks, c)
					tp.fullBytes += at - c.at
				}
			}
		}
		return ps, at
	}
	for _, tp := range tps {
		tp.fullChunks, tp.partChunks, tp.fullBytes, tp.partBytes = nil, nil, 0, 0
	}
	full, fullLen = lay(false)
	part, partLen = lay(true)
	return full, part, fullLen, partLen
}

// readSample reads the clip's sample i grown by pad bytes, from x bytes into it,
// at most to its end, and returns how many bytes it read.
//
// An H.264 sample grows by a filler data NAL unit (nal_unit_type 12) at its end:
// its length, its header, 0xFF bytes and the RBSP trailing bits 0x80. Decoders
// skip it, as they skip the filler of a constant-bitrate stream.
//
// An AAC frame grows by fill elements (ID_FIL) put before its END element; see
// aacPadding.
func (t *clipTrack) readSample(dst []byte, i int, x, pad int64) int {
	size := int64(t.sizes[i])
	keep := size
	if pad > 0 && t.entry == "mp4a" {
		keep = int64(t.aacEnd[i] / 8)
	}
	if x < keep {
		return copy(dst, t.data[int64(t.offs[i])+x:int64(t.offs[i])+keep])
	}
	dst = dst[:min(int64(len(dst)), size+pad-x)]
	if t.entry == "avc1" {
		for k := range dst {
			switch y := x + int64(k) - size; {
			case y < 4:
				dst[k] = byte((pad - 4) >> (8 * (3 - y)))
			case y == 4:
				dst[k] = 12 // forbidden_zero_bit 0, nal_ref_idc 0, nal_unit_type 12
			case y == pad-1:
				dst[k] = 0x80
			default:
				dst[k] = 0xFF
			}
		}
		return len(dst)
	}
	orig := t.data[t.offs[i] : t.offs[i]+int(size)]
	a := aacPadding(int64(t.aacEnd[i]), size, pad)
	for k := range dst {
		dst[k] = a.byteAt(orig, 8*(x+int64(k)))
	}
	return len(dst)
}

// An AAC fill element (ISO/IEC 14496-3, fill_element) is ID_FIL (6) in 3 bits and
// a 4-bit count; a count of 15 is followed by an 8-bit esc_count and means
// 14+esc_count. Then come count bytes of extension_payload: extension_type
// EXT_FILL (0000) and a fill_nibble (0000), then fill_bytes (10100101).
const (
	filShortBits = 7                        // the header without esc_count
	filLongBits  = 15                       // the header with it
	filMaxShort  = filShortBits + 8*14      // bits of the longest element without it
	filMaxBits   = filLongBits + 8*(14+255) // bits of the longest element
)

// aacFill is how an AAC frame grows: its bits up to its END element, fill elements
// (k-1 of filMaxBits, then one of last bits; fil bits in all), END again, and zero
// bits to the next byte.
type aacFill struct {
	end, k, last, fil int64
}

// aacPadding works out how a frame of size bytes whose END element starts at bit
// end grows by pad bytes. Every fill element is 7 bits past a byte boundary, so
// the fewest elements whose bits, with the new alignment, make up pad bytes.
func aacPadding(end, size, pad int64) aacFill {
	align := 8*size - end - 3
	for k := max(1, (8*pad-7)/filMaxBits); ; k++ {
		fil := 8*pad + align - (align+k)%8
		if last := fil - (k-1)*filMaxBits; last <= filMaxBits {
			return aacFill{end: end, k: k, last: last, fil: fil}
		}
	}
}

// byteAt is the byte of the padded frame whose original bytes are orig that
// starts at bit y. Inside a fill element's run of fill_bytes it is the pattern
// 10100101 at the element's phase; elsewhere it is put together bit by bit.
func (a aacFill) byteAt(orig []byte, y int64) byte {
	if z := y - a.end; z >= 0 && z+8 <= a.fil {
		e := z / filMaxBits
		n := int64(filMaxBits)
		if e == a.k-1 {
			n = a.last
		}
		u := z - e*filMaxBits
		hdr := int64(filShortBits)
		if n > filMaxShort {
			hdr = filLongBits
		}
		if u >= hdr+8 && u+8 <= n {
			return bits.RotateLeft8(0xA5, int((u-hdr)%8))
		}
	}
	var b byte
	for j := range int64(8) {
		b |= a.bit(orig, y+j) << (7 - j)
	}
	return b
}

// bit is bit y of the padded frame whose original bytes are orig.
func (a aacFill) bit(orig []byte, y int64) byte {
	switch {
	case y < a.end:
		return bitAt(orig, int(y))
	case y < a.end+a.fil:
		z := y - a.end
		e := z / filMaxBits
		if e == a.k-1 {
			return filBit(z-e*filMaxBits, a.last)
		}
		return filBit(z-e*filMaxBits, filMaxBits)
	case y < a.end+a.fil+3:
		return 1 // END
	}
	return 0
}

// filBit is bit u of a fill element n bits long.
func filBit(u, n int64) byte {
	hdr, count := int64(filShortBits), (n-filShortBits)/8
	if n > filMaxShort {
		hdr, count = filLongBits, (n-filLongBits)/8
	}
	switch {
	case u < 3:
		return 6 >> (2 - u) & 1
	case u < 7:
		if hdr == filLongBits {
			return 15 >> (6 - u) & 1
		}
		return byte(count >> (6 - u) & 1)
	case u < hdr:
		return byte((count - 14) >> (14 - u) & 1)
	}
	q := u - hdr
	if q < 8 {
		return 0 // EXT_FILL, fill_nibble
	}
	return 0xA5 >> (7 - q%8) & 1
}

// mp4Writer appends boxes to a buffer.
type mp4Writer struct{ b []byte }

// open starts a box of type typ and returns its position for close.
func (w *mp4Writer) open(typ string) int {
	p := len(w.b)
	w.b = append(w.b, 0, 0, 0, 0)
	w.b = append(w.b, typ...)
	return p
}

func (w *mp4Writer) close(p int) {
	binary.BigEndian.PutUint32(w.b[p:], uint32(len(w.b)-p))
}

func (w *mp4Writer) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *mp4Writer) u64(v uint64) { w.b = binary.BigEndian.AppendUint64(w.b, v) }

// fullHeader starts a full box.
func (w *mp4Writer) fullHeader(typ string, version byte) int {
	p := w.open(typ)
	w.b = append(w.b, version, 0, 0, 0)
	return p
}

// copyPatched appends box b with the duration field of its full-box payload set to
// d: at offset v0 (32 bits) in version 0, v1 (64 bits) in version 1.
func (w *mp4Writer) copyPatched(b mp4Box, v0, v1 int, d uint64) error {
	p := len(w.b) + len(b.raw) - len(b.data)
	w.b = append(w.b, b.raw...)
	if len(b.data) < 4 {
		return fmt.Errorf("mp4: %s box too short", b.typ)
	}
	if b.data[0] == 1 {
		if len(b.data) < v1+8 {
			return fmt.Errorf("mp4: %s box too short", b.typ)
		}
		binary.BigEndian.PutUint64(w.b[p+v1:], d)
		return nil
	}
	if len(b.data) < v0+4 {
		return fmt.Errorf("mp4: %s box too short", b.typ)
	}
	if d > math.MaxUint32 {
		return fmt.Errorf("mp4: %s duration %d does not fit its version 0 box", b.typ, d)
	}
	binary.BigEndian.PutUint32(w.b[p+v0:], uint32(d))
	return nil
}

// scale converts d ticks of timescale from into timescale to, rounding.
func scale(d uint64, from, to uint32) uint64 {
	return (d*uint64(to) + uint64(from)/2) / uint64(from)
}

// writeMoov writes the moov of a file holding plans, its periods stride bytes
// apart from payloadAt; wide selects co64 over stco.
func writeMoov(c *clipMedia, plans []*trackPlan, payloadAt, stride int64, wide bool) ([]byte, error) {
	w := &mp4Writer{}
	moov := w.open("moov")
	tkhdDur := make([]uint64, len(plans))
	for j, p := range plans {
		d := scale(p.mediaDuration(), p.t.timescale, c.movieTimescale)
		if p.t.mediaTime >= 0 {
			d = scale(p.mediaDuration()-min(uint64(p.t.mediaTime), p.mediaDuration()), p.t.timescale, c.movieTimescale)
		}
		tkhdDur[j] = d
	}
	var err error
	for i, b := range c.moov {
		switch b.typ {
		case "mvhd":
			err = w.copyPatched(b, 16, 24, slices.Max(tkhdDur))
		case "trak":
			for j, p := range plans {
				if p.t.index == i {
					err = w.writeTrak(p, tkhdDur[j], func(period int64, c chunk) int64 { return payloadAt + period*stride + c.at }, wide)
				}
			}
		default:
			w.b = append(w.b, b.raw...)
		}
		if err != nil {
			return nil, err
		}
	}
	w.close(moov)
	return w.b, nil
}

// writeTrak writes p's trak: the clip's boxes with durations, the edit list and
// the sample tables rewritten for the long track.
func (w *mp4Writer) writeTrak(p *trackPlan, tkhdDur uint64, offset func(period int64, c chunk) int64, wide bool) error {
	trak := w.open("trak")
	for _, b := range p.t.trak {
		var err error
		switch b.typ {
		case "tkhd":
			err = w.copyPatched(b, 20, 28, tkhdDur)
		case "edts":
			if p.t.mediaTime >= 0 {
				edts := w.open("edts")
				v := byte(0)
				if tkhdDur > math.MaxUint32 || p.t.mediaTime > math.MaxInt32 {
					v = 1
				}
				elst := w.fullHeader("elst", v)
				w.u32(1)
				if v == 1 {
					w.u64(tkhdDur)
					w.u64(uint64(p.t.mediaTime))
				} else {
					w.u32(uint32(tkhdDur))
					w.u32(uint32(p.t.mediaTime))
				}
				w.u32(1 << 16) // media rate 1.0
				w.close(elst)
				w.close(edts)
			}
		case "mdia":
			err = w.writeContainer(b, func(b mp4Box) (bool, error) {
				switch b.typ {
				case "mdhd":
					return true, w.copyPatched(b, 16, 24, p.mediaDuration())
				case "minf":
					return true, w.writeContainer(b, func(b mp4Box) (bool, error) {
						if b.typ != "stbl" {
							return false, nil
						}
						return true, w.writeStbl(b, p, offset, wide)
					})
				}
				return false, nil
			})
		default:
			w.b = append(w.b, b.raw...)
		}
		if err != nil {
			return err
		}
	}
	w.close(trak)
	return nil
}

// writeContainer writes box b with its children, each one either written by f
// (which reports true) or copied as it is.
func (w *mp4Writer) writeContainer(b mp4Box, f func(mp4Box) (bool, error)) error {
	kids, err := parseBoxes(b.data)
	if err != nil {
		return err
	}
	pos := w.open(b.typ)
	for _, k := range kids {
		done, err := f(k)
		if err != nil {
			return err
		}
		if !done {
			w.b = append(w.b, k.raw...)
		}
	}
	w.close(pos)
	return nil
}

// writeStbl writes the sample table of p: the clip's sample description, then
// tables for every sample of every period. Per-sample boxes it does not know (sample
// groups, dependency flags) are left out rather than left wrong.
func (w *mp4Writer) writeStbl(stbl mp4Box, p *trackPlan, offset func(period int64, c chunk) int64, wide bool) error {
	kids, err := parseBoxes(stbl.data)
	if err != nil {
		return err
	}
	stsd, ok := findBox(kids, "stsd")
	if !ok {
		return errors.New("mp4: no stsd box")
	}
	t := p.t
	pos := w.open("stbl")
	w.b = append(w.b, stsd.raw...)

	// Run-length tables: stts always, ctts when the clip has one.
	runs := func(typ string, version byte, value func(i int) uint32) {
		box := w.fullHeader(typ, version)
		countAt := len(w.b)
		w.u32(0)
		var n, count, last uint32
		p.each(func(i int) {
			v := value(i)
			if count > 0 && v == last {
				count++
				return
			}
			if count > 0 {
				w.u32(count)
				w.u32(last)
				n++
			}
			count, last = 1, v
		})
		if count > 0 {
			w.u32(count)
			w.u32(last)
			n++
		}
		binary.BigEndian.PutUint32(w.b[countAt:], n)
		w.close(box)
	}
	runs("stts", 0, func(i int) uint32 { return t.deltas[i] })
	if t.cts != nil {
		runs("ctts", t.cttsV, func(i int) uint32 { return uint32(t.cts[i]) })
	}

	if t.sync != nil {
		box := w.fullHeader("stss", 0)
		countAt := len(w.b)
		w.u32(0)
		var n, num uint32
		p.each(func(i int) {
			num++
			if t.sync[i] {
				w.u32(num)
				n++
			}
		})
		binary.BigEndian.PutUint32(w.b[countAt:], n)
		w.close(box)
	}

	box := w.fullHeader("stsc", 0)
	countAt := len(w.b)
	w.u32(0)
	var nrun, k uint32
	last := -1
	p.eachChunk(func(_ int64, c chunk) {
		k++
		if c.n != last {
			w.u32(k)
			w.u32(uint32(c.n))
			w.u32(t.sdi)
			nrun++
			last = c.n
		}
	})
	binary.BigEndian.PutUint32(w.b[countAt:], nrun)
	w.close(box)

	box = w.fullHeader("stsz", 0)
	w.u32(0)
	w.u32(uint32(p.samples()))
	p.each(func(i int) { w.u32(uint32(p.size(i))) })
	w.close(box)

	if wide {
		box = w.fullHeader("co64", 0)
	} else {
		box = w.fullHeader("stco", 0)
	}
	w.u32(uint32(p.chunks()))
	p.eachChunk(func(period int64, c chunk) {
		if wide {
			w.u64(uint64(offset(period, c)))
		} else {
			w.u32(uint32(offset(period, c)))
		}
	})
	w.close(box)
	w.close(pos)
	return nil
}
