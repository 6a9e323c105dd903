package azure_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/azure"
	emu "github.com/saasmarket/marketplace/emulator/azure"
	"github.com/saasmarket/marketplace/ledger"
)

// TestClientFulfillment drives every Fulfillment v2 endpoint against the emulator.
func TestClientFulfillment(t *testing.T) {
	v := newEnv(t, emu.Config{PageSize: 2}, ledger.Config{})
	ctx := t.Context()
	c := v.client

	// An empty list is an empty body.
	subs, err := c.ListSubscriptions(ctx)
	if err != nil || len(subs) != 0 {
		t.Fatalf("empty list: %v, %v", subs, err)
	}

	p, err := v.emu.CreatePurchase(emu.Purchase{PlanID: "basic", Quantity: 3, Email: "ada@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Token, "+") {
		t.Fatalf("token %q has no '+': the test would not catch a decoding mistake", p.Token)
	}
	res, err := c.Resolve(ctx, p.Token)
	if err != nil {
		t.Fatal(err)
	}
	if res.ID != p.SubscriptionID || res.PlanID != "basic" || res.Quantity != 3 || res.Subscription.Beneficiary.EmailID != "ada@example.com" ||
		res.Subscription.SaaSSubscriptionStatus != azure.SubPendingFulfillmentStart || res.Subscription.Term.StartDate.IsZero() {
		t.Fatalf("resolve: %+v", res)
	}
	// A token with its '+' turned into ' ' (a careless URL decode) is refused.
	_, err = c.Resolve(ctx, strings.ReplaceAll(p.Token, "+", " "))
	var ae *azure.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 400 || ae.RequestID == "" || ae.CorrelationID == "" || !strings.Contains(err.Error(), ae.RequestID) {
		t.Fatalf("bad token: %v", err)
	}
	cctx := azure.WithCorrelationID(ctx, "corr-1")
	if err := c.Activate(cctx, p.SubscriptionID, "pro", 0); !errors.As(err, &ae) || ae.CorrelationID != "corr-1" {
		t.Fatalf("activate with another plan: %v", err)
	}
	for range 2 { // idempotent
		if err := c.Activate(ctx, p.SubscriptionID, "basic", 3); err != nil {
			t.Fatal(err)
		}
	}
	s, err := c.GetSubscription(ctx, p.SubscriptionID)
	if err != nil || s.SaaSSubscriptionStatus != azure.SubSubscribed {
		t.Fatalf("get: %+v, %v", s, err)
	}
	if _, err := c.GetSubscription(ctx, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, marketplace.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	for range 4 {
		v.subscribe(t, "basic")
	}
	subs, err = c.ListSubscriptions(ctx)
	if err != nil || len(subs) != 5 {
		t.Fatalf("list over 3 pages: %d, %v", len(subs), err)
	}
	if n := v.emu.Calls()["FulfillmentOperations_ListSubscriptions"]; n != 4 {
		t.Errorf("%d list calls, want 1 + 3 pages", n)
	}
	plans, err := c.ListAvailablePlans(ctx, p.SubscriptionID)
	if err != nil || len(plans) != 2 || plans[1].PlanID != "pro" {
		t.Fatalf("plans: %+v, %v", plans, err)
	}

	loc, err := c.ChangePlan(ctx, p.SubscriptionID, "pro")
	if err != nil || loc == "" {
		t.Fatalf("change plan: %q, %v", loc, err)
	}
	ops, err := c.ListOperations(ctx, p.SubscriptionID)
	if err != nil || len(ops) != 1 || ops[0].Action != azure.ActionChangePlan || ops[0].Status != azure.OpInProgress {
		t.Fatalf("operations: %+v, %v", ops, err)
	}
	v.clock.Advance(time.Second)
	op, err := c.WaitOperation(ctx, loc)
	if err != nil || op.Status != azure.OpSucceeded {
		t.Fatalf("wait: %+v, %v", op, err)
	}
	if _, err := c.ChangeQuantity(ctx, p.SubscriptionID, 0); err == nil {
		t.Fatal("a quantity of 0 (neither plan nor quantity) was accepted")
	}
	loc, err = c.ChangeQuantity(ctx, p.SubscriptionID, 7)
	if err != nil {
		t.Fatal(err)
	}
	v.clock.Advance(time.Second)
	if op, err = c.WaitOperation(ctx, loc); err != nil || op.Status != azure.OpSucceeded {
		t.Fatalf("wait: %+v, %v", op, err)
	}
	if s, _ = c.GetSubscription(ctx, p.SubscriptionID); s.PlanID != "pro" || s.Quantity != 7 {
		t.Fatalf("after changes: %+v", s)
	}

	// A buyer's plan change waits for us: accept it, then reject another.
	opID, _, err := v.emu.Drive(ctx, p.SubscriptionID, emu.Action{Name: emu.ActionChangePlan, PlanID: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetOperation(ctx, p.SubscriptionID, opID)
	if err != nil || got.Status != azure.OpInProgress || got.PlanID != "basic" || got.TimeStamp.IsZero() {
		t.Fatalf("get operation: %+v, %v", got, err)
	}
	if err := c.UpdateOperation(ctx, p.SubscriptionID, opID, true); err != nil {
		t.Fatal(err)
	}
	opID2, _, _ := v.emu.Drive(ctx, p.SubscriptionID, emu.Action{Name: emu.ActionChangeQuantity, Quantity: 9})
	if err := c.UpdateOperation(ctx, p.SubscriptionID, opID2, false); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateOperation(ctx, p.SubscriptionID, opID2, true); !errors.As(err, &ae) || ae.StatusCode != 409 {
		t.Fatalf("changing a decided operation: %v", err)
	}
	if s, _ = c.GetSubscription(ctx, p.SubscriptionID); s.PlanID != "basic" || s.Quantity != 7 {
		t.Fatalf("after accept and reject: %+v", s)
	}

	loc, err = c.Delete(ctx, p.SubscriptionID)
	if err != nil {
		t.Fatal(err)
	}
	v.clock.Advance(time.Second)
	if op, err = c.WaitOperation(ctx, loc); err != nil || op.Action != azure.ActionUnsubscribe || op.Status != azure.OpSucceeded {
		t.Fatalf("delete: %+v, %v", op, err)
	}
	if s, _ = c.GetSubscription(ctx, p.SubscriptionID); s.SaaSSubscriptionStatus != azure.SubUnsubscribed {
		t.Fatalf("after delete: %+v", s)
	}
}

// TestClientMetering covers usageEvent (accepted, 409 duplicate),
// batchUsageEvent limits and GET usageEvents.
func TestClientMetering(t *testing.T) {
	v := newEnv(t, emu.Config{}, ledger.Config{})
	ctx := t.Context()
	id := v.subscribe(t, "basic")
	ev := azure.UsageEvent{ResourceID: id, Quantity: 12.5, Dimension: "requests", EffectiveStartTime: azure.Time{onDay(10, 0)}, PlanID: "basic"}
	first, err := v.client.PostUsageEvent(ctx, ev)
	if err != nil || first.Status != azure.UsageAccepted || first.UsageEventID == "" {
		t.Fatalf("first: %+v, %v", first, err)
	}
	ev.Quantity = 3
	ev.EffectiveStartTime = azure.Time{onDay(10, 30)} // same hour
	dup, err := v.client.PostUsageEvent(ctx, ev)
	if err != nil || dup.Status != azure.UsageDuplicate || dup.Error.Accepted() == nil ||
		dup.Error.Accepted().Quantity != 12.5 || dup.Error.Accepted().UsageEventID != first.UsageEventID {
		t.Fatalf("duplicate: %+v, %v", dup, err)
	}
	ev.Quantity = 0
	ev.EffectiveStartTime = azure.Time{onDay(11, 0)}
	var ae *azure.APIError
	if _, err := v.client.PostUsageEvent(ctx, ev); !errors.As(err, &ae) || ae.Code != azure.UsageInvalidQuantity {
		t.Fatalf("quantity 0: %v", err)
	}
	too := make([]azure.UsageEvent, 26)
	for i := range too {
		too[i] = azure.UsageEvent{ResourceID: id, Quantity: 1, Dimension: "d" + string(rune('a'+i)), EffectiveStartTime: azure.Time{onDay(11, 0)}, PlanID: "basic"}
	}
	if _, err := v.client.PostBatchUsageEvent(ctx, too); !errors.As(err, &ae) || ae.StatusCode != 400 {
		t.Fatalf("26 events: %v", err)
	}
	br, err := v.client.PostBatchUsageEvent(ctx, too[:25])
	if err != nil || br.Count != 25 || br.Result[24].Status != azure.UsageAccepted {
		t.Fatalf("25 events: %+v, %v", br, err)
	}
	recs, err := v.client.GetUsageEvents(ctx, azure.UsageQuery{Start: onDay(0, 0), Dimension: "requests"})
	if err != nil || len(recs) != 1 || recs[0].UsageResourceID != id || recs[0].ProcessedQuantity != 12.5 || !recs[0].UsageDate.Equal(onDay(10, 0)) {
		t.Fatalf("usageEvents: %+v, %v", recs, err)
	}
}

// TestDecodeTolerant decodes a subscription with fields this client does
// not know and date-only term dates.
func TestDecodeTolerant(t *testing.T) {
	b, err := os.ReadFile("testdata/subscription_date_only.json")
	if err != nil {
		t.Fatal(err)
	}
	var s azure.Subscription
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.Term.StartDate.Format(time.DateOnly) != "2026-03-01" || s.Created.IsZero() || s.SaaSSubscriptionStatus != azure.SubSubscribed {
		t.Fatalf("%+v", s)
	}
}
