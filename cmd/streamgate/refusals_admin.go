package main

import (
	"encoding/json"
	"net/http"

	"github.com/streamgate/streamgate/stream"
)

// refusalLookup answers GET /v1/admin/refusals/{request_id}: the refusal of
// that request (its rule, user, country and figures) as JSON, or a 404
// problem when it is unknown or no longer kept.
func refusalLookup(store refusalStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("request_id")
		// Request IDs are what the gateway accepts in X-Request-ID: short and
		// URL-safe.
		if id == "" || len(id) > 64 || !stream.URLSafe(id) {
			writeProblem(w, r, http.StatusBadRequest, "bad_request_id",
				"a request ID is 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'", nil)
			return
		}
		rf, ok, err := store.Get(r.Context(), id)
		switch {
		case err != nil:
			writeProblem(w, r, http.StatusServiceUnavailable, "refusals_unavailable",
				"the refusal store did not answer; retry later", nil)
			return
		case !ok:
			writeProblem(w, r, http.StatusNotFound, "refusal_not_found",
				"no refusal is kept for this request ID: it was not refused, or it expired", nil)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(rf)
	})
}
