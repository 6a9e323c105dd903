// Package gcp integrates a SaaS product with Google Cloud Marketplace, on
// Google's official clients.
//
//   - Procurement wraps the Partner Procurement API v1 (accounts and
//     entitlements); Status maps every ENTITLEMENT_* state onto
//     marketplace's state machine.
//   - Reporter is the ledger's Target for Google: Service Control
//     (services.check, then services.report), each sealed bucket once.
//   - Provider is the Google adapter on a lifecycle.Engine, the same shape
//     as package aws's and azure's: NewProvider(e, Config) takes the shared
//     store, ledger, entitlement cache, logger and clock from the engine
//     and registers itself as the engine's Handler of Google
//     notifications. It is the marketplace.Provider (usage into the
//     ledger, entitlement checks from the shared cache). LandingHandler is
//     the sign-up URL: it verifies the JWT Google posts in the form field
//     x-gcp-marketplace-token (RS256, keys from Google's fixed x509 URL,
//     exact iss, aud = the product's domain, exp/iat), lets Config.Link
//     link the buyer's account, and only then approves the account's
//     "signup" approval. NotificationHandler is the endpoint of a Pub/Sub
//     push subscription (OIDC-verified); Run receives from a Pub/Sub pull
//     subscription; both store each message in the engine's inbox before
//     answering or acknowledging it. Target is the Reporter. Process
//     applies a stored message (the lifecycle.Handler): it re-reads the
//     entitlement or account from the Procurement API, answers the
//     approvals Google waits for through Config.Decide, and stores the
//     state through the engine's Update.
//
// # Customer ids
//
// The ledger customer of Google usage (ledger.Record.Customer,
// marketplace.UsageRecord.CustomerID, Subscription.CustomerID) is the
// entitlement's usageReportingId exactly as Google gives it, for example
// "project_number:123456": it is the consumerId Service Control bills by.
// Subscription.ID is the entitlement id; the procurement account id is kept
// in Subscription.Attributes["account_id"] (AttrAccount), which the store
// indexes, and the seller's own account in AccountID once linked.
//
// # Token billing
//
// Usage in the dimension DimensionTokens is recorded in raw tokens and
// billed per million: give the ledger LedgerUnits() (or merge it into
// ledger.Config.Units). Whole millions are reported each hour; the
// remainder carries to the next hour of the same buyer and is settled by
// the ledger's Settle policy when the subscription ends.
package gcp

import "github.com/saasmarket/marketplace"

// DimensionTokens is the dimension of token usage, billed per million
// tokens (the same name as package aws's).
const DimensionTokens = "tokens_1m"

// LedgerUnits returns the ledger billing units of Google dimensions:
// DimensionTokens bills per 1,000,000 raw tokens.
func LedgerUnits() map[string]int64 {
	return map[string]int64{string(marketplace.GCP) + "/" + DimensionTokens: 1_000_000}
}
