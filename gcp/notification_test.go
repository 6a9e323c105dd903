package gcp_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
)

// TestPushEndpoint: forged or misaddressed tokens get 401 "not authentic"
// and store nothing; a valid delivery is stored (not yet applied) and
// answered 204, and so is its redelivery, stored once.
func TestPushEndpoint(t *testing.T) {
	l := newLifecycleEnv(t, nil, nil)
	ctx := t.Context()
	id := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	ev := l.pub.events()[1]
	body := pushBody(ev, "m-1")
	mint := func(aud, email string, o emu.TokenOptions) string {
		tok, err := l.emu.MintPushToken(aud, email, o)
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	signup, _ := l.emu.MintSignupToken("acc-1", emu.TokenOptions{Audience: pushAudience})
	stored := func() bool {
		_, err := l.env.store.GetNotification(ctx, marketplace.GCP, l.notificationID(t, ev))
		return err == nil
	}
	cases := []struct {
		name string
		auth string
		code int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"not bearer", "Basic eDp5", http.StatusUnauthorized},
		{"other audience", mint("https://evil.example.com", pushAccount, emu.TokenOptions{}), http.StatusUnauthorized},
		{"other service account", mint(pushAudience, "someone@evil.iam.gserviceaccount.com", emu.TokenOptions{}), http.StatusUnauthorized},
		{"unverified email", mint(pushAudience, pushAccount, emu.TokenOptions{Extra: map[string]any{"email_verified": false}}), http.StatusUnauthorized},
		{"expired", mint(pushAudience, pushAccount, emu.TokenOptions{IssuedAt: l.clock.Now().Add(-2 * time.Hour), Expiry: time.Hour}), http.StatusUnauthorized},
		{"a sign-up token", "Bearer " + signup, http.StatusUnauthorized},
		{"valid", mint(pushAudience, pushAccount, emu.TokenOptions{}), http.StatusNoContent},
		{"valid, redelivered", mint(pushAudience, pushAccount, emu.TokenOptions{}), http.StatusNoContent},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := l.push(t, body, tc.auth)
			if w.Code != tc.code {
				t.Fatalf("answer %d, want %d: %s", w.Code, tc.code, w.Body)
			}
			if tc.code == http.StatusUnauthorized && strings.TrimSpace(w.Body.String()) != "not authentic" {
				t.Errorf("401 body %q: want only \"not authentic\", no internal detail", w.Body)
			}
			if stored() != (tc.code == http.StatusNoContent) {
				t.Fatalf("stored = %v after answer %d", stored(), w.Code)
			}
		})
	}
	if l.sub(t, id) != nil || len(l.emu.Calls()) != 0 {
		t.Fatal("the handler applied the notification itself")
	}
	if n, _ := l.env.store.ListNotifications(ctx, marketplace.GCP, "", 0); len(n) != 1 {
		t.Fatalf("%d notifications stored, want 1", len(n))
	}
	l.apply(t)
	if s := l.sub(t, id); s == nil || s.Version != 1 || s.Status != marketplace.StatusPending {
		t.Errorf("stored %+v, want one version, pending until Google confirms", s)
	}

	// An inbox failure answers an error status, so Pub/Sub delivers again.
	other := l.emu.Purchase(ctx, "acc-2", "example-api", "standard")
	evs := l.pub.events()
	l.store.failAdd.Store(1)
	if w := l.push(t, pushBody(evs[len(evs)-1], "m-2"), l.bearer(t)); w.Code != http.StatusInternalServerError {
		t.Fatalf("inbox down: answer %d", w.Code)
	}
	l.apply(t)
	if l.sub(t, other) != nil {
		t.Fatal("applied a delivery that was refused")
	}
	if w := l.push(t, nil, l.bearer(t)); w.Code != http.StatusBadRequest {
		t.Errorf("empty body: %d", w.Code)
	}
}

// notificationID is the inbox id of a lifecycle message: its eventId.
func (a *app) notificationID(t *testing.T, data []byte) string {
	t.Helper()
	m, err := gcp.DecodeMessage(data)
	if err != nil {
		t.Fatal(err)
	}
	return m.EventID
}

// TestPushWithoutServiceAccount: with no push service account configured,
// every push delivery is refused.
func TestPushWithoutServiceAccount(t *testing.T) {
	l := newLifecycleEnv(t, nil, func(c *gcp.Config) { c.PushServiceAccount, c.PushAudience = "", "" })
	l.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	if w := l.push(t, pushBody(l.pub.events()[1], "m"), l.bearer(t)); w.Code != http.StatusUnauthorized || strings.TrimSpace(w.Body.String()) != "not authentic" {
		t.Fatalf("answer %d %q", w.Code, w.Body)
	}
	req := httptest.NewRequest(http.MethodGet, "/gcp/pubsub", nil)
	w := httptest.NewRecorder()
	l.p.NotificationHandler().ServeHTTP(w, req)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", w.Code)
	}
}

// TestPushKeysUnavailable: when Google's key URL fails, a push is answered
// 503 (Pub/Sub delivers again), not 401.
func TestPushKeysUnavailable(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "backend error", http.StatusInternalServerError)
	}))
	t.Cleanup(down.Close)
	l := newLifecycleEnv(t, nil, func(c *gcp.Config) { c.PushKeysURL = down.URL })
	l.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	if w := l.push(t, pushBody(l.pub.events()[1], "m"), l.bearer(t)); w.Code != http.StatusServiceUnavailable || strings.Contains(w.Body.String(), down.URL) {
		t.Fatalf("keys unavailable: answer %d %q, want 503 without internal detail", w.Code, w.Body)
	}
}
