package streamtest

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	uidShort = "11111111111111111111111111111111"
	uidLong  = "22222222222222222222222222222222"
)

func TestLayoutText(t *testing.T) {
	for _, tc := range []struct {
		layout Layout
		name   string
	}{{Synthetic, "synthetic"}, {FastStart, "faststart"}, {MoovAtEnd, "moov-at-end"}} {
		b, err := tc.layout.MarshalText()
		if err != nil || string(b) != tc.name {
			t.Errorf("MarshalText(%d) = %q, %v; want %q", int(tc.layout), b, err, tc.name)
		}
		var l Layout
		if err := l.UnmarshalText([]byte(tc.name)); err != nil || l != tc.layout {
			t.Errorf("UnmarshalText(%q) = %v, %v", tc.name, l, err)
		}
	}
	var l Layout
	if err := l.UnmarshalText([]byte("fast")); err == nil {
		t.Error("unknown name accepted")
	}
	if _, err := Layout(7).MarshalText(); err == nil {
		t.Error("unknown layout marshalled")
	}
	b, err := json.Marshal(Video{UID: uidShort, Layout: MoovAtEnd})
	if err != nil || !strings.Contains(string(b), `"Layout":"moov-at-end"`) {
		t.Errorf("JSON of a video: %s, %v", b, err)
	}
}

func TestClip(t *testing.T) {
	c, err := loadClip()
	if err != nil {
		t.Fatal(err)
	}
	if len(clipFile) > 300<<10 {
		t.Errorf("clip is %d bytes, want well under 300 KB", len(clipFile))
	}
	v, a := c.video, c.audio
	if got := float64(v.period) / float64(v.timescale); got < 1 || got > 4 {
		t.Errorf("clip lasts %gs, want 1 to 4", got)
	}
	if float64(v.period)/float64(v.timescale) != float64(a.period)/float64(a.timescale) {
		t.Errorf("tracks differ: video %d/%d, audio %d/%d", v.period, v.timescale, a.period, a.timescale)
	}
	if v.sync == nil || !v.sync[0] {
		t.Error("clip's video does not start with a sync sample")
	}
	if v.cts != nil {
		t.Error("clip's video has composition offsets: B-frames in a baseline clip?")
	}
	if len(v.data) == 0 || len(a.data) == 0 {
		t.Error("no sample bytes")
	}
	// The first video sample is an IDR picture, its NAL units 4-byte length prefixed.
	if !hasIDR(v.data[:v.sizes[0]]) {
		t.Error("first video sample holds no IDR slice")
	}
	if _, err := parseClip(clipFile[:len(clipFile)-100]); err == nil {
		t.Error("a clip cut short parses")
	}
}

func hasIDR(sample []byte) bool {
	for len(sample) >= 5 {
		n := int(binary.BigEndian.Uint32(sample))
		if sample[4]&0x1f == 5 {
			return true
		}
		if n+4 > len(sample) || n == 0 {
			return false
		}
		sample = sample[4+n:]
	}
	return false
}

// mediaCase is one file the structure and ffprobe tests check.
type mediaCase struct {
	name     string
	layout   Layout
	audio    bool
	duration float64
	size     int64
}

var mediaCases = func() []mediaCase {
	var cs []mediaCase
	for _, l := range []Layout{FastStart, MoovAtEnd} {
		for _, audio := range []bool{false, true} {
			for _, d := range []struct {
				dur  float64
				size int64
			}{{30, 1 << 20}, {600, 24 << 20}, {7.5, 400 << 10}} {
				size := d.size
				if audio {
					size /= 8
				}
				typ := "default"
				if audio {
					typ = "audio"
				}
				cs = append(cs, mediaCase{fmt.Sprintf("%s/%s/%gs", l, typ, d.dur), l, audio, d.dur, size})
			}
		}
	}
	return cs
}()

func (c mediaCase) video(uid string) Video {
	v := Video{UID: uid, Duration: c.duration, Size: c.size, Layout: c.layout, ReadyToStream: true}
	if c.audio {
		v.Size, v.AudioSize = c.size*8, c.size
	}
	return v
}

func (c mediaCase) typ() DownloadType {
	if c.audio {
		return Audio
	}
	return Default
}

func readFile(t *testing.T, f *File) []byte {
	t.Helper()
	b, err := io.ReadAll(f.NewReader())
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != f.Size() {
		t.Fatalf("read %d bytes of a %d-byte file", len(b), f.Size())
	}
	return b
}

