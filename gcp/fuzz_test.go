package gcp_test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
)

func FuzzDecodeMessage(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "messages", "*.json"))
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"eventId":"1","eventType":"ENTITLEMENT_ACTIVE","entitlement":{"id":"e","updateTime":"bad"}}`))
	f.Add([]byte(`{"eventId":"1","eventType":"ACCOUNT_DELETED","account":{}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := gcp.DecodeMessage(data)
		if err != nil {
			if !errors.Is(err, marketplace.ErrInvalidInput) {
				t.Fatalf("error %v does not wrap marketplace.ErrInvalidInput", err)
			}
			return
		}
		if m.EventID == "" || m.EventType == "" {
			t.Fatalf("accepted a message without id or type: %q", data)
		}
		if m.Entitlement == nil && m.Account == nil && (m.EventType == "ENTITLEMENT_ACTIVE" || m.EventType == "ACCOUNT_DELETED") {
			t.Fatalf("accepted %s without its subject: %q", m.EventType, data)
		}
	})
}

// FuzzPushBody posts arbitrary push bodies with a valid token: the
// handler answers 204 (stored) or 400, or 413 for a body over 1 MiB, never
// a server error.
func FuzzPushBody(f *testing.F) {
	l := newLifecycleEnv(f, nil, nil)
	l.emu.Purchase(f.Context(), "acc-1", "example-api", "standard")
	for _, ev := range l.pub.events() {
		f.Add(pushBody(ev, "m"))
	}
	f.Add([]byte(`{"message":{"data":"bm90IGpzb24="}}`))
	f.Add([]byte(`{"message":null}`))
	f.Add([]byte(`[]`))
	auth := l.bearer(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		w := l.push(t, body, auth)
		tooLarge := len(body) > 1<<20
		if (w.Code == http.StatusRequestEntityTooLarge) != tooLarge || (!tooLarge && w.Code != http.StatusNoContent && w.Code != http.StatusBadRequest) {
			t.Fatalf("body %.200q (%d bytes): %d %s", body, len(body), w.Code, w.Body)
		}
	})
}

// FuzzSignupHandler posts arbitrary tokens: nothing but a token the
// emulator minted may link or approve an account.
func FuzzSignupHandler(f *testing.F) {
	s := newSignupEnv(f)
	s.emu.Purchase(f.Context(), "acc-1", "example-api", "standard")
	valid, err := s.emu.MintSignupToken("acc-1", emu.TokenOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid[:len(valid)-3] + "abc")
	f.Add("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhY2MtMSJ9.")
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		if token == valid {
			return
		}
		w := s.post(token)
		if w.Code < 400 {
			t.Fatalf("token %q accepted: %d", token, w.Code)
		}
		if w.Code >= 500 && w.Code != http.StatusServiceUnavailable {
			t.Fatalf("token %q: server error %d: %s", token, w.Code, w.Body)
		}
		if s.linked.Load() != 0 || s.emu.AccountApproval("acc-1", gcp.SignupApproval) != "PENDING" {
			t.Fatalf("token %q changed state", token)
		}
	})
}
