package streamtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
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
	period    uint64   // the period in the track's timescale
	mediaTime int64    // the edit list's media_time; -1 for no edit list
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
	return c, nil
}

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
	for i, off := range offsets {
		end := off + uint64(t.sizes[i])
		if end > uint64(len(file)) {
			return nil, errors.New("mp4: a sample lies past the end of the file")
		}
		t.data = append(t.data, file[off:end]...)
	}
	return t, nil
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
	t.sizes, t.deltas, t.data, t.period = t.sizes[:n], t.deltas[:n], t.data[:size], period
	if t.cts != nil {
		t.cts = t.cts[:n]
	}
	if t.sync != nil {
		t.sync = t.sync[:n]
	}
	return nil
}

// trackPlan is how one track of a long file repeats its clip track: full periods,
// then a partial one holding the first part samples.
type trackPlan struct {
	t         *clipTrack
	full      int64 // number of full periods
	part      int   // samples in the partial period after them; 0 for none
	fullBytes int64 // bytes of a full period's samples: one chunk
	partBytes int64 // bytes of the partial period's samples
}

// samples is the track's sample count.
func (p *trackPlan) samples() int64 { return p.full*int64(len(p.t.sizes)) + int64(p.part) }

// chunks is the track's chunk count: one per period.
func (p *trackPlan) chunks() int64 {
	if p.part > 0 {
		return p.full + 1
	}
	return p.full
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
		for i, s := range t.sizes {
			p.fullBytes += int64(s)
			if i < p.part {
				p.partBytes += int64(s)
			}
		}
		plans[k] = p
	}
	return plans
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

// writeMoov writes the moov of a file holding plans, with chunk k of track j at
// offset(j, k); wide selects co64 over stco.
func writeMoov(c *clipMedia, plans []*trackPlan, offset func(j int, k int64) int64, wide bool) ([]byte, error) {
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
					err = w.writeTrak(p, tkhdDur[j], func(k int64) int64 { return offset(j, k) }, wide)
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
func (w *mp4Writer) writeTrak(p *trackPlan, tkhdDur uint64, offset func(k int64) int64, wide bool) error {
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
func (w *mp4Writer) writeStbl(stbl mp4Box, p *trackPlan, offset func(k int64) int64, wide bool) error {
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
	type run struct{ first, per uint32 }
	var rs []run
	if p.full > 0 {
		rs = append(rs, run{1, uint32(len(t.sizes))})
	}
	if p.part > 0 {
		rs = append(rs, run{uint32(p.full + 1), uint32(p.part)})
	}
	w.u32(uint32(len(rs)))
	for _, r := range rs {
		w.u32(r.first)
		w.u32(r.per)
		w.u32(t.sdi)
	}
	w.close(box)

	box = w.fullHeader("stsz", 0)
	w.u32(0)
	w.u32(uint32(p.samples()))
	p.each(func(i int) { w.u32(t.sizes[i]) })
	w.close(box)

	if wide {
		box = w.fullHeader("co64", 0)
	} else {
		box = w.fullHeader("stco", 0)
	}
	w.u32(uint32(p.chunks()))
	for k := range p.chunks() {
		if wide {
			w.u64(uint64(offset(k)))
		} else {
			w.u32(uint32(offset(k)))
		}
	}
	w.close(box)
	w.close(pos)
	return nil
}
