package streamtest

import (
	"net/http"
	"strings"
)

// apiPrefix is where the Cloudflare API lives on api.cloudflare.com.
const apiPrefix = "/client/v4/"

// Handler serves the API under /client/v4/ and delivery for every other path, so
// that one httptest server plays both hosts.
func (e *Emulator) Handler() http.Handler {
	api, delivery := e.APIHandler(), e.DeliveryHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, apiPrefix) {
			api.ServeHTTP(w, r)
			return
		}
		delivery.ServeHTTP(w, r)
	})
}

// APIHandler serves the Stream API, the whole surface at a glance:
//
//	GET    /client/v4/accounts/{account}/stream                         list videos
//	GET    /client/v4/accounts/{account}/stream/{uid}                   video details
//	GET    /client/v4/accounts/{account}/stream/{uid}/downloads         list downloads
//	POST   /client/v4/accounts/{account}/stream/{uid}/downloads         enable default
//	DELETE /client/v4/accounts/{account}/stream/{uid}/downloads         delete default
//	POST   /client/v4/accounts/{account}/stream/{uid}/downloads/{type}  enable default or audio
//	DELETE /client/v4/accounts/{account}/stream/{uid}/downloads/{type}  delete default or audio
//	POST   /client/v4/accounts/{account}/stream/{uid}/token             sign a token
//	GET    /client/v4/accounts/{account}/stream/keys                    list signing keys
//	POST   /client/v4/accounts/{account}/stream/keys                    create a signing key
//	DELETE /client/v4/accounts/{account}/stream/keys/{id}               revoke a signing key
//	PUT    /client/v4/accounts/{account}/stream/webhook                 subscribe a URL to video webhooks
//	GET    /client/v4/accounts/{account}/stream/webhook                 the subscription and its secret
//	DELETE /client/v4/accounts/{account}/stream/webhook                 unsubscribe
func (e *Emulator) APIHandler() http.Handler {
	return http.HandlerFunc(e.serveAPI)
}

// DeliveryHandler serves downloads, the delivery host's surface:
//
//	GET, HEAD /{uid or token}/downloads/default.mp4[?filename=NAME]
//	GET, HEAD /{uid or token}/downloads/audio.m4a[?filename=NAME]
func (e *Emulator) DeliveryHandler() http.Handler {
	return http.HandlerFunc(e.serveDelivery)
}

// route dispatches an authenticated API request below /accounts/{account}/stream.
func (e *Emulator) route(w http.ResponseWriter, r *http.Request, rest []string) {
	m := r.Method
	switch {
	case len(rest) == 0:
		e.allow(w, r, m == http.MethodGet, e.listVideos)
	case rest[0] == "keys" && len(rest) == 1:
		switch m {
		case http.MethodGet:
			e.listKeys(w, r)
		case http.MethodPost:
			e.createKey(w, r)
		default:
			methodNotAllowed(w, r)
		}
	case rest[0] == "keys" && len(rest) == 2:
		e.allow(w, r, m == http.MethodDelete, func(w http.ResponseWriter, r *http.Request) { e.deleteKey(w, r, rest[1]) })
	case rest[0] == "webhook" && len(rest) == 1:
		switch m {
		case http.MethodPut:
			e.putWebhook(w, r)
		case http.MethodGet:
			e.getWebhook(w, r)
		case http.MethodDelete:
			e.deleteWebhook(w, r)
		default:
			methodNotAllowed(w, r)
		}
	case len(rest) == 1:
		e.allow(w, r, m == http.MethodGet, func(w http.ResponseWriter, r *http.Request) { e.getVideo(w, r, rest[0]) })
	case len(rest) == 2 && rest[1] == "token":
		e.allow(w, r, m == http.MethodPost, func(w http.ResponseWriter, r *http.Request) { e.signToken(w, r, rest[0]) })
	case len(rest) == 2 && rest[1] == "downloads":
		switch m {
		case http.MethodGet:
			e.listDownloads(w, r, rest[0])
		case http.MethodPost:
			e.enableDownload(w, r, rest[0], "default")
		case http.MethodDelete:
			e.deleteDownload(w, r, rest[0], "default")
		default:
			methodNotAllowed(w, r)
		}
	case len(rest) == 3 && rest[1] == "downloads" && (rest[2] == "default" || rest[2] == "audio"):
		switch m {
		case http.MethodPost:
			e.enableDownload(w, r, rest[0], rest[2])
		case http.MethodDelete:
			e.deleteDownload(w, r, rest[0], rest[2])
		default:
			methodNotAllowed(w, r)
		}
	default:
		noRoute(w, r)
	}
}

func (e *Emulator) allow(w http.ResponseWriter, r *http.Request, ok bool, h http.HandlerFunc) {
	if !ok {
		methodNotAllowed(w, r)
		return
	}
	h(w, r)
}
