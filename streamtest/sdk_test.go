package streamtest

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/cloudflare/cloudflare-go/v6"
	"github.com/cloudflare/cloudflare-go/v6/option"
	cfstream "github.com/cloudflare/cloudflare-go/v6/stream"

	"github.com/streamgate/streamgate/stream"
)

// The official SDK reads the emulator's answers.
func TestOfficialSDK(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPrivate, Duration: 90, Size: 2048, RequireSignedURLs: true, ReadyToStream: true})
	svc := cfstream.NewStreamService(
		option.WithAPIToken("test-token"),
		option.WithBaseURL(srv.URL+"/client/v4/"),
		option.WithMaxRetries(0),
	)
	ctx := context.Background()
	acct := cloudflare.F("test-account")

	v, err := svc.Get(ctx, uidPrivate, cfstream.StreamGetParams{AccountID: acct})
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if v.UID != uidPrivate || v.Duration != 90 || !v.RequireSignedURLs || !v.ReadyToStream || v.Size != 2048 {
		t.Errorf("video = %+v", v)
	}
	_, err = svc.Get(ctx, uidUnknown, cfstream.StreamGetParams{AccountID: acct})
	var apiErr *cloudflare.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Errorf("Get unknown: %v, want a 404 API error", err)
	}

	d, err := svc.Downloads.New(ctx, uidPrivate, cfstream.DownloadNewParams{AccountID: acct})
	if err != nil {
		t.Fatalf("Downloads.New: %v", err)
	}
	if d.Default.Status != "ready" || d.Default.URL != srv.URL+stream.DeliveryPath(uidPrivate, stream.Default) {
		t.Errorf("Downloads.New = %+v", d.Default)
	}
	got, err := svc.Downloads.Get(ctx, uidPrivate, cfstream.DownloadGetParams{AccountID: acct})
	if err != nil {
		t.Fatalf("Downloads.Get: %v", err)
	}
	if got.Default.PercentComplete != 100 || !got.JSON.Audio.IsMissing() {
		t.Errorf("Downloads.Get = %+v", got)
	}

	k, err := svc.Keys.New(ctx, cfstream.KeyNewParams{AccountID: acct, Body: map[string]any{}})
	if err != nil {
		t.Fatalf("Keys.New: %v", err)
	}
	if _, err := stream.NewSigner(k.ID, []byte(k.Pem)); err != nil {
		t.Errorf("SDK key pem: %v", err)
	}
	list, err := svc.Keys.Get(ctx, cfstream.KeyGetParams{AccountID: acct})
	if err != nil || len(list.Result) != 1 || list.Result[0].ID != k.ID {
		t.Errorf("Keys.Get = %+v, %v", list, err)
	}
	if _, err := svc.Keys.Delete(ctx, k.ID, cfstream.KeyDeleteParams{AccountID: acct}); err != nil {
		t.Errorf("Keys.Delete: %v", err)
	}
	if _, err := svc.Downloads.Delete(ctx, uidPrivate, cfstream.DownloadDeleteParams{AccountID: acct}); err != nil {
		t.Errorf("Downloads.Delete: %v", err)
	}
}
