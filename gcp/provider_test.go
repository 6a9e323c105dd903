package gcp_test

import (
	"errors"
	"testing"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/gcp"
	"github.com/saasmarket/marketplace/ledger"
)

func TestProvider(t *testing.T) {
	l := newLifecycleEnv(t, nil, gcp.Policy{})
	ctx := t.Context()
	var p marketplace.Provider = l.provider
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
	if _, err := l.store.PutEntitlement(ctx, marketplace.Entitlement{Provider: marketplace.GCP, CustomerID: consumer, Feature: "beta", Value: "true"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		if err := p.CheckEntitlement(ctx, consumer, tc.feature); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", tc.feature, err, tc.want)
		}
	}
	// SubmitUsage records into the ledger under the usageReportingId.
	if err := p.SubmitUsage(ctx, []marketplace.UsageRecord{{CustomerID: consumer, Dimension: gcp.TokenDimension, Quantity: 1_500_000, Timestamp: onDay(11, 0)}}); err != nil {
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
