package proxy

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/streamgate/streamgate/auth"
	"github.com/streamgate/streamgate/policy"
	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/usage"
)

type linkRequest struct {
	Type     string `json:"type"`
	Filename string `json:"filename"`
	// MaxUses limits the downloads the link may start; absent = unlimited.
	MaxUses *int `json:"max_uses"`
}

type linkResponse struct {
	// ID names a proxy-mode link, for its revocation; direct links have none.
	ID        string `json:"id,omitempty"`
	URL       string `json:"url"`
	ExpiresAt string `json:"expires_at"`
	Type      string `json:"type"`
	Filename  string `json:"filename,omitempty"`
	Mode      string `json:"mode"`
	MaxUses   int    `json:"max_uses,omitempty"`
}

// MaxLinkUses is the largest max_uses a link request may ask for.
const MaxLinkUses = 1000

// maxLinkBody bounds the JSON body of a link request.
const maxLinkBody = 4 << 10

// handleCreateLink serves POST /v1/videos/{uid}/links.
func (s *Server) handleCreateLink(w http.ResponseWriter, r *http.Request) error {
	id, uid, err := s.videoCaller(r)
	if err != nil {
		return err
	}
	// With the portal's cookie as the credential, the body must be JSON, which a
	// plain cross-site form cannot send: with the Sec-Fetch-Site check in
	// authenticate (for browsers that send it), this keeps other sites from making
	// links (and, in direct mode, charges) in the user's name.
	if !hasBearer(r) && !isJSON(r.Header.Get("Content-Type")) {
		return refused(http.StatusUnsupportedMediaType, "bad_content_type", "the body must be application/json", nil)
	}
	var req linkRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	typ := stream.Default
	if req.Type != "" {
		if typ, err = stream.ParseDownloadType(req.Type); err != nil {
			return badRequest("bad_type", "type must be default or audio")
		}
	}
	maxUses, err := s.linkUses(req.MaxUses)
	if err != nil {
		return err
	}
	if req.Filename != "" {
		// MY_VIDEO.mp4 (Stream's own example) is taken as MY_VIDEO: the link and
		// the Stream URL carry the name without the extension Stream appends.
		name, ok := stream.CleanFilename(req.Filename, typ)
		if !ok {
			return errBadFilename()
		}
		req.Filename = name
	}
	planName, plan := s.plan(id.Plan)
	ip := clientIP(r)
	country, err := s.checkCountry(r.Context(), ip, planName)
	if err != nil {
		return err
	}
	if err := allow(w, plan.Links, id.UserID, "links created"); err != nil {
		return err
	}
	info, err := s.videoReady(r.Context(), uid, typ)
	if err != nil {
		return err
	}
	now := s.now()
	exp := now.Add(s.cfg.LinkTTL)
	var link, linkID string
	if s.cfg.LinkMode == "direct" {
		// The link is made before it is billed, so a link that cannot be made
		// costs nothing.
		link, err = s.directLink(country, ip, planName, uid, typ, req.Filename, exp)
		if err == nil {
			// Stream serves these bytes straight to the user, so the link is
			// billed in full now; a link the quota cannot cover is not handed out.
			_, err = s.Meter.Charge(r.Context(), usage.StartRequest{
				User: id.UserID, Plan: planName, LimitMinutes: plan.MinutesPerMonth,
				Video: uid, Type: typ, Duration: info.Video.Duration,
				Country: country, ClientIP: addrString(ip), RequestID: infoFrom(r.Context()).id,
			})
			if err != nil {
				return s.quotaError(err)
			}
		}
	} else {
		linkID = rand.Text()
		link, err = s.proxyLink(ip, auth.Grant{
			User: id.UserID, Plan: planName, Video: uid, Type: typ, Filename: req.Filename,
			ExpiresAt: exp, Session: linkID, IssuedAt: now, MaxUses: maxUses,
		})
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, linkResponse{
		ID:        linkID,
		MaxUses:   maxUses,
		URL:       link,
		ExpiresAt: exp.UTC().Format(time.RFC3339),
		Type:      string(typ),
		Filename:  req.Filename,
		Mode:      s.cfg.LinkMode,
	})
	return nil
}

// linkUses checks a link request's max_uses: absent is 0, unlimited; else 1
// to MaxLinkUses, in proxy mode only.
func (s *Server) linkUses(n *int) (int, error) {
	switch {
	case n == nil:
		return 0, nil
	case *n < 1 || *n > MaxLinkUses:
		return 0, errBadMaxUses()
	case s.cfg.LinkMode == "direct":
		return 0, badRequest("bad_max_uses",
			"max_uses needs links in proxy mode: in direct mode Stream serves the link and the gateway never sees its downloads")
	}
	return *n, nil
}

func errBadMaxUses() *Error {
	return badRequest("bad_max_uses", fmt.Sprintf("max_uses must be an integer from 1 to %d", MaxLinkUses))
}