// TestMediaStructure checks the box structure of real files with the package's
// own parser: box order per layout, durations, sample tables that fill the mdat
// with the clip's samples back to back, finely interleaved, grown by padding of
// the right form, the size asked for, and bytes spread evenly over time.
func TestMediaStructure(t *testing.T) {
	clip, err := loadClip()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range mediaCases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := OpenFile(tc.video(uidShort), tc.typ())
			if err != nil {
				t.Fatal(err)
			}
			if d := math.Abs(float64(f.Size()-tc.size)) / float64(tc.size); d > 0.01 {
				t.Errorf("size %d, want within 1%% of %d", f.Size(), tc.size)
			}
			file := readFile(t, f)
			top, err := parseBoxes(file)
			if err != nil {
				t.Fatal(err)
			}
			var order []string
			var mdat mp4Box
			for _, b := range top {
				order = append(order, b.typ)
				if b.typ == "mdat" {
					mdat = b
				}
			}
			want := "ftyp moov free mdat"
			if tc.layout == MoovAtEnd {
				want = "ftyp free mdat moov"
			}
			if got := strings.Join(order, " "); got != want {
				t.Fatalf("boxes %q, want %q", got, want)
			}
			mdatStart := int64(cap(file) - cap(mdat.data)) // mdat.data is a slice of file
			mdatEnd := mdatStart + int64(len(mdat.data))

			moov, _ := findBox(top, "moov")
			kids, err := parseBoxes(moov.data)
			if err != nil {
				t.Fatal(err)
			}
			mvhd, _ := findBox(kids, "mvhd")
			r := newFullBox(mvhd)
			r.take(8)
			ts, dur := r.u32(), r.u32()
			if got := float64(dur) / float64(ts); math.Abs(got-tc.duration) > 0.05 {
				t.Errorf("mvhd duration %gs, want %g", got, tc.duration)
			}
			var traks []*clipTrack
			var spans []chunkSpan
			for _, b := range kids {
				if b.typ == "trak" {
					tr, err := parseTrack(file, b)
					if err != nil {
						t.Fatalf("trak: %v", err)
					}
					traks = append(traks, tr)
					spans = append(spans, chunkSpans(t, b, len(traks)-1)...)
				}
			}
			checkContiguous(t, spans, mdatStart, mdatEnd)
			wantTracks := []*clipTrack{clip.video, clip.audio}
			if tc.audio {
				wantTracks = wantTracks[1:]
			}
			if len(traks) != len(wantTracks) {
				t.Fatalf("%d tracks, want %d", len(traks), len(wantTracks))
			}
			var padded int64
			for i, tr := range traks {
				w := wantTracks[i]
				if tr.handler != w.handler {
					t.Errorf("track %d is %s, want %s", i, tr.handler, w.handler)
				}
				var d uint64
				for _, x := range tr.deltas {
					d += uint64(x)
				}
				if got := float64(d) / float64(tr.timescale); math.Abs(got-tc.duration) > 0.1 {
					t.Errorf("%s track lasts %gs, want %g", tr.handler, got, tc.duration)
				}
				// Sample i of the file is sample i mod n of the clip, grown (video,
				// and the audio of an M4A) by padding that decoders skip.
				n := len(w.sizes)
				var off int
				for j, s := range tr.sizes {
					c := j % n
					got, orig := tr.data[off:off+int(s)], w.data[w.offs[c]:w.offs[c]+int(w.sizes[c])]
					var err error
					switch {
					case tr.handler == "vide":
						err = checkFiller(got, orig)
					case tc.audio:
						err = checkAACFill(got, orig, w.aacEnd[c])
					case !bytes.Equal(got, orig):
						err = errors.New("differs")
					}
					if err != nil {
						t.Fatalf("%s sample %d (clip sample %d): %v", tr.handler, j, c, err)
					}
					if w.sync != nil && tr.sync[j] != w.sync[c] {
						t.Fatalf("%s sample %d: sync %v, clip's %v", tr.handler, j, tr.sync[j], w.sync[c])
					}
					padded += int64(len(got) - len(orig))
					off += int(s)
				}
				if tr.mediaTime != w.mediaTime {
					t.Errorf("%s edit list media time %d, want the clip's %d", tr.handler, tr.mediaTime, w.mediaTime)
				}
			}
			// The padding makes up the size asked for; what it cannot take is in
			// the free box, under a kilobyte per minute.
			free, _ := findBox(top, "free")
			if len(free.data) > freeMin+int(tc.duration/60*1024)+1024 {
				t.Errorf("free box of %d bytes", len(free.data))
			}
			if f.Size() > 500<<10 && padded < f.Size()/4 {
				t.Errorf("%d bytes of padding in a file of %d", padded, f.Size())
			}
			// Bytes are spread over time: the samples of the first half of the
			// media end about halfway through the file.
			half := int64(0)
			for _, sp := range spans {
				if sp.track == 0 && sp.time < tc.duration/2 {
					half = sp.end
				}
			}
			if frac := float64(half) / float64(f.Size()); tc.duration > 10 && math.Abs(frac-0.5) > 0.03 {
				t.Errorf("the first half of the media ends at %.3f of the file, want about 0.5", frac)
			}
		})
	}
}

// chunkSpan is one chunk of a track as its sample tables place it: its bytes in
// the file and the time of its first sample, in seconds.
type chunkSpan struct {
	track      int
	start, end int64
	time       float64
}

