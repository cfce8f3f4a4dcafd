package streamtest

import (
	"fmt"
	"strings"
	"time"
)

// Stream's rules as the emulator reads them from Cloudflare's documentation. They
// are deliberately written here rather than taken from the gateway's stream
// package: the emulator is the other side of every test, and a mistake in the
// signer's copy must show up as a refusal here, not be mirrored.

// DownloadType is one of the two downloads Stream generates for a video.
type DownloadType string

const (
	// Default is the MP4 video download, served as default.mp4.
	Default DownloadType = "default"
	// Audio is the M4A audio-only download, served as audio.m4a.
	Audio DownloadType = "audio"
)

// String is "default" or "audio"; it makes DownloadType a TypeName.
func (t DownloadType) String() string { return string(t) }

// TypeName names a download type by its String, "default" or "audio". The
// emulator's methods take a TypeName so that tests may pass DownloadType or the
// gateway's own stream.DownloadType, while streamtest never imports the package
// it is there to check.
type TypeName interface{ String() string }

// typeOf maps a TypeName to the emulator's DownloadType. Anything but "default"
// and "audio" is a mistake in the calling test, and panics.
func typeOf(t TypeName) DownloadType {
	if t == nil {
		panic("streamtest: nil download type")
	}
	switch d := DownloadType(t.String()); d {
	case Default, Audio:
		return d
	}
	panic(fmt.Sprintf("streamtest: unknown download type %q (want default or audio)", t.String()))
}

// file is the last path segment the download is served under.
func (t DownloadType) file() string {
	if t == Audio {
		return "audio.m4a"
	}
	return "default.mp4"
}

// ext is the extension Stream appends to a custom filename.
func (t DownloadType) ext() string {
	if t == Audio {
		return ".m4a"
	}
	return ".mp4"
}

// contentType is the media type of the download's body.
func (t DownloadType) contentType() string {
	if t == Audio {
		return "audio/mp4"
	}
	return "video/mp4"
}

// typeFromFile maps "default.mp4" and "audio.m4a" to their type.
func typeFromFile(file string) (DownloadType, bool) {
	for _, t := range []DownloadType{Default, Audio} {
		if file == t.file() {
			return t, true
		}
	}
	return "", false
}

// deliveryPath is where the delivery host serves the download of type t.
func deliveryPath(uidOrToken string, t DownloadType) string {
	return "/" + uidOrToken + "/downloads/" + t.file()
}

// Documented limits ("Download video or audio"; "Secure your Stream").
const (
	// maxFilename is the longest filename parameter.
	maxFilename = 120
	// maxTokenLifetime is how far past signing a token may expire.
	maxTokenLifetime = 24 * time.Hour
	// maxAccessRules is the most rules one token may carry.
	maxAccessRules = 5
)

// isUID reports whether s is a video UID: 32 lowercase hex characters.
func isUID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// isCountry reports whether c is an ISO 3166-1 alpha-2 code as Stream writes
// them: two uppercase letters.
func isCountry(c string) bool {
	return len(c) == 2 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z'
}

// filenameBase checks a filename parameter for the download of type t and returns
// the name without extension. The documentation's rule is 1 to 120 characters of
// A-Za-z0-9-_ with the extension appended by Stream, while its own example passes
// MY_VIDEO.mp4: a trailing extension that is the type's own is taken off before
// the rule is applied; any other dot is refused.
func filenameBase(name string, t DownloadType) (string, bool) {
	name = strings.TrimSuffix(name, t.ext())
	if len(name) == 0 || len(name) > maxFilename {
		return "", false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", false
		}
	}
	return name, true
}
