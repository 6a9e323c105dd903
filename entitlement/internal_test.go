package entitlement

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
)

// gatedLoad is a LoadFunc that answers from granted, counts its calls, and
// holds each call until gate is closed, when gate is set.
type gatedLoad struct {
	mu      sync.Mutex
	granted map[string]bool // customer → granted
	gate    chan struct{}
	loads   atomic.Int64
}

func (g *gatedLoad) load(ctx context.Context, k Key) (Decision, error) {
	g.loads.Add(1)
	g.mu.Lock()
	ok, gate := g.granted[k.Customer], g.gate
	g.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return Decision{}, ctx.Err()
		}
	}
	if !ok {
		return Denied(k), nil
	}
	return Decision{}, nil
}

func (g *gatedLoad) set(customer string, ok bool, gate chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.granted == nil {
		g.granted = map[string]bool{}
	}
	g.granted[customer], g.gate = ok, gate
}

// waiters returns how many checks wait on the load of k in progress.
func (c *Cache) waiters(k Key) int {
	s := c.shard(c.hash(k.Provider, k.Customer, k.Feature))
	s.mu.Lock()
	defer s.mu.Unlock()
	if cu := s.customers[customerKey{k.Provider, k.Customer}]; cu != nil && cu.inflight[k.Feature] != nil {
		cl := cu.inflight[k.Feature]
		return cl.waiters
	}
	return 0
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestMissesAfterInvalidateCoalesce: after an Invalidate, the checks of a
// hot key that all miss at once share one store read.
func TestMissesAfterInvalidateCoalesce(t *testing.T) {
	const checks = 50
	g := &gatedLoad{}
	g.set("c1", true, nil)
	c := New(g.load, Config{})
	t.Cleanup(c.Close)
	k := Key{marketplace.AWS, "c1", "gold"}
	if err := c.Check(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	g.set("c1", false, gate) // revoked
	c.Invalidate(marketplace.AWS, "c1")
	errs := make(chan error, checks)
	for range checks {
		go func() { errs <- c.Check(t.Context(), k) }()
	}
	waitFor(t, "the checks to share one load", func() bool { return c.waiters(k) == checks-1 })
	close(gate)
	for range checks {
		if err := <-errs; !errors.Is(err, marketplace.ErrEntitlementDenied) {
			t.Errorf("check after the revoke: %v, want denied", err)
		}
	}
	if n := g.loads.Load(); n != 2 {
		t.Errorf("%d loads, want 2 (one before the invalidation, one shared after)", n)
	}
}

// TestCheckAfterInvalidateDoesNotJoinOlderLoad: a check that begins after
// an Invalidate never waits for, nor takes the answer of, a load that
// began before it.
func TestCheckAfterInvalidateDoesNotJoinOlderLoad(t *testing.T) {
	g := &gatedLoad{}
	gate := make(chan struct{})
	g.set("c1", true, gate)
	c := New(g.load, Config{})
	t.Cleanup(c.Close)
	k := Key{marketplace.AWS, "c1", "gold"}
	old := make(chan error)
	go func() { old <- c.Check(context.Background(), k) }()
	waitFor(t, "the first load", func() bool { return g.loads.Load() == 1 })
	g.set("c1", false, nil) // revoked; later loads are not held
	c.Invalidate(marketplace.AWS, "c1")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.Check(ctx, k); !errors.Is(err, marketplace.ErrEntitlementDenied) {
		t.Fatalf("check after the revoke: %v, want its own load (denied)", err)
	}
	close(gate)
	if err := <-old; err != nil {
		t.Errorf("the check that began before the revoke may answer granted, got %v", err)
	}
	if err := c.Check(t.Context(), k); !errors.Is(err, marketplace.ErrEntitlementDenied) {
		t.Fatalf("after both loads: %v — the older load wrote back a revoked grant", err)
	}
}

// TestCancelledLoaderDoesNotFailWaiters: when the check that loads gives up,
// the checks waiting on it load for themselves.
func TestCancelledLoaderDoesNotFailWaiters(t *testing.T) {
	g := &gatedLoad{}
	gate := make(chan struct{})
	g.set("c1", true, gate)
	c := New(g.load, Config{})
	t.Cleanup(c.Close)
	k := Key{marketplace.AWS, "c1", "gold"}
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error)
	go func() { first <- c.Check(ctx, k) }()
	waitFor(t, "the first load", func() bool { return g.loads.Load() == 1 })
	second := make(chan error)
	go func() { second <- c.Check(t.Context(), k) }()
	waitFor(t, "the second check to wait", func() bool { return c.waiters(k) == 1 })
	g.set("c1", true, nil)
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled check: %v", err)
	}
	if err := <-second; err != nil {
		t.Errorf("waiting check: %v, want its own load (granted)", err)
	}
	close(gate)
}

