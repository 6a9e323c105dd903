// Package gcp integrates a SaaS product with Google Cloud Marketplace.
//
// It covers the whole life of a buyer:
//
//   - Sign-up: SignupHandler verifies the sign-up JWT Google posts in the
//     form field x-gcp-marketplace-token (RS256, keys from Google's fixed
//     x509 URL only, exact iss, aud = the product's domain, exp/iat), lets
//     the seller link the buyer's account, and only then approves the
//     account's "signup" approval.
//   - Procurement: Procurement wraps the Partner Procurement API v1 on the
//     official client (accounts and entitlements); Status maps every
//     ENTITLEMENT_* state onto marketplace's state machine.
//   - Lifecycle: Lifecycle applies Pub/Sub messages (pulled by Consumer, or
//     pushed to PushHandler with an OIDC token): deduplicated by eventId,
//     stale updateTimes ignored, the entitlement re-read from the
//     Procurement API before acting, seller policy hooks for approvals,
//     a final usage flush on cancellation, personal data deleted with the
//     account.
//   - Usage: Reporter is the ledger's ledger.Target for Service Control
//     (services.check, then services.report), and Provider implements
//     marketplace.Provider with usage recorded into the ledger.
//
// # Customer ids
//
// The ledger customer of Google usage (ledger.Record.Customer,
// marketplace.UsageRecord.CustomerID, Subscription.CustomerID) is the
// entitlement's usageReportingId exactly as Google gives it, for example
// "project_number:123456": it is the consumerId Service Control bills by.
// Subscription.ID is the entitlement id; the procurement account id is kept
// in Subscription.Attributes["account"] (and AccountID once linked).
//
// # Token billing
//
// Usage in the dimension TokenDimension is recorded in raw tokens and
// billed per million: give the ledger LedgerUnits() (or merge it into
// ledger.Config.Units). Whole millions are reported each hour; the
// remainder carries to the next hour of the same buyer and is settled by
// the ledger's Settle policy when the subscription ends.
package gcp

import "github.com/saasmarket/marketplace"

// TokenDimension is the dimension of token usage, billed per million tokens.
const TokenDimension = "tokens_1m"

// LedgerUnits returns the ledger billing units of Google dimensions:
// TokenDimension bills per 1,000,000 raw tokens.
func LedgerUnits() map[string]int64 {
	return map[string]int64{string(marketplace.GCP) + "/" + TokenDimension: 1_000_000}
}
