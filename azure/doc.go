// Package azure integrates the Microsoft commercial marketplace (Azure
// Marketplace SaaS offers): a client for the SaaS Fulfillment API v2 and the
// Metering Service API written to Microsoft's published OpenAPI files (there
// is no maintained Go client), Entra ID tokens through azidentity, the
// landing page and webhook handlers, the ledger's reporting target, and a
// marketplace.Provider.
//
// Customer id: for Azure the ledger's customer (ledger.Record.Customer,
// marketplace.UsageRecord.CustomerID, Subscription.CustomerID) is the SaaS
// subscription id, because that is the resourceId Azure's Metering API
// bills by. Subscription.ID holds the same id.
//
// State mapping onto the unified state machine: PendingFulfillmentStart and
// NotStarted → pending; Subscribed → active; Suspended → suspended;
// Unsubscribed → cancelled.
package azure