// chunkSpans reads trak's chunks from its stco or co64, stsc, stsz and stts.
func chunkSpans(t *testing.T, trak mp4Box, track int) []chunkSpan {
	t.Helper()
	kids := mustParse(t, trak.data)
	mdhd, err := boxPath(kids, "mdia", "mdhd")
	if err != nil {
		t.Fatal(err)
	}
	r := newFullBox(mdhd)
	r.take(8)
	timescale := float64(r.u32())
	table := func(typ string) *fullBox {
		b, err := boxPath(kids, "mdia", "minf", "stbl", typ)
		if err != nil {
			return nil
		}
		return newFullBox(b)
	}
	var spans []chunkSpan
	if r := table("stco"); r != nil {
		for range r.u32() {
			spans = append(spans, chunkSpan{track: track, start: int64(r.u32())})
		}
	} else if r := table("co64"); r != nil {
		for range r.u32() {
			spans = append(spans, chunkSpan{track: track, start: int64(r.u64())})
		}
	} else {
		t.Fatal("no chunk offsets")
	}
	var sizes []int64
	r = table("stsz")
	r.u32()
	for range r.u32() {
		sizes = append(sizes, int64(r.u32()))
	}
	var deltas []int64
	r = table("stts")
	for range r.u32() {
		c, d := r.u32(), r.u32()
		for range c {
			deltas = append(deltas, int64(d))
		}
	}
	type run struct{ first, per uint32 }
	var runs []run
	r = table("stsc")
	for range r.u32() {
		runs = append(runs, run{r.u32(), r.u32()})
		r.u32()
	}
	if r.err != nil || len(runs) == 0 || len(deltas) != len(sizes) {
		t.Fatalf("bad sample tables: %v", r.err)
	}
	sample, dts := 0, int64(0)
	for k := range spans {
		per := 0
		for _, ru := range runs {
			if int(ru.first) <= k+1 {
				per = int(ru.per)
			}
		}
		spans[k].end, spans[k].time = spans[k].start, float64(dts)/timescale
		for range per {
			if sample == len(sizes) {
				t.Fatal("stsc holds more samples than stsz")
			}
			spans[k].end += sizes[sample]
			dts += deltas[sample]
			sample++
		}
	}
	if sample != len(sizes) {
		t.Fatalf("chunks hold %d samples, stsz %d", sample, len(sizes))
	}
	return spans
}

// checkContiguous checks that the chunks of all tracks fill the mdat payload
// [mdatStart, mdatEnd) back to back, each starting where the one before ended,
// and that they interleave the tracks finely: in file order, no chunk starts more
// than half a second after or before the one before it.
func checkContiguous(t *testing.T, spans []chunkSpan, mdatStart, mdatEnd int64) {
	t.Helper()
	slices.SortFunc(spans, func(a, b chunkSpan) int { return cmp.Compare(a.start, b.start) })
	at := mdatStart
	for k, sp := range spans {
		if sp.start != at {
			t.Fatalf("chunk %d of track %d starts at %d, the chunk before ended at %d", k, sp.track, sp.start, at)
		}
		if k > 0 && math.Abs(sp.time-spans[k-1].time) > 0.5 {
			t.Fatalf("chunk at %d starts at %gs, the one before at %gs", sp.start, sp.time, spans[k-1].time)
		}
		at = sp.end
	}
	if at != mdatEnd {
		t.Fatalf("the chunks end at %d, the mdat at %d", at, mdatEnd)
	}
}

// checkFiller checks that an H.264 sample is orig, or orig followed by one filler
// data NAL unit: a 4-byte length, nal_unit_type 12, 0xFF bytes, then 0x80.
func checkFiller(got, orig []byte) error {
	if !bytes.Equal(got[:min(len(got), len(orig))], orig) {
		return errors.New("does not start with the clip's sample")
	}
	nal := got[len(orig):]
	if len(nal) == 0 {
		return nil
	}
	if len(nal) < 6 || int(binary.BigEndian.Uint32(nal)) != len(nal)-4 {
		return fmt.Errorf("%d bytes after the clip's sample are not one NAL unit", len(nal))
	}
	body := nal[4:]
	if body[0] != 12 || body[len(body)-1] != 0x80 || bytes.Count(body[1:len(body)-1], []byte{0xFF}) != len(body)-2 {
		return fmt.Errorf("padding % x… is not a filler data NAL unit", body[:min(len(body), 8)])
	}
	return nil
}

