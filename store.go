package marketplace

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The stores below are consumed by every cloud integration, so they are
// declared here, once, in the domain language. Package sqlite implements
// them; package storetest checks any implementation.

// SubscriptionStore keeps subscriptions, keyed by provider and id.
type SubscriptionStore interface {
	// GetSubscription returns the stored subscription, or an error wrapping ErrNotFound.
	GetSubscription(ctx context.Context, p CloudProvider, id string) (*Subscription, error)
	// FindSubscription returns the newest stored subscription of a customer,
	// or an error wrapping ErrNotFound.
	FindSubscription(ctx context.Context, p CloudProvider, customerID string) (*Subscription, error)
	// PutSubscription stores s if the stored version still equals s.Version
	// (zero: it must not exist yet) and returns the stored copy, whose
	// Version is one higher. Otherwise it fails with ErrVersionConflict and
	// stores nothing: re-read, re-apply, try again.
	PutSubscription(ctx context.Context, s Subscription) (*Subscription, error)
	// ListSubscriptions returns the subscriptions of p (all clouds if
	// empty) with the given status (any if empty), ordered by provider and id.
	ListSubscriptions(ctx context.Context, p CloudProvider, status string) ([]Subscription, error)
	// DeleteSubscription removes a subscription (a buyer's personal data
	// after the cloud deleted the account). Missing is not an error.
	DeleteSubscription(ctx context.Context, p CloudProvider, id string) error
}

// Entitlement is one feature, tier or quota a customer holds.
type Entitlement struct {
	Provider   CloudProvider
	CustomerID string
	Feature    string // a dimension, tier or feature name
	// Value is the cloud's value as text ("true", "10", "gold"); empty means granted.
	Value     string
	ExpiresAt time.Time // zero: no expiry
	Version   int64
	Updated   time.Time
}

// Valid reports whether e grants its feature at time t.
func (e *Entitlement) Valid(t time.Time) bool {
	return e != nil && e.Value != "false" && e.Value != "0" && (e.ExpiresAt.IsZero() || t.Before(e.ExpiresAt))
}

// EntitlementStore keeps entitlements, keyed by provider, customer and feature.
type EntitlementStore interface {
	GetEntitlement(ctx context.Context, p CloudProvider, customerID, feature string) (*Entitlement, error)
	// PutEntitlement stores e, replacing any stored one, and returns the
	// stored copy with its new Version.
	PutEntitlement(ctx context.Context, e Entitlement) (*Entitlement, error)
	DeleteEntitlement(ctx context.Context, p CloudProvider, customerID, feature string) error
	ListEntitlements(ctx context.Context, p CloudProvider, customerID string) ([]Entitlement, error)
}

// NotificationLog remembers which cloud notifications were applied, so that
// a redelivery is not applied twice. Record an id after its change is
// stored: a crash in between re-applies it, which handlers make harmless by
// comparing versions and update times.
type NotificationLog interface {
	// MarkProcessed records id until expires; first is false when it was
	// already recorded.
	MarkProcessed(ctx context.Context, p CloudProvider, id string, expires time.Time) (first bool, err error)
	// Processed reports whether id is recorded.
	Processed(ctx context.Context, p CloudProvider, id string) (bool, error)
	// PurgeNotifications forgets ids that expired before t.
	PurgeNotifications(ctx context.Context, t time.Time) (int64, error)
}

// LookupSubscription is the ResolveSubscription of every cloud integration:
// the customer's stored subscription, or, when none is stored, an error
// wrapping both ErrNoActiveSubscription and ErrNotFound.
func LookupSubscription(ctx context.Context, store SubscriptionStore, p CloudProvider, customerID string) (*Subscription, error) {
	s, err := store.FindSubscription(ctx, p, customerID)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("%s: customer %s: %w: %w", p, customerID, ErrNoActiveSubscription, err)
	case err != nil:
		return nil, fmt.Errorf("%s: subscription of customer %s: %w", p, customerID, err)
	}
	return s, nil
}

// HasActiveSubscription is the IsActive of every cloud integration: whether
// the customer's stored subscription is active at now. No stored
// subscription is not an error: the answer is false.
func HasActiveSubscription(ctx context.Context, store SubscriptionStore, p CloudProvider, customerID string, now time.Time) (bool, error) {
	s, err := LookupSubscription(ctx, store, p, customerID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return s.ActiveAt(now), nil
}
