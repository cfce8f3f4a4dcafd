package stream

import (
	"fmt"
	"net/url"
	"strings"
)

// DownloadType is one of the two kinds of download Stream generates.
type DownloadType string

const (
	// Default is the MP4 video download.
	Default DownloadType = "default"
	// Audio is the M4A audio-only download.
	Audio DownloadType = "audio"
)

// String is "default" or "audio".
func (t DownloadType) String() string { return string(t) }

// ParseDownloadType accepts "default" and "audio".
func ParseDownloadType(s string) (DownloadType, error) {
	switch DownloadType(s) {
	case Default, Audio:
		return DownloadType(s), nil
	}
	return "", fmt.Errorf("unknown download type %q (want default or audio)", s)
}

// TypeFromFile maps a delivery file name ("default.mp4", "audio.m4a") to its type.
func TypeFromFile(file string) (DownloadType, bool) {
	switch file {
	case "default.mp4":
		return Default, true
	case "audio.m4a":
		return Audio, true
	}
	return "", false
}

// File is the last path segment Stream serves the download under.
func (t DownloadType) File() string {
	if t == Audio {
		return "audio.m4a"
	}
	return "default.mp4"
}

// Ext is the extension Stream appends to a custom filename.
func (t DownloadType) Ext() string {
	if t == Audio {
		return ".m4a"
	}
	return ".mp4"
}

// ContentType is the media type of the download's body.
func (t DownloadType) ContentType() string {
	if t == Audio {
		return "audio/mp4"
	}
	return "video/mp4"
}

// MaxFilenameLen is the longest filename Stream accepts.
const MaxFilenameLen = 120

// CleanFilename checks a filename for the download of type t and returns it as
// it is forwarded to Stream, without extension. Stream's stated rule (1 to 120
// characters of A-Za-z0-9-_, the extension appended by Stream) excludes dots,
// while its own example passes ?filename=MY_VIDEO.mp4: so a trailing extension
// that is the type's own (".mp4" for Default, ".m4a" for Audio) is taken off
// first, and the rest must pass ValidFilename. Every other dot is refused.
func CleanFilename(name string, t DownloadType) (string, bool) {
	name = strings.TrimSuffix(name, t.Ext())
	if !ValidFilename(name) {
		return "", false
	}
	return name, true
}

// ValidFilename reports whether name passes Stream's filename rule: 1 to 120
// characters of A-Z, a-z, 0-9, '-' and '_'. Stream appends the extension itself,
// so a dot is refused rather than forwarded with unconfirmed behaviour; names
// that may carry the type's extension go through CleanFilename.
func ValidFilename(name string) bool {
	if len(name) == 0 || len(name) > MaxFilenameLen {
		return false
	}
	return URLSafe(name)
}

// URLSafe reports whether every byte of s is of the base64url alphabet (A-Z,
// a-z, 0-9, '-' and '_'): the characters of Stream's filenames, token parts and
// key IDs, and of anything else that may stand in a URL or a log unescaped.
// The empty string passes; callers bound the length.
func URLSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if !URLSafeByte(s[i]) {
			return false
		}
	}
	return true
}

// URLSafeByte reports whether c is of the base64url alphabet.
func URLSafeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// ValidUID reports whether uid looks like a Stream video UID: 32 lowercase hex
// characters.
func ValidUID(uid string) bool {
	if len(uid) != 32 {
		return false
	}
	for i := 0; i < len(uid); i++ {
		c := uid[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// DeliveryURL builds base/<tokenOrUID>/downloads/<file>, with ?filename= when name
// is not empty. base is the customer delivery origin, for example
// https://customer-CODE.cloudflarestream.com. filename goes through CleanFilename:
// its own extension is dropped, and an invalid one is an error, never forwarded.
func DeliveryURL(base, tokenOrUID string, t DownloadType, filename string) (string, error) {
	if tokenOrUID == "" || strings.ContainsAny(tokenOrUID, "/?#") {
		return "", fmt.Errorf("invalid token or uid")
	}
	if _, err := ParseDownloadType(string(t)); err != nil {
		return "", err
	}
	if filename != "" {
		clean, ok := CleanFilename(filename, t)
		if !ok {
			return "", fmt.Errorf("invalid filename: want 1 to %d characters of A-Za-z0-9-_, optionally ending in %s", MaxFilenameLen, t.Ext())
		}
		filename = clean
	}
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("invalid delivery base URL %q", base)
	}
	u.Path = u.Path + "/" + tokenOrUID + "/downloads/" + t.File()
	if filename != "" {
		u.RawQuery = url.Values{"filename": {filename}}.Encode()
	}
	return u.String(), nil
}

// DeliveryPath is the path part of DeliveryURL, for callers that rewrite a request
// in place.
func DeliveryPath(tokenOrUID string, t DownloadType) string {
	return "/" + tokenOrUID + "/downloads/" + t.File()
}
