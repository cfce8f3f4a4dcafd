package streamtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// API error codes. Which of them are documented, and where, is the table in the
// package documentation; the others are the emulator's own.
const (
	codeAuth           = 10000
	codeVideoNotFound  = 10005
	codeKeyNotFound    = 10006
	codeVideoNotReady  = 10007
	codeBadRequest     = 10008
	codeNoDownloads    = 10009
	codeRateLimited    = 971
	codeNoRoute        = 7003
	codeMethodNotAllow = 7001
)

// NoDownloads is how GET .../downloads answers for a known video that has no
// download enabled. Cloudflare documents both: the REST reference's result is an
// object keyed by type (so {} when there is none), and the Workers binding's
// downloads.get() throws NotFound, "video or downloads not found".
type NoDownloads int

const (
	// NoDownloadsEmpty answers 200 with an empty result object, {}.
	NoDownloadsEmpty NoDownloads = iota
	// NoDownloadsNotFound answers 404 with code 10009 "downloads not found".
	NoDownloadsNotFound
)

// SetNoDownloads changes how GET .../downloads answers for a video with no
// download enabled.
func (e *Emulator) SetNoDownloads(n NoDownloads) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.noDownloads = n
}

// rateWindowLen is Stream's API rate-limit window.
const rateWindowLen = 5 * time.Minute

