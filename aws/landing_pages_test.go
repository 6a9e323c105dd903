package aws_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	emu "github.com/saasmarket/marketplace/emulator/aws"
)

// The landing answers are HTML pages (package pages) that show what was
// resolved, or say what went wrong and what to do.
func TestLandingPages(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a := codeApp(t, e)
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	tok, _ := e.emu.MintToken(b.Key(), time.Hour)
	expired, _ := e.emu.MintToken(b.Key(), time.Minute)

	w := postToken(t, a.LandingHandler(), tok)
	if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") ||
		!strings.Contains(w.Body.String(), "<h1>Your subscription is active</h1>") || !strings.Contains(w.Body.String(), product) {
		t.Errorf("landing: %d %q\n%s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}

	e.clock.Advance(2 * time.Minute)
	w = postToken(t, a.LandingHandler(), expired)
	if w.Code != http.StatusBadRequest || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") ||
		!strings.Contains(w.Body.String(), "<h1>Your registration link has expired</h1>") || !strings.Contains(w.Body.String(), "Set up your account") {
		t.Errorf("expired token: %d %q\n%s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
}
