// Package aws integrates AWS Marketplace SaaS products, on the official
// AWS SDK for Go v2.
//
//   - Metering calls ResolveCustomer, BatchMeterUsage, MeterUsage and
//     RegisterUsage,
//     validating inputs first; every AWS error matches its ErrorCode with
//     errors.Is and the SDK's typed exception with errors.As.
//   - Reporter is the ledger's Target for AWS: sealed hours go out with
//     BatchMeterUsage exactly once (see its doc).
//   - Provider is the AWS adapter on a lifecycle.Engine, the same shape as
//     package azure's and gcp's: NewProvider(e, Config) takes the shared
//     store, ledger, entitlement cache, logger and clock from the engine
//     and registers itself as the engine's Handler of AWS notifications.
//     It is the marketplace.Provider (usage into the ledger, entitlement
//     checks from the shared cache); LandingHandler serves the
//     registration URL; NotificationHandler receives EventBridge API
//     destination calls and legacy SNS messages, authenticates and decodes
//     them and stores them in the engine's inbox before answering; Run
//     pulls EventBridge events from an SQS queue; Target is the Reporter;
//     Process applies a stored notification (the lifecycle.Handler).
//   - Entitlements reads contract entitlements with GetEntitlements.
//
// The seed API (files seed*.go) keeps the API of the package this project
// started from, so that code written to its documentation compiles and
// works unchanged: MeteringClient (with a RequestSigner such as
// SigV4Signer), SubscriptionManager over a SubscriptionStore
// (MemorySubscriptionStore), EntitlementChecker over an EntitlementStore
// (MemoryEntitlementStore), and TokenBillingTracker, which bills tokens in
// whole millions (DimensionTokens, "tokens_1m") from memory. New code need
// not use it: Provider, Metering and Reporter over the ledger do the same
// jobs durably and exactly once (for tokens, a ledger with
// Units{"tokens_1m": 1_000_000}).
//
// Buyer identity and the ledger customer id: products that identify buyers
// by CustomerIdentifier (with the product code; "product-code mode") bill
// by that id, so it is the ledger customer, UsageRecord.CustomerID and
// Subscription.CustomerID. Products created from June 2026 identify buyers
// by CustomerAWSAccountId and LicenseArn ("license mode", no ProductCode in
// BatchMeterUsage); their customer id is LicenseCustomer(account, license),
// "<account id>/<license ARN>". A record never carries both identifiers.
//
// Subscription states map as follows: a resolved registration token that
// is not linked yet is pending; linked, or subscribe-success / Purchase
// Agreement Created, is active; subscribe-fail, unsubscribe-success and
// License Deprovisioned are cancelled. unsubscribe-pending and Purchase
// Agreement Ended keep the state but seal the buyer's usage at once (the
// final flush), as do the cancellations: AWS accepts a buyer's usage for
// one hour after them. Notifications find their subscription through the
// store's index of Subscription.Attributes: "license_id" (the l-… id of
// the license ARN, which AWS writes in two forms), "aws_account_id",
// "customer_identifier" and "license_arn".
package aws