// checkAACFill checks that an AAC frame is orig, or orig with fill elements
// (ID_FIL, EXT_FILL payloads) between its last element and its END element.
func checkAACFill(got, orig []byte, end int) error {
	if bytes.Equal(got, orig) {
		return nil
	}
	if len(got) <= len(orig) || !bytes.Equal(got[:end/8], orig[:end/8]) {
		return errors.New("differs from the clip's frame before its END element")
	}
	for i := end / 8 * 8; i < end; i++ {
		if bitAt(got, i) != bitAt(orig, i) {
			return errors.New("differs from the clip's frame before its END element")
		}
	}
	r := bitReader{b: got, pos: end}
	elems := 0
	for {
		id := r.read(3)
		if id == 7 {
			break
		}
		if id != 6 {
			return fmt.Errorf("element %d after the clip's is %d, not ID_FIL", elems, id)
		}
		elems++
		count := r.read(4)
		if count == 15 {
			count += r.read(8) - 1
		}
		for k := range count {
			want := 0xA5
			if k == 0 {
				want = 0 // EXT_FILL, fill_nibble
			}
			if b := r.read(8); b != want {
				return fmt.Errorf("fill byte %d is %#x, want %#x", k, b, want)
			}
		}
		if r.pos > 8*len(got) {
			return errors.New("fill elements run past the frame")
		}
	}
	if rest := 8*len(got) - r.pos; rest < 0 || rest > 7 || r.read(rest) != 0 {
		return fmt.Errorf("%d bits after END", rest)
	}
	if elems == 0 {
		return errors.New("grown without a fill element")
	}
	return nil
}

// bitReader reads bits most significant first; past the end it reads zeros.
type bitReader struct {
	b   []byte
	pos int
}

func (r *bitReader) read(n int) int {
	v := 0
	for range n {
		v <<= 1
		if r.pos < 8*len(r.b) {
			v |= int(bitAt(r.b, r.pos))
		}
		r.pos++
	}
	return v
}

func mustParse(t *testing.T, b []byte) []mp4Box {
	t.Helper()
	bs, err := parseBoxes(b)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// needTool returns the path of an ffmpeg tool, or skips the test without it.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (Debian: apt-get install ffmpeg); CI installs it", name)
	}
	return p
}

// rangeLog records the Range header of every request, per path.
type rangeLog struct {
	mu sync.Mutex
	m  map[string][]string
}

func (l *rangeLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.m[r.URL.Path] = append(l.m[r.URL.Path], r.Header.Get("Range"))
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (l *rangeLog) get(path string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.m[path]...)
}

// serveMedia serves every media case as a public video of its own, and returns
// the URL of each case's file.
func serveMedia(t *testing.T) (map[string]string, *rangeLog) {
	t.Helper()
	e := New(Options{})
	log := &rangeLog{m: map[string][]string{}}
	srv := httptest.NewServer(log.wrap(e.Handler()))
	t.Cleanup(srv.Close)
	urls := map[string]string{}
	for i, tc := range mediaCases {
		uid := fmt.Sprintf("%032x", i+1)
		e.AddVideo(tc.video(uid))
		e.SetDownloadReady(uid, tc.typ())
		urls[tc.name] = srv.URL + "/" + uid + "/downloads/" + tc.typ().file()
	}
	return urls, log
}

type probe struct {
	Streams []struct {
		CodecType string `json:"codec_type"`
		CodecName string `json:"codec_name"`
		Profile   string `json:"profile"`
	} `json:"streams"`
	Format struct {
		Duration string `json:"duration"`
	} `json:"format"`
}

// TestMediaFFprobe has ffprobe read every media case over HTTP from the emulator.
func TestMediaFFprobe(t *testing.T) {
	ffprobe := needTool(t, "ffprobe")
	urls, log := serveMedia(t)
	for i, tc := range mediaCases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(t.Context(), ffprobe, "-v", "error",
				"-show_entries", "stream=codec_type,codec_name,profile:format=duration", "-of", "json", urls[tc.name])
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("ffprobe: %v: %s", err, stderr.Bytes())
			}
			if stderr.Len() > 0 {
				t.Errorf("ffprobe reported errors: %s", stderr.Bytes())
			}
			var p probe
			if err := json.Unmarshal(stdout.Bytes(), &p); err != nil {
				t.Fatalf("ffprobe output: %v: %s", err, stdout.Bytes())
			}
			d, err := strconv.ParseFloat(p.Format.Duration, 64)
			if err != nil || math.Abs(d-tc.duration) > 1 {
				t.Errorf("duration %q, want %g within 1s", p.Format.Duration, tc.duration)
			}
			var got []string
			for _, s := range p.Streams {
				got = append(got, s.CodecType+":"+s.CodecName+":"+s.Profile)
			}
			want := "video:h264:Constrained Baseline audio:aac:LC"
			if tc.audio {
				want = "audio:aac:LC"
			}
			if strings.Join(got, " ") != want {
				t.Errorf("streams %q, want %q", strings.Join(got, " "), want)
			}

			// With the moov at the end, ffprobe must ask for the end of the file.
			f, err := OpenFile(tc.video(fmt.Sprintf("%032x", i+1)), tc.typ())
			if err != nil {
				t.Fatal(err)
			}
			path := urls[tc.name][strings.Index(urls[tc.name][len("http://"):], "/")+len("http://"):]
			ranges := log.get(path)
			tail := false
			for _, r := range ranges {
				if from, ok := strings.CutPrefix(r, "bytes="); ok {
					n, err := strconv.ParseInt(strings.TrimSuffix(from, "-"), 10, 64)
					tail = tail || err == nil && n > f.Size()/2
				}
			}
			if tc.layout == MoovAtEnd && tc.size > 1<<20 && !tail {
				t.Errorf("ffprobe's ranges %q never reach the second half of the file", ranges)
			}
		})
	}
}

