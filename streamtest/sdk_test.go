package streamtest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/cloudflare/cloudflare-go/v6"
	"github.com/cloudflare/cloudflare-go/v6/option"
	cfstream "github.com/cloudflare/cloudflare-go/v6/stream"
)

// typeSegment sends the SDK's call on .../downloads to .../downloads/{t}: the SDK
// has typed calls only for the former.
func typeSegment(t DownloadType) option.RequestOption {
	return option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/downloads") {
			u := *r.URL
			u.Path += "/" + string(t)
			r.URL = &u
		}
		return next(r)
	})
}

// sdkError asserts that err is the SDK's API error with the given status and
// first error code.
func sdkError(t *testing.T, what string, err error, status int, code int64) {
	t.Helper()
	var ae *cloudflare.Error
	if !errors.As(err, &ae) {
		t.Errorf("%s: %v, want an API error %d/%d", what, err, status, code)
		return
	}
	if ae.StatusCode != status || len(ae.Errors) == 0 || ae.Errors[0].Code != code {
		t.Errorf("%s: status %d errors %+v, want %d with code %d", what, ae.StatusCode, ae.Errors, status, code)
	}
}

// The official SDK drives every emulated endpoint, the error answers included,
// and reads what the emulator answers.
func TestOfficialSDK(t *testing.T) {
	e := New(Options{Now: newClock().Now})
	srv := start(t, e)
	e.AddVideo(Video{UID: uidPrivate, Duration: 90, Size: 2048, RequireSignedURLs: true, ReadyToStream: true})
	e.AddVideo(Video{UID: uidUnready, Duration: -1, Size: 2048})
	svc := cfstream.NewStreamService(
		option.WithAPIToken("test-token"),
		option.WithBaseURL(srv.URL+"/client/v4/"),
		option.WithMaxRetries(0),
	)
	ctx := context.Background()
	acct := cloudflare.F("test-account")

	t.Run("videos", func(t *testing.T) {
		v, err := svc.Get(ctx, uidPrivate, cfstream.StreamGetParams{AccountID: acct})
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if v.UID != uidPrivate || v.Duration != 90 || !v.RequireSignedURLs || !v.ReadyToStream || v.Size != 2048 || v.Status.State != "ready" {
			t.Errorf("Get = %+v", v)
		}
		u, err := svc.Get(ctx, uidUnready, cfstream.StreamGetParams{AccountID: acct})
		if err != nil || u.Duration != -1 || u.ReadyToStream || u.Status.State != "inprogress" {
			t.Errorf("Get unready = %+v, %v", u, err)
		}
		_, err = svc.Get(ctx, uidUnknown, cfstream.StreamGetParams{AccountID: acct})
		sdkError(t, "Get unknown", err, 404, codeVideoNotFound)
		page, err := svc.List(ctx, cfstream.StreamListParams{AccountID: acct})
		if err != nil || len(page.Result) != 2 || page.Result[0].UID != uidPrivate || page.Result[1].UID != uidUnready {
			t.Errorf("List = %+v, %v", page, err)
		}
		bad := cfstream.NewStreamService(option.WithAPIToken("wrong"), option.WithBaseURL(srv.URL+"/client/v4/"), option.WithMaxRetries(0))
		_, err = bad.Get(ctx, uidPrivate, cfstream.StreamGetParams{AccountID: acct})
		sdkError(t, "Get with a wrong token", err, 401, codeAuth)
	})

	t.Run("downloads", func(t *testing.T) {
		url := func(typ DownloadType) string { return srv.URL + deliveryPath(uidPrivate, typ) }
		g, err := svc.Downloads.Get(ctx, uidPrivate, cfstream.DownloadGetParams{AccountID: acct})
		if err != nil || !g.JSON.Default.IsMissing() || !g.JSON.Audio.IsMissing() {
			t.Errorf("Get with nothing enabled = %+v, %v; want {}", g, err)
		}
		e.SetNoDownloads(NoDownloadsNotFound)
		_, err = svc.Downloads.Get(ctx, uidPrivate, cfstream.DownloadGetParams{AccountID: acct})
		sdkError(t, "Get with nothing enabled, NotFound", err, 404, codeNoDownloads)
		e.SetNoDownloads(NoDownloadsEmpty)

		d, err := svc.Downloads.New(ctx, uidPrivate, cfstream.DownloadNewParams{AccountID: acct})
		if err != nil || d.Default.Status != "ready" || d.Default.URL != url(Default) || d.Default.PercentComplete != 100 || !d.JSON.Audio.IsMissing() {
			t.Errorf("New default = %+v, %v", d, err)
		}
		a, err := svc.Downloads.New(ctx, uidPrivate, cfstream.DownloadNewParams{AccountID: acct}, typeSegment(Audio))
		if err != nil || a.Audio.Status != "ready" || a.Audio.URL != url(Audio) || a.Default.URL != url(Default) {
			t.Errorf("New audio = %+v, %v; want both downloads", a, err)
		}
		g, err = svc.Downloads.Get(ctx, uidPrivate, cfstream.DownloadGetParams{AccountID: acct})
		if err != nil || g.Default.URL != url(Default) || g.Audio.URL != url(Audio) || g.Audio.PercentComplete != 100 {
			t.Errorf("Get = %+v, %v", g, err)
		}
		_, err = svc.Downloads.New(ctx, uidUnready, cfstream.DownloadNewParams{AccountID: acct})
		sdkError(t, "New on a video not ready", err, 400, codeVideoNotReady)
		_, err = svc.Downloads.New(ctx, uidUnknown, cfstream.DownloadNewParams{AccountID: acct}, typeSegment(Audio))
		sdkError(t, "New audio on an unknown video", err, 404, codeVideoNotFound)

		s, err := svc.Downloads.Delete(ctx, uidPrivate, cfstream.DownloadDeleteParams{AccountID: acct}, typeSegment(Audio))
		if err != nil || *s != "ok" {
			t.Errorf("Delete audio = %v, %v", s, err)
		}
		g, err = svc.Downloads.Get(ctx, uidPrivate, cfstream.DownloadGetParams{AccountID: acct})
		if err != nil || !g.JSON.Audio.IsMissing() || g.Default.Status != "ready" {
			t.Errorf("Get after deleting audio = %+v, %v", g, err)
		}
		if s, err = svc.Downloads.Delete(ctx, uidPrivate, cfstream.DownloadDeleteParams{AccountID: acct}); err != nil || *s != "ok" {
			t.Errorf("Delete default = %v, %v", s, err)
		}
		_, err = svc.Downloads.Delete(ctx, uidUnknown, cfstream.DownloadDeleteParams{AccountID: acct})
		sdkError(t, "Delete on an unknown video", err, 404, codeVideoNotFound)
	})

	t.Run("keys and tokens", func(t *testing.T) {
		e.SetDownloadReady(uidPrivate, Default)
		k, err := svc.Keys.New(ctx, cfstream.KeyNewParams{AccountID: acct, Body: map[string]any{}})
		if err != nil || !isUID(k.ID) || k.Pem == "" || k.Jwk == "" {
			t.Fatalf("Keys.New = %+v, %v", k, err)
		}
		list, err := svc.Keys.Get(ctx, cfstream.KeyGetParams{AccountID: acct})
		if err != nil || len(list.Result) != 1 || list.Result[0].ID != k.ID {
			t.Errorf("Keys.Get = %+v, %v", list, err)
		}

		withKey, err := svc.Token.New(ctx, uidPrivate, cfstream.TokenNewParams{
			AccountID: acct, ID: cloudflare.F(k.ID), Pem: cloudflare.F(k.Pem), Downloadable: cloudflare.F(true),
			AccessRules: cloudflare.F([]cfstream.TokenNewParamsAccessRule{{
				Type: cloudflare.F(cfstream.TokenNewParamsAccessRulesTypeAny), Action: cloudflare.F(cfstream.TokenNewParamsAccessRulesActionAllow),
			}}),
		})
		if err != nil {
			t.Fatalf("Token.New with a key: %v", err)
		}
		own, err := svc.Token.New(ctx, uidPrivate, cfstream.TokenNewParams{AccountID: acct, Downloadable: cloudflare.F(true)})
		if err != nil {
			t.Fatalf("Token.New without a key: %v", err)
		}
		for name, tok := range map[string]string{"with a key": withKey.Token, "without a key": own.Token} {
			if r := do(t, srv.Client(), http.MethodGet, srv.URL+deliveryPath(tok, Default), nil, ""); r.status != 200 {
				t.Errorf("token %s: delivery status %d, want 200", name, r.status)
			}
		}
		if list, err := svc.Keys.Get(ctx, cfstream.KeyGetParams{AccountID: acct}); err != nil || len(list.Result) != 1 {
			t.Errorf("Keys.Get after /token = %+v, %v; want the one key", list, err)
		}
		_, err = svc.Token.New(ctx, uidPrivate, cfstream.TokenNewParams{
			AccountID: acct,
			AccessRules: cloudflare.F([]cfstream.TokenNewParamsAccessRule{{
				Type: cloudflare.F(cfstream.TokenNewParamsAccessRulesType("bogus")), Action: cloudflare.F(cfstream.TokenNewParamsAccessRulesActionAllow),
			}}),
		})
		sdkError(t, "Token.New with a bogus rule", err, 400, codeBadRequest)
		_, err = svc.Token.New(ctx, uidUnknown, cfstream.TokenNewParams{AccountID: acct})
		sdkError(t, "Token.New for an unknown video", err, 404, codeVideoNotFound)

		s, err := svc.Keys.Delete(ctx, k.ID, cfstream.KeyDeleteParams{AccountID: acct})
		if err != nil || *s != "Revoked" {
			t.Errorf("Keys.Delete = %v, %v; want \"Revoked\"", s, err)
		}
		if r := do(t, srv.Client(), http.MethodGet, srv.URL+deliveryPath(withKey.Token, Default), nil, ""); r.status != http.StatusUnauthorized {
			t.Errorf("token of a revoked key: status %d, want 401", r.status)
		}
		_, err = svc.Keys.Delete(ctx, k.ID, cfstream.KeyDeleteParams{AccountID: acct})
		sdkError(t, "Keys.Delete again", err, 404, codeKeyNotFound)
		if list, err := svc.Keys.Get(ctx, cfstream.KeyGetParams{AccountID: acct}); err != nil || len(list.Result) != 0 {
			t.Errorf("Keys.Get after delete = %+v, %v; want none", list, err)
		}
	})
}
