package azure_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/azure"
	emu "github.com/saasmarket/marketplace/emulator/azure"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/sqlite"
)

const patchCalls = "SubscriptionOperations_UpdateOperationStatus"

// TestLifecycle drives every action from the emulator through the webhook
// and the engine's worker. The emulator completes a PATCHed operation two
// seconds after the PATCH, as Azure completes it asynchronously: a change
// applied before Azure says Succeeded, or never, fails the test.
func TestLifecycle(t *testing.T) {
	h := newHooked(t, options{emu: emu.Config{PatchDelay: 2 * time.Second}})
	ctx := t.Context()
	id := h.land(t, "basic")
	if s := h.stored(t, id); s.Status != marketplace.StatusActive || s.Plan != "basic" {
		t.Fatalf("after landing: %+v", s)
	}

	op := h.drive(t, id, emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"})
	if s := h.stored(t, id); s.Plan != "basic" {
		t.Fatalf("the webhook applied the change itself: %+v", s)
	}
	h.settle(t)
	if st, _ := h.emu.Operation(op); st != emu.OpSucceeded {
		t.Fatalf("accepted plan change is %s at Azure", st)
	}
	if s := h.stored(t, id); s.Plan != "pro" || len(s.Entitlements) != 1 || s.Entitlements[0] != "pro" {
		t.Fatalf("plan change not applied: %+v", s)
	}

	h.decide = func(op *azure.Operation) bool { return op.Quantity < 10 }
	op = h.drive(t, id, emu.Action{Name: emu.ActionChangeQuantity, Quantity: 50})
	h.settle(t)
	if st, _ := h.emu.Operation(op); st != emu.OpFailed {
		t.Fatalf("rejected quantity change is %s at Azure", st)
	}
	if s := h.stored(t, id); s.Quantity == 50 {
		t.Fatalf("rejected quantity applied: %+v", s)
	}
	h.drive(t, id, emu.Action{Name: emu.ActionChangeQuantity, Quantity: 4})
	h.settle(t)
	if s := h.stored(t, id); s.Quantity != 4 {
		t.Fatalf("quantity change not applied: %+v", s)
	}
	h.drive(t, id, emu.Action{Name: emu.ActionSuspend})
	h.settle(t)
	if s := h.stored(t, id); s.Status != marketplace.StatusSuspended {
		t.Fatalf("suspend: %+v", s)
	}
	h.drive(t, id, emu.Action{Name: emu.ActionReinstate})
	h.settle(t)
	if s := h.stored(t, id); s.Status != marketplace.StatusActive {
		t.Fatalf("reinstate: %+v", s)
	}
	renew := h.drive(t, id, emu.Action{Name: emu.ActionRenew})
	h.settle(t)

	// A redelivery is answered 200 and changes nothing.
	before := h.stored(t, id).Version
	patches := h.emu.Calls()[patchCalls]
	for range 3 {
		if status, err := h.emu.Deliver(ctx, renew); err != nil || status != http.StatusOK {
			t.Fatalf("redelivery: %d, %v", status, err)
		}
	}
	h.settle(t)
	if h.stored(t, id).Version != before || h.emu.Calls()[patchCalls] != patches {
		t.Fatal("a redelivery changed something")
	}
	if patches != 4 { // two plan/quantity changes, one refusal, one reinstatement
		t.Errorf("%d PATCHes of operations, want 4", patches)
	}

	// Unsubscribe seals the buyer's usage, including the current hour.
	if _, err := h.ledger.Ingest(ctx, []ledger.Record{{Provider: marketplace.Azure, Customer: id, Dimension: "requests", Quantity: 7, Time: h.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	h.drive(t, id, emu.Action{Name: emu.ActionUnsubscribe})
	h.settle(t)
	if s := h.stored(t, id); s.Status != marketplace.StatusCancelled {
		t.Fatalf("unsubscribe: %+v", s)
	}
	bs, err := h.ledger.Buckets(ctx, ledger.BucketFilter{States: []ledger.State{ledger.StateSealed}})
	if err != nil || len(bs) != 1 || bs[0].Customer != id || bs[0].Units != 7 {
		t.Fatalf("final flush: %+v, %v", bs, err)
	}
	if parked, err := h.eng.Parked(ctx, marketplace.Azure); err != nil || len(parked) != 0 {
		t.Fatalf("parked: %+v, %v", parked, err)
	}
}

// TestChangesAppliedAfterAzureCompletes runs in real time: the emulator
// completes a PATCHed operation 1.5 s after the PATCH (and would accept an
// unanswered one only after 10 s), and the engine's worker runs. Plan and
// quantity changes are applied, and not before Azure completed them. The
// handler before issue 9 read the operation once after its PATCH, found it
// InProgress and dropped the change.
func TestChangesAppliedAfterAzureCompletes(t *testing.T) {
	const delay = 1500 * time.Millisecond
	h := newHooked(t, options{emu: emu.Config{PatchDelay: delay, OperationDelay: 10 * time.Second, Clock: time.Now},
		cfg: azure.Config{OperationWait: 5 * time.Second}})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { h.eng.Run(ctx) })
	defer wg.Wait()
	defer cancel()
	id := h.land(t, "basic")
	for _, tc := range []struct {
		action emu.Action
		done   func(*marketplace.Subscription) bool
	}{
		{emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"}, func(s *marketplace.Subscription) bool { return s.Plan == "pro" }},
		{emu.Action{Name: emu.ActionChangeQuantity, Quantity: 3}, func(s *marketplace.Subscription) bool { return s.Quantity == 3 }},
	} {
		start := time.Now()
		op, status, err := h.emu.Drive(ctx, id, tc.action)
		if err != nil || status != http.StatusOK {
			t.Fatalf("%s: webhook %d, %v", tc.action.Name, status, err)
		}
		for !tc.done(h.stored(t, id)) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%s not applied after 10 s: %+v", tc.action.Name, h.stored(t, id))
			}
			time.Sleep(20 * time.Millisecond)
		}
		if took := time.Since(start); took < delay {
			t.Fatalf("%s applied after %s, before Azure completed it", tc.action.Name, took)
		}
		if st, _ := h.emu.Operation(op); st != emu.OpSucceeded {
			t.Fatalf("%s is %s at Azure", tc.action.Name, st)
		}
	}
	if n := h.emu.Calls()[patchCalls]; n != 2 {
		t.Fatalf("%d PATCHes, want 2", n)
	}
}

// TestOperationFollowedAcrossAttempts: an operation still InProgress when
// Process stops following it leaves the notification pending, with the
// answer recorded; the next attempt neither asks Decide nor PATCHes again,
// and applies the change once Azure completed it.
func TestOperationFollowedAcrossAttempts(t *testing.T) {
	h := newHooked(t, options{emu: emu.Config{PatchDelay: 2 * time.Second}})
	ctx := t.Context()
	id := h.land(t, "basic")
	op := h.drive(t, id, emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"})
	if err := h.eng.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	n := h.notification(t, op)
	if n.State != marketplace.NotificationPending || n.Progress != "answered" || n.Attempts != 1 || !n.NextAttempt.After(h.clock.Now()) ||
		!strings.Contains(n.Reason, "not complete") {
		t.Fatalf("after the first attempt: %s", describe(n))
	}
	if st, _ := h.emu.Operation(op); st != emu.OpInProgress {
		t.Fatalf("operation %s, want InProgress until PatchDelay", st)
	}
	if s := h.stored(t, id); s.Plan != "basic" {
		t.Fatalf("applied while Azure says InProgress: %+v", s)
	}
	h.clock.Advance(3 * time.Second)
	if err := h.eng.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := h.notification(t, op); n.State != marketplace.NotificationDone {
		t.Fatalf("after Azure completed: %s", describe(n))
	}
	if s := h.stored(t, id); s.Plan != "pro" {
		t.Fatalf("not applied: %+v", s)
	}
	h.answeredOnce(t, "in all")
}

// TestChangeCompletedAfterLaterOperation: a plan change that Azure
// completes after a later Suspend was applied is applied all the same,
// though its operation is older than the stored state.
func TestChangeCompletedAfterLaterOperation(t *testing.T) {
	h := newHooked(t, options{emu: emu.Config{PatchDelay: 3 * time.Second}})
	ctx := t.Context()
	id := h.land(t, "basic")
	plan := h.drive(t, id, emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"})
	if err := h.eng.Drain(ctx); err != nil { // answered, still InProgress
		t.Fatal(err)
	}
	h.drive(t, id, emu.Action{Name: emu.ActionSuspend})
	if err := h.eng.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if s := h.stored(t, id); s.Status != marketplace.StatusSuspended || s.Plan != "basic" {
		t.Fatalf("after the Suspend: %+v", s)
	}
	if n := h.notification(t, plan); n.State != marketplace.NotificationPending {
		t.Fatalf("the plan change: %s", describe(n))
	}
	h.settle(t)
	if s := h.stored(t, id); s.Status != marketplace.StatusSuspended || s.Plan != "pro" {
		t.Fatalf("the plan change Azure completed last was lost: %+v", s)
	}
}

// TestRedeliveredAndOutOfOrder: the same call delivered twice is applied
// once; a Suspend delivered after the Reinstate that followed it is stale
// and changes nothing; redeliveries of both change nothing.
func TestRedeliveredAndOutOfOrder(t *testing.T) {
	h := newHooked(t, options{emu: emu.Config{PatchDelay: time.Second}})
	ctx := t.Context()
	id := h.land(t, "basic")
	h.lose() // the Suspend's delivery is lost for now
	suspend := h.drive(t, id, emu.Action{Name: emu.ActionSuspend})
	h.setSink(h.hook)
	reinstate := h.drive(t, id, emu.Action{Name: emu.ActionReinstate})
	if st, err := h.emu.Deliver(ctx, reinstate); err != nil || st != http.StatusOK {
		t.Fatalf("second delivery: %d, %v", st, err)
	}
	h.settle(t)
	s := h.stored(t, id)
	if s.Status != marketplace.StatusActive {
		t.Fatalf("after reinstate: %+v", s)
	}
	h.answeredOnce(t, "twice delivered")
	for _, op := range []string{suspend, suspend, reinstate} {
		if st, err := h.emu.Deliver(ctx, op); err != nil || st != http.StatusOK {
			t.Fatalf("late delivery: %d, %v", st, err)
		}
	}
	h.settle(t)
	if after := h.stored(t, id); after.Status != marketplace.StatusActive || after.Version != s.Version {
		t.Fatalf("a stale or repeated call changed the subscription: %+v, was version %d", after, s.Version)
	}
	if n := h.notification(t, suspend); n.State != marketplace.NotificationDone {
		t.Fatalf("the stale Suspend: %s", describe(n))
	}
	h.answeredOnce(t, "redeliveries")
}

// TestReadFailsThenSucceeds: Azure's API fails while a call is processed;
// the webhook was answered 200 all the same (Accept needs no API), the
// notification is retried with backoff, and the change is applied once the
// API is back.
func TestReadFailsThenSucceeds(t *testing.T) {
	h := newHooked(t, options{emu: emu.Config{OperationDelay: time.Hour}})
	ctx := t.Context()
	id := h.land(t, "basic")
	h.emu.SetFaults(emu.Faults{ErrorRate: 1})
	op := h.drive(t, id, emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"})
	for attempt := 1; attempt <= 3; attempt++ {
		if err := h.eng.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		n := h.notification(t, op)
		if n.State != marketplace.NotificationPending || n.Attempts != attempt || !strings.Contains(n.Reason, "HTTP 500") {
			t.Fatalf("attempt %d: %s", attempt, describe(n))
		}
		if s := h.stored(t, id); s.Plan != "basic" {
			t.Fatalf("applied during the outage: %+v", s)
		}
		h.clock.Advance(6 * time.Second) // past the backoff
	}
	h.emu.SetFaults(emu.Faults{})
	h.settle(t)
	if s := h.stored(t, id); s.Plan != "pro" {
		t.Fatalf("after the outage: %+v", s)
	}
	if got, _ := h.emu.Operation(op); got != emu.OpSucceeded {
		t.Fatalf("operation %s", got)
	}
	if n := h.emu.Calls()[patchCalls]; n != 1 {
		t.Fatalf("%d PATCHes of the operation, want 1", n)
	}
}

// TestCrashBetweenAcceptAndApply: a call stored and answered by one process
// that then died is applied by a new engine on the same store file; so is
// one whose worker died after its PATCH, once the lease has run out.
func TestCrashBetweenAcceptAndApply(t *testing.T) {
	h := newHooked(t, options{emu: emu.Config{PatchDelay: time.Second}})
	ctx := t.Context()
	id := h.land(t, "basic")
	op := h.drive(t, id, emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"})

	// The process that answered dies here: a new one opens the same file.
	store, err := sqlite.Open(ctx, h.path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	l := ledger.New(store, ledger.Config{Clock: h.now, Logger: discard})
	defer l.Close()
	eng := newEngine(t, store, l, h.now, lifecycle.Config{})
	h.newProvider(t, eng, options{})
	settleWith(t, h, eng)
	if s := h.stored(t, id); s.Plan != "pro" {
		t.Fatalf("the new engine did not apply the stored call: %+v", s)
	}
	if n := h.notification(t, op); n.State != marketplace.NotificationDone {
		t.Fatalf("%s", describe(n))
	}

	// A worker dies right after its PATCH: its attempt ends unsettled.
	h.lose()
	quantity := h.drive(t, id, emu.Action{Name: emu.ActionChangeQuantity, Quantity: 9})
	crashCtx, crash := context.WithCancel(ctx)
	dying := newEngine(t, store, l, h.now, lifecycle.Config{})
	h.newProvider(t, dying, options{transport: func(next http.RoundTripper) http.RoundTripper {
		return afterPatch{next, crash}
	}})
	if _, err := dying.Accept(ctx, marketplace.Notification{Provider: marketplace.Azure, ID: quantity, Kind: emu.ActionChangeQuantity,
		Subject: id, Time: h.clock.Now(), Payload: []byte(`{"id":"` + quantity + `","subscriptionId":"` + id + `","action":"ChangeQuantity"}`)}); err != nil {
		t.Fatal(err)
	}
	if err := dying.Drain(crashCtx); !errors.Is(err, context.Canceled) {
		t.Fatalf("the dying worker: %v", err)
	}
	if n := h.notification(t, quantity); n.State != marketplace.NotificationPending || n.Progress != "" {
		t.Fatalf("after the crash: %s", describe(n))
	}
	if err := eng.Drain(ctx); err != nil { // leased by the dead worker
		t.Fatal(err)
	}
	if s := h.stored(t, id); s.Quantity == 9 {
		t.Fatal("applied while leased by another worker")
	}
	h.clock.Advance(3 * time.Minute) // the lease runs out
	settleWith(t, h, eng)
	if s := h.stored(t, id); s.Quantity != 9 {
		t.Fatalf("after the lease ran out: %+v", s)
	}
}

// afterPatch ends its worker's context once an operation was PATCHed: the
// process dies with Azure answered and nothing recorded.
type afterPatch struct {
	next http.RoundTripper
	die  context.CancelFunc
}

func (a afterPatch) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := a.next.RoundTrip(r)
	if r.Method == http.MethodPatch && strings.Contains(r.URL.Path, "/operations/") {
		a.die()
	}
	return resp, err
}

// TestWebhookForged sends forged calls: each is refused with 401 and
// stores nothing; genuine tokens with operations Azure does not hold (for
// that subscription) are answered 200 and parked, and change nothing.
func TestWebhookForged(t *testing.T) {
	h := newHooked(t, options{emu: emu.Config{OperationDelay: time.Hour}})
	ctx := t.Context()
	id := h.land(t, "basic")
	// Genuine pending operations whose deliveries we do not see: the
	// forgeries below carry them, and must not decide them.
	h.lose()
	opOfID := h.drive(t, id, emu.Action{Name: emu.ActionChangeQuantity, Quantity: 5})
	id2 := h.land(t, "basic")
	op2 := h.drive(t, id2, emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"})

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

	body := payload(op2, id2, "ChangePlan")
	cases := []struct{ name, auth string }{
		{"no token", ""},
		{"not bearer", "Basic " + signed(nil)},
		{"alg none", "Bearer " + none},
		{"HS256 with the public key", "Bearer " + hs},
		{"wrong aud", "Bearer " + signed(func(c jwt.MapClaims) { c["aud"] = "someone-else" })},
		{"wrong tid", "Bearer " + signed(func(c jwt.MapClaims) { c["tid"] = "other-tenant" })},
		{"wrong appid", "Bearer " + signed(func(c jwt.MapClaims) { c["appid"] = "x"; c["azp"] = "x" })},
		{"wrong issuer", "Bearer " + signed(func(c jwt.MapClaims) { c["iss"] = "https://evil.example/" })},
		{"expired", "Bearer " + signed(func(c jwt.MapClaims) { c["exp"] = h.clock.Now().Add(-time.Hour).Unix() })},
		{"not yet valid", "Bearer " + signed(func(c jwt.MapClaims) { c["nbf"] = h.clock.Now().Add(time.Hour).Unix() })},
		{"unknown kid", "Bearer " + uk},
		{"known kid, other key", "Bearer " + sk},
	}
	before := *h.stored(t, id2)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := h.post(tc.auth, body)
			if rec.Code != http.StatusUnauthorized || strings.TrimSpace(rec.Body.String()) != "not authentic" {
				t.Errorf("%d %q, want 401 not authentic", rec.Code, rec.Body)
			}
			if _, err := h.store.GetNotification(ctx, marketplace.Azure, op2); !errors.Is(err, marketplace.ErrNotFound) {
				t.Errorf("a forgery was stored: %v", err)
			}
		})
	}

	// Authentic tokens (as only Azure holds) carrying what Azure does not
	// hold: an unknown operation, and an operation of another subscription.
	unknown := uuid.NewString()
	for _, b := range []string{payload(unknown, id2, "Unsubscribe"), payload(opOfID, id2, "ChangeQuantity")} {
		if rec := h.post("Bearer "+signed(nil), b); rec.Code != http.StatusOK {
			t.Fatalf("authentic call: %d %s", rec.Code, rec.Body)
		}
	}
	h.settle(t)
	parked, err := h.eng.Parked(ctx, marketplace.Azure)
	if err != nil || len(parked) != 2 {
		t.Fatalf("parked: %+v, %v", parked, err)
	}
	for _, n := range parked {
		if !strings.Contains(n.Reason, "unknown to Azure") && !strings.Contains(n.Reason, "belongs to subscription") {
			t.Errorf("parked %s: %q", n.ID, n.Reason)
		}
	}
	if s := h.stored(t, id2); s.Version != before.Version || s.Plan != "basic" || s.Status != marketplace.StatusActive {
		t.Errorf("state changed: %+v", s)
	}
	for _, op := range []string{op2, opOfID} {
		if st, _ := h.emu.Operation(op); st != emu.OpInProgress {
			t.Errorf("the pending operation %s was decided: %s", op, st)
		}
	}
	if n := h.emu.Calls()[patchCalls]; n != 0 {
		t.Errorf("%d PATCHes", n)
	}
}

func payload(op, sub, action string) string {
	return `{"id":"` + op + `","activityId":"a","subscriptionId":"` + sub + `","action":"` + action +
		`","status":"InProgress","planId":"pro","timeStamp":"2026-03-10T12:20:00Z"}`
}

// post sends a webhook call to the provider's handler.
func (h *hooked) post(auth, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/azure/webhook", strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.hook.ServeHTTP(rec, req)
	return rec
}

// TestWebhookBadRequests: authentic calls with bodies that do not decode
// are refused with 400 naming what is wrong, a body over 1 MiB with 413
// (lifecycle.BodyStatus), a forged one with 401 before its body is read,
// and nothing is stored.
func TestWebhookBadRequests(t *testing.T) {
	h := newHooked(t, options{})
	tok, err := h.emu.SignToken(h.emu.WebhookClaims())
	if err != nil {
		t.Fatal(err)
	}
	op := uuid.NewString()
	// sized pads a body that is no notification to exactly n bytes.
	sized := func(n int) string { return `{"id":"` + strings.Repeat("x", n-len(`{"id":""}`)) + `"}` }
	auth := "Bearer " + tok
	cases := []struct {
		name, auth, body string
		code             int
		want             string
	}{
		{"not JSON", auth, "{", http.StatusBadRequest, "invalid input"},
		{"no operation id", auth, payload("", "s", "Renew"), http.StatusBadRequest, "id must be an operation id"},
		{"subscription id with a slash", auth, payload(op, "a/b", "Renew"), http.StatusBadRequest, "subscriptionId"},
		{"unknown action", auth, payload(op, "s", "Explode"), http.StatusBadRequest, `unknown action "Explode"`},
		{"exactly 1 MiB is read", auth, sized(1 << 20), http.StatusBadRequest, "id must be an operation id"},
		{"one byte over 1 MiB", auth, sized(1<<20 + 1), http.StatusRequestEntityTooLarge, "at most 1048576 bytes"},
		{"too large", auth, sized(2 << 20), http.StatusRequestEntityTooLarge, "at most 1048576 bytes"},
		{"too large and forged", "Bearer forged", sized(2 << 20), http.StatusUnauthorized, "not authentic"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := h.post(tc.auth, tc.body)
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("%d %.200q, want %d naming %q", rec.Code, rec.Body, tc.code, tc.want)
			}
		})
	}
	if ns, err := h.store.ListNotifications(t.Context(), marketplace.Azure, "", 0); err != nil || len(ns) != 0 {
		t.Errorf("stored: %+v, %v", ns, err)
	}
	rec := httptest.NewRecorder()
	h.hook.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/azure/webhook", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", rec.Code)
	}
}

// TestWebhookTokenShapes accepts both token versions Entra ID issues.
func TestWebhookTokenShapes(t *testing.T) {
	h := newHooked(t, options{})
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
		want := http.StatusUnauthorized
		if tc.ok {
			want = http.StatusOK
		}
		if rec := h.post("Bearer "+tok, payload(uuid.NewString(), uuid.NewString(), "Renew")); rec.Code != want {
			t.Errorf("%s: %d, want %d", tc.name, rec.Code, want)
		}
	}
}

// answeredOnce checks that Decide was asked once and one operation PATCHed.
func (h *hooked) answeredOnce(t *testing.T, when string) {
	t.Helper()
	if d, p := h.decisions(), h.emu.Calls()[patchCalls]; d != 1 || p != 1 {
		t.Fatalf("%s: Decide asked %d times, %d PATCHes; want once each", when, d, p)
	}
}
