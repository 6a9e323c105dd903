package azure_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/azure"
	emu "github.com/saasmarket/marketplace/emulator/azure"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
)

// TestProvider checks the marketplace.Provider: usage into the ledger,
// subscriptions from the store, entitlements from the cache, invalidated
// by lifecycle webhooks.
func TestProvider(t *testing.T) {
	h := newHooked(t)
	ctx := t.Context()
	p := azure.NewProvider(h.ledger, h.store, h.store, entitlement.Config{TTL: time.Hour, NegativeTTL: time.Hour})
	h.changed = func(s *marketplace.Subscription) { p.Invalidate(s.CustomerID) }
	var _ marketplace.Provider = p
	if p.Name() != marketplace.Azure {
		t.Fatal(p.Name())
	}
	id := h.land(t, "basic")

	if err := p.CheckEntitlement(ctx, id, "basic"); err != nil {
		t.Errorf("plan feature: %v", err)
	}
	if err := p.CheckEntitlement(ctx, id, "gpu"); !errors.Is(err, marketplace.ErrEntitlementDenied) {
		t.Errorf("other feature: %v", err)
	}
	if _, err := h.store.PutEntitlement(ctx, marketplace.Entitlement{Provider: marketplace.Azure, CustomerID: id, Feature: "gpu", Value: "true"}); err != nil {
		t.Fatal(err)
	}
	p.Invalidate(id)
	if err := p.CheckEntitlement(ctx, id, "gpu"); err != nil {
		t.Errorf("granted feature: %v", err)
	}
	if err := p.CheckEntitlement(ctx, "nobody", "basic"); !errors.Is(err, marketplace.ErrNoActiveSubscription) {
		t.Errorf("unknown customer: %v", err)
	}
	if ok, err := p.IsActive(ctx, id); !ok || err != nil {
		t.Errorf("IsActive: %v %v", ok, err)
	}
	if s, err := p.ResolveSubscription(ctx, id); err != nil || s.Plan != "basic" {
		t.Errorf("ResolveSubscription: %+v %v", s, err)
	}

	// A suspension reaches the cached answers at once.
	h.clock.Advance(time.Second)
	if _, st, err := h.emu.Drive(ctx, id, emu.Action{Name: emu.ActionSuspend}); err != nil || st != http.StatusOK {
		t.Fatal(st, err)
	}
	if err := p.CheckEntitlement(ctx, id, "basic"); !errors.Is(err, marketplace.ErrNoActiveSubscription) {
		t.Errorf("after suspend: %v", err)
	}
	if ok, _ := p.IsActive(ctx, id); ok {
		t.Error("suspended but active")
	}

	if err := p.SubmitUsage(ctx, []marketplace.UsageRecord{{CustomerID: id, Dimension: "requests", Quantity: 3, Timestamp: h.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	if err := h.ledger.Fold(ctx); err != nil {
		t.Fatal(err)
	}
	bs, err := h.ledger.Buckets(ctx, ledger.BucketFilter{})
	if err != nil || len(bs) != 1 || bs[0].Provider != marketplace.Azure || bs[0].Customer != id || bs[0].Quantity != 3 {
		t.Errorf("usage in the ledger: %+v %v", bs, err)
	}
}

// TestWebhookStale: a notification older than the state we hold (a
// Suspend delivered after the Reinstate that followed it) is not applied.
func TestWebhookStale(t *testing.T) {
	h := newHooked(t)
	ctx := t.Context()
	id := h.land(t, "basic")
	real := h.hook
	h.sink.mu.Lock()
	h.sink.h = http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}) // the Suspend's delivery is lost
	h.sink.mu.Unlock()
	h.clock.Advance(time.Second)
	suspend, _, err := h.emu.Drive(ctx, id, emu.Action{Name: emu.ActionSuspend})
	if err != nil {
		t.Fatal(err)
	}
	h.sink.mu.Lock()
	h.sink.h = real
	h.sink.mu.Unlock()
	h.clock.Advance(time.Second)
	if _, st, err := h.emu.Drive(ctx, id, emu.Action{Name: emu.ActionReinstate}); err != nil || st != 200 {
		t.Fatal(st, err)
	}
	if s := h.stored(t, id); s.Status != marketplace.StatusActive {
		t.Fatalf("after reinstate: %+v", s)
	}
	if st, err := h.emu.Deliver(ctx, suspend); err != nil || st != 200 {
		t.Fatal(st, err)
	}
	if s := h.stored(t, id); s.Status != marketplace.StatusActive {
		t.Fatalf("a stale Suspend was applied: %+v", s)
	}
}
