package entitlement_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
)

// grants is a system of record: customer → feature → granted.
type grants struct {
	mu    sync.Mutex
	m     map[string]map[string]bool
	loads atomic.Int64
}

func (g *grants) set(customer, feature string, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]map[string]bool{}
	}
	if g.m[customer] == nil {
		g.m[customer] = map[string]bool{}
	}
	g.m[customer][feature] = ok
}

func (g *grants) load(_ context.Context, k entitlement.Key) (entitlement.Decision, error) {
	g.loads.Add(1)
	g.mu.Lock()
	defer g.mu.Unlock()
	feats, ok := g.m[k.Customer]
	switch {
	case !ok:
		return entitlement.Inactive(k), nil
	case !feats[k.Feature]:
		return entitlement.Denied(k), nil
	}
	return entitlement.Decision{}, nil
}

func key(c, f string) entitlement.Key {
	return entitlement.Key{Provider: marketplace.AWS, Customer: c, Feature: f}
}

func TestCheck(t *testing.T) {
	g := &grants{}
	g.set("c1", "gold", true)
	g.set("c1", "silver", false)
	c := entitlement.New(g.load, entitlement.Config{})
	t.Cleanup(c.Close)
	tests := []struct {
		k    entitlement.Key
		want error
	}{
		{key("c1", "gold"), nil},
		{key("c1", "silver"), marketplace.ErrEntitlementDenied},
		{key("nobody", "gold"), marketplace.ErrNoActiveSubscription},
	}
	for range 3 { // the second and third pass are hits
		for _, tc := range tests {
			if err := c.Check(t.Context(), tc.k); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Errorf("Check(%v) = %v, want %v", tc.k, err, tc.want)
			}
		}
	}
	if n := g.loads.Load(); n != 3 {
		t.Errorf("%d loads, want 3 (one per key)", n)
	}
}

func TestExpiry(t *testing.T) {
	g := &grants{}
	g.set("c1", "gold", true)
	clk := ledgertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c := entitlement.New(g.load, entitlement.Config{TTL: time.Minute, NegativeTTL: time.Second, Clock: clk.Now})
	t.Cleanup(c.Close)
	ctx := t.Context()
	c.Check(ctx, key("c1", "gold"))
	c.Check(ctx, key("c1", "bronze"))
	g.set("c1", "gold", false) // changed behind the cache's back
	g.set("c1", "bronze", true)
	clk.Advance(2 * time.Second)
	if err := c.Check(ctx, key("c1", "bronze")); err != nil {
		t.Errorf("refusal served past its negative TTL: %v", err)
	}
	if err := c.Check(ctx, key("c1", "gold")); err != nil {
		t.Errorf("grant should still be cached within its TTL: %v", err)
	}
	clk.Advance(time.Minute)
	if err := c.Check(ctx, key("c1", "gold")); !errors.Is(err, marketplace.ErrEntitlementDenied) {
		t.Errorf("grant served past its TTL: %v", err)
	}
	// A decision's own Until wins over a longer TTL.
	until := clk.Now().Add(10 * time.Second)
	c2 := entitlement.New(func(context.Context, entitlement.Key) (entitlement.Decision, error) {
		g.loads.Add(1)
		return entitlement.Decision{Until: until}, nil
	}, entitlement.Config{Clock: clk.Now})
	t.Cleanup(c2.Close)
	before := g.loads.Load()
	c2.Check(ctx, key("c", "f"))
	clk.Advance(11 * time.Second)
	c2.Check(ctx, key("c", "f"))
	if g.loads.Load()-before != 2 {
		t.Errorf("a decision was served past its Until")
	}
}

func TestLoadErrorIsNotCached(t *testing.T) {
	down := errors.New("store down")
	var calls int
	c := entitlement.New(func(context.Context, entitlement.Key) (entitlement.Decision, error) {
		calls++
		if calls == 1 {
			return entitlement.Decision{}, down
		}
		return entitlement.Decision{}, nil
	}, entitlement.Config{})
	t.Cleanup(c.Close)
	if err := c.Check(t.Context(), key("c", "f")); !errors.Is(err, down) {
		t.Errorf("first check: %v, want the load error", err)
	}
	if err := c.Check(t.Context(), key("c", "f")); err != nil {
		t.Errorf("second check: %v", err)
	}
}

