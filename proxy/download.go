package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/streamgate/streamgate/acked"
	"github.com/streamgate/streamgate/auth"
	"github.com/streamgate/streamgate/billing"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/usage"
)

// download is one request to fetch a video's file, after the route has worked out
// who is asking and what for.
type download struct {
	id       auth.Identity
	video    string
	typ      stream.DownloadType
	filename string
	session  string // the grant's session, "" on the authenticated route
}

// handleAuthDownload serves GET|HEAD /v1/videos/{uid}/downloads/{file}.
func (s *Server) handleAuthDownload(w http.ResponseWriter, r *http.Request) error {
	dl, err := parseDownload(r.PathValue("uid"), r.PathValue("file"), r.URL.Query())
	if err != nil {
		return err
	}
	id, err := s.authenticate(r)
	if err != nil {
		return err
	}
	dl.id = id
	return s.serveDownload(w, r, dl)
}

// handleLinkDownload serves GET|HEAD /dl/{grant}/{file}: the grant is the only
// credential.
func (s *Server) handleLinkDownload(w http.ResponseWriter, r *http.Request) error {
	typ, ok := stream.TypeFromFile(r.PathValue("file"))
	if !ok {
		return errBadType()
	}
	g, err := s.Grants.Verify(r.PathValue("grant"))
	if err != nil {
		return s.authFailed(r, err)
	}
	if !g.Allows(g.Video, typ) {
		return s.authFailed(r, errors.New("grant is for another download type"))
	}
	// The grant fixed the filename; the query may repeat it but not change it.
	if q := r.URL.Query(); q.Has("filename") && q.Get("filename") != g.Filename {
		return badRequest("bad_filename", "the filename does not match the link")
	}
	if !g.AllowsIP(clientIP(r)) {
		return forbidden("link_address", "this link is bound to another client address", nil)
	}
	return s.serveDownload(w, r, download{
		id:       g.Identity(),
		video:    g.Video,
		typ:      typ,
		filename: g.Filename,
		session:  g.Session,
	})
}

// allow spends a token of the user's bucket l (nil: no limit); what, in the
// refusal, says what was limited.
func allow(w http.ResponseWriter, l RateLimiter, user, what string) error {
	if l == nil {
		return nil
	}
	res := l.Allow(user)
	if res.Allowed {
		return nil
	}
	res.SetHeaders(w.Header())
	return tooMany("rate_limited", "too many "+what+"; retry later", nil, nil)
}

// videoCaller checks the route's video ID, then the portal credential.
func (s *Server) videoCaller(r *http.Request) (auth.Identity, string, error) {
	uid := r.PathValue("uid")
	if !stream.ValidUID(uid) {
		return auth.Identity{}, "", errBadVideo()
	}
	id, err := s.authenticate(r)
	if err != nil {
		return auth.Identity{}, "", err
	}
	infoFrom(r.Context()).video = uid
	return id, uid, nil
}

func parseDownload(uid, file string, q map[string][]string) (download, error) {
	if !stream.ValidUID(uid) {
		return download{}, errBadVideo()
	}
	typ, ok := stream.TypeFromFile(file)
	if !ok {
		return download{}, errBadType()
	}
	var name string
	if v, ok := q["filename"]; ok {
		// Cloudflare's own example names the file with its extension: a
		// trailing extension of the type is taken off; any other dot is refused.
		if len(v) != 1 {
			return download{}, errBadFilename()
		}
		if name, ok = stream.CleanFilename(v[0], typ); !ok {
			return download{}, errBadFilename()
		}
	}
	return download{video: uid, typ: typ, filename: name}, nil
}

