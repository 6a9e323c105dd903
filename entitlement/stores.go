package entitlement

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/saasmarket/marketplace"
)

// StoreLoader decides from stored subscriptions and entitlements, by the
// rules every cloud integration shares:
//
//   - no stored subscription, or one that is not active: no active subscription;
//   - an empty feature asks only for an active subscription: granted;
//   - the feature is the subscription's plan, one of its Entitlements, or one
//     of the features PlanFeatures lists for its plan: granted until the
//     subscription expires;
//   - a stored entitlement for the feature that is valid (see
//     marketplace.Entitlement.Valid): granted until the earlier expiry;
//   - otherwise denied.
type StoreLoader struct {
	Subscriptions marketplace.SubscriptionStore
	Entitlements  marketplace.EntitlementStore // optional
	PlanFeatures  map[string][]string          // optional: the features each plan includes
	Clock         func() time.Time             // default time.Now
}

// Load is a LoadFunc.
func (l StoreLoader) Load(ctx context.Context, k Key) (Decision, error) {
	now := time.Now()
	if l.Clock != nil {
		now = l.Clock()
	}
	s, err := l.Subscriptions.FindSubscription(ctx, k.Provider, k.Customer)
	switch {
	case errors.Is(err, marketplace.ErrNotFound):
		return Inactive(k), nil
	case err != nil:
		return Decision{}, err
	case !s.ActiveAt(now):
		return Inactive(k), nil
	case k.Feature == "" || k.Feature == s.Plan || slices.Contains(s.Entitlements, k.Feature) || slices.Contains(l.PlanFeatures[s.Plan], k.Feature):
		return Decision{Until: s.ExpiresAt}, nil
	}
	if l.Entitlements != nil {
		e, err := l.Entitlements.GetEntitlement(ctx, k.Provider, k.Customer, k.Feature)
		switch {
		case errors.Is(err, marketplace.ErrNotFound):
		case err != nil:
			return Decision{}, err
		case e.Valid(now):
			return Decision{Until: earliest(e.ExpiresAt, s.ExpiresAt)}, nil
		}
	}
	return Denied(k), nil
}

// earliest returns the earlier of two expiries, zero meaning none.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}