// TestMediaFFmpegDecode decodes long files over HTTP with ffmpeg, every frame.
func TestMediaFFmpegDecode(t *testing.T) {
	ffmpeg := needTool(t, "ffmpeg")
	if testing.Short() {
		t.Skip("decodes 40 minutes of media")
	}
	urls, _ := serveMedia(t)
	for _, tc := range mediaCases {
		if tc.duration != 600 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := exec.CommandContext(t.Context(), ffmpeg, "-nostdin", "-v", "error", "-i", urls[tc.name], "-f", "null", "-")
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("ffmpeg: %v: %s", err, stderr.Bytes())
			}
			if stderr.Len() > 0 {
				t.Errorf("ffmpeg reported errors: %s", stderr.Bytes())
			}
		})
	}
}

// TestMediaLarge builds files past 4 GiB, whose chunk offsets need co64 and whose
// mdat needs a 64-bit size, without reading their media.
func TestMediaLarge(t *testing.T) {
	clip, err := loadClip()
	if err != nil {
		t.Fatal(err)
	}
	const size = 5 << 30
	for _, l := range []Layout{FastStart, MoovAtEnd} {
		t.Run(l.String(), func(t *testing.T) {
			f, err := OpenFile(Video{UID: uidLong, Duration: 600, Size: size, Layout: l}, Default)
			if err != nil {
				t.Fatal(err)
			}
			if f.Size() != size {
				t.Fatalf("size %d, want %d", f.Size(), size)
			}
			// Walk the top-level boxes through ReadAt, reading only their headers.
			var order []string
			var moov []byte
			mdatEnd := int64(0)
			for off := int64(0); off < f.Size(); {
				hdr := make([]byte, 16)
				if _, err := f.ReadAt(hdr, off); err != nil {
					t.Fatal(err)
				}
				n, typ := int64(binary.BigEndian.Uint32(hdr)), string(hdr[4:8])
				if n == 1 {
					n = int64(binary.BigEndian.Uint64(hdr[8:]))
				}
				order = append(order, typ)
				switch typ {
				case "moov":
					moov = make([]byte, n)
					if _, err := f.ReadAt(moov, off); err != nil {
						t.Fatal(err)
					}
				case "mdat":
					if binary.BigEndian.Uint32(hdr) != 1 {
						t.Error("mdat over 4 GiB without a 64-bit size")
					}
					mdatEnd = off + n
				}
				off += n
			}
			if got, want := strings.Join(order, " "), map[Layout]string{FastStart: "ftyp moov free mdat", MoovAtEnd: "ftyp free mdat moov"}[l]; got != want {
				t.Fatalf("boxes %q, want %q", got, want)
			}
			top := mustParse(t, moov)
			kids := mustParse(t, top[0].data)
			trak, _ := findBox(kids, "trak")
			co64, err := boxPath(mustParse(t, trak.data), "mdia", "minf", "stbl", "co64")
			if err != nil {
				t.Fatal(err)
			}
			r := newFullBox(co64)
			n := int(r.u32())
			offs := make([]uint64, n)
			for k := range offs {
				offs[k] = r.u64()
			}
			// Every period of the clip holds the same number of video chunks; the
			// last period's first chunk starts with the clip's first sample, an IDR
			// picture, and the filler that grows it.
			windows := chunkWindows(clip)
			first := offs[(n-1)/windows*windows]
			if first <= math.MaxUint32 || int64(first) >= mdatEnd {
				t.Fatalf("last period at %d: want past 4 GiB, before the mdat's end %d", first, mdatEnd)
			}
			size := clip.video.sizes[0]
			sample := make([]byte, size+5)
			if _, err := f.ReadAt(sample, int64(first)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sample[:size], clip.video.data[:size]) {
				t.Error("the last period does not start with the clip's first sample")
			}
			if pad := binary.BigEndian.Uint32(sample[size:]); pad < 300<<10 || sample[size+4] != 12 {
				t.Errorf("the clip's first sample is followed by % x, want a filler NAL unit of about 350 KB", sample[size:])
			}
		})
	}
}