// serveDownload applies policy, reserves quota, mints the Stream token and proxies.
func (s *Server) serveDownload(w http.ResponseWriter, r *http.Request, dl download) error {
	ctx := r.Context()
	ri := infoFrom(ctx)
	ri.user, ri.video = dl.id.UserID, dl.video
	planName, plan := s.plan(dl.id.Plan)

	ip := clientIP(r)
	country, err := s.checkCountry(ctx, ip, planName)
	if err != nil {
		return err
	}
	if err := allow(w, plan.Downloads, dl.id.UserID, "downloads started"); err != nil {
		return err
	}
	release, ok := s.slots.acquire(dl.id.UserID, dl.video, dl.typ, addrString(ip), plan.MaxConcurrent)
	if !ok {
		e := tooMany("too_many_downloads", "too many downloads in progress; retry when one ends", retryAfter(0), nil)
		e.Extra = map[string]any{"max_concurrent": plan.MaxConcurrent}
		return e
	}
	defer release()
	pace, unpace := s.pace.acquire(dl.id.UserID, plan.MaxBytesPerSecond)
	defer unpace()

	info, err := s.videoReady(ctx, dl.video, dl.typ)
	if err != nil {
		return err
	}

	var dv delivery
	switch {
	case r.Method == http.MethodHead && s.Links != nil:
		// A HEAD opens no delivery, so the ledger has not checked its link.
		if err := s.Links.CheckLink(ctx, dl.id.UserID, dl.video, linkOf(dl.id)); err != nil {
			return s.startRefused(err, dl.id)
		}
	case r.Method != http.MethodHead:
		rg := meterRange(r.Header)
		d, err := s.Meter.Start(ctx, usage.StartRequest{
			User:         dl.id.UserID,
			Plan:         planName,
			LimitMinutes: plan.MinutesPerMonth,
			Video:        dl.video,
			Type:         dl.typ,
			Duration:     info.Video.Duration,
			Range:        rg,
			Link:         linkOf(dl.id),
			Country:      country,
			ClientIP:     addrString(ip),
			RequestID:    ri.id,
		})
		if err != nil {
			return s.startRefused(err, dl.id)
		}
		dv = d
	}

	tok, err := s.tokens.token(dl.video, s.cfg.EgressRules)
	if err != nil {
		if dv != nil {
			dv.Abort("mint_failed")
		}
		return internal(err)
	}

	up := &upstream{path: stream.DeliveryPath(tok, dl.typ), filename: dl.filename, delivery: dv}
	dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: s.cfg.WriteIdleTimeout}
	// The deadline must not outlive this response: the connection may serve
	// another request later.
	defer dw.clear()
	rw := http.ResponseWriter(dw)
	var mw *meteredWriter
	if dv != nil {
		mw = &meteredWriter{ResponseWriter: rw, d: dv, pace: pace, ctx: ctx}
		rw = mw
		// What the client received is what its TCP acknowledged, not what was
		// handed to the kernel (package acked); on HTTP/2, what was written.
		dv.Count(func() usage.Progress {
			written := mw.written.Load()
			n, src := acked.ForRequest(r, written)
			return usage.Progress{Acked: n, Written: written, StreamBytes: up.read.Load(), Source: string(src)}
		})
	}
	finished := false
	defer func() {
		if dv == nil {
			return
		}
		var outcome usage.Outcome
		switch {
		case !up.headersOK:
			dv.Abort(up.failure())
			return
		case finished:
			outcome = usage.Complete
		case errors.Is(context.Cause(ctx), ErrShutdown):
			outcome = usage.Shutdown
		case mw.fenced:
			outcome = usage.Fenced
		case ctx.Err() != nil, mw.clientGone:
			outcome = usage.ClientGone
		default:
			outcome = usage.UpstreamFailed
		}
		// The body is written; its tail may still be on its way. Wait while the
		// client keeps acknowledging, so a complete download is billed complete.
		// A body stopped early, or a tail the client stopped taking, is cut:
		// the delivery settles on what the client was sent, and the kernel must
		// not go on sending the rest of its queue to a slow reader afterwards.
		if outcome != usage.Complete || !s.awaitAcked(r, mw) {
			acked.CutRequest(r)
		}
		_, _ = dv.Finish(outcome)
	}()
	s.rp.ServeHTTP(rw, r.WithContext(context.WithValue(ctx, upstreamKey, up)))
	if up.body != nil {
		// Closed before the settlement above runs: closing an abandoned body
		// counts what Stream had delivered into its socket.
		defer up.body.Close()
		ackedBytes := func() int64 { return 0 }
		if mw != nil {
			ackedBytes = func() int64 {
				n, _ := acked.ForRequest(r, mw.written.Load())
				return n
			}
		}
		if err := copyBody(rw, dw.rc.Flush, up.body, up.length, ackedBytes, time.Now); err != nil {
			var re readError
			if errors.As(err, &re) && !errors.Is(err, context.Canceled) {
				s.log.Named("proxy").Warn(redactText(err.Error()), zap.String("request_id", ri.id))
			}
			// As httputil.ReverseProxy does: the response cannot be finished,
			// so net/http drops the connection.
			panic(http.ErrAbortHandler)
		}
	}
	finished = true
	return nil
}

