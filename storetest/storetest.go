// Package storetest is the conformance suite every marketplace store must
// pass: the ledger's rules (idempotent ingest, sealing, late usage, unit
// remainders), its concurrency (parallel ingest, two reporters never
// claiming the same bucket), surviving an abrupt stop, and the
// subscription, entitlement and notification stores.
//
// A store package runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{NewDB: ..., Open: ...})
//	}
package storetest

import (
	"testing"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// Store is everything a full store provides.
type Store interface {
	ledger.Store
	marketplace.SubscriptionStore
	marketplace.EntitlementStore
	marketplace.NotificationInbox
}

// Harness tells the suite how to make databases and open them.
type Harness struct {
	// NewDB creates a fresh, empty database and returns its name (a file
	// path, a DSN): whatever Open takes.
	NewDB func(t *testing.T) string
	// Open opens a new handle on db. It is called more than once for one
	// db: each handle stands for another process sharing it. The suite
	// closes the handles it wants closed; Open should register cleanup for
	// handles the suite abandons (an abrupt stop).
	Open func(t *testing.T, db string) Store
}

// Run runs the whole suite.
func Run(t *testing.T, h Harness) {
	t.Run("Ledger", func(t *testing.T) { runLedger(t, h) })
	t.Run("Subscriptions", func(t *testing.T) { runSubscriptions(t, h) })
	t.Run("Lookups", func(t *testing.T) { runLookups(t, h) })
	t.Run("Inbox", func(t *testing.T) { runInbox(t, h) })
}
