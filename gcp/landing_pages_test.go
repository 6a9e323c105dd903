package gcp_test

import (
	"net/http"
	"strings"
	"testing"

	emu "github.com/saasmarket/marketplace/emulator/gcp"
)

// The sign-up answers are HTML pages (package pages): the confirmation
// shows what was resolved; a refusal says what to do.
func TestLandingPages(t *testing.T) {
	s := newSignupEnv(t)
	s.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	tok, err := s.emu.MintSignupToken("acc-1", emu.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if w := s.post(tok); w.Code != http.StatusSeeOther {
		t.Fatalf("sign-up: %d", w.Code)
	}
	// A reload: linked already, so Link writes nothing and the
	// confirmation page shows.
	w := s.post(tok)
	body := w.Body.String()
	if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("reload: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	for _, want := range []string{"Google Cloud Marketplace", "example-api", "standard", "seller-acc-1"} {
		if !strings.Contains(body, want) {
			t.Errorf("the confirmation lacks %q:\n%s", want, body)
		}
	}
	w = s.post("not.a.jwt")
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "<h1>We could not confirm this sign-up</h1>") {
		t.Errorf("refusal: %d\n%s", w.Code, w.Body)
	}
}
