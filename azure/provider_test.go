package azure_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/azure"
	emu "github.com/saasmarket/marketplace/emulator/azure"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
)

// TestProvider checks the marketplace.Provider: usage into the ledger,
// subscriptions from the store, entitlements from the engine's cache,
// which the lifecycle invalidates.
func TestProvider(t *testing.T) {
	h := newHooked(t, options{})
	ctx := t.Context()
	p := h.provider
	var _ marketplace.Provider = p
	if p.Name() != marketplace.Azure {
		t.Fatal(p.Name())
	}
	if p.Target().Provider() != marketplace.Azure {
		t.Fatal("Target is not Azure's")
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
	h.eng.Invalidate(marketplace.Azure, id)
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

	// A suspension reaches the cached answers as soon as it is applied.
	h.drive(t, id, emu.Action{Name: emu.ActionSuspend})
	if err := p.CheckEntitlement(ctx, id, "basic"); err != nil {
		t.Errorf("before the worker applied the suspension: %v", err)
	}
	h.settle(t)
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

	// Azure pushes; Run has nothing to pull and returns when told.
	rctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := p.Run(rctx); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestNewProviderChecksConfig: a missing setting is named; a second Azure
// provider on one engine is refused.
func TestNewProviderChecksConfig(t *testing.T) {
	h := newHooked(t, options{})
	e := newEngine(t, h.store, h.ledger, h.now, lifecycle.Config{})
	full := azure.Config{Client: h.client, TenantID: h.tenant, AppID: h.app}
	for _, tc := range []struct {
		mod  func(*azure.Config)
		want string
	}{
		{func(c *azure.Config) { c.Client = nil }, "Config.Client"},
		{func(c *azure.Config) { c.TenantID = "" }, "Config.TenantID"},
		{func(c *azure.Config) { c.AppID = "" }, "Config.AppID"},
		{func(c *azure.Config) { c.OperationWait = -time.Second }, "Config.OperationWait"},
		{func(c *azure.Config) { c.OperationWait = time.Hour }, "Config.OperationWait"},
	} {
		cfg := full
		tc.mod(&cfg)
		if _, err := azure.NewProvider(e, cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v, want an error naming %s", err, tc.want)
		}
	}
	if _, err := azure.NewProvider(e, full); err != nil {
		t.Fatal(err)
	}
	if _, err := azure.NewProvider(e, full); err == nil {
		t.Error("a second Azure provider on one engine was registered")
	}
}
