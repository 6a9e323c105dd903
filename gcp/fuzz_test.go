package gcp_test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

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
			if !errors.Is(err, gcp.ErrBadMessage) {
				t.Fatalf("error %v does not wrap ErrBadMessage", err)
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
