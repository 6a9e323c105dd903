package lifecycle

import (
	"context"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
)

// Base is the part of a marketplace.Provider that is the same for every
// cloud: usage goes durably into the ledger (the cloud's Target reports
// it), subscriptions are read from the store the lifecycle keeps, and
// entitlement checks are answered from the shared in-process cache. A cloud
// adapter embeds the Base its engine gives it and adds what differs.
type Base struct {
	provider marketplace.CloudProvider
	deps     Deps
	meter    ledger.Meter
}

// Base returns the shared part of p's marketplace.Provider.
func (e *Engine) Base(p marketplace.CloudProvider) Base {
	return Base{provider: p, deps: e.deps, meter: ledger.Meter{Ledger: e.deps.Ledger, Provider: p}}
}

// Name implements marketplace.Provider.
func (b Base) Name() marketplace.CloudProvider { return b.provider }

// SubmitUsage records usage durably in the ledger (see ledger.Meter: under
// a marketplace.WithIdempotencyKey context a resubmission counts once).
func (b Base) SubmitUsage(ctx context.Context, records []marketplace.UsageRecord) error {
	return b.meter.SubmitUsage(ctx, records)
}

// ResolveSubscription returns the customer's stored subscription, or an
// error wrapping marketplace.ErrNoActiveSubscription and ErrNotFound.
func (b Base) ResolveSubscription(ctx context.Context, customerID string) (*marketplace.Subscription, error) {
	return marketplace.LookupSubscription(ctx, b.deps.Store, b.provider, customerID)
}

// IsActive reports whether the customer's subscription is active now.
func (b Base) IsActive(ctx context.Context, customerID string) (bool, error) {
	return marketplace.HasActiveSubscription(ctx, b.deps.Store, b.provider, customerID, b.deps.Clock())
}

// CheckEntitlement answers from the shared cache with
// entitlement.StoreLoader's rules: the customer needs an active
// subscription, and for a non-empty feature either the feature among the
// subscription's Entitlements (or its plan) or a valid stored entitlement.
func (b Base) CheckEntitlement(ctx context.Context, customerID, feature string) error {
	return b.deps.Entitlements.Check(ctx, entitlement.Key{Provider: b.provider, Customer: customerID, Feature: feature})
}
