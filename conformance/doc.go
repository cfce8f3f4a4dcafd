// Package conformance is the client conformance suite of streamgate's metering:
// it drives the real `streamgate serve` binary with the download clients people
// use (curl, wget, aria2c, ffprobe, ffmpeg, Chromium's <video>, a Safari-style
// probe, a client that stalls and leaves), in both metering modes, on the
// authenticated route and on link URLs, and checks that each download is billed
// as the billing model says, whatever way the client split it into requests.
//
// The package holds only tests. `go test ./conformance` builds the binary once,
// runs a Stream emulator (package streamtest) in the test process on a loopback
// socket, and per metering mode one gateway process with its own SQLite ledger.
// Every scenario uses a user and a video of its own, so that scenarios that run
// at the same time cannot see each other's downloads. After a client is done,
// the scenario waits until the user has nothing reserved any more, then checks:
//
//   - per-download: the user was billed exactly one duration;
//   - proportional: a client that ended with the whole file (checked byte for
//     byte against the emulator's file) was billed 1.00 duration within 1%; a
//     client that left early was billed at most what it received (its local
//     file, the bytes it read, or at most what the emulator sent once) plus 1%
//     of the file; a client that read nothing at most 1% of the file.
//
// Across all scenarios of a mode, the ledger's Stream minutes (the usage
// report's stream_minutes) must agree with the emulator's own count within
// 0.1%. A table of every scenario (client, route, mode, requests the emulator
// saw, billed minutes, Stream minutes, expected) is logged per mode.
//
// TestReplicas runs two gateways on one PostgreSQL ledger behind a round-robin
// TCP front and checks that one `aria2c -x8` download whose connections went to
// both is billed once. It needs STREAMGATE_TEST_POSTGRES and skips without it.
//
// Videos are real MP4 files from the emulator (moov first, or last where the
// issue names it), so Chromium and ffmpeg play and remux them as they would a
// Stream download; ffmpeg's copy is checked packet by packet.
//
// Clients come from Debian (curl, wget, aria2, ffmpeg, chromium); a scenario
// whose client is not installed is skipped with the package to install. .ci/run
// installs them.
package conformance
