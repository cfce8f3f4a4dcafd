package streamtest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os/exec"
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
// own parser: box order per layout, durations, sample tables that point into mdat
// at the clip's sample bytes, and the size asked for.
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
			for _, b := range kids {
				if b.typ == "trak" {
					tr, err := parseTrack(file, b)
					if err != nil {
						t.Fatalf("trak: %v", err)
					}
					traks = append(traks, tr)
					checkTrack(t, file, b, mdatStart, mdatEnd)
				}
			}
			wantTracks := []*clipTrack{clip.video, clip.audio}
			if tc.audio {
				wantTracks = wantTracks[1:]
			}
			if len(traks) != len(wantTracks) {
				t.Fatalf("%d tracks, want %d", len(traks), len(wantTracks))
			}
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
				// Sample i of the file is sample i mod n of the clip, byte for byte.
				n := len(w.sizes)
				var off, clipOff int
				for j, s := range tr.sizes {
					if j%n == 0 {
						clipOff = 0
					}
					if s != w.sizes[j%n] || !bytes.Equal(tr.data[off:off+int(s)], w.data[clipOff:clipOff+int(s)]) {
						t.Fatalf("%s sample %d differs from clip sample %d", tr.handler, j, j%n)
					}
					if w.sync != nil && tr.sync[j] != w.sync[j%n] {
						t.Fatalf("%s sample %d: sync %v, clip's %v", tr.handler, j, tr.sync[j], w.sync[j%n])
					}
					off += int(s)
					clipOff += int(s)
				}
				if tr.mediaTime != w.mediaTime {
					t.Errorf("%s edit list media time %d, want the clip's %d", tr.handler, tr.mediaTime, w.mediaTime)
				}
			}
		})
	}
}

// checkTrack checks that every chunk offset of trak lies in mdat's payload and
// that the chunks are in increasing order.
func checkTrack(t *testing.T, file []byte, trak mp4Box, mdatStart, mdatEnd int64) {
	t.Helper()
	for _, typ := range []string{"stco", "co64"} {
		b, err := boxPath(mustParse(t, trak.data), "mdia", "minf", "stbl", typ)
		if err != nil {
			continue
		}
		r := newFullBox(b)
		n := r.u32()
		last := int64(-1)
		for range n {
			var off int64
			if typ == "stco" {
				off = int64(r.u32())
			} else {
				off = int64(r.u64())
			}
			if off < mdatStart || off >= mdatEnd {
				t.Fatalf("chunk offset %d outside mdat [%d, %d)", off, mdatStart, mdatEnd)
			}
			if off <= last {
				t.Fatalf("chunk offset %d after %d", off, last)
			}
			last = off
		}
		return
	}
	t.Fatal("no chunk offsets")
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
			var last uint64
			for range n {
				last = r.u64()
			}
			if last <= math.MaxUint32 || int64(last) >= mdatEnd {
				t.Fatalf("last chunk at %d: want past 4 GiB, before the mdat's end %d", last, mdatEnd)
			}
			// The last video chunk starts with the clip's first sample, an IDR picture.
			first := make([]byte, clip.video.sizes[0])
			if _, err := f.ReadAt(first, int64(last)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(first, clip.video.data[:len(first)]) {
				t.Error("the last chunk does not hold the clip's first sample")
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

	// The gap after the first period's chunks is the synthetic content at its offset.
	gapAt := int64(len(f.plan.head))
	for _, tp := range f.plan.tracks {
		gapAt += tp.fullBytes
	}
	if f.plan.gap < 100 || !bytes.Equal(whole[gapAt:gapAt+100], Content(uidShort, Default, gapAt, 100)) {
		t.Errorf("gap of %d bytes at %d is not the synthetic content", f.plan.gap, gapAt)
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
	res, body = get("Range", "bytes=100-199", "If-Range", f.ETag())
	if res.StatusCode != 206 || !bytes.Equal(body, whole[100:200]) {
		t.Errorf("If-Range with the ETag: %d", res.StatusCode)
	}
	res, _ = get("Range", "bytes=100-199", "If-Range", `"stale"`)
	if res.StatusCode != 200 {
		t.Errorf("If-Range with another ETag: %d, want 200", res.StatusCode)
	}
	s := e.Stats(uidPublic, Default)
	if want := 2*f.Size() + 1100; s.Bytes != want {
		t.Errorf("Bytes %d, want %d", s.Bytes, want)
	}
	if want := float64(2*f.Size()+1100) / float64(f.Size()); math.Abs(s.ProportionalMinutes-want) > 1e-9 {
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
	f, err := OpenFile(Video{UID: uidLong, Duration: 1800, Size: 48 << 20, Layout: MoovAtEnd}, Default)
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
}