// errLinkUsedUp refuses a download a link of maxUses uses would start.
func errLinkUsedUp(maxUses int) *Error {
	return forbidden("link_used_up",
		fmt.Sprintf("this link allowed %d download(s), and all have been used; ask for a new link", maxUses),
		map[string]any{"max_uses": maxUses})
}

func errLinkRevoked() *Error {
	return forbidden("link_revoked", "this link has been revoked; ask for a new link", nil)
}

// startRefused maps a delivery the ledger refused to open: a link used up or
// revoked, else quotaError's quota and ledger failures.
func (s *Server) startRefused(err error, id auth.Identity) error {
	switch {
	case errors.Is(err, usage.ErrLinkUsedUp):
		n := 0
		if id.Grant != nil {
			n = id.Grant.MaxUses
		}
		return errLinkUsedUp(n)
	case errors.Is(err, usage.ErrLinkRevoked):
		return errLinkRevoked()
	}
	return s.quotaError(err)
}

// linkOf is the link a download request came with, as the ledger checks and
// counts it; the zero Link for a request without a grant.
func linkOf(id auth.Identity) usage.Link {
	g := id.Grant
	if g == nil {
		return usage.Link{}
	}
	return usage.Link{ID: g.ID(), IssuedAt: g.IssuedAt, MaxUses: g.MaxUses, ExpiresAt: g.ExpiresAt}
}

// proxyLink signs g, bound to ip with bind_ip, into a link to the gateway.
func (s *Server) proxyLink(ip netip.Addr, g auth.Grant) (string, error) {
	if s.cfg.BindIP {
		g.IP = ip
	}
	tok, err := s.Grants.Sign(g)
	if err != nil {
		return "", err
	}
	u := *s.public
	u.Path = u.Path + "/dl/" + tok + "/" + g.Type.File()
	if g.Filename != "" {
		u.RawQuery = "filename=" + g.Filename
	}
	return u.String(), nil
}

// directLink signs a Stream URL whose rules pin the user's country (or address,
// with bind_ip); see DirectRules.
func (s *Server) directLink(country string, ip netip.Addr, plan, uid string, typ stream.DownloadType, filename string, exp time.Time) (string, error) {
	rules := DirectRules(country, ip, s.cfg.BindIP, s.Country.Rules(plan))
	// The token is shared by every link with the same claims (tokens.go).
	tok, _, err := s.links.token(uid, typ, rules, exp, s.now())
	if err != nil {
		return "", err
	}
	return stream.DeliveryURL(s.delivery.String(), tok, typ, filename)
}

// DirectRules are the access rules of a direct-mode token. Stream evaluates
// rules first-match with no way to require two conditions at once, so:
//   - by default: [{ip.geoip.country allow [CC]}, {any block}], the user's country;
//   - with bindIP: [{ip.src allow [ADDR]}, {any block}], the user's own address,
//     which is stricter than its country (the gateway has located that address
//     already, and a country rule before it would let the whole country in);
//   - country unknown (and allowed by policy) without bindIP: there is nothing
//     to pin the link to, so the token restates the plan's country rules: its
//     allow list, [{ip.geoip.country allow [...]}, {any block}], else its block
//     list, [{ip.geoip.country block [...]}], else no rule.
func DirectRules(country string, ip netip.Addr, bindIP bool, plan policy.CountryRules) []stream.AccessRule {
	if bindIP && ip.IsValid() {
		return []stream.AccessRule{
			{Type: stream.RuleIPSrc, Action: stream.ActionAllow, IP: []string{ip.Unmap().String()}},
			{Type: stream.RuleAny, Action: stream.ActionBlock},
		}
	}
	if country != "" {
		return []stream.AccessRule{
			{Type: stream.RuleCountry, Action: stream.ActionAllow, Country: []string{country}},
			{Type: stream.RuleAny, Action: stream.ActionBlock},
		}
	}
	switch {
	case len(plan.Allow) > 0:
		allowed := slices.DeleteFunc(slices.Clone(plan.Allow), func(c string) bool { return slices.Contains(plan.Block, c) })
		if len(allowed) == 0 {
			return []stream.AccessRule{{Type: stream.RuleAny, Action: stream.ActionBlock}}
		}
		return []stream.AccessRule{
			{Type: stream.RuleCountry, Action: stream.ActionAllow, Country: allowed},
			{Type: stream.RuleAny, Action: stream.ActionBlock},
		}
	case len(plan.Block) > 0:
		return []stream.AccessRule{{Type: stream.RuleCountry, Action: stream.ActionBlock, Country: plan.Block}}
	}
	return nil
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

func decodeJSON(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxLinkBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "max_uses" {
			pe := errBadMaxUses()
			pe.Cause = err
			return pe
		}
		pe := badRequest("bad_body", "the body must be one JSON object of the documented fields")
		pe.Cause = err
		return pe
	}
	if dec.More() {
		return badRequest("bad_body", "the body must hold one JSON object")
	}
	return nil
}
