package aws_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger"
)

func TestGetEntitlementsPages(t *testing.T) {
	e := newEnv(t, emu.Config{EmptyPages: true})
	x := aws.NewEntitlements(e.ent)
	var want int
	for i := range 12 {
		b := e.emu.AddBuyer(emu.Buyer{ProductCode: "contract"})
		var ents []emu.Entitlement
		for d := range 5 {
			n := int64(d + i)
			exp := e.clock.Now().Add(time.Duration(d+1) * time.Hour)
			ents = append(ents, emu.Entitlement{Dimension: fmt.Sprintf("dim%d", d), IntegerValue: &n, ExpirationDate: &exp})
			want++
		}
		if err := e.emu.SetEntitlements(b.Key(), ents); err != nil {
			t.Fatal(err)
		}
	}
	all, err := x.GetEntitlements(t.Context(), "contract", aws.EntitlementFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != want {
		t.Fatalf("%d entitlements over the pages, want %d", len(all), want)
	}
	if all[0].ExpiresAt.IsZero() || all[0].Text == "" || all[0].CustomerIdentifier == "" {
		t.Errorf("entitlement not mapped: %+v", all[0])
	}
	some, err := x.GetEntitlements(t.Context(), "contract", aws.EntitlementFilter{CustomerIdentifier: []string{all[0].CustomerIdentifier}, Dimension: []string{"dim1", "dim2"}})
	if err != nil || len(some) != 2 {
		t.Errorf("filtered: %d, %v", len(some), err)
	}
	if _, err := x.GetEntitlements(t.Context(), "", aws.EntitlementFilter{}); !errors.Is(err, aws.ErrInvalidInput) {
		t.Errorf("no product code: %v", err)
	}
}

// gatedStore blocks the first Get after arm until released, to interleave
// a revoke with a check in flight. The gate is armed explicitly: a
// non-blocking "is anyone waiting?" send would let a fast Get slip past it.
type gatedStore struct {
	*aws.MemoryEntitlementStore
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) Get(ctx context.Context, customer, dimension string) (*aws.Entitlement, error) {
	ent, err := g.MemoryEntitlementStore.Get(ctx, customer, dimension)
	if g.armed.CompareAndSwap(true, false) {
		g.entered <- struct{}{}
		<-g.release
	}
	return ent, err
}

// TestCheckerRevokeRace: a check that read the store before a revoke
// finishes after it; its stale answer must not be cached.
func TestCheckerRevokeRace(t *testing.T) {
	g := &gatedStore{MemoryEntitlementStore: aws.NewMemoryEntitlementStore(), entered: make(chan struct{}), release: make(chan struct{})}
	c := aws.NewEntitlementChecker(g, time.Hour)
	ctx := t.Context()
	if err := c.GrantEntitlement(ctx, aws.Entitlement{CustomerIdentifier: "c", Dimension: "gpu", Value: 1}); err != nil {
		t.Fatal(err)
	}
	g.armed.Store(true)
	done := make(chan bool, 1)
	go func() {
		ok, _ := c.IsEntitled(ctx, "c", "gpu") // reads "granted", then waits
		done <- ok
	}()
	<-g.entered
	if err := c.RevokeEntitlement(ctx, "c", "gpu"); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	<-done
	if ok, err := c.IsEntitled(ctx, "c", "gpu"); ok || err != nil {
		t.Errorf("after revoke: entitled=%v err=%v; the in-flight check wrote back its stale answer", ok, err)
	}
}

func TestCheckerSeedAPI(t *testing.T) {
	c := aws.NewEntitlementChecker(aws.NewMemoryEntitlementStore(), 5*time.Minute)
	ctx := t.Context()
	if ok, _ := c.IsEntitled(ctx, "c", "tokens_1m"); ok {
		t.Error("entitled before grant")
	}
	tests := []struct {
		ent  aws.Entitlement
		want bool
	}{
		{aws.Entitlement{CustomerIdentifier: "c", Dimension: "a", Value: 10, ExpiresAt: time.Now().Add(time.Hour)}, true},
		{aws.Entitlement{CustomerIdentifier: "c", Dimension: "b", Value: 10, ExpiresAt: time.Now().Add(-time.Hour)}, false},
		{aws.Entitlement{CustomerIdentifier: "c", Dimension: "c", Value: 0}, false},
		{aws.Entitlement{CustomerIdentifier: "c", Dimension: "d", Text: "gold"}, true},
	}
	for _, tc := range tests {
		if err := c.GrantEntitlement(ctx, tc.ent); err != nil {
			t.Fatal(err)
		}
		if ok, err := c.IsEntitled(ctx, "c", tc.ent.Dimension); ok != tc.want || err != nil {
			t.Errorf("%+v: entitled=%v err=%v, want %v", tc.ent, ok, err, tc.want)
		}
	}
}

func TestTokenBillingTracker(t *testing.T) {
	e := newEnv(t, emu.Config{})
	for _, c := range []string{"c1", "c2"} {
		e.emu.AddBuyer(emu.Buyer{ProductCode: "p", CustomerIdentifier: c})
	}
	e.clock.Set(onDay(10, 5))
	tr := aws.NewTokenBillingTracker("p", e.ledger)
	tr.RecordUsage("c1", 500_000, 500_000)
	tr.RecordUsage("c1", 300_000, 200_000) // 1.5M in 10:00
	tr.RecordUsage("c2", 2_000_000, 1_000_000)
	if n := len(tr.Snapshot()); n != 2 {
		t.Fatalf("snapshot: %d", n)
	}
	if _, err := tr.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(tr.Snapshot()); n != 0 {
		t.Errorf("%d pending after flush", n)
	}
	e.clock.Set(onDay(11, 5))
	tr.RecordUsage("c1", 600_000, 0) // 0.5M carried + 0.6M = 1.1M in 11:00
	if _, err := tr.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(onDay(12, 20))
	if _, err := e.ledger.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	rep := ledger.NewReporter(e.ledger, aws.NewReporter(e.meter, aws.ReporterConfig{ProductCode: "p", Logger: discard}), fastReporting)
	e.reportAll(t, rep)
	bill := e.emu.Bill()
	for _, tc := range []struct {
		cust string
		want int64
	}{{"c1", 2}, {"c2", 3}} {
		if got := bill.Sum(tc.cust, aws.TokensDimension); got != tc.want {
			t.Errorf("%s billed %d million, want %d (whole millions, remainder carried, never rounded up)", tc.cust, got, tc.want)
		}
	}
}

func TestMultiCloudManagerRoutes(t *testing.T) {
	e := newEnv(t, emu.Config{})
	p := newProvider(t, e, false, nil)
	m := marketplace.NewMultiCloudManager(p)
	if err := m.SubmitUsage(t.Context(), marketplace.AWS, []marketplace.UsageRecord{{CustomerID: "c", Dimension: "d", Quantity: 1, Timestamp: e.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	if err := m.CheckEntitlement(t.Context(), marketplace.AWS, "c", ""); !errors.Is(err, marketplace.ErrNoActiveSubscription) {
		t.Errorf("unknown customer: %v", err)
	}
	if err := e.ledger.Fold(t.Context()); err != nil {
		t.Fatal(err)
	}
	bs, _ := e.ledger.Buckets(t.Context(), ledger.BucketFilter{Customer: "c"})
	if len(bs) != 1 {
		t.Errorf("usage through the manager made %d buckets", len(bs))
	}
}
