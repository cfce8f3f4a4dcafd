// Package streamtest is a Cloudflare Stream emulator for tests, benchmarks and the
// demo: the account API (video details, downloads, signing keys, tokens) under
// /client/v4/accounts/{account}/stream/..., and the delivery host that serves MP4 and
// M4A downloads at /{UID or TOKEN}/downloads/{default.mp4|audio.m4a}.
//
// It verifies Stream tokens with its own code (golang-jwt's parser and the public
// key registered under the token's kid), never with the signer under test, and it
// counts what it delivers per video and download type so that metering can be
// checked against it. Bodies are deterministic (see Content) and cheap to produce,
// so files of hundreds of megabytes cost no memory. Faults (delays, error statuses,
// connections cut mid-body, bandwidth limits) can be injected per video.
//
// # Choices where Stream's documentation is silent
//
// Every behaviour below is the emulator's reading of something no public source
// settles. They are kept here, in one place, so that tests that depend on them can
// be found when Stream turns out to behave differently.
//
// API:
//   - A missing or wrong bearer token is 401 with error code 10000 "Authentication
//     error". A good token on another account is 403 with the same code.
//   - An unknown or malformed video UID is 404 with code 10005 "video not found". An
//     unknown signing key is 404 with code 10006 "signing key not found". A route that
//     does not exist is 404 with code 7003; a known route with the wrong method is 405
//     with code 7001.
//   - Enabling a download (default or audio) on a video with readyToStream false is
//     400 with code 10007 "video not ready to stream: downloads can be enabled only
//     once the video is ready".
//   - POST .../downloads, .../downloads/default and .../downloads/audio answer with
//     the object keyed by type holding only the type just enabled. Enabling a download
//     that exists already returns it unchanged (its progress is not restarted).
//     DELETE of a download that does not exist still answers "ok".
//   - A download's url uses Options.DeliveryBase (or SetDeliveryBase); when that is
//     empty, the scheme and Host of the API request, which is right when Handler
//     serves both halves on one origin.
//   - Downloads go from "inprogress" (percentComplete rising linearly from 0) to
//     "ready" (100) ReadyAfter after they were enabled, judged with Options.Now.
//   - POST /keys returns a private JWK (with d, p, q, dp, dq, qi) next to the PKCS#1
//     PEM, both base64 encoded, as the key is meant for signing. Key IDs are 32
//     lowercase hex characters. DELETE /keys/{id} answers "ok".
//   - GET /stream/{uid} reports status.state "ready" (pctComplete "100.000000") for a
//     video that is ready to stream, else "inprogress" ("50.000000").
//   - The API rate limit is off unless Options.RateLimit is set; past it the answer is
//     429 with Retry-After and code 971, until the 5-minute window ends.
//
// Delivery:
//   - Only GET and HEAD; other methods are 405. Paths other than
//     /{UID or TOKEN}/downloads/{default.mp4|audio.m4a} are 404.
//   - A filename query parameter that is present but fails stream.ValidFilename
//     (including an empty one) is 400, checked before anything else.
//   - 401 means "not authenticated": no token where the video requires signed URLs,
//     or a token that fails verification (malformed, algorithm other than RS256,
//     missing, unknown or revoked kid, a kid claim that differs from the header,
//     bad signature, exp missing or past, nbf in the future, exp more than 24 h
//     ahead, sub not a video UID, a malformed access rule or more than 5 of them).
//     403 means "authenticated but not allowed": a token without downloadable: true
//     for a private video, or access rules that block the connecting address.
//     Refusals carry a small JSON body {"error": "..."}.
//   - exp is required; exp and nbf are checked with Options.Leeway either side.
//   - A valid token also works for a public video; its access rules then apply, but
//     downloadable is not required.
//   - Access rules are judged against the address of the TCP peer (r.RemoteAddr, an
//     IPv4-mapped IPv6 address taken as IPv4); forwarding headers are ignored. A
//     country rule never matches an address the GeoIP database does not know. All
//     rules are checked for well-formedness before the first one is evaluated. An
//     ip.src entry written as an IPv4-mapped IPv6 address stays IPv6 and never
//     matches an IPv4 viewer.
//   - A known video whose download was not enabled, is not ready yet or failed is
//     404. A token whose sub names no known video is 404.
//   - Content-Disposition is always `attachment; filename="NAME.EXT"`, NAME being the
//     filename parameter or, without one, the video UID.
//   - Ranges: one range (including suffix and open-ended ranges) is 206; a request
//     with several ranges is answered in full with 200, as Cloudflare's edge does not
//     serve multipart ranges. If-Range takes the strong ETag or Last-Modified (the
//     video's creation time).
//   - A fault's Delay and Status apply after authorization, so refused requests stay
//     refused; ResetAfter flushes exactly N body bytes and then closes the TCP
//     connection without finishing the response.
//
// Counting (Stats):
//   - Requests counts every authorized delivery request, whatever came next (200, 206,
//     304, 404 not ready, 416, an injected fault status, HEAD). Refused counts the 401
//     and 403 answers.
//   - Bytes counts the file bytes of 200 and 206 bodies the server wrote to the
//     connection (counted just before each write, what the write did not take
//     taken back, so a client that has its bytes finds them counted), so a client
//     that goes away midway counts roughly what it received (plus what was in
//     flight in socket buffers). Error texts (a 416's, a fault's) are not counted.
//   - DownloadMinutes follows the seed's per-download rule: each GET answered 200, or
//     206 with a range starting at byte 0, bills the video's full duration/60, however
//     many bytes are then delivered. HEAD never bills.
//   - ProportionalMinutes follows Stream's pricing page: duration/60 × bytes delivered
//     / file size, summed over responses, so overlapping ranges pay again.
//   - A video with an unknown duration (-1) adds no minutes.
package streamtest
