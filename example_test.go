package marketplace_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
	"github.com/saasmarket/marketplace/sqlite"
)

// demoCloud is a tiny in-memory Provider: one cloud, a fixed set of
// subscriptions, and a metering API that prints what it is sent.
type demoCloud struct {
	name marketplace.CloudProvider
	subs map[string]*marketplace.Subscription // by customer
}

func (d *demoCloud) Name() marketplace.CloudProvider { return d.name }

func (d *demoCloud) SubmitUsage(_ context.Context, records []marketplace.UsageRecord) error {
	lines := make([]string, 0, len(records))
	for _, r := range records {
		lines = append(lines, fmt.Sprintf("%s: %s %s %d", d.name, r.CustomerID, r.Dimension, r.Quantity))
	}
	slices.Sort(lines) // the tracker sends pairs in no particular order
	fmt.Println(strings.Join(lines, "\n"))
	return nil
}

func (d *demoCloud) ResolveSubscription(_ context.Context, customerID string) (*marketplace.Subscription, error) {
	s, ok := d.subs[customerID]
	if !ok {
		return nil, fmt.Errorf("customer %q: %w", customerID, marketplace.ErrNotFound)
	}
	return s, nil
}

func (d *demoCloud) IsActive(ctx context.Context, customerID string) (bool, error) {
	s, err := d.ResolveSubscription(ctx, customerID)
	if errors.Is(err, marketplace.ErrNotFound) {
		return false, nil
	}
	return s.Active(), err
}

func (d *demoCloud) CheckEntitlement(ctx context.Context, customerID, feature string) error {
	s, err := d.ResolveSubscription(ctx, customerID)
	if err != nil || !s.Active() {
		return fmt.Errorf("customer %q: %w", customerID, marketplace.ErrNoActiveSubscription)
	}
	if !slices.Contains(s.Entitlements, feature) {
		return fmt.Errorf("customer %q, feature %q: %w", customerID, feature, marketplace.ErrEntitlementDenied)
	}
	return nil
}

func Example() {
	ctx := context.Background()
	aws := &demoCloud{name: marketplace.AWS, subs: map[string]*marketplace.Subscription{
		"cust-1": {ID: "sub-1", CustomerID: "cust-1", Provider: marketplace.AWS,
			Status: marketplace.StatusActive, Entitlements: []string{"inference"}},
	}}
	mgr := marketplace.NewMultiCloudManager(aws)

	// Gate a request on the customer's entitlement.
	for _, feature := range []string{"inference", "fine-tuning"} {
		err := mgr.CheckEntitlement(ctx, marketplace.AWS, "cust-1", feature)
		fmt.Printf("%s: entitled=%v denied=%v\n", feature, err == nil, errors.Is(err, marketplace.ErrEntitlementDenied))
	}
	_, err := mgr.Provider(marketplace.Azure)
	fmt.Println("azure registered:", !errors.Is(err, marketplace.ErrProviderNotRegistered))

	// Meter the requests served, then flush the sums to the customer's cloud.
	tracker := marketplace.NewUsageTracker()
	for range 1000 {
		tracker.Record("cust-1", "requests", 1)
	}
	tracker.Record("cust-1", "tokens_1m", 3)
	fmt.Println("pending records:", tracker.Pending())

	p, err := mgr.Provider(marketplace.AWS)
	if err != nil {
		fmt.Println(err)
		return
	}
	n, err := tracker.Flush(ctx, p)
	fmt.Println("flushed records:", n, "error:", err, "pending:", tracker.Pending())

	// Output:
	// inference: entitled=true denied=false
	// fine-tuning: entitled=false denied=true
	// azure registered: false
	// pending records: 1001
	// aws: cust-1 requests 1000
	// aws: cust-1 tokens_1m 3
	// flushed records: 1001 error: <nil> pending: 0
}

// Example_ledger is the ledger's promise in a few lines: usage recorded
// durably in SQLite (a resent event id counts once), the hour sealed, and
// reported to a metering API that loses the answer of half its calls after
// applying them (ledgertest.FakeCloud, deduplicating as AWS does): billed
// exactly once, in whole units. marketplaced does the same behind its HTTP
// API; `go run ./cmd/marketplaced demo` shows it against the three clouds'
// emulators.
func Example_ledger() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ledger-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	store, err := sqlite.Open(ctx, filepath.Join(dir, "marketplace.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	led := ledger.New(store, ledger.Config{Units: map[string]int64{"tokens_1m": 1_000_000}})
	defer led.Close()

	hour := time.Now().Add(-2 * time.Hour) // an hour that has ended
	usage := []ledger.Record{
		{Provider: marketplace.AWS, Customer: "cust-1", Dimension: "tokens_1m", Quantity: 1_200_000, Time: hour, EventID: "req-1"},
		{Provider: marketplace.AWS, Customer: "cust-1", Dimension: "tokens_1m", Quantity: 900_000, Time: hour, EventID: "req-2"},
	}
	for range 2 { // a client retry after a timeout: the same event ids
		res, err := led.Ingest(ctx, usage)
		fmt.Println("accepted:", res.Accepted, "duplicates:", res.Duplicates, "error:", err)
	}
	sealed, err := led.Seal(ctx)
	fmt.Println("sealed buckets:", sealed, "error:", err)

	cloud := ledgertest.NewFakeCloud(ledgertest.Config{Seed: 1, Faults: ledgertest.Faults{DropResponse: 0.5}})
	reporter := ledger.NewReporter(led, cloud, ledger.ReporterConfig{BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	for range 200 { // until nothing sealed is left (a lost answer is retried after a backoff)
		if _, err := reporter.RunOnce(ctx); err != nil {
			fmt.Println(err)
			return
		}
		left, _ := led.Buckets(ctx, ledger.BucketFilter{States: []ledger.State{ledger.StateSealed}, Limit: 1})
		if len(left) == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	// 2.1 million tokens: 2 units billed; the remainder carries to the next hour.
	fmt.Println("billed tokens_1m:", cloud.Bill().Sum("cust-1", "tokens_1m"))

	// Output:
	// accepted: 2 duplicates: 0 error: <nil>
	// accepted: 0 duplicates: 2 error: <nil>
	// sealed buckets: 1 error: <nil>
	// billed tokens_1m: 2
}
