package azure

import (
	"slices"
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

// refresh sets what Azure holds (az, from fromAzure) on the stored
// subscription s, keeping what is ours (AccountID, other attributes), and
// reports whether anything changed.
func refresh(s *marketplace.Subscription, az *marketplace.Subscription) bool {
	changed := s.CustomerID != az.CustomerID || s.ProductCode != az.ProductCode || s.Status != az.Status ||
		s.Plan != az.Plan || s.Quantity != az.Quantity || !s.ExpiresAt.Equal(az.ExpiresAt) ||
		!slices.Equal(s.Entitlements, az.Entitlements)
	s.CustomerID, s.ProductCode, s.Status, s.Plan, s.Quantity = az.CustomerID, az.ProductCode, az.Status, az.Plan, az.Quantity
	s.ExpiresAt, s.Entitlements = az.ExpiresAt, slices.Clone(az.Entitlements)
	for k, v := range az.Attributes {
		if s.Attributes[k] != v {
			if s.Attributes == nil {
				s.Attributes = make(map[string]string, len(az.Attributes))
			}
			s.Attributes[k] = v
			changed = true
		}
	}
	return changed
}
