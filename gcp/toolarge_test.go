package gcp_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
)

// TestPushBodyLimit: an authentic push delivery over 1 MiB is answered 413
// (lifecycle.BodyStatus), one at the limit is read (and refused for what
// it says), and a forged one is refused 401 before its body is read.
// Nothing is stored.
func TestPushBodyLimit(t *testing.T) {
	l := newLifecycleEnv(t, nil, nil)
	const limit = 1 << 20
	notAPush := func(n int) []byte { return []byte(strings.Repeat("A", n)) }
	cases := []struct {
		name string
		body []byte
		auth string
		code int
		says string
	}{
		{"at the limit", notAPush(limit), l.bearer(t), http.StatusBadRequest, "invalid input"},
		{"one byte over", notAPush(limit + 1), l.bearer(t), http.StatusRequestEntityTooLarge, "at most 1048576 bytes"},
		{"oversized", notAPush(2 * limit), l.bearer(t), http.StatusRequestEntityTooLarge, "at most 1048576 bytes"},
		{"oversized, no token", notAPush(2 * limit), "", http.StatusUnauthorized, "not authentic"},
		{"oversized, forged token", notAPush(2 * limit), "Bearer forged", http.StatusUnauthorized, "not authentic"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := l.push(t, tc.body, tc.auth)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.says) {
				t.Errorf("answer %d %.200q, want %d saying %q", w.Code, w.Body, tc.code, tc.says)
			}
		})
	}
	if ns, err := l.env.store.ListNotifications(t.Context(), marketplace.GCP, "", 0); err != nil || len(ns) != 0 {
		t.Errorf("stored %d notifications (%v)", len(ns), err)
	}
}

// TestSignupBodyLimit: a sign-up form over 64 KiB is answered 413 before
// its token is looked at, even a valid token: nothing is linked or
// approved. A form at the limit is read (and its token verified).
func TestSignupBodyLimit(t *testing.T) {
	s := newSignupEnv(t)
	s.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	valid, err := s.emu.MintSignupToken("acc-1", emu.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const limit = 64 << 10
	// padForm pads a sign-up form with token to exactly n bytes.
	padForm := func(token string, n int) string {
		f := url.Values{gcp.SignupField: {token}}.Encode() + "&pad="
		return f + strings.Repeat("x", n-len(f))
	}
	cases := []struct {
		name, body string
		code       int
		says       string
	}{
		{"at the limit, forged token", padForm("forged", limit), http.StatusUnauthorized, "not authentic"},
		{"one byte over, valid token", padForm(valid, limit+1), http.StatusRequestEntityTooLarge, "could not be read"},
		{"oversized, valid token", padForm(valid, 2<<20), http.StatusRequestEntityTooLarge, "could not be read"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/signup/gcp", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			w := httptest.NewRecorder()
			s.handler.ServeHTTP(w, req)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.says) {
				t.Errorf("answer %d %.200q, want %d saying %q", w.Code, w.Body, tc.code, tc.says)
			}
		})
	}
	if n := s.linked.Load(); n != 0 {
		t.Errorf("Link ran %d times for refused forms", n)
	}
	if got := s.emu.AccountApproval("acc-1", gcp.SignupApproval); got == "APPROVED" {
		t.Errorf("signup approval %q after refused forms", got)
	}
}
