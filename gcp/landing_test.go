package gcp_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
)

// signupEnv is an app whose sign-up keys come from the emulator's key URL
// through a server counting key fetches, and whose Link counts its calls
// and redirects to /welcome.
type signupEnv struct {
	*app
	handler http.Handler
	linked  atomic.Int32
	linkErr error
	fetches atomic.Int32
}

func newSignupEnv(t testing.TB) *signupEnv {
	t.Helper()
	s := &signupEnv{}
	e := newEnv(t, emu.Config{})
	keys := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		e.emu.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(keys.Close)
	cfg := baseConfig(e)
	cfg.SignupKeysURL = keys.URL + "/x509"
	cfg.Link = func(_ context.Context, w http.ResponseWriter, r *http.Request, sub *marketplace.Subscription) (string, error) {
		if s.linkErr != nil {
			return "", s.linkErr
		}
		su, ok := gcp.SignupFromContext(r.Context())
		if !ok || su.AccountID != sub.Attributes[gcp.AttrAccount] {
			return "", fmt.Errorf("sign-up %+v for subscription %+v", su, sub)
		}
		s.linked.Add(1)
		http.Redirect(w, r, "/welcome", http.StatusSeeOther)
		return "seller-" + su.AccountID, nil
	}
	s.app = newApp(t, e, cfg)
	s.handler = s.p.LandingHandler()
	return s
}

func (s *signupEnv) post(token string) *httptest.ResponseRecorder {
	return postSignup(s.handler, token)
}

