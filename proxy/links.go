package proxy

import (
	"encoding/json"
	"errors"
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
}

type linkResponse struct {
	URL       string `json:"url"`
	ExpiresAt string `json:"expires_at"`
	Type      string `json:"type"`
	Filename  string `json:"filename,omitempty"`
	Mode      string `json:"mode"`
}

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
	var link string
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
		link, err = s.proxyLink(ip, id, planName, uid, typ, req.Filename, exp)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, linkResponse{
		URL:       link,
		ExpiresAt: exp.UTC().Format(time.RFC3339),
		Type:      string(typ),
		Filename:  req.Filename,
		Mode:      s.cfg.LinkMode,
	})
	return nil
}

func (s *Server) proxyLink(ip netip.Addr, id auth.Identity, plan, uid string, typ stream.DownloadType, filename string, exp time.Time) (string, error) {
	g := auth.Grant{User: id.UserID, Plan: plan, Video: uid, Type: typ, Filename: filename, ExpiresAt: exp}
	if s.cfg.BindIP {
		g.IP = ip
	}
	tok, err := s.Grants.Sign(g)
	if err != nil {
		return "", err
	}
	u := *s.public
	u.Path = u.Path + "/dl/" + tok + "/" + typ.File()
	if filename != "" {
		u.RawQuery = "filename=" + filename
	}
	return u.String(), nil
}

// directLink signs a Stream URL whose rules pin the user's country (or address,
// with bind_ip); see DirectRules.
func (s *Server) directLink(country string, ip netip.Addr, plan, uid string, typ stream.DownloadType, filename string, exp time.Time) (string, error) {
	rules := DirectRules(country, ip, s.cfg.BindIP, s.Country.Rules(plan))
	now := s.now()
	tok, err := s.Signer.Mint(stream.Claims{
		Video: uid, NotBefore: now.Add(-nbfSkew), ExpiresAt: exp, Downloadable: true, AccessRules: rules,
	}, now)
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
		pe := badRequest("bad_body", "the body must be a JSON object with optional type and filename")
		pe.Cause = err
		return pe
	}
	if dec.More() {
		return badRequest("bad_body", "the body must hold one JSON object")
	}
	return nil
}