// TestCoarseClock: with the default clock, a decision expires (within a
// tick) and the clock's goroutine stops once checks stop.
func TestCoarseClock(t *testing.T) {
	g := &gatedLoad{}
	g.set("c1", true, nil)
	c := New(g.load, Config{TTL: 50 * time.Millisecond})
	t.Cleanup(c.Close)
	k := Key{marketplace.AWS, "c1", "gold"}
	for range 3 {
		if err := c.Check(t.Context(), k); err != nil {
			t.Fatal(err)
		}
	}
	if !c.clock.running.Load() {
		t.Fatal("the coarse clock is not running after hits")
	}
	time.Sleep(50*time.Millisecond + 3*clockTick)
	c.Check(t.Context(), k)
	if n := g.loads.Load(); n != 2 {
		t.Fatalf("%d loads, want 2: the decision was served past its TTL", n)
	}
	waitFor(t, "the clock to stop when idle", func() bool { return !c.clock.running.Load() })
	c.Check(t.Context(), k)
	if !c.clock.running.Load() {
		t.Fatal("the coarse clock did not start again")
	}
}

// TestCacheClose: Close stops the clock's goroutine and waits for it;
// the closed cache still answers, on the exact clock (its decisions still
// expire), and its clock does not start again.
func TestCacheClose(t *testing.T) {
	g := &gatedLoad{}
	g.set("c1", true, nil)
	c := New(g.load, Config{TTL: 50 * time.Millisecond})
	t.Cleanup(c.Close)
	k := Key{marketplace.AWS, "c1", "gold"}
	for range 2 { // a miss, then a hit: hits read the coarse clock
		if err := c.Check(t.Context(), k); err != nil {
			t.Fatal(err)
		}
	}
	if !c.clock.running.Load() {
		t.Fatal("the coarse clock is not running after a hit")
	}
	c.Close()
	if c.clock.running.Load() {
		t.Fatal("the coarse clock still runs after Close returned")
	}
	for range 3 {
		if err := c.Check(t.Context(), k); err != nil {
			t.Fatalf("check after Close: %v", err)
		}
	}
	if n := g.loads.Load(); n != 1 {
		t.Fatalf("%d loads, want 1: the closed cache did not serve its hits", n)
	}
	time.Sleep(50*time.Millisecond + clockTick)
	c.Check(t.Context(), k)
	if n := g.loads.Load(); n != 2 {
		t.Fatalf("%d loads, want 2: the closed cache served a decision past its TTL", n)
	}
	if c.clock.running.Load() {
		t.Fatal("the coarse clock started again after Close")
	}
	c.Close() // again: no effect
}

func TestLenFollowsInvalidateAndEviction(t *testing.T) {
	g := &gatedLoad{}
	c := New(g.load, Config{MaxEntries: 4 * shardCount}) // four decisions per shard
	t.Cleanup(c.Close)
	for i := range 1000 {
		for _, f := range []string{"a", "b", "c"} {
			c.Check(t.Context(), Key{marketplace.Azure, fmt.Sprint("c", i), f})
		}
		switch {
		case i%3 == 0:
			c.Invalidate(marketplace.Azure, fmt.Sprint("c", i-1))
		case i%5 == 0:
			c.InvalidateKey(Key{marketplace.Azure, fmt.Sprint("c", i), "b"})
		}
	}
	var held int
	for i := range c.shards {
		s := &c.shards[i].shard
		var live, indexed int
		tb := s.table.Load()
		for j := range tb.slots {
			if d := tb.slots[j].d.Load(); d != nil && !d.dead.Load() {
				live++
			}
		}
		for _, cu := range s.customers {
			indexed += len(cu.decided)
		}
		if live != s.entries || indexed != s.entries {
			t.Fatalf("shard %d counts %d decisions, holds %d, indexes %d", i, s.entries, live, indexed)
		}
		held += live
	}
	if held != c.Len() || held > 4*shardCount {
		t.Fatalf("Len %d, %d held, want at most %d", c.Len(), held, 4*shardCount)
	}
}