// delivery is what serving a download needs of its metering ([usage.Delivery]).
type delivery interface {
	Respond(status int, size int64, etag string, body billing.Interval) error
	Count(progress func() usage.Progress)
	Wrote(n int64)
	Finish(o usage.Outcome) (usage.Settled, error)
	Abort(reason string)
	Fenced() bool
}

var _ delivery = (*usage.Delivery)(nil)

// awaitAcked waits, after a body was written in full, until the client has
// acknowledged all of it, for as long as it keeps acknowledging more within
// ackIdle, or the request ends, and reports whether it did. Without it the
// tail still in flight at the last write would go unbilled.
func (s *Server) awaitAcked(r *http.Request, mw *meteredWriter) bool {
	_ = http.NewResponseController(mw.ResponseWriter).Flush()
	written := mw.written.Load()
	last, _ := acked.ForRequest(r, written)
	if last >= written {
		return true
	}
	idle := time.NewTimer(ackIdle)
	defer idle.Stop()
	// Look again soon, then less often: on a short path the last
	// acknowledgements take microseconds, across the world tens of milliseconds.
	pause := ackFirstPoll
	poll := time.NewTimer(pause)
	defer poll.Stop()
	for last < written {
		select {
		case <-r.Context().Done():
			return false
		case <-idle.C:
			return false
		case <-poll.C:
		}
		pause = min(2*pause, ackPoll)
		poll.Reset(pause)
		if n, _ := acked.ForRequest(r, written); n > last {
			last = n
			idle.Reset(ackIdle)
		}
	}
	return true
}

// How long the end of a download waits for acknowledgements to progress, and
// how often it looks at most.
const (
	ackIdle      = 2 * time.Second
	ackFirstPoll = 20 * time.Microsecond
	ackPoll      = 5 * time.Millisecond
)

// meterRange is the byte range the meter claims for a request with header h:
// what billingRange reads, or the whole file, with the Range header dropped
// (dropRange) when it cannot be used as it stands.
func meterRange(h http.Header) billing.Range {
	rg, ok := billingRange(h)
	if !ok {
		dropRange(h)
	}
	return rg
}

