// Package azure integrates the Microsoft commercial marketplace (Azure
// Marketplace SaaS offers) with the lifecycle engine (package lifecycle),
// in the shape every cloud package shares:
//
//   - NewProvider(engine, Config) checks the Config, takes the shared
//     store, ledger, entitlement cache, logger and clock from the engine,
//     and registers the Provider as the engine's handler of Azure
//     notifications.
//   - Provider is the marketplace.Provider (SubmitUsage into the ledger,
//     ResolveSubscription, IsActive, CheckEntitlement from the shared
//     cache); LandingHandler is the landing page; NotificationHandler is
//     the webhook; Run has nothing to pull (Azure pushes) and waits for its
//     context; Target is the ledger's reporting target (Reporter); Process
//     applies a stored notification.
//
// Azure's own parts are a client for the SaaS Fulfillment API v2 and the
// Metering Service API written to Microsoft's published OpenAPI files
// (there is no maintained Go client) and Entra ID credentials through
// azidentity (entra.go).
//
// A webhook call is authenticated (an RS256 token from the tenant's key
// set, cached by package keyset), decoded, stored in the engine's inbox
// and answered 200 at once; the engine's worker then runs Process, which
// reads the operation from Azure, answers it where Azure waits for an
// answer (Config.Decide; PATCH Success or Failure), follows it until Azure
// says Succeeded or Failed, and only then reads the subscription from
// Azure and stores its state.
//
// Customer id: for Azure the ledger's customer (ledger.Record.Customer,
// marketplace.UsageRecord.CustomerID, Subscription.CustomerID) is the SaaS
// subscription id, because that is the resourceId Azure's Metering API
// bills by. Subscription.ID holds the same id, so lookups by it are the
// store's primary key.
//
// State mapping onto the unified state machine: PendingFulfillmentStart and
// NotStarted → pending; Subscribed → active; Suspended → suspended;
// Unsubscribed → cancelled.
package azure
