package azure_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/azure"
	emu "github.com/saasmarket/marketplace/emulator/azure"
	"github.com/saasmarket/marketplace/ledger"
)

// hooked is an env whose emulator calls our webhook handler.
type hooked struct {
	*env
	hook    *azure.Webhook
	landing *azure.Landing
	sink    *webhookSink
	decide  func(op *azure.Operation) bool
	changed func(*marketplace.Subscription)
}

func newHooked(t *testing.T) *hooked {
	t.Helper()
	sink := &webhookSink{h: http.NotFoundHandler()}
	hs := httptest.NewServer(sink)
	t.Cleanup(hs.Close)
	v := newEnv(t, emu.Config{WebhookURL: hs.URL}, ledger.Config{})
	h := &hooked{env: v, sink: sink}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	hook, err := azure.NewWebhook(ctx, azure.WebhookConfig{
		Client: v.client, Subs: v.store, Log: v.store, Seal: v.ledger.SealCustomer,
		Decide: func(_ context.Context, _ *marketplace.Subscription, op *azure.Operation) (bool, error) {
			if h.decide != nil {
				return h.decide(op), nil
			}
			return true, nil
		},
		Changed: func(_ context.Context, s *marketplace.Subscription) {
			if h.changed != nil {
				h.changed(s)
			}
		},
		TenantID: v.tenant, AppID: v.app, JWKSURL: v.srv.URL + "/" + v.tenant + "/discovery/v2.0/keys",
		HTTPClient: v.srv.Client(), Clock: v.clock.Now, Logger: discard, KeyRefresh: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.hook = hook
	sink.mu.Lock()
	sink.h = hook
	sink.mu.Unlock()
	h.landing = azure.NewLanding(azure.LandingConfig{Client: v.client, Subs: v.store, Logger: discard,
		Link: func(context.Context, *http.Request, *marketplace.Subscription) (string, error) { return "acct-1", nil }})
	return h
}

// land buys plan and goes through the landing page.
func (h *hooked) land(t *testing.T, plan string) string {
	t.Helper()
	p, err := h.emu.CreatePurchase(emu.Purchase{PlanID: plan})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/azure/landing?token="+url.QueryEscape(p.Token), nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("landing: %d %s", rec.Code, rec.Body)
	}
	return p.SubscriptionID
}

func (h *hooked) stored(t *testing.T, id string) *marketplace.Subscription {
	t.Helper()
	s, err := h.store.GetSubscription(t.Context(), marketplace.Azure, id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWebhookLifecycle drives every action from the emulator through our
// webhook handler.
func TestWebhookLifecycle(t *testing.T) {
	h := newHooked(t)
	ctx := t.Context()
	id := h.land(t, "basic")
	if s := h.stored(t, id); s.Status != marketplace.StatusActive || s.AccountID != "acct-1" || s.Plan != "basic" {
		t.Fatalf("after landing: %+v", s)
	}
	drive := func(a emu.Action) string {
		t.Helper()
		h.clock.Advance(time.Second)
		op, status, err := h.emu.Drive(ctx, id, a)
		if err != nil || status != http.StatusOK {
			t.Fatalf("%s: status %d, %v", a.Name, status, err)
		}
		return op
	}
	op := drive(emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"})
	if st, _ := h.emu.Operation(op); st != emu.OpSucceeded {
		t.Fatalf("accepted plan change is %s at Azure", st)
	}
	if s := h.stored(t, id); s.Plan != "pro" {
		t.Fatalf("plan change not applied: %+v", s)
	}
	h.decide = func(op *azure.Operation) bool { return op.Quantity < 10 }
	op = drive(emu.Action{Name: emu.ActionChangeQuantity, Quantity: 50})
	if st, _ := h.emu.Operation(op); st != emu.OpFailed {
		t.Fatalf("rejected quantity change is %s at Azure", st)
	}
	drive(emu.Action{Name: emu.ActionChangeQuantity, Quantity: 4})
	if s := h.stored(t, id); s.Quantity != 4 {
		t.Fatalf("quantity: %+v", s)
	}
	drive(emu.Action{Name: emu.ActionSuspend})
	if s := h.stored(t, id); s.Status != marketplace.StatusSuspended {
		t.Fatalf("suspend: %+v", s)
	}
	drive(emu.Action{Name: emu.ActionReinstate})
	if s := h.stored(t, id); s.Status != marketplace.StatusActive {
		t.Fatalf("reinstate: %+v", s)
	}
	renew := drive(emu.Action{Name: emu.ActionRenew})

	// A redelivery is answered 200 and changes nothing.
	before := h.stored(t, id).Version
	patches := h.emu.Calls()["SubscriptionOperations_UpdateOperationStatus"]
	for range 3 {
		if status, err := h.emu.Deliver(ctx, renew); err != nil || status != http.StatusOK {
			t.Fatalf("redelivery: %d, %v", status, err)
		}
	}
	if h.stored(t, id).Version != before || h.emu.Calls()["SubscriptionOperations_UpdateOperationStatus"] != patches {
		t.Fatal("a redelivery changed something")
	}

	// Unsubscribe flushes the buyer's usage, including the current hour.
	if _, err := h.ledger.Ingest(ctx, []ledger.Record{{Provider: marketplace.Azure, Customer: id, Dimension: "requests", Quantity: 7, Time: h.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	drive(emu.Action{Name: emu.ActionUnsubscribe})
	if s := h.stored(t, id); s.Status != marketplace.StatusCancelled {
		t.Fatalf("unsubscribe: %+v", s)
	}
	bs, err := h.ledger.Buckets(ctx, ledger.BucketFilter{States: []ledger.State{ledger.StateSealed}})
	if err != nil || len(bs) != 1 || bs[0].Customer != id || bs[0].Units != 7 {
		t.Fatalf("final flush: %+v, %v", bs, err)
	}
}

// TestWebhookForged sends forged calls: each is refused with 401 and
// changes nothing.
func TestWebhookForged(t *testing.T) {
	h := newHooked(t)
	ctx := t.Context()
	id := h.land(t, "basic")
	h.clock.Advance(time.Second)
	// A genuine pending operation whose payload the forgeries carry.
	opID, _, err := h.emu.Drive(ctx, id, emu.Action{Name: emu.ActionSuspend})
	if err != nil {
		t.Fatal(err)
	}
	processed, _ := h.store.Processed(ctx, marketplace.Azure, id+"/"+opID)
	if !processed {
		t.Fatal("the genuine call was not applied")
	}
	// A genuine pending operation whose delivery we do not see: the
	// forgeries below carry it, and must not apply it.
	h.sink.mu.Lock()
	h.sink.h = http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	h.sink.mu.Unlock()
	id2 := h.land(t, "basic")
	op2, _, err := h.emu.Drive(ctx, id2, emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"})
	if err != nil {
		t.Fatal(err)
	}

	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	pubDER, _ := x509.MarshalPKIXPublicKey(h.emu.PublicKey())
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	signed := func(mod func(jwt.MapClaims)) string {
		c := h.emu.WebhookClaims()
		if mod != nil {
			mod(c)
		}
		s, err := h.emu.SignToken(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, h.emu.WebhookClaims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	hsTok := jwt.NewWithClaims(jwt.SigningMethodHS256, h.emu.WebhookClaims())
	hsTok.Header["kid"] = h.emu.KeyID()
	hs, _ := hsTok.SignedString(pubPEM)
	unknownKid := jwt.NewWithClaims(jwt.SigningMethodRS256, h.emu.WebhookClaims())
	unknownKid.Header["kid"] = "not-a-known-kid"
	uk, _ := unknownKid.SignedString(other)
	sameKidOtherKey := jwt.NewWithClaims(jwt.SigningMethodRS256, h.emu.WebhookClaims())
	sameKidOtherKey.Header["kid"] = h.emu.KeyID()
	sk, _ := sameKidOtherKey.SignedString(other)

	payload := func(op, sub, action string) string {
		return `{"id":"` + op + `","activityId":"a","subscriptionId":"` + sub + `","action":"` + action + `","status":"InProgress","planId":"pro","timeStamp":"2026-03-10T12:20:00Z"}`
	}
	cases := []struct {
		name, auth, body string
	}{
		{"no token", "", payload(op2, id2, "ChangePlan")},
		{"not bearer", "Basic " + signed(nil), payload(op2, id2, "ChangePlan")},
		{"alg none", "Bearer " + none, payload(op2, id2, "ChangePlan")},
		{"HS256 with the public key", "Bearer " + hs, payload(op2, id2, "ChangePlan")},
		{"wrong aud", "Bearer " + signed(func(c jwt.MapClaims) { c["aud"] = "someone-else" }), payload(op2, id2, "ChangePlan")},
		{"wrong tid", "Bearer " + signed(func(c jwt.MapClaims) { c["tid"] = "other-tenant" }), payload(op2, id2, "ChangePlan")},
		{"wrong appid", "Bearer " + signed(func(c jwt.MapClaims) { c["appid"] = "x"; c["azp"] = "x" }), payload(op2, id2, "ChangePlan")},
		{"wrong issuer", "Bearer " + signed(func(c jwt.MapClaims) { c["iss"] = "https://evil.example/" }), payload(op2, id2, "ChangePlan")},
		{"expired", "Bearer " + signed(func(c jwt.MapClaims) { c["exp"] = h.clock.Now().Add(-time.Hour).Unix() }), payload(op2, id2, "ChangePlan")},
		{"not yet valid", "Bearer " + signed(func(c jwt.MapClaims) { c["nbf"] = h.clock.Now().Add(time.Hour).Unix() }), payload(op2, id2, "ChangePlan")},
		{"unknown kid", "Bearer " + uk, payload(op2, id2, "ChangePlan")},
		{"known kid, other key", "Bearer " + sk, payload(op2, id2, "ChangePlan")},
		{"valid token, operation Azure does not know", "Bearer " + signed(nil), payload("9d0e3b0e-0000-4000-8000-00000000dead", id2, "Unsubscribe")},
		{"valid token, operation of another subscription", "Bearer " + signed(nil), payload(opID, id2, "Unsubscribe")},
	}
	before := *h.stored(t, id2)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/azure/webhook", strings.NewReader(tc.body))
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			rec := httptest.NewRecorder()
			h.hook.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("status %d, want 401", rec.Code)
			}
			if s := h.stored(t, id2); s.Version != before.Version || s.Plan != "basic" {
				t.Errorf("state changed: %+v", s)
			}
			if st, _ := h.emu.Operation(op2); st != emu.OpInProgress {
				t.Errorf("the pending operation was decided: %s", st)
			}
		})
	}
}

// TestWebhookRetriedAfterFailure: when Azure's API fails during a webhook,
// the handler answers 500 and changes nothing; Azure's redelivery then
// applies the change once.
func TestWebhookRetriedAfterFailure(t *testing.T) {
	h := newHooked(t)
	ctx := t.Context()
	id := h.land(t, "basic")
	h.clock.Advance(time.Second)
	h.emu.SetFaults(emu.Faults{ErrorRate: 1})
	op, st, err := h.emu.Drive(ctx, id, emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"})
	if err != nil || st != http.StatusInternalServerError {
		t.Fatalf("during the outage: %d, %v", st, err)
	}
	if s := h.stored(t, id); s.Plan != "basic" {
		t.Fatalf("applied during the outage: %+v", s)
	}
	h.emu.SetFaults(emu.Faults{})
	for range 2 {
		if st, err := h.emu.Deliver(ctx, op); err != nil || st != http.StatusOK {
			t.Fatalf("redelivery: %d, %v", st, err)
		}
	}
	if s := h.stored(t, id); s.Plan != "pro" {
		t.Fatalf("after redelivery: %+v", s)
	}
	if got, _ := h.emu.Operation(op); got != emu.OpSucceeded {
		t.Fatalf("operation %s", got)
	}
	if n := h.emu.Calls()["SubscriptionOperations_UpdateOperationStatus"]; n != 1 {
		t.Fatalf("%d PATCHes of the operation, want 1", n)
	}
}

// TestWebhookTokenShapes accepts both token versions Entra ID issues.
func TestWebhookTokenShapes(t *testing.T) {
	h := newHooked(t)
	cases := []struct {
		name string
		mod  func(jwt.MapClaims)
		ok   bool
	}{
		{"v2.0 with azp", func(c jwt.MapClaims) { delete(c, "appid") }, true},
		{"v1.0 with appid", func(c jwt.MapClaims) {
			delete(c, "azp")
			c["iss"] = "https://sts.windows.net/" + h.tenant + "/"
			c["ver"] = "1.0"
		}, true},
		{"exp within the leeway", func(c jwt.MapClaims) { c["exp"] = h.clock.Now().Add(-30 * time.Second).Unix() }, true},
		{"no exp", func(c jwt.MapClaims) { delete(c, "exp") }, false},
		{"aud as a list with ours", func(c jwt.MapClaims) { c["aud"] = []string{"x", h.app} }, true},
		{"appid and azp disagree", func(c jwt.MapClaims) { c["azp"] = "other" }, false},
		{"issuer of another tenant", func(c jwt.MapClaims) { c["iss"] = "https://login.microsoftonline.com/other/v2.0" }, false},
	}
	for _, tc := range cases {
		c := h.emu.WebhookClaims()
		tc.mod(c)
		tok, err := h.emu.SignToken(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.hook.Authenticate(t.Context(), "Bearer "+tok); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
