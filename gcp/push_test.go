package gcp_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
)

const (
	pushAudience = "https://seller.example.com/gcp/pubsub"
	pushAccount  = "pubsub-push@seller-project.iam.gserviceaccount.com"
)

func TestPushEndpoint(t *testing.T) {
	l := newLifecycleEnv(t, nil, gcp.Policy{})
	ctx := t.Context()
	id := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	ev := l.pub.events()[1]
	h := &gcp.PushHandler{Lifecycle: l.lc, Logger: discard, Verifier: gcp.NewPushVerifier(gcp.PushVerifierConfig{
		Audience: pushAudience, ServiceAccountEmail: pushAccount, KeysURL: l.srv.URL + "/x509", Clock: l.clock.Now})}
	body, _ := json.Marshal(map[string]any{
		"message":      map[string]any{"data": ev, "messageId": "m-1", "attributes": map[string]string{}},
		"subscription": "projects/seller-project/subscriptions/marketplace-push",
	})
	mint := func(aud, email string, o emu.TokenOptions) string {
		tok, err := l.emu.MintPushToken(aud, email, o)
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	signup, _ := l.emu.MintSignupToken("acc-1", emu.TokenOptions{Audience: pushAudience})
	cases := []struct {
		name string
		auth string
		code int
	}{
		{"no token", "", http.StatusUnauthorized},
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
			req := httptest.NewRequest(http.MethodPost, "/gcp/pubsub", bytes.NewReader(body))
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tc.code {
				t.Fatalf("answer %d, want %d: %s", w.Code, tc.code, w.Body)
			}
			applied := l.sub(t, id) != nil
			if applied != (tc.code == http.StatusNoContent) {
				t.Fatalf("applied = %v after answer %d", applied, w.Code)
			}
		})
	}
	if s := l.sub(t, id); s.Version != 1 || s.Status != marketplace.StatusPending {
		t.Errorf("stored %+v, want one version, pending until Google confirms", s)
	}
	// A store failure answers an error status, so Pub/Sub redelivers.
	other := l.emu.Purchase(ctx, "acc-2", "example-api", "standard")
	evs := l.pub.events()
	body2, _ := json.Marshal(map[string]any{"message": map[string]any{"data": evs[len(evs)-1], "messageId": "m-2"}})
	l.subs.fail.Store(1)
	req := httptest.NewRequest(http.MethodPost, "/gcp/pubsub", bytes.NewReader(body2))
	req.Header.Set("Authorization", mint(pushAudience, pushAccount, emu.TokenOptions{}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code < 500 || l.sub(t, other) != nil {
		t.Fatalf("store down: answer %d", w.Code)
	}
}
