package proxy

import "net/http"

type downloadState struct {
	Status          string  `json:"status"`
	PercentComplete float64 `json:"percentComplete"`
	URL             string  `json:"url,omitempty"`
}

// handleListDownloads serves GET /v1/videos/{uid}/downloads.
func (s *Server) handleListDownloads(w http.ResponseWriter, r *http.Request) error {
	id, uid, err := s.videoCaller(r)
	if err != nil {
		return err
	}
	// Each unknown video costs a Stream API call, and the API's limit is the
	// account's: listing spends the plan's links bucket.
	_, plan := s.plan(id.Plan)
	if err := allow(w, plan.Links, id.UserID, "requests"); err != nil {
		return err
	}
	info, err := s.videos.get(r.Context(), uid)
	if err != nil {
		return upstreamFailure(r.Context(), streamAPI, err)
	}
	out := map[string]downloadState{}
	for typ, d := range info.Downloads {
		st := downloadState{Status: d.Status, PercentComplete: d.PercentComplete}
		if d.Status == "ready" {
			u := *s.public
			u.Path = u.Path + "/v1/videos/" + uid + "/downloads/" + typ.File()
			st.URL = u.String()
		}
		out[string(typ)] = st
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"video":     uid,
		"duration":  info.Video.Duration,
		"ready":     info.Video.ReadyToStream,
		"downloads": out,
	})
	return nil
}
