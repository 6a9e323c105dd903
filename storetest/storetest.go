// Package storetest is the conformance suite every marketplace store must
// pass: the ledger's rules (idempotent ingest, sealing, late usage, unit
// remainders), its concurrency (parallel ingest, two reporters never
// claiming the same bucket), surviving an abrupt stop, and the
// subscription, entitlement and notification stores, and quarantining rows
// damaged on disk.
//
// A store package runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{NewDB: ..., Open: ..., Damage: ...})
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
	marketplace.QuarantineStore
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
	// Damage damages db's stored rows behind the store's back, as a disk
	// fault or a bad manual edit would (see Damage); the Quarantine tests
	// use it. It fails t if it cannot.
	Damage func(t *testing.T, db string, d Damage)
}

// Run runs the whole suite.
func Run(t *testing.T, h Harness) {
	t.Run("Ledger", func(t *testing.T) { runLedger(t, h) })
	t.Run("Subscriptions", func(t *testing.T) { runSubscriptions(t, h) })
	t.Run("Lookups", func(t *testing.T) { runLookups(t, h) })
	t.Run("Inbox", func(t *testing.T) { runInbox(t, h) })
	t.Run("Quarantine", func(t *testing.T) { runQuarantine(t, h) })
}