// billingRange reads the request's single byte range for the meter:
// billing.Whole when there is none. ok is false when the Range header cannot
// be used as it stands (several ranges, another unit, a malformed or empty
// range): the meter then claims the whole file, and the header must go
// (dropRange), so that Stream serves the whole file too.
func billingRange(h http.Header) (rg billing.Range, ok bool) {
	if len(h.Values("Range")) > 1 {
		// Several Range lines: Stream might read any of them; serve the file.
		return billing.Whole, false
	}
	v := h.Get("Range")
	if v == "" {
		return billing.Whole, true
	}
	spec, ok := strings.CutPrefix(v, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return billing.Whole, false
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return billing.Whole, false
	}
	if first == "" {
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n <= 0 {
			return billing.Whole, false
		}
		return billing.Range{First: -1, Last: -1, Suffix: n}, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 {
		return billing.Whole, false
	}
	if last == "" {
		return billing.Range{First: a, Last: -1}, true
	}
	b, err := strconv.ParseInt(last, 10, 64)
	if err != nil || b < a {
		return billing.Whole, false
	}
	return billing.Range{First: a, Last: b}, true
}

// dropRange removes a Range header billingRange found unusable, and the
// If-Range that only means something beside it.
func dropRange(h http.Header) {
	h.Del("Range")
	h.Del("If-Range")
}

// videoReady returns the video's details when the requested download can be
// served: 404 for a video Stream does not know, 409 while it or the download is
// not ready, or its duration is unknown.
func (s *Server) videoReady(ctx context.Context, uid string, typ stream.DownloadType) (videoInfo, error) {
	info, err := s.videos.get(ctx, uid)
	if err != nil {
		return info, upstreamFailure(ctx, streamAPI, err)
	}
	// An unknown duration (absent, null, -1, 0) is refused, never billed as 0.
	if info.Video.Billable() != nil {
		return info, notReady("video_not_ready", "the video is still processing; its duration is not known yet", nil)
	}
	d, ok := info.Downloads[typ]
	if !ok {
		return info, notReady("download_not_enabled", "this download type is not enabled for the video",
			map[string]any{"download_status": "none"})
	}
	if d.Status != "ready" {
		return info, notReady("download_not_ready", "the download is being generated",
			map[string]any{"download_status": d.Status, "percentComplete": d.PercentComplete})
	}
	return info, nil
}

// checkCountry looks the client's country up and applies the plan's rules; the
// country is returned even when refused. The request log is told it too.
func (s *Server) checkCountry(ctx context.Context, ip netip.Addr, plan string) (string, error) {
	country := s.GeoIP.Country(ip)
	infoFrom(ctx).country = country
	if d := s.Country.Check(plan, country); !d.Allowed {
		return country, forbidden("country_denied", "downloads are not available from your location", map[string]any{"reason": d.Reason})
	}
	return country, nil
}

// authenticate verifies the portal credential; a failure spends a token of the
// client address's bucket, and an address out of tokens gets 429 instead of 401.
func (s *Server) authenticate(r *http.Request) (auth.Identity, error) {
	// A browser sends the portal's cookie along with requests that other sites
	// make it send (an <img>, a form): those must not spend the user's quota. A
	// Bearer header, which no other site can make a browser add, is not at risk.
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" && !hasBearer(r) {
		return auth.Identity{}, errCrossSite()
	}
	id, err := s.Auth.Authenticate(r)
	if err != nil {
		return auth.Identity{}, s.authFailed(r, err)
	}
	infoFrom(r.Context()).user = id.UserID
	return id, nil
}

// hasBearer reports whether the request carries an Authorization: Bearer
// header (the scheme is case-insensitive, as the verifier reads it).
func hasBearer(r *http.Request) bool {
	scheme, _, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer")
}

// ipLimited spends a token of the client address's bucket for a failed or
// unauthenticated request, and is the 429 to answer when it is empty; nil
// otherwise.
func (s *Server) ipLimited(r *http.Request, cause error) *Error {
	if s.IPLimit == nil {
		return nil
	}
	res := s.IPLimit.Allow(addrString(clientIP(r)))
	if res.Allowed {
		return nil
	}
	h := http.Header{}
	res.SetHeaders(h)
	return tooMany("rate_limited", "too many failed or unauthenticated requests", h, cause)
}

func (s *Server) authFailed(r *http.Request, cause error) error {
	if pe := s.ipLimited(r, cause); pe != nil {
		return pe
	}
	detail := "the credential is missing, invalid or expired"
	h := http.Header{"Www-Authenticate": {`Bearer error="invalid_token"`}}
	if errors.Is(cause, auth.ErrNoCredentials) {
		h = http.Header{"Www-Authenticate": {`Bearer`}}
		detail = "a credential is required"
	}
	return unauthorized(detail, h, cause)
}
