package aws_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
)

// TestBodyLimits: a notification over 256 KiB and a registration form over
// 64 KiB are answered 413 (lifecycle.BodyStatus), one at the limit is read
// (and refused for what it says); an EventBridge call without the secret
// is refused 401 before its body is read, an SNS message (whose signature
// is in the body) is measured first. Nothing is stored.
func TestBodyLimits(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a := codeApp(t, e)
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	tok, err := e.emu.MintToken(b.Key(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const notice, form = 256 << 10, 64 << 10
	// form pads a registration form with token to exactly n bytes.
	padForm := func(token string, n int) string {
		s := url.Values{aws.TokenField: {token}}.Encode() + "&pad="
		return s + strings.Repeat("x", n-len(s))
	}
	notAnEvent := func(n int) string { return strings.Repeat("A", n) }
	tests := []struct {
		name, path, body string
		header           map[string]string
		code             int
		says             string
	}{
		{"eventbridge at the limit", "/aws/events", notAnEvent(notice), map[string]string{hdr: secret}, http.StatusBadRequest, "invalid input"},
		{"eventbridge one byte over", "/aws/events", notAnEvent(notice + 1), map[string]string{hdr: secret}, http.StatusRequestEntityTooLarge, "at most 262144 bytes"},
		{"eventbridge oversized", "/aws/events", notAnEvent(2 << 20), map[string]string{hdr: secret}, http.StatusRequestEntityTooLarge, "at most 262144 bytes"},
		{"eventbridge oversized without the secret", "/aws/events", notAnEvent(2 << 20), nil, http.StatusUnauthorized, "not authentic"},
		{"sns at the limit", "/aws/events", notAnEvent(notice), map[string]string{"x-amz-sns-message-type": "Notification"}, http.StatusBadRequest, "invalid input"},
		{"sns oversized, unsigned", "/aws/events", notAnEvent(2 << 20), map[string]string{"x-amz-sns-message-type": "Notification"}, http.StatusRequestEntityTooLarge, "at most 262144 bytes"},
		{"landing at the limit", "/aws/register", padForm("forged-token", form), map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusBadRequest, "not valid"},
		{"landing one byte over, valid token", "/aws/register", padForm(tok, form+1), map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusRequestEntityTooLarge, "could not be read"},
		{"landing oversized, valid token", "/aws/register", padForm(tok, 2<<20), map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusRequestEntityTooLarge, "could not be read"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := a.NotificationHandler()
			if tc.path == "/aws/register" {
				h = a.LandingHandler()
			}
			req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, tc.path, strings.NewReader(tc.body))
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.says) {
				t.Errorf("got %d %.200q, want %d saying %q", w.Code, w.Body, tc.code, tc.says)
			}
		})
	}
	subs, err := e.store.ListSubscriptions(t.Context(), marketplace.SubscriptionFilter{Provider: marketplace.AWS})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := e.store.ListNotifications(t.Context(), marketplace.AWS, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != 0 || len(ns) != 0 {
		t.Errorf("oversized bodies stored %d subscriptions and %d notifications", len(subs), len(ns))
	}
}