func postSignup(h http.Handler, token string) *httptest.ResponseRecorder {
	form := url.Values{gcp.SignupField: {token}}
	req := httptest.NewRequest(http.MethodPost, "/signup/gcp", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// TestSignupApprovesAfterLinking: the sign-up before the lifecycle
// messages were applied reads the account's entitlement from the
// Procurement API, links it (Link's redirect is sent once the account is
// approved), and approves the account; a reload approves again without
// asking Link.
func TestSignupApprovesAfterLinking(t *testing.T) {
	s := newSignupEnv(t)
	id := s.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	tok, err := s.emu.MintSignupToken("acc-1", emu.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w := s.post(tok)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/welcome" {
		t.Fatalf("answer %d %q: %s", w.Code, w.Header().Get("Location"), w.Body)
	}
	if s.linked.Load() != 1 || s.emu.AccountApproval("acc-1", gcp.SignupApproval) != "APPROVED" {
		t.Fatalf("linked %d, approval %s", s.linked.Load(), s.emu.AccountApproval("acc-1", gcp.SignupApproval))
	}
	sub := s.sub(t, id)
	if sub == nil || sub.AccountID != "seller-acc-1" || sub.Status != marketplace.StatusPending || sub.Attributes[gcp.AttrAccount] != "acc-1" {
		t.Fatalf("stored %+v", sub)
	}
	if w := s.post(tok); w.Code != http.StatusOK || s.linked.Load() != 1 {
		t.Fatalf("reload: %d, linked %d times", w.Code, s.linked.Load())
	}
	if n := s.emu.Calls()["entitlements.list"]; n != 1 {
		t.Errorf("%d entitlement lists: the reload should find the stored subscription", n)
	}
}

// TestSignupApprovalFails: when Google refuses the approval, Link's
// redirect is not sent: the buyer sees an error and may retry.
func TestSignupApprovalFails(t *testing.T) {
	s := newSignupEnv(t)
	s.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	tok, _ := s.emu.MintSignupToken("acc-1", emu.TokenOptions{})
	s.emu.SetFaults(emu.Faults{Scope: "procurement", ErrorRate: 1})
	if w := s.post(tok); w.Code != http.StatusBadGateway || w.Header().Get("Location") != "" {
		t.Fatalf("answer %d %q", w.Code, w.Header().Get("Location"))
	}
	s.emu.SetFaults(emu.Faults{})
	if w := s.post(tok); w.Code != http.StatusSeeOther || s.emu.AccountApproval("acc-1", gcp.SignupApproval) != "APPROVED" {
		t.Fatalf("retry: %d, approval %s", w.Code, s.emu.AccountApproval("acc-1", gcp.SignupApproval))
	}
}

func TestSignupRefusals(t *testing.T) {
	s := newSignupEnv(t)
	s.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	mint := func(o emu.TokenOptions) string {
		tok, err := s.emu.MintSignupToken("acc-1", o)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	valid := mint(emu.TokenOptions{})
	kid := func() string {
		tok, _, err := jwt.NewParser().ParseUnverified(valid, jwt.MapClaims{})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Header["kid"].(string)
	}()
	claims := func() jwt.MapClaims {
		now := s.clock.Now()
		return jwt.MapClaims{"iss": gcp.SignupIssuer, "aud": audience, "sub": "acc-1", "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
	}
	none := jwt.NewWithClaims(jwt.SigningMethodNone, claims())
	none.Header["kid"] = kid
	noneTok, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	// HS256 keyed with the public certificate: the classic algorithm confusion.
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, claims())
	hs.Header["kid"] = kid
	hsTok, err := hs.SignedString([]byte("-----BEGIN CERTIFICATE-----"))
	if err != nil {
		t.Fatal(err)
	}
	// RS256 with the right kid but another key.
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs := jwt.NewWithClaims(jwt.SigningMethodRS256, claims())
	rs.Header["kid"] = kid
	forged, err := rs.SignedString(other)
	if err != nil {
		t.Fatal(err)
	}
	empty := ""
	cases := []struct {
		name  string
		token string
		code  int
	}{
		{"alg none", noneTok, http.StatusUnauthorized},
		{"HS256", hsTok, http.StatusUnauthorized},
		{"forged signature", forged, http.StatusUnauthorized},
		{"foreign iss", mint(emu.TokenOptions{Issuer: "https://accounts.google.com"}), http.StatusUnauthorized},
		{"iss prefix", mint(emu.TokenOptions{Issuer: gcp.SignupIssuer + "x"}), http.StatusUnauthorized},
		{"other aud", mint(emu.TokenOptions{Audience: "evil.example.com"}), http.StatusUnauthorized},
		{"expired", mint(emu.TokenOptions{IssuedAt: s.clock.Now().Add(-10 * time.Minute)}), http.StatusUnauthorized},
		{"issued in the future", mint(emu.TokenOptions{IssuedAt: s.clock.Now().Add(10 * time.Minute)}), http.StatusUnauthorized},
		{"lives too long", mint(emu.TokenOptions{Expiry: 48 * time.Hour}), http.StatusUnauthorized},
		{"empty sub", mint(emu.TokenOptions{Subject: &empty}), http.StatusUnauthorized},
		{"garbage", "not.a.jwt", http.StatusUnauthorized},
		{"missing", "", http.StatusBadRequest},
	}
	refused := ""
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := s.post(tc.token)
			if w.Code != tc.code {
				t.Fatalf("answer %d, want %d: %s", w.Code, tc.code, w.Body)
			}
			if tc.code == http.StatusUnauthorized {
				// One page for every refusal: no internal detail.
				if refused == "" {
					refused = w.Body.String()
				}
				if !strings.Contains(w.Body.String(), "not authentic") || w.Body.String() != refused {
					t.Errorf("401 body %q: want the one \"not authentic\" page, no internal detail", w.Body)
				}
			}
			if s.linked.Load() != 0 || s.emu.AccountApproval("acc-1", gcp.SignupApproval) != "PENDING" {
				t.Fatalf("state changed: linked %d, approval %s", s.linked.Load(), s.emu.AccountApproval("acc-1", gcp.SignupApproval))
			}
		})
	}
	// Within the leeway, a token just expired is still fine.
	if w := s.post(mint(emu.TokenOptions{IssuedAt: s.clock.Now().Add(-5*time.Minute - 10*time.Second)})); w.Code != http.StatusSeeOther {
		t.Errorf("token 10 s past exp: %d, want accepted within leeway", w.Code)
	}
}

func TestSignupLinkFailureApprovesNothing(t *testing.T) {
	s := newSignupEnv(t)
	s.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	s.linkErr = errors.New("user store down")
	tok, _ := s.emu.MintSignupToken("acc-1", emu.TokenOptions{})
	if w := s.post(tok); w.Code != http.StatusInternalServerError {
		t.Fatalf("answer %d", w.Code)
	}
	if got := s.emu.AccountApproval("acc-1", gcp.SignupApproval); got != "PENDING" {
		t.Fatalf("approval %s after a failed link", got)
	}
	req := httptest.NewRequest(http.MethodGet, "/signup/gcp", nil)
	w := httptest.NewRecorder()
	s.handler.ServeHTTP(w, req)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", w.Code)
	}
}

