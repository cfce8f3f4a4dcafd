package stream

import (
	"strings"
	"testing"
)

func TestValidFilename(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"MY_VIDEO", true},
		{"a", true},
		{"Lecture-01_final", true},
		{strings.Repeat("x", 120), true},
		{strings.Repeat("x", 121), false},
		{"", false},
		{"video.mp4", false},
		{"my video", false},
		{"../etc", false},
		{"naïve", false},
		{"a/b", false},
		{"a%20b", false},
	} {
		if got := ValidFilename(tc.name); got != tc.want {
			t.Errorf("ValidFilename(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestValidUID(t *testing.T) {
	for _, tc := range []struct {
		uid  string
		want bool
	}{
		{"0123456789abcdef0123456789abcdef", true},
		{"0123456789ABCDEF0123456789abcdef", false},
		{"0123456789abcdef0123456789abcde", false},
		{"0123456789abcdef0123456789abcdef0", false},
		{"0123456789abcdef0123456789abcdeg", false},
		{"", false},
	} {
		if got := ValidUID(tc.uid); got != tc.want {
			t.Errorf("ValidUID(%q) = %v, want %v", tc.uid, got, tc.want)
		}
	}
}

func TestDeliveryURL(t *testing.T) {
	const base = "https://customer-abc.cloudflarestream.com"
	for _, tc := range []struct {
		name, base, tok string
		typ             DownloadType
		filename        string
		want            string
		wantErr         bool
	}{
		{name: "mp4", base: base, tok: uid, typ: Default, want: base + "/" + uid + "/downloads/default.mp4"},
		{name: "m4a named", base: base + "/", tok: "eyJ.a.b", typ: Audio, filename: "Talk_1", want: base + "/eyJ.a.b/downloads/audio.m4a?filename=Talk_1"},
		{name: "bad filename", base: base, tok: uid, typ: Default, filename: "a.b", wantErr: true},
		{name: "filename with its extension", base: base, tok: uid, typ: Default, filename: "MY_VIDEO.mp4", want: base + "/" + uid + "/downloads/default.mp4?filename=MY_VIDEO"},
		{name: "filename with the other extension", base: base, tok: uid, typ: Default, filename: "a.m4a", wantErr: true},
		{name: "bad type", base: base, tok: uid, typ: "hls", wantErr: true},
		{name: "slash in token", base: base, tok: "a/b", typ: Default, wantErr: true},
		{name: "relative base", base: "customer.example", tok: uid, typ: Default, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DeliveryURL(tc.base, tc.tok, tc.typ, tc.filename)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func FuzzValidFilename(f *testing.F) {
	for _, s := range []string{"MY_VIDEO", "", "a.b", strings.Repeat("z", 121)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidFilename(s) {
			return
		}
		u, err := DeliveryURL("https://d.example", uid, Default, s)
		if err != nil {
			t.Fatalf("valid filename %q refused: %v", s, err)
		}
		if !strings.HasSuffix(u, "?filename="+s) {
			t.Fatalf("filename %q needed escaping: %s", s, u)
		}
	})
}

func TestCleanFilename(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  DownloadType
		want string
		ok   bool
	}{
		{"MY_VIDEO", Default, "MY_VIDEO", true},
		{"MY_VIDEO.mp4", Default, "MY_VIDEO", true},
		{"Talk-1.m4a", Audio, "Talk-1", true},
		{"Talk-1.mp4", Audio, "", false},
		{"MY_VIDEO.m4a", Default, "", false},
		{"a.b", Default, "", false},
		{"a.b.mp4", Default, "", false},
		{"a.mp4.mp4", Default, "", false},
		{".mp4", Default, "", false},
		{"MY_VIDEO.MP4", Default, "", false},
		{"", Default, "", false},
		{strings.Repeat("x", 120) + ".mp4", Default, strings.Repeat("x", 120), true},
		{strings.Repeat("x", 121), Default, "", false},
	} {
		got, ok := CleanFilename(tc.name, tc.typ)
		if got != tc.want || ok != tc.ok {
			t.Errorf("CleanFilename(%q, %s) = %q, %v; want %q, %v", tc.name, tc.typ, got, ok, tc.want, tc.ok)
		}
	}
}
