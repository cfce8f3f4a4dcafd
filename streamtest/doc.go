// Package streamtest is a Cloudflare Stream emulator for tests, benchmarks and the
// demo: the account API (video details, downloads, signing keys, tokens) under
// /client/v4/accounts/{account}/stream/..., and the delivery host that serves MP4 and
// M4A downloads at /{UID or TOKEN}/downloads/{default.mp4|audio.m4a}.
//
// It verifies Stream tokens with its own code (golang-jwt's parser and the public
// key registered under the token's kid), never with the signer under test, and it
// carries its own copy of Stream's rules (UIDs, filenames, countries, token
// lifetime, access rules), written from Cloudflare's documentation: it never
// imports the gateway's stream package, so a mistake there is caught here, not
// mirrored. Its methods take a TypeName, so tests may pass DownloadType or
// stream.DownloadType. It counts what it delivers per video and download type so
// that metering can be checked against it. Delivered is, in the emulator's
// reading of Stream's "percentage of the file delivered", what the receiver's TCP
// acknowledged: served through [Server] and [Listen] (or [NewServer]), a body cut
// short counts only the bytes that reached the receiver's socket, not those left
// in the emulator's send buffer; served otherwise, it counts the bytes written. Bodies are deterministic and cheap to
// produce, so files of hundreds of megabytes cost no memory. Faults (delays, error
// statuses, connections cut mid-body, bandwidth limits) can be injected per video.
//
// # Media
//
// Video.Layout chooses what a video's files hold. Synthetic, the default, is
// pseudo-random bytes of exactly Size (see Content): no media, for tests of bytes
// and for benchmarks at any size. FastStart and MoovAtEnd are real files that
// ffprobe, ffmpeg and browsers read as they read Stream's: default.mp4 is H.264
// Constrained Baseline (320x180, 25 fps) with mono AAC-LC audio, audio.m4a the AAC
// track alone, each lasting Duration seconds (rounded up to a 40 ms video frame; an
// unknown duration gives one 3.2 s clip; at most 24 hours). FastStart puts the moov
// box before the media data (ftyp, moov, free, mdat), MoovAtEnd after it (ftyp,
// free, mdat, moov), so that clients read the end of the file before playing it.
//
// A real file repeats the samples of a 3.2 s clip embedded in the package
// (testdata/clip.mp4, made once with ffmpeg; nothing calls ffmpeg at run time): its
// sample tables, durations and chunk offsets are written for the whole length
// (co64 and a 64-bit mdat size past 4 GiB). Its media runs at about 120 kbit/s
// (audio.m4a about 17 kbit/s); to reach Size (or the audio size) the samples grow
// by padding that decoders skip (an H.264 filler NAL unit after each video sample;
// AAC fill elements in each frame of audio.m4a), stored back to back and
// interleaved every 0.4 s as a muxer writes them, and a small free box takes the
// remainder, so the file has exactly the size asked for whenever that is larger
// than the media itself (else the media's size), and its bytes stay spread over its
// duration as a real file's are: a player that stops halfway or seeks to the middle
// reads about half the file, or its middle. Only the moov is kept in memory, per
// type, layout, size and duration; the media bytes are read from the clip by offset.
// OpenFile returns a file as the emulator serves it, with its size and ETag; the
// ETag differs between layouts, sizes and durations of one video.
//
// # Statuses and error codes
//
// Every status and error code the emulator answers with, in one table. A row
// marked documented names where; a row marked invented is the emulator's reading,
// chosen to be safe, and is where to look first when Stream turns out to differ.
//
//	code   status  when                                   source
//	10000  401     missing or wrong API bearer token       invented (the 401 is documented; the code is the one api.cloudflare.com is seen to send)
//	10000  403     good token, another account             invented
//	10005  404     unknown or malformed video UID          invented (the 404 is documented for a missing video: Workers binding, NotFound)
//	10006  404     unknown signing key (DELETE /keys/{id}) invented
//	10007  400     enabling a download, video not ready    invented (documented: "once it is ready to view", Download video or audio; the refusal itself is not)
//	10008  400     malformed /token body, bad accessRules  invented
//	10009  404     GET downloads, none enabled (switch)    documented: Workers binding downloads.get() NotFound, "video or downloads not found"; the code is invented
//	10010  404     GET /webhook with no subscription       invented
//	971    429     API rate limit, with Retry-After        invented (the 429, Retry-After and five minutes are documented: Cloudflare API rate limits)
//	7003   404     route that does not exist               invented
//	7001   405     known route, wrong method               invented
//	-      200     GET downloads, none enabled (default)   documented: REST reference, result keyed by type, a type present once created
//	-      200     DELETE /keys/{id} answers "Revoked"     documented: REST reference, Delete signing keys
//	-      200     DELETE downloads answers "ok"           invented (the SDK reads a string result)
//	-      400     delivery: bad filename parameter        invented (the character rule is documented; the refusal is not)
//	-      401     delivery: no or failed token            invented
//	-      403     delivery: not downloadable, rule blocks invented
//	-      404     delivery: download not enabled/ready    invented
//	-      405     delivery: method other than GET, HEAD   invented
//
// # Choices where Stream's documentation is silent
//
// Every behaviour below is the emulator's reading of something no public source
// settles, or settles two ways. They are kept here, in one place, so that tests
// that depend on them can be found when Stream turns out to behave differently.
//
// API:
//   - Authentication comes before routing; a good token on another account is 403.
//   - GET .../downloads of a known video with nothing enabled answers {} by
//     default, or 404 code 10009 with Options.NoDownloads (SetNoDownloads) set to
//     NoDownloadsNotFound: Cloudflare documents both, and the gateway must
//     handle either.
//   - POST .../downloads, .../downloads/default and .../downloads/audio answer with
//     every download of the video, keyed by type, as GET does ("the response for
//     creating and fetching downloads are the same"). Enabling a download that
//     exists already returns it unchanged (its progress is not restarted).
//     DELETE of a download that does not exist still answers "ok".
//   - A download's url uses Options.DeliveryBase (or SetDeliveryBase); when that is
//     empty, the scheme and Host of the API request, which is right when Handler
//     serves both halves on one origin.
//   - Downloads go from "inprogress" (percentComplete rising linearly from 0) to
//     "ready" (100) ReadyAfter after they were enabled, judged with Options.Now.
//   - POST /keys returns a private JWK (with d, p, q, dp, dq, qi) next to the PKCS#1
//     PEM, both base64 encoded, as the key is meant for signing. Key IDs are 32
//     lowercase hex characters.
//   - POST /{uid}/token without id and pem signs with the account's own key,
//     made on first use. It verifies tokens like any key but is not one of the
//     account's signing keys: GET /keys does not list it, DELETE /keys/{id} does
//     not know it. accessRules are checked exactly as delivery checks them (see
//     below), so /token never hands out a token that delivery refuses; exp more
//     than 24 h ahead is refused too. exp and nbf are JSON integers, as the REST
//     reference gives them.
//   - GET /stream/{uid} reports status.state "ready" (pctComplete "100.000000") for a
//     video that is ready to stream, else "inprogress" ("50.000000"). A Duration of
//     -1 is sent as -1, Stream's "not known yet".
//   - The API rate limit is off unless Options.RateLimit is set; past it the answer is
//     429 with Retry-After until the 5-minute window ends.
//   - Webhooks: PUT /stream/webhook {"notificationUrl"} (http:// or https://, else
//     400 code 10008) answers {notificationUrl, modified, secret}, the secret 32
//     lowercase hex characters as documented; a later PUT keeps the secret. A
//     video that becomes ready to stream (AddVideo) is posted once to the
//     subscribed URL: its details as GET /stream/{uid} gives them, signed with
//     Webhook-Signature: time=T,sig1=hex(HMAC-SHA256(secret, "T." + body))
//     (documented: Use webhooks), T from Options.Now. No retries; no webhook for
//     a video that fails, as the emulator has no failing videos.
//
// Delivery:
//   - Only GET and HEAD; other methods are 405. Paths other than
//     /{UID or TOKEN}/downloads/{default.mp4|audio.m4a} are 404.
//   - filename: 1 to 120 characters of A-Za-z0-9-_, the documented rule. The
//     documentation's own example is ?filename=MY_VIDEO.mp4, so a trailing
//     extension that is the download's own (.mp4 on default.mp4, .m4a on
//     audio.m4a) is taken off before the rule is applied, and the limit counts
//     the name without it. Any other dot, an empty name or another character is
//     400, checked before anything else.
//   - 401 means "not authenticated": no token where the video requires signed URLs,
//     or a token that fails verification (malformed, algorithm other than RS256,
//     missing, unknown or revoked kid, a kid claim that differs from the header,
//     bad signature, exp missing or past, nbf in the future, exp more than 24 h
//     ahead, sub missing or not a video UID, a malformed access rule or more than
//     5 of them). 403 means "authenticated but not allowed": a token without
//     downloadable: true for a private video, or access rules that block the
//     connecting address. Refusals carry a small JSON body {"error": "..."}.
//   - A token without sub is refused: the token stands where the video UID would
//     be, so sub is the only thing naming the video. The kid claim may be left
//     out (the header's kid is the one that counts); when present it must match.
//   - exp is required; exp and nbf may be JSON numbers or strings holding one
//     (Cloudflare's examples show both), and are checked with Options.Leeway
//     either side.
//   - An access rule's fields that do not belong to its type (a country list on
//     an ip.src or any rule, an ip list on a country rule) and unknown fields are
//     ignored; the fields its type needs must be there and well formed.
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
//     filename parameter (without its extension) or, without one, the video UID.
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
