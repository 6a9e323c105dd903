package marketplace_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/saasmarket/marketplace"
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