func TestMediaReadAtAndETag(t *testing.T) {
	v := Video{UID: uidShort, Duration: 30, Size: 1 << 20, Layout: MoovAtEnd}
	f, err := OpenFile(v, Default)
	if err != nil {
		t.Fatal(err)
	}
	whole := readFile(t, f)
	for _, r := range []struct{ off, n int64 }{{0, 1}, {5, 100}, {1000, 70000}, {f.Size() - 10, 10}, {f.Size() / 2, 3}} {
		got := make([]byte, r.n)
		if n, err := f.ReadAt(got, r.off); n != int(r.n) || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", r.off, r.n, n, err)
		}
		if !bytes.Equal(got, whole[r.off:r.off+r.n]) {
			t.Errorf("ReadAt(%d, %d) differs from the same range of the whole", r.off, r.n)
		}
	}
	if n, err := f.ReadAt(make([]byte, 20), f.Size()-10); n != 10 || err != io.EOF {
		t.Errorf("ReadAt past the end = %d, %v; want 10, EOF", n, err)
	}
	// Reads that start or end at every edge of a sample or of its padding in the
	// first two periods, and random ones, give the bytes of the whole.
	var edges []int64
	for period := range int64(2) {
		for _, pc := range f.plan.fullPieces {
			tp := f.plan.tracks[pc.track]
			at := int64(len(f.plan.head)) + period*f.plan.stride + pc.at
			edges = append(edges, at, at+int64(tp.t.sizes[pc.sample]), at+int64(tp.t.sizes[pc.sample])+4)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		edges = append(edges, rng.Int64N(f.Size()))
	}
	for _, e := range edges {
		for _, r := range []struct{ off, n int64 }{{e - 3, 7}, {e, 1}, {e - 1000, 2000}, {e, rng.Int64N(100 << 10)}} {
			r.off = max(0, r.off)
			r.n = min(r.n, f.Size()-r.off)
			got := make([]byte, r.n)
			if n, err := f.ReadAt(got, r.off); n != int(r.n) || (err != nil && err != io.EOF) {
				t.Fatalf("ReadAt(%d, %d) = %d, %v", r.off, r.n, n, err)
			}
			if !bytes.Equal(got, whole[r.off:r.off+r.n]) {
				t.Fatalf("ReadAt(%d, %d) differs from the same range of the whole", r.off, r.n)
			}
		}
	}

	// The free box holds the synthetic content at its offset, so two videos'
	// files differ.
	p := f.plan
	if from, to := p.freeAt+8, p.freeAt+p.freeLen; p.freeLen < 8+freeMin || string(whole[p.freeAt+4:from]) != "free" ||
		!bytes.Equal(whole[from:to], Content(uidShort, Default, from, to-from)) {
		t.Errorf("free box of %d bytes at %d does not hold the synthetic content", p.freeLen, p.freeAt)
	}
	other := v
	other.UID = uidLong
	g, _ := OpenFile(other, Default)
	if bytes.Equal(whole, readFile(t, g)) {
		t.Error("two videos have the same bytes")
	}
	tags := map[string]string{}
	for name, v := range map[string]Video{
		"moov-at-end": v,
		"other uid":   other,
		"faststart":   {UID: uidShort, Duration: 30, Size: 1 << 20, Layout: FastStart},
		"synthetic":   {UID: uidShort, Duration: 30, Size: 1 << 20},
		"bigger":      {UID: uidShort, Duration: 30, Size: 2 << 20, Layout: MoovAtEnd},
		"longer":      {UID: uidShort, Duration: 31, Size: 1 << 20, Layout: MoovAtEnd},
	} {
		f, err := OpenFile(v, Default)
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := tags[f.ETag()]; ok {
			t.Errorf("%s and %s share the ETag %s", name, prev, f.ETag())
		}
		tags[f.ETag()] = name
	}
	if _, err := OpenFile(Video{UID: uidShort, Duration: 30, Size: 1 << 20, Layout: Layout(9)}, Default); err == nil {
		t.Error("unknown layout opened")
	}
	if _, err := OpenFile(Video{UID: uidShort, Duration: 1e7, Size: 1 << 20, Layout: FastStart}, Default); err == nil {
		t.Error("a duration of months opened")
	}
	// A size below the media's own gives the media's size; an unknown duration one clip.
	small, err := OpenFile(Video{UID: uidShort, Duration: -1, Size: 100, Layout: FastStart}, Audio)
	if err != nil || small.Size() <= 100 || small.Size() > 30000 {
		t.Errorf("tiny file: %v, %v", small, err)
	}
}

