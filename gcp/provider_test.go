package gcp_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
)

func TestProvider(t *testing.T) {
	l := newLifecycleEnv(t, nil, nil)
	ctx := t.Context()
	var p marketplace.Provider = l.p
	if p.Name() != marketplace.GCP {
		t.Fatalf("Name %s", p.Name())
	}
	if _, err := p.ResolveSubscription(ctx, "project_number:1"); !errors.Is(err, marketplace.ErrNoActiveSubscription) {
		t.Fatalf("unknown customer: %v", err)
	}
	if err := p.CheckEntitlement(ctx, "project_number:1", "standard"); !errors.Is(err, marketplace.ErrNoActiveSubscription) {
		t.Fatalf("unknown customer entitled: %v", err)
	}
	id := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	_, _, consumer, _ := l.emu.Entitlement(id)
	l.drain(t, 0)
	s, err := p.ResolveSubscription(ctx, consumer)
	if err != nil || s.ID != id || s.Status != marketplace.StatusActive {
		t.Fatalf("ResolveSubscription: %+v %v", s, err)
	}
	if ok, err := p.IsActive(ctx, consumer); !ok || err != nil {
		t.Fatalf("IsActive: %v %v", ok, err)
	}
	cases := []struct {
		feature string
		want    error
	}{
		{"standard", nil},
		{"gpu", marketplace.ErrEntitlementDenied},
		{"beta", nil}, // granted in the entitlement store below
	}
	if _, err := l.env.store.PutEntitlement(ctx, marketplace.Entitlement{Provider: marketplace.GCP, CustomerID: consumer, Feature: "beta", Value: "true"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		if err := p.CheckEntitlement(ctx, consumer, tc.feature); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", tc.feature, err, tc.want)
		}
	}
	// SubmitUsage records into the ledger under the usageReportingId.
	if err := p.SubmitUsage(ctx, []marketplace.UsageRecord{{CustomerID: consumer, Dimension: gcp.DimensionTokens, Quantity: 1_500_000, Timestamp: onDay(11, 0)}}); err != nil {
		t.Fatal(err)
	}
	if err := l.ledger.Fold(ctx); err != nil {
		t.Fatal(err)
	}
	bs, err := l.ledger.Buckets(ctx, ledger.BucketFilter{Provider: marketplace.GCP, Customer: consumer})
	if err != nil || len(bs) != 1 || bs[0].Quantity != 1_500_000 {
		t.Fatalf("buckets %+v %v", bs, err)
	}
	if err := p.SubmitUsage(ctx, []marketplace.UsageRecord{{CustomerID: consumer, Dimension: "requests", Quantity: -1}}); !errors.Is(err, marketplace.ErrMeteringFailed) {
		t.Errorf("negative usage: %v", err)
	}
}

func TestNewProviderRefusesBadConfig(t *testing.T) {
	e := newEnv(t, emu.Config{})
	for _, tc := range []struct {
		want string
		edit func(*gcp.Config)
	}{
		{"Config.Procurement", func(c *gcp.Config) { c.Procurement = nil }},
		{"Config.ServiceControl", func(c *gcp.Config) { c.ServiceControl = nil }},
		{"Config.ServiceName", func(c *gcp.Config) { c.ServiceName = "" }},
		{"Config.SignupAudience", func(c *gcp.Config) { c.SignupAudience = "" }},
		{"Config.PushAudience", func(c *gcp.Config) { c.PushAudience = "" }},
		{"Config.Leeway", func(c *gcp.Config) { c.Leeway = -time.Second }},
	} {
		eng, err := lifecycle.New(lifecycle.Deps{Store: e.store, Ledger: e.ledger, Logger: discard}, lifecycle.Config{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := baseConfig(e)
		tc.edit(&cfg)
		if _, err := gcp.NewProvider(eng, cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.want, err)
		}
	}
	if _, err := gcp.NewProvider(nil, baseConfig(e)); err == nil {
		t.Error("no engine accepted")
	}
	eng, _ := lifecycle.New(lifecycle.Deps{Store: e.store, Ledger: e.ledger, Logger: discard}, lifecycle.Config{})
	if _, err := gcp.NewProvider(eng, baseConfig(e)); err != nil {
		t.Fatal(err)
	}
	if _, err := gcp.NewProvider(eng, baseConfig(e)); err == nil {
		t.Error("a second Google provider on one engine was accepted")
	}
}