// TestSignupKeyRotation: keys are cached for the key URL's max-age (the
// emulator, like Google, sends max-age=3600); a token signed with a newly
// published key is accepted at once, even right after a fetch.
func TestSignupKeyRotation(t *testing.T) {
	s := newSignupEnv(t)
	s.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	signUp := func(what string) {
		t.Helper()
		tok, _ := s.emu.MintSignupToken("acc-1", emu.TokenOptions{})
		if w := s.post(tok); w.Code >= 400 {
			t.Fatalf("%s: answer %d: %s", what, w.Code, w.Body)
		}
	}
	wantFetches := func(n int32) {
		t.Helper()
		if got := s.fetches.Load(); got != n {
			t.Fatalf("%d key fetches, want %d", got, n)
		}
	}
	for range 3 {
		signUp("cached key")
	}
	wantFetches(1)
	if err := s.emu.RotateKey(); err != nil {
		t.Fatal(err)
	}
	signUp("a key published right after the last fetch")
	wantFetches(2)
	s.clock.Advance(50 * time.Minute)
	signUp("within max-age")
	wantFetches(2)
	s.clock.Advance(11 * time.Minute)
	signUp("after max-age")
	wantFetches(3)
}

// TestSignupKeysUnavailable: when Google's key URL fails, a sign-up is
// answered 503 (try again), not 401: the token was not found wanting.
func TestSignupKeysUnavailable(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "backend error", http.StatusInternalServerError)
	}))
	t.Cleanup(down.Close)
	l := newLifecycleEnv(t, nil, func(c *gcp.Config) { c.SignupKeysURL = down.URL })
	l.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	tok, _ := l.emu.MintSignupToken("acc-1", emu.TokenOptions{})
	if w := postSignup(l.p.LandingHandler(), tok); w.Code != http.StatusServiceUnavailable || strings.Contains(w.Body.String(), down.URL) {
		t.Fatalf("keys unavailable: answer %d %q, want 503 without internal detail", w.Code, w.Body)
	}
}

// TestSignupLinksStoredAndLaterEntitlements: the seller's account id lands
// on the buyer's stored entitlements, and on those created afterwards; with
// no Link, the account is approved and nothing linked.
func TestSignupLinksStoredAndLaterEntitlements(t *testing.T) {
	l := newLifecycleEnv(t, nil, func(c *gcp.Config) {
		c.Link = func(_ context.Context, _ http.ResponseWriter, _ *http.Request, s *marketplace.Subscription) (string, error) {
			return "seller-" + s.Attributes[gcp.AttrAccount], nil
		}
	})
	ctx := t.Context()
	first := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	other := l.emu.Purchase(ctx, "acc-1", "example-api", "pro")
	from := l.drain(t, 0)
	tok, _ := l.emu.MintSignupToken("acc-1", emu.TokenOptions{})
	if w := postSignup(l.p.LandingHandler(), tok); w.Code != http.StatusOK {
		t.Fatalf("sign-up: %d %s", w.Code, w.Body)
	}
	for _, id := range []string{first, other} {
		if s := l.sub(t, id); s.AccountID != "seller-acc-1" {
			t.Fatalf("stored entitlement %s linked to %q", id, s.AccountID)
		}
	}
	if n := l.emu.Calls()["entitlements.list"]; n != 0 {
		t.Errorf("%d entitlement lists for stored subscriptions", n)
	}
	second := l.emu.Purchase(ctx, "acc-1", "example-api", "enterprise")
	l.drain(t, from)
	if s := l.sub(t, second); s.AccountID != "seller-acc-1" {
		t.Fatalf("later entitlement linked to %q", s.AccountID)
	}

	nolink := newLifecycleEnv(t, nil, nil)
	id := nolink.emu.Purchase(ctx, "acc-2", "example-api", "standard")
	tok, _ = nolink.emu.MintSignupToken("acc-2", emu.TokenOptions{})
	if w := postSignup(nolink.p.LandingHandler(), tok); w.Code != http.StatusOK || nolink.emu.AccountApproval("acc-2", gcp.SignupApproval) != "APPROVED" {
		t.Fatalf("sign-up without Link: %d %s", w.Code, w.Body)
	}
	if s := nolink.sub(t, id); s == nil || s.AccountID != "" {
		t.Fatalf("without Link: %+v", s)
	}
}
