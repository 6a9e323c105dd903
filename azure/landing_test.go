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
	for _, raw := range []string{"", "token=", "tokens=a", "token=%zz", "token=a%0Ab"} {
		if _, err := azure.LandingToken(raw); !errors.Is(err, marketplace.ErrInvalidInput) {
			t.Errorf("%q: %v, want ErrInvalidInput", raw, err)
		}
	}
}

// TestLandingCrashSafe loses the response of the activation Azure applied;
// the buyer's reload completes the sign-up once. Link's redirect is sent
// only once the subscription is active.
func TestLandingCrashSafe(t *testing.T) {
	lose := &loseActivate{}
	var links atomic.Int32
	h := newHooked(t, options{
		transport: func(next http.RoundTripper) http.RoundTripper { lose.next = next; return lose },
		cfg: azure.Config{Link: func(_ context.Context, w http.ResponseWriter, r *http.Request, _ *marketplace.Subscription) (string, error) {
			links.Add(1)
			http.Redirect(w, r, "/welcome", http.StatusSeeOther)
			return "acct-7", nil
		}},
	})
	p, err := h.emu.CreatePurchase(emu.Purchase{PlanID: "pro", Quantity: 2})
	if err != nil {
		t.Fatal(err)
	}
	// The token goes on the URL with its '+' left raw, as a browser may send it.
	target := "/landing?token=" + p.Token
	rec := httptest.NewRecorder()
	h.landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	if rec.Code != http.StatusBadGateway || rec.Header().Get("Location") != "" {
		t.Fatalf("first attempt: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	if st, _, _, _ := h.emu.Status(p.SubscriptionID); st != emu.StatusSubscribed {
		t.Fatalf("Azure did not apply the first activation: %s", st)
	}
	if s := h.stored(t, p.SubscriptionID); s.Status != marketplace.StatusPending || s.AccountID != "acct-7" {
		t.Fatalf("after the crash: %+v", s)
	}
	for range 2 {
		rec = httptest.NewRecorder()
		h.landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("reload: %d %s", rec.Code, rec.Body)
		}
	}
	s := h.stored(t, p.SubscriptionID)
	if s.Status != marketplace.StatusActive || s.Plan != "pro" || s.Quantity != 2 || s.CustomerID != p.SubscriptionID || s.AccountID != "acct-7" {
		t.Fatalf("after reload: %+v", s)
	}
	if links.Load() != 1 || s.Version != 3 { // stored pending, linked, activated
		t.Fatalf("linked %d times, version %d; want once, 3", links.Load(), s.Version)
	}
	if n := h.emu.Calls()["FulfillmentOperations_ActivateSubscription"]; n != 2 {
		t.Fatalf("%d activate calls, want 2 (the lost one and its retry)", n)
	}
	if err := h.provider.CheckEntitlement(t.Context(), p.SubscriptionID, "pro"); err != nil {
		t.Fatalf("entitlement after sign-up: %v", err)
	}

	// A clean sign-up sends Link's redirect.
	p2, err := h.emu.CreatePurchase(emu.Purchase{PlanID: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	h.landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/landing?token="+url.QueryEscape(p2.Token), nil))
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/welcome" {
		t.Fatalf("sign-up with a redirecting Link: %d %v", rec.Code, rec.Header())
	}
	if s := h.stored(t, p2.SubscriptionID); s.Status != marketplace.StatusActive {
		t.Fatalf("%+v", s)
	}

	// A token that is not Azure's is refused.
	rec = httptest.NewRecorder()
	h.landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/landing?token=forged", nil))
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("forged token: %d", rec.Code)
	}
}

// TestLandingLinkFails: a failing Link answers 500 and leaves the
// subscription pending and not activated at Azure; the reload completes it.
func TestLandingLinkFails(t *testing.T) {
	var calls atomic.Int32
	h := newHooked(t, options{cfg: azure.Config{Link: func(context.Context, http.ResponseWriter, *http.Request, *marketplace.Subscription) (string, error) {
		if calls.Add(1) == 1 {
			return "", errors.New("account service down")
		}
		return "acct-2", nil
	}}})
	p, err := h.emu.CreatePurchase(emu.Purchase{PlanID: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	target := "/landing?token=" + url.QueryEscape(p.Token)
	rec := httptest.NewRecorder()
	h.landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "account service") {
		t.Fatalf("failed link: %d %s", rec.Code, rec.Body)
	}
	if st, _, _, _ := h.emu.Status(p.SubscriptionID); st != emu.StatusPendingFulfillmentStart {
		t.Fatalf("activated at Azure without an account: %s", st)
	}
	if s := h.stored(t, p.SubscriptionID); s.Status != marketplace.StatusPending || s.AccountID != "" {
		t.Fatalf("after the failed link: %+v", s)
	}
	rec = httptest.NewRecorder()
	h.landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("reload: %d %s", rec.Code, rec.Body)
	}
	if s := h.stored(t, p.SubscriptionID); s.Status != marketplace.StatusActive || s.AccountID != "acct-2" {
		t.Fatalf("after reload: %+v", s)
	}
}

// TestLandingConcurrent: several tabs land the same purchase at once; each
// is answered 200 and the subscription is stored pending and active once
// each (version 2), whatever the interleaving.
func TestLandingConcurrent(t *testing.T) {
	h := newHooked(t, options{})
	p, err := h.emu.CreatePurchase(emu.Purchase{PlanID: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	codes := make([]int, 6)
	for i := range codes {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			h.landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/landing?token="+url.QueryEscape(p.Token), nil))
			codes[i] = rec.Code
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("tab %d: %d", i, c)
		}
	}
	if s := h.stored(t, p.SubscriptionID); s.Status != marketplace.StatusActive || s.Version != 2 {
		t.Errorf("%+v", s)
	}
}

// TestLandingCancelled: a subscription cancelled before the buyer landed
// is refused with 400, and not activated.
func TestLandingCancelled(t *testing.T) {
	h := newHooked(t, options{})
	p, err := h.emu.CreatePurchase(emu.Purchase{PlanID: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	h.drive(t, p.SubscriptionID, emu.Action{Name: emu.ActionUnsubscribe})
	h.settle(t)
	rec := httptest.NewRecorder()
	h.landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/landing?token="+url.QueryEscape(p.Token), nil))
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "cancelled") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if n := h.emu.Calls()["FulfillmentOperations_ActivateSubscription"]; n != 0 {
		t.Fatalf("%d activations", n)
	}
}
