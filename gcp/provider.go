package gcp

import (
	"context"
	"errors"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
)

// ProviderConfig sets up a Provider.
type ProviderConfig struct {
	// Ledger records usage (SubmitUsage); a Reporter sends it to Google.
	Ledger *ledger.Ledger
	// Subscriptions hold the entitlements the Lifecycle stores.
	Subscriptions marketplace.SubscriptionStore
	// Entitlements, optional, grant features beyond the plan.
	Entitlements marketplace.EntitlementStore
	// PlanFeatures lists the features of each plan; the plan's own name
	// is always one.
	PlanFeatures map[string][]string
	// Cache tunes the entitlement cache.
	Cache entitlement.Config
}

// Provider is Google Cloud Marketplace as a marketplace.Provider. Customer
// ids are usageReportingIds (see the package doc). Entitlement checks are
// answered from an entitlement.Cache that the Lifecycle invalidates
// (pass Provider.Invalidate as LifecycleConfig.Invalidate).
type Provider struct {
	meter ledger.Meter
	cfg   ProviderConfig
	cache *entitlement.Cache
}

var _ marketplace.Provider = (*Provider)(nil)

// NewProvider returns a Provider; Ledger and Subscriptions are required.
func NewProvider(cfg ProviderConfig) (*Provider, error) {
	if cfg.Ledger == nil || cfg.Subscriptions == nil {
		return nil, errors.New("gcp: ProviderConfig needs Ledger and Subscriptions")
	}
	p := &Provider{meter: ledger.Meter{Ledger: cfg.Ledger, Provider: marketplace.GCP}, cfg: cfg}
	p.cache = entitlement.New(entitlement.StoreLoader{
		Subscriptions: cfg.Subscriptions, Entitlements: cfg.Entitlements, PlanFeatures: cfg.PlanFeatures, Clock: cfg.Ledger.Config().Clock,
	}.Load, cfg.Cache)
	return p, nil
}

// Name is marketplace.GCP.
func (*Provider) Name() marketplace.CloudProvider { return marketplace.GCP }

// SubmitUsage records usage durably in the ledger; the Reporter bills it
// per hour through Service Control. Record TokenDimension in raw tokens.
func (p *Provider) SubmitUsage(ctx context.Context, records []marketplace.UsageRecord) error {
	return p.meter.SubmitUsage(ctx, records)
}

// ResolveSubscription returns the newest stored subscription of a customer
// (a usageReportingId), or an error wrapping marketplace.ErrNoActiveSubscription
// when there is none.
func (p *Provider) ResolveSubscription(ctx context.Context, customerID string) (*marketplace.Subscription, error) {
	return marketplace.LookupSubscription(ctx, p.cfg.Subscriptions, marketplace.GCP, customerID)
}

// IsActive reports whether the customer's subscription is active.
func (p *Provider) IsActive(ctx context.Context, customerID string) (bool, error) {
	return marketplace.HasActiveSubscription(ctx, p.cfg.Subscriptions, marketplace.GCP, customerID, p.cfg.Ledger.Config().Clock())
}

// CheckEntitlement answers from the cache: nil when entitled, else an
// error wrapping marketplace.ErrNoActiveSubscription or ErrEntitlementDenied.
func (p *Provider) CheckEntitlement(ctx context.Context, customerID, feature string) error {
	return p.cache.Check(ctx, entitlement.Key{Provider: marketplace.GCP, Customer: customerID, Feature: feature})
}

// Invalidate drops the cached answers of a customer; the Lifecycle calls
// it after every stored change.
func (p *Provider) Invalidate(customerID string) { p.cache.Invalidate(marketplace.GCP, customerID) }
