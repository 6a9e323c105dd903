package server

import "github.com/saasmarket/marketplace"

// SubscriptionView is a subscription as the API shows it (GET
// /v1/subscriptions): what a client decodes, and what a tool reading a
// data folder directly (marketplaced subscriptions -data) prints, so that
// both show the same thing.
type SubscriptionView = subscription

// ViewSubscription returns the API's view of s.
func ViewSubscription(s *marketplace.Subscription) SubscriptionView { return toSubscription(s) }