// TestRevokeDuringCheck interleaves deliberately: a check loads "granted",
// the entitlement is revoked and invalidated while that load is in flight,
// then the load returns. The stale grant must not be cached.
func TestRevokeDuringCheck(t *testing.T) {
	g := &grants{}
	g.set("c1", "gold", true)
	loading, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	c := entitlement.New(func(ctx context.Context, k entitlement.Key) (entitlement.Decision, error) {
		d, err := g.load(ctx, k)
		if first.CompareAndSwap(false, true) {
			close(loading)
			<-release
		}
		return d, err
	}, entitlement.Config{TTL: time.Hour})
	t.Cleanup(c.Close)

	done := make(chan error)
	go func() { done <- c.Check(context.Background(), key("c1", "gold")) }()
	<-loading
	g.set("c1", "gold", false)
	c.Invalidate(marketplace.AWS, "c1")
	close(release)
	if err := <-done; err != nil {
		t.Errorf("the in-flight check began before the revoke and may answer granted, got %v", err)
	}
	if err := c.Check(t.Context(), key("c1", "gold")); !errors.Is(err, marketplace.ErrEntitlementDenied) {
		t.Fatalf("after the revoke: %v — the in-flight load wrote back a revoked grant", err)
	}
}

func TestInvalidateOneCustomer(t *testing.T) {
	g := &grants{}
	g.set("a", "f", true)
	g.set("b", "f", true)
	c := entitlement.New(g.load, entitlement.Config{})
	t.Cleanup(c.Close)
	c.Check(t.Context(), key("a", "f"))
	c.Check(t.Context(), key("b", "f"))
	c.Invalidate(marketplace.AWS, "a")
	c.Invalidate(marketplace.Azure, "b") // another cloud's customer b: not ours
	if c.Len() != 1 {
		t.Errorf("Len = %d after invalidating a, want 1", c.Len())
	}
}

func TestInvalidateKey(t *testing.T) {
	g := &grants{}
	g.set("a", "f", true)
	g.set("a", "g", true)
	c := entitlement.New(g.load, entitlement.Config{})
	t.Cleanup(c.Close)
	c.Check(t.Context(), key("a", "f"))
	c.Check(t.Context(), key("a", "g"))
	g.set("a", "f", false)
	c.InvalidateKey(key("a", "f"))
	if c.Len() != 1 {
		t.Errorf("Len = %d after invalidating a/f, want 1 (a/g stays)", c.Len())
	}
	if err := c.Check(t.Context(), key("a", "f")); !errors.Is(err, marketplace.ErrEntitlementDenied) {
		t.Errorf("a/f after InvalidateKey: %v, want a fresh load (denied)", err)
	}
}

func TestBounded(t *testing.T) {
	g := &grants{}
	c := entitlement.New(g.load, entitlement.Config{MaxEntries: 640})
	t.Cleanup(c.Close)
	for i := range 10_000 {
		c.Check(t.Context(), key(fmt.Sprint("c", i), "f"))
	}
	if n := c.Len(); n > 640 || n < 320 {
		t.Errorf("Len = %d, want at most 640 (and the cache in use)", n)
	}
}

func TestConcurrent(t *testing.T) {
	g := &grants{}
	for i := range 50 {
		g.set(fmt.Sprint("c", i), "f", i%2 == 0)
	}
	c := entitlement.New(g.load, entitlement.Config{})
	t.Cleanup(c.Close)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				n := (i + w) % 50
				err := c.Check(context.Background(), key(fmt.Sprint("c", n), "f"))
				if (n%2 == 0) != (err == nil) {
					t.Errorf("c%d: %v", n, err)
					return
				}
				if i%100 == 0 {
					c.Invalidate(marketplace.AWS, fmt.Sprint("c", n))
				}
			}
		})
	}
	wg.Wait()
}