// TestMediaDelivery serves a real file through the delivery handler: ranges,
// If-Range and the counts, as for synthetic content.
func TestMediaDelivery(t *testing.T) {
	e := New(Options{Now: func() time.Time { return t0 }})
	v := Video{UID: uidPublic, Duration: 60, Size: 2 << 20, Layout: MoovAtEnd, ReadyToStream: true}
	e.AddVideo(v)
	e.SetDownloadReady(uidPublic, Default)
	srv := start(t, e)
	f, err := OpenFile(v, Default)
	if err != nil {
		t.Fatal(err)
	}
	whole := readFile(t, f)
	url := srv.URL + "/" + uidPublic + "/downloads/default.mp4"
	get := func(hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		for i := 0; i < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, b
	}
	res, body := get()
	if res.StatusCode != 200 || !bytes.Equal(body, whole) || res.Header.Get("ETag") != f.ETag() ||
		res.Header.Get("Content-Length") != strconv.FormatInt(f.Size(), 10) {
		t.Fatalf("GET: %d, %d bytes, ETag %s", res.StatusCode, len(body), res.Header.Get("ETag"))
	}
	res, body = get("Range", "bytes=-1000")
	if res.StatusCode != 206 || !bytes.Equal(body, whole[len(whole)-1000:]) ||
		res.Header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", f.Size()-1000, f.Size()-1, f.Size()) {
		t.Errorf("suffix range: %d %q", res.StatusCode, res.Header.Get("Content-Range"))
	}
	// Random ranges, as a player's seeks ask for them, get the whole's bytes.
	rng := rand.New(rand.NewPCG(3, 4))
	var ranged int64
	for range 40 {
		from := rng.Int64N(f.Size())
		to := min(f.Size()-1, from+rng.Int64N(300<<10))
		res, body := get("Range", fmt.Sprintf("bytes=%d-%d", from, to))
		if res.StatusCode != 206 || !bytes.Equal(body, whole[from:to+1]) {
			t.Fatalf("bytes=%d-%d: %d, %d bytes, not the whole's", from, to, res.StatusCode, len(body))
		}
		ranged += to + 1 - from
	}
	res, body = get("Range", "bytes=100-199", "If-Range", f.ETag())
	if res.StatusCode != 206 || !bytes.Equal(body, whole[100:200]) {
		t.Errorf("If-Range with the ETag: %d", res.StatusCode)
	}
	res, _ = get("Range", "bytes=100-199", "If-Range", `"stale"`)
	if res.StatusCode != 200 {
		t.Errorf("If-Range with another ETag: %d, want 200", res.StatusCode)
	}
	s := e.Stats(uidPublic, Default)
	if want := 2*f.Size() + 1100 + ranged; s.Bytes != want {
		t.Errorf("Bytes %d, want %d", s.Bytes, want)
	}
	if want := float64(2*f.Size()+1100+ranged) / float64(f.Size()); math.Abs(s.ProportionalMinutes-want) > 1e-9 {
		t.Errorf("ProportionalMinutes %g, want %g", s.ProportionalMinutes, want)
	}
}

// TestMediaFFmpegLarge has ffprobe and ffmpeg read a file past 4 GiB over HTTP:
// its moov at the end, chunk offsets in co64, the last seconds decoded after a
// seek. Only the moov and the media read are sent.
func TestMediaFFmpegLarge(t *testing.T) {
	ffprobe, ffmpeg := needTool(t, "ffprobe"), needTool(t, "ffmpeg")
	e := New(Options{})
	v := Video{UID: uidLong, Duration: 600, Size: 5 << 30, Layout: MoovAtEnd, ReadyToStream: true}
	e.AddVideo(v)
	e.SetDownloadReady(uidLong, Default)
	srv := start(t, e)
	url := srv.URL + "/" + uidLong + "/downloads/default.mp4"

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), ffprobe, "-v", "error", "-show_entries", "format=duration,size", "-of", "json", url)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("ffprobe: %v: %s", err, stderr.Bytes())
	}
	var p struct {
		Format struct{ Duration, Size string }
	}
	if err := json.Unmarshal(stdout.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if d, _ := strconv.ParseFloat(p.Format.Duration, 64); math.Abs(d-600) > 1 || p.Format.Size != strconv.Itoa(5<<30) {
		t.Errorf("ffprobe: duration %s, size %s", p.Format.Duration, p.Format.Size)
	}

	stderr.Reset()
	cmd = exec.CommandContext(t.Context(), ffmpeg, "-nostdin", "-v", "error", "-ss", "594", "-i", url, "-f", "null", "-")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("ffmpeg: %v: %s", err, stderr.Bytes())
	}
	if got := e.Stats(uidLong, Default).Bytes; got > 1<<30 {
		t.Errorf("probing and decoding the end sent %d bytes: the seek read the whole file", got)
	}
}

