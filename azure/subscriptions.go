package azure

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/saasmarket/marketplace"
)

// statusOf maps saasSubscriptionStatus onto the unified state machine.
func statusOf(s string) string {
	switch s {
	case SubSubscribed:
		return marketplace.StatusActive
	case SubSuspended:
		return marketplace.StatusSuspended
	case SubUnsubscribed:
		return marketplace.StatusCancelled
	}
	return marketplace.StatusPending
}

// fromAzure builds the stored form of an Azure subscription.
func fromAzure(s *Subscription) marketplace.Subscription {
	out := marketplace.Subscription{
		ID: s.ID, CustomerID: s.ID, Provider: marketplace.Azure, ProductCode: s.OfferID,
		Status: statusOf(s.SaaSSubscriptionStatus), Plan: s.PlanID, Quantity: s.Quantity,
		Attributes: map[string]string{"offerId": s.OfferID, "publisherId": s.PublisherID,
			"beneficiaryEmail": s.Beneficiary.EmailID, "beneficiaryTenantId": s.Beneficiary.TenantID,
			"purchaserEmail": s.Purchaser.EmailID, "name": s.Name},
	}
	if !s.Term.EndDate.IsZero() && !s.AutoRenew {
		out.ExpiresAt = s.Term.EndDate.Add(24 * time.Hour)
	}
	if s.PlanID != "" {
		out.Entitlements = []string{s.PlanID}
	}
	return out
}

// update applies fn to the stored subscription id (or to base when none is
// stored) and stores it, retrying on version conflicts. fn returns false
// to store nothing.
func update(ctx context.Context, store marketplace.SubscriptionStore, id string, base func() (*marketplace.Subscription, error),
	fn func(s *marketplace.Subscription) bool) (*marketplace.Subscription, error) {
	for range 10 {
		s, err := store.GetSubscription(ctx, marketplace.Azure, id)
		if errors.Is(err, marketplace.ErrNotFound) && base != nil {
			if s, err = base(); err == nil {
				s.Version = 0
			}
		}
		if err != nil {
			return nil, err
		}
		if !fn(s) {
			return s, nil
		}
		stored, err := store.PutSubscription(ctx, *s)
		if errors.Is(err, marketplace.ErrVersionConflict) {
			continue
		}
		return stored, err
	}
	return nil, fmt.Errorf("azure: subscription %s: %w after 10 attempts", id, marketplace.ErrVersionConflict)
}
