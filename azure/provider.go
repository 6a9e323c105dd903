package azure

import (
	"context"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
)

// Provider is the marketplace.Provider for Azure. SubmitUsage records into
// the ledger (a Reporter with this package's Reporter target sends it);
// subscriptions are read from the store the landing page and webhook keep;
// entitlement checks are served from an entitlement.Cache.
type Provider struct {
	meter ledger.Meter
	subs  marketplace.SubscriptionStore
	ents  marketplace.EntitlementStore
	cache *entitlement.Cache
}

// NewProvider returns the provider. ents may be nil: then a subscription
// grants exactly its plan id as a feature. Call Invalidate (or pass it as
// the webhook's and landing's change hook) after a subscription changes.
func NewProvider(l *ledger.Ledger, subs marketplace.SubscriptionStore, ents marketplace.EntitlementStore, cfg entitlement.Config) *Provider {
	p := &Provider{meter: ledger.Meter{Ledger: l, Provider: marketplace.Azure}, subs: subs, ents: ents}
	p.cache = entitlement.New(entitlement.StoreLoader{Subscriptions: subs, Entitlements: ents, Clock: l.Config().Clock}.Load, cfg)
	return p
}

// Name returns marketplace.Azure.
func (*Provider) Name() marketplace.CloudProvider { return marketplace.Azure }

// SubmitUsage records usage durably in the ledger; CustomerID is the SaaS
// subscription id.
func (p *Provider) SubmitUsage(ctx context.Context, records []marketplace.UsageRecord) error {
	return p.meter.SubmitUsage(ctx, records)
}

// ResolveSubscription returns the stored subscription of a customer (its
// SaaS subscription id).
func (p *Provider) ResolveSubscription(ctx context.Context, customerID string) (*marketplace.Subscription, error) {
	return marketplace.LookupSubscription(ctx, p.subs, marketplace.Azure, customerID)
}

// IsActive reports whether the customer's subscription is active.
func (p *Provider) IsActive(ctx context.Context, customerID string) (bool, error) {
	return marketplace.HasActiveSubscription(ctx, p.subs, marketplace.Azure, customerID, p.meter.Ledger.Config().Clock())
}

// CheckEntitlement answers from the cache: nil when entitled.
func (p *Provider) CheckEntitlement(ctx context.Context, customerID, feature string) error {
	return p.cache.Check(ctx, entitlement.Key{Provider: marketplace.Azure, Customer: customerID, Feature: feature})
}

// Invalidate drops the cached answers of a customer.
func (p *Provider) Invalidate(customerID string) { p.cache.Invalidate(marketplace.Azure, customerID) }

// The types implement the interfaces they are consumed through.
var (
	_ marketplace.Provider = (*Provider)(nil)
	_ ledger.Target        = (*Reporter)(nil)
)