func BenchmarkFileReader(b *testing.B) {
	for _, typ := range []DownloadType{Default, Audio} {
		b.Run(string(typ), func(b *testing.B) {
			f, err := OpenFile(Video{UID: uidLong, Duration: 1800, Size: 48 << 20, Layout: MoovAtEnd}, typ)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(f.Size())
			buf := make([]byte, 32<<10)
			for b.Loop() {
				if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f.NewReader()}, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMediaFFmpegRemuxRequests has ffmpeg remux a 10-minute MoovAtEnd file over
// HTTP and counts what it asked for. A file whose mdat holds its samples back to
// back, interleaved finely, is read as Stream's are: the start, the moov, then the
// media in one pass; a file with holes between its chunks makes ffmpeg seek, and
// so open a new request, at every hole.
func TestMediaFFmpegRemuxRequests(t *testing.T) {
	ffmpeg := needTool(t, "ffmpeg")
	e := New(Options{})
	v := Video{UID: uidLong, Duration: 600, Size: 24 << 20, Layout: MoovAtEnd, ReadyToStream: true}
	e.AddVideo(v)
	e.SetDownloadReady(uidLong, Default)
	log := &rangeLog{m: map[string][]string{}}
	srv := httptest.NewServer(log.wrap(e.Handler()))
	t.Cleanup(srv.Close)
	path := "/" + uidLong + "/downloads/default.mp4"
	f, err := OpenFile(v, Default)
	if err != nil {
		t.Fatal(err)
	}

	out := t.TempDir() + "/out.mp4"
	var stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), ffmpeg, "-nostdin", "-v", "error", "-i", srv.URL+path, "-c", "copy", "-f", "mp4", out)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, stderr.Bytes())
	}
	if stderr.Len() > 0 {
		t.Errorf("ffmpeg reported errors: %s", stderr.Bytes())
	}
	ranges := log.get(path)
	sent := e.Stats(uidLong, Default).Bytes
	t.Logf("%d requests, %d bytes sent for a %d-byte file; first ranges %q", len(ranges), sent, f.Size(), ranges[:min(len(ranges), 8)])
	if len(ranges) > 6 {
		t.Errorf("ffmpeg made %d requests, want at most 6", len(ranges))
	}
	if sent > f.Size()*3/2 {
		t.Errorf("ffmpeg was sent %d bytes, more than 1.5 times the file's %d", sent, f.Size())
	}
}

// TestMediaPaddingDecodes decodes, with ffmpeg over HTTP, files grown to their
// size by padding and the same media without padding: every decoded video frame
// and audio frame must be the same, so the padding is skipped by the decoder and
// changes nothing it shows or plays.
func TestMediaPaddingDecodes(t *testing.T) {
	ffmpeg := needTool(t, "ffmpeg")
	e := New(Options{})
	srv := httptest.NewServer(e.Handler())
	t.Cleanup(srv.Close)
	for i, tc := range []struct {
		name   string
		typ    DownloadType
		layout Layout
		dur    float64
		size   int64
	}{
		{"default", Default, MoovAtEnd, 30, 2 << 20},
		{"default just over the media", Default, FastStart, 30, 459000},
		{"audio", Audio, MoovAtEnd, 30, 128 << 10},
		{"audio partial period", Audio, FastStart, 7.5, 64 << 10},
		{"audio frames of many fill elements", Audio, MoovAtEnd, 7.5, 400 << 10},
		{"audio just over the media", Audio, FastStart, 30, 66800},
	} {
		t.Run(tc.name, func(t *testing.T) {
			decode := func(uid string, size int64) (string, *File) {
				t.Helper()
				v := Video{UID: uid, Duration: tc.dur, Size: size, AudioSize: size, Layout: tc.layout, ReadyToStream: true}
				e.AddVideo(v)
				e.SetDownloadReady(uid, tc.typ)
				f, err := OpenFile(v, tc.typ)
				if err != nil {
					t.Fatal(err)
				}
				var stdout, stderr bytes.Buffer
				cmd := exec.CommandContext(t.Context(), ffmpeg, "-nostdin", "-v", "error",
					"-i", srv.URL+"/"+uid+"/downloads/"+tc.typ.file(), "-map", "0", "-f", "framemd5", "-")
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if err := cmd.Run(); err != nil || stderr.Len() > 0 {
					t.Fatalf("ffmpeg: %v: %s", err, stderr.Bytes())
				}
				return stdout.String(), f
			}
			plain, pf := decode(fmt.Sprintf("%032x", 2*i+0x100), 1)
			padded, f := decode(fmt.Sprintf("%032x", 2*i+0x101), tc.size)
			if d := math.Abs(float64(f.Size()-tc.size)) / float64(tc.size); d > 0.01 {
				t.Errorf("size %d, want within 1%% of %d", f.Size(), tc.size)
			}
			if f.Size() <= pf.Size() {
				t.Fatalf("padded file of %d bytes, unpadded %d: nothing padded", f.Size(), pf.Size())
			}
			if strings.Count(plain, "\n") < 100 {
				t.Fatalf("decoded only:\n%s", plain)
			}
			if plain != padded {
				t.Errorf("the padded file decodes differently from the plain one")
				pl, pd := strings.Split(plain, "\n"), strings.Split(padded, "\n")
				for k := range min(len(pl), len(pd)) {
					if pl[k] != pd[k] {
						t.Fatalf("first difference, line %d:\nplain  %s\npadded %s", k, pl[k], pd[k])
					}
				}
			}
		})
	}
}
