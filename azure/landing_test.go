package azure_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/azure"
	emu "github.com/saasmarket/marketplace/emulator/azure"
)

// loseActivate lets the first activate call reach Azure, then loses its
// response: the crash window between Azure applying and our storing.
type loseActivate struct {
	next http.RoundTripper
	lost atomic.Bool
}

func (l *loseActivate) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(r)
	if err == nil && strings.HasSuffix(r.URL.Path, "/activate") && l.lost.CompareAndSwap(false, true) {
		resp.Body.Close()
		return nil, errors.New("connection reset (injected after the call was applied)")
	}
	return resp, err
}

func TestLandingTokenKeepsPlus(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"token=ab+c/d%3D%3D", "ab+c/d=="},
		{"x=1&token=%2Bab%2B", "+ab+"},
		{"token=a%20b", "a b"},
	} {
		got, err := azure.LandingToken(tc.raw)
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.raw, got, err, tc.want)
		}
	}
	for _, raw := range []string{"", "token=", "tokens=a", "token=%zz"} {
		if _, err := azure.LandingToken(raw); err == nil {
			t.Errorf("%q: no error", raw)
		}
	}
}

// TestLandingCrashSafe loses the response of the activation Azure applied;
// the buyer's reload completes the landing once.
func TestLandingCrashSafe(t *testing.T) {
	h := newHooked(t)
	lose := &loseActivate{next: h.srv.Client().Transport}
	hc := &http.Client{Transport: lose}
	client := azure.NewClient(azure.ClientConfig{BaseURL: h.srv.URL + "/api", HTTPClient: hc, Tokens: tokensOf(t, h.env)})
	var links, activated atomic.Int32
	landing := azure.NewLanding(azure.LandingConfig{Client: client, Subs: h.store, Logger: discard,
		Link: func(_ context.Context, _ *http.Request, _ *marketplace.Subscription) (string, error) {
			links.Add(1)
			return "acct-7", nil
		},
		Activated: func(context.Context, *marketplace.Subscription) { activated.Add(1) }})
	p, err := h.emu.CreatePurchase(emu.Purchase{PlanID: "pro", Quantity: 2})
	if err != nil {
		t.Fatal(err)
	}
	// The token goes on the URL with its '+' left raw, as a browser may send it.
	target := "/landing?token=" + p.Token
	rec := httptest.NewRecorder()
	landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	if rec.Code != http.StatusBadGateway {
		t.Fatalf("first attempt: %d %s", rec.Code, rec.Body)
	}
	if st, _, _, _ := h.emu.Status(p.SubscriptionID); st != emu.StatusSubscribed {
		t.Fatalf("Azure did not apply the first activation: %s", st)
	}
	if s := h.stored(t, p.SubscriptionID); s.Status != marketplace.StatusPending || s.AccountID != "acct-7" {
		t.Fatalf("after the crash: %+v", s)
	}
	for range 2 {
		rec = httptest.NewRecorder()
		landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("reload: %d %s", rec.Code, rec.Body)
		}
	}
	s := h.stored(t, p.SubscriptionID)
	if s.Status != marketplace.StatusActive || s.Plan != "pro" || s.Quantity != 2 || s.CustomerID != p.SubscriptionID {
		t.Fatalf("after reload: %+v", s)
	}
	if links.Load() != 1 || activated.Load() != 1 {
		t.Fatalf("linked %d times, activated %d times; want once each", links.Load(), activated.Load())
	}
	if n := h.emu.Calls()["FulfillmentOperations_ActivateSubscription"]; n != 2 {
		t.Fatalf("%d activate calls, want 2 (the lost one and its retry)", n)
	}
	// A token that is not Azure's is refused.
	rec = httptest.NewRecorder()
	landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/landing?token=forged", nil))
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("forged token: %d", rec.Code)
	}
}

func tokensOf(t *testing.T, v *env) azure.TokenSource {
	t.Helper()
	cred, err := azure.NewCredential(azure.CredentialConfig{TenantID: v.tenant, ClientID: v.app, ClientSecret: clientSecret,
		Authority: v.srv.URL, HTTPClient: v.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return azure.NewTokens(cred, 0)
}

// TestLandingConcurrent: several tabs land the same purchase at once; the
// subscription is activated and announced once.
func TestLandingConcurrent(t *testing.T) {
	h := newHooked(t)
	var activated atomic.Int32
	landing := azure.NewLanding(azure.LandingConfig{Client: h.client, Subs: h.store, Logger: discard,
		Activated: func(context.Context, *marketplace.Subscription) { activated.Add(1) }})
	p, err := h.emu.CreatePurchase(emu.Purchase{PlanID: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	codes := make([]int, 6)
	for i := range codes {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/landing?token="+url.QueryEscape(p.Token), nil))
			codes[i] = rec.Code
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("tab %d: %d", i, c)
		}
	}
	if activated.Load() != 1 {
		t.Errorf("announced %d times", activated.Load())
	}
	if s := h.stored(t, p.SubscriptionID); s.Status != marketplace.StatusActive {
		t.Errorf("%+v", s)
	}
}
