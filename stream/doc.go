// Package stream speaks Cloudflare Stream: it mints signed delivery tokens with a
// Stream signing key, builds delivery URLs for MP4 and M4A downloads, checks video
// UIDs and download filenames the way Stream does, and drives the Stream API
// (video details, downloads, signing keys) through cloudflare-go.
package stream