type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type envelope struct {
	Success  bool       `json:"success"`
	Errors   []apiError `json:"errors"`
	Messages []apiError `json:"messages"`
	Result   any        `json:"result"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeResult(w http.ResponseWriter, result any) {
	writeJSON(w, http.StatusOK, envelope{Success: true, Errors: []apiError{}, Messages: []apiError{}, Result: result})
}

func writeAPIError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, envelope{Errors: []apiError{{code, msg}}, Messages: []apiError{}})
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	writeAPIError(w, http.StatusMethodNotAllowed, codeMethodNotAllow, "Method not allowed: "+r.Method)
}

func noRoute(w http.ResponseWriter, r *http.Request) {
	writeAPIError(w, http.StatusNotFound, codeNoRoute,
		"Could not route to "+r.URL.Path+", perhaps your object identifier is invalid?")
}

func (e *Emulator) serveAPI(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, apiPrefix), "/"), "/")
	// Authentication comes before routing, as on api.cloudflare.com.
	auth := r.Header.Get("Authorization")
	want := "Bearer " + e.apiToken
	if subtle.ConstantTimeCompare([]byte(auth), []byte(want)) != 1 {
		writeAPIError(w, http.StatusUnauthorized, codeAuth, "Authentication error")
		return
	}
	if len(segs) < 3 || segs[0] != "accounts" || segs[2] != "stream" {
		noRoute(w, r)
		return
	}
	if segs[1] != e.accountID {
		writeAPIError(w, http.StatusForbidden, codeAuth, "Authentication error")
		return
	}
	if retry, ok := e.rateLimited(auth); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(retry))
		writeAPIError(w, http.StatusTooManyRequests, codeRateLimited,
			"Please wait and consider throttling your request speed")
		return
	}
	e.route(w, r, segs[3:])
}

// rateLimited counts one request of token and reports whether it may go on, and
// if not, the seconds until the window ends.
func (e *Emulator) rateLimited(token string) (int, bool) {
	if e.rateLimit <= 0 {
		return 0, true
	}
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	win := e.windows[token]
	if win == nil || now.Sub(win.start) >= rateWindowLen {
		win = &rateWindow{start: now}
		e.windows[token] = win
	}
	win.n++
	if win.n > e.rateLimit {
		return int((rateWindowLen - now.Sub(win.start) + time.Second - 1) / time.Second), false
	}
	return 0, true
}

type videoStatus struct {
	State           string `json:"state"`
	PctComplete     string `json:"pctComplete"`
	ErrorReasonCode string `json:"errorReasonCode"`
	ErrorReasonText string `json:"errorReasonText"`
}

type videoJSON struct {
	UID                   string            `json:"uid"`
	Creator               *string           `json:"creator"`
	Thumbnail             string            `json:"thumbnail"`
	ThumbnailTimestampPct float64           `json:"thumbnailTimestampPct"`
	ReadyToStream         bool              `json:"readyToStream"`
	ReadyToStreamAt       *time.Time        `json:"readyToStreamAt"`
	Status                videoStatus       `json:"status"`
	Meta                  map[string]string `json:"meta"`
	Created               time.Time         `json:"created"`
	Modified              time.Time         `json:"modified"`
	Uploaded              time.Time         `json:"uploaded"`
	Size                  int64             `json:"size"`
	Preview               string            `json:"preview"`
	AllowedOrigins        []string          `json:"allowedOrigins"`
	RequireSignedURLs     bool              `json:"requireSignedURLs"`
	Duration              float64           `json:"duration"`
	Input                 map[string]int    `json:"input"`
	Playback              map[string]string `json:"playback"`
	MaxDurationSeconds    int64             `json:"maxDurationSeconds"`
}

// base is the delivery origin for URLs in results. The caller holds e.mu.
func (e *Emulator) base(r *http.Request) string {
	if e.deliveryBase != "" {
		return e.deliveryBase
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// videoResult renders v. The caller holds e.mu.
func (e *Emulator) videoResult(r *http.Request, v *video) videoJSON {
	return videoResultAt(e.base(r), v)
}

// videoResultAt renders v with URLs under the delivery origin base.
func videoResultAt(base string, v *video) videoJSON {
	name := v.Name
	if name == "" {
		name = v.UID
	}
	j := videoJSON{
		UID:               v.UID,
		Thumbnail:         base + "/" + v.UID + "/thumbnails/thumbnail.jpg",
		ReadyToStream:     v.ReadyToStream,
		Status:            videoStatus{State: "inprogress", PctComplete: "50.000000"},
		Meta:              map[string]string{"name": name},
		Created:           v.created,
		Modified:          v.created,
		Uploaded:          v.created,
		Size:              v.Size,
		Preview:           base + "/" + v.UID + "/watch",
		AllowedOrigins:    []string{},
		RequireSignedURLs: v.RequireSignedURLs,
		Duration:          v.Duration,
		Input:             map[string]int{"width": 1920, "height": 1080},
		Playback: map[string]string{
			"hls":  base + "/" + v.UID + "/manifest/video.m3u8",
			"dash": base + "/" + v.UID + "/manifest/video.mpd",
		},
		MaxDurationSeconds: -1,
	}
	if v.ReadyToStream {
		at := v.created
		j.ReadyToStreamAt = &at
		j.Status = videoStatus{State: "ready", PctComplete: "100.000000"}
	}
	return j
}

func (e *Emulator) listVideos(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	list := make([]videoJSON, 0, len(e.videos))
	for _, v := range e.videos {
		list = append(list, e.videoResult(r, v))
	}
	e.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].UID < list[j].UID })
	writeResult(w, list)
}

func (e *Emulator) getVideo(w http.ResponseWriter, r *http.Request, uid string) {
	e.mu.Lock()
	v, ok := e.videos[uid]
	var res videoJSON
	if ok {
		res = e.videoResult(r, v)
	}
	e.mu.Unlock()
	if !ok {
		writeAPIError(w, http.StatusNotFound, codeVideoNotFound, "video not found")
		return
	}
	writeResult(w, res)
}

type downloadJSON struct {
	Status          string  `json:"status"`
	URL             string  `json:"url"`
	PercentComplete float64 `json:"percentComplete"`
}

// downloadResult renders the download of type t. The caller holds e.mu.
func (e *Emulator) downloadResult(r *http.Request, uid string, t DownloadType, d *download, now time.Time) downloadJSON {
	status, pct := e.downloadState(d, now)
	return downloadJSON{Status: status, URL: e.base(r) + deliveryPath(uid, t), PercentComplete: pct}
}

// downloadsResult renders every download of video uid, keyed by type. The caller
// holds e.mu.
func (e *Emulator) downloadsResult(r *http.Request, uid string, now time.Time) map[string]downloadJSON {
	res := map[string]downloadJSON{}
	for _, t := range []DownloadType{Default, Audio} {
		if d := e.downloads[dlKey{uid, t}]; d != nil {
			res[string(t)] = e.downloadResult(r, uid, t, d, now)
		}
	}
	return res
}

func (e *Emulator) listDownloads(w http.ResponseWriter, r *http.Request, uid string) {
	now := e.now()
	e.mu.Lock()
	_, ok := e.videos[uid]
	res := e.downloadsResult(r, uid, now)
	notFound := e.noDownloads == NoDownloadsNotFound
	e.mu.Unlock()
	switch {
	case !ok:
		writeAPIError(w, http.StatusNotFound, codeVideoNotFound, "video not found")
	case len(res) == 0 && notFound:
		writeAPIError(w, http.StatusNotFound, codeNoDownloads, "downloads not found")
	default:
		writeResult(w, res)
	}
}

// enableDownload creates the download of type typ and answers with every
// download of the video: the documentation says the responses for creating and
// fetching downloads are the same.
func (e *Emulator) enableDownload(w http.ResponseWriter, r *http.Request, uid, typ string) {
	t := DownloadType(typ)
	now := e.now()
	e.mu.Lock()
	v, ok := e.videos[uid]
	if !ok {
		e.mu.Unlock()
		writeAPIError(w, http.StatusNotFound, codeVideoNotFound, "video not found")
		return
	}
	if !v.ReadyToStream {
		e.mu.Unlock()
		writeAPIError(w, http.StatusBadRequest, codeVideoNotReady,
			"video not ready to stream: downloads can be enabled only once the video is ready")
		return
	}
	k := dlKey{uid, t}
	d := e.downloads[k]
	if d == nil {
		d = &download{created: now}
		e.downloads[k] = d
	}
	res := e.downloadsResult(r, uid, now)
	e.mu.Unlock()
	writeResult(w, res)
}

func (e *Emulator) deleteDownload(w http.ResponseWriter, _ *http.Request, uid, typ string) {
	e.mu.Lock()
	_, ok := e.videos[uid]
	delete(e.downloads, dlKey{uid, DownloadType(typ)})
	e.mu.Unlock()
	if !ok {
		writeAPIError(w, http.StatusNotFound, codeVideoNotFound, "video not found")
		return
	}
	writeResult(w, "ok")
}

type keyJSON struct {
	ID      string    `json:"id"`
	PEM     string    `json:"pem,omitempty"`
	JWK     string    `json:"jwk,omitempty"`
	Created time.Time `json:"created"`
}

func newKeyID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (e *Emulator) createKey(w http.ResponseWriter, _ *http.Request) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		writeAPIError(w, http.StatusInternalServerError, codeBadRequest, "key generation failed")
		return
	}
	id := newKeyID()
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	jwk, err := json.Marshal(privateJWK(id, k))
	if err != nil {
		writeAPIError(w, http.StatusInternalServerError, codeBadRequest, "key encoding failed")
		return
	}
	created := e.now().UTC()
	e.mu.Lock()
	e.keys[id] = &signingKey{pub: &k.PublicKey, created: created}
	e.mu.Unlock()
	writeResult(w, keyJSON{
		ID:      id,
		PEM:     base64.StdEncoding.EncodeToString(pemBytes),
		JWK:     base64.StdEncoding.EncodeToString(jwk),
		Created: created,
	})
}

// privateJWK is k as an RS256 signing JWK (RFC 7517, RFC 7518 section 6.3).
func privateJWK(id string, k *rsa.PrivateKey) map[string]string {
	enc := func(i *big.Int) string { return base64.RawURLEncoding.EncodeToString(i.Bytes()) }
	k.Precompute()
	return map[string]string{
		"use": "sig",
		"kty": "RSA",
		"kid": id,
		"alg": "RS256",
		"n":   enc(k.N),
		"e":   enc(big.NewInt(int64(k.E))),
		"d":   enc(k.D),
		"p":   enc(k.Primes[0]),
		"q":   enc(k.Primes[1]),
		"dp":  enc(k.Precomputed.Dp),
		"dq":  enc(k.Precomputed.Dq),
		"qi":  enc(k.Precomputed.Qinv),
	}
}

func (e *Emulator) listKeys(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	list := make([]keyJSON, 0, len(e.keys))
	for id, k := range e.keys {
		list = append(list, keyJSON{ID: id, Created: k.created})
	}
	e.mu.Unlock()
	sort.Slice(list, func(i, j int) bool {
		if !list[i].Created.Equal(list[j].Created) {
			return list[i].Created.Before(list[j].Created)
		}
		return list[i].ID < list[j].ID
	})
	writeResult(w, list)
}

func (e *Emulator) deleteKey(w http.ResponseWriter, _ *http.Request, id string) {
	e.mu.Lock()
	_, ok := e.keys[id]
	delete(e.keys, id)
	e.mu.Unlock()
	if !ok {
		writeAPIError(w, http.StatusNotFound, codeKeyNotFound, "signing key not found")
		return
	}
	writeResult(w, "Revoked")
}

// tokenKey is the account's own key, used by POST /{uid}/token without a pem.
type tokenKey struct {
	id  string
	key *rsa.PrivateKey
}

type tokenRequest struct {
	ID           string            `json:"id"`
	PEM          string            `json:"pem"`
	Exp          int64             `json:"exp"`
	Nbf          int64             `json:"nbf"`
	Downloadable bool              `json:"downloadable"`
	AccessRules  []json.RawMessage `json:"accessRules"`
}

// signToken is Stream's /token endpoint: it signs on the account's side, with the
// given key or the account's own.
func (e *Emulator) signToken(w http.ResponseWriter, r *http.Request, uid string) {
	var req tokenRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err == nil && len(strings.TrimSpace(string(body))) > 0 {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, codeBadRequest, "invalid JSON body")
		return
	}
	e.mu.Lock()
	_, ok := e.videos[uid]
	tk := e.tokenKey
	e.mu.Unlock()
	if !ok {
		writeAPIError(w, http.StatusNotFound, codeVideoNotFound, "video not found")
		return
	}
	var kid string
	var key *rsa.PrivateKey
	switch {
	case req.PEM != "":
		if req.ID == "" {
			writeAPIError(w, http.StatusBadRequest, codeBadRequest, "id is required with pem")
			return
		}
		key, err = parsePrivateKey(req.PEM)
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, codeBadRequest, "invalid pem: "+err.Error())
			return
		}
		kid = req.ID
	case req.ID != "":
		writeAPIError(w, http.StatusBadRequest, codeBadRequest, "pem is required with id")
		return
	default:
		if tk == nil {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				writeAPIError(w, http.StatusInternalServerError, codeBadRequest, "key generation failed")
				return
			}
			// The account's own key verifies tokens like any other but is not
			// one of the account's signing keys: GET /keys does not list it and
			// DELETE /keys/{id} does not know it.
			e.mu.Lock()
			if e.tokenKey == nil {
				e.tokenKey = &tokenKey{id: newKeyID(), key: k}
			}
			tk = e.tokenKey
			e.mu.Unlock()
		}
		kid, key = tk.id, tk.key
	}
	now := e.now()
	if req.Exp == 0 {
		req.Exp = now.Add(time.Hour).Unix()
	}
	if req.Nbf == 0 {
		req.Nbf = now.Add(-time.Hour).Unix()
	}
	if time.Unix(req.Exp, 0).Sub(now) > maxTokenLifetime {
		writeAPIError(w, http.StatusBadRequest, codeBadRequest, "exp must be at most 24 hours ahead")
		return
	}
	// The rules are checked as delivery checks them, so /token never hands out
	// a token that delivery then refuses.
	rules := make([]accessRule, len(req.AccessRules))
	for i, raw := range req.AccessRules {
		if err := json.Unmarshal(raw, &rules[i]); err != nil {
			writeAPIError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("invalid accessRules: rule %d: %v", i, err))
			return
		}
	}
	if _, err := compileRules(rules); err != nil {
		writeAPIError(w, http.StatusBadRequest, codeBadRequest, "invalid accessRules: "+err.Error())
		return
	}
	claims := jwt.MapClaims{"sub": uid, "kid": kid, "exp": req.Exp, "nbf": req.Nbf}
	if req.Downloadable {
		claims["downloadable"] = true
	}
	if len(req.AccessRules) > 0 {
		claims["accessRules"] = req.AccessRules
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = kid
	s, err := t.SignedString(key)
	if err != nil {
		writeAPIError(w, http.StatusInternalServerError, codeBadRequest, "signing failed")
		return
	}
	writeResult(w, map[string]string{"token": s})
}

// parsePrivateKey reads a key as Stream hands it out (base64 of a PEM) or a PEM.
func parsePrivateKey(s string) (*rsa.PrivateKey, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "-----BEGIN") {
		b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			return nil, errors.New("neither PEM nor base64 of a PEM")
		}
		s = string(b)
	}
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an RSA key")
	}
	return rk, nil
}
