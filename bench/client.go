package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"time"
)

// Get is one GET a client makes.
type Get struct {
	URL string
	// Bearer is the portal credential; "" sends none.
	Bearer string
	// Range is the Range header; "" sends none.
	Range string
	// Limit is the most body bytes read; stopping early drops the connection, as a
	// client that gives up does. Negative reads the whole body.
	Limit int64
	// Rate paces the reading of the body to this many bytes per second, as a
	// client on a slow link reads; 0 reads as fast as the body comes.
	Rate int64
	// Trace measures the time to the first byte of the answer (Got.TTFB).
	Trace bool
}

// Got is what a Get received.
type Got struct {
	Status int
	// Bytes is the body bytes read.
	Bytes int64
	// TTFB is the time from sending the request to the first byte of the answer,
	// when Get.Trace is set.
	TTFB time.Duration
}

// Do sends g with c. An error means the request failed or the body ended early.
func (g Get) Do(ctx context.Context, c *http.Client) (Got, error) {
	var got Got
	if g.Trace {
		start := time.Now()
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotFirstResponseByte: func() { got.TTFB = time.Since(start) },
		})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.URL, nil)
	if err != nil {
		return got, err
	}
	if g.Bearer != "" {
		req.Header.Set("Authorization", "Bearer "+g.Bearer)
	}
	if g.Range != "" {
		req.Header.Set("Range", g.Range)
	}
	resp, err := c.Do(req)
	if err != nil {
		return got, err
	}
	defer resp.Body.Close()
	got.Status = resp.StatusCode
	var body io.Reader = resp.Body
	if g.Limit >= 0 {
		body = io.LimitReader(resp.Body, g.Limit)
	}
	var dst io.Writer = io.Discard
	if g.Rate > 0 {
		dst = &pacedWriter{ctx: ctx, rate: g.Rate, start: time.Now()}
	}
	got.Bytes, err = io.Copy(dst, body)
	return got, err
}

// pacedWriter discards what it is given no faster than rate bytes per second.
type pacedWriter struct {
	ctx   context.Context
	rate  int64
	start time.Time
	n     int64
}

func (w *pacedWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	due := w.start.Add(time.Duration(float64(w.n) / float64(w.rate) * float64(time.Second)))
	if wait := time.Until(due); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-w.ctx.Done():
			return 0, w.ctx.Err()
		}
	}
	return len(p), nil
}

// CreateLink asks the gateway at linksURL for a link to the video's MP4 and
// returns its URL.
func CreateLink(ctx context.Context, c *http.Client, linksURL, bearer string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, linksURL,
		bytes.NewReader([]byte(`{"type":"default","filename":"bench"}`)))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return "", &StatusError{Status: resp.StatusCode, Op: "create link"}
	}
	var body struct {
		URL string `json:"url"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err != nil {
		return "", fmt.Errorf("create link: %w", err)
	}
	// Reading to the end lets the connection be reused.
	_, _ = io.Copy(io.Discard, resp.Body)
	return body.URL, nil
}

// StatusError is an answer with another status than the one expected.
type StatusError struct {
	Op     string
	Status int
}

func (e *StatusError) Error() string { return fmt.Sprintf("%s: status %d", e.Op, e.Status) }
