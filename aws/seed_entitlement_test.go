package aws_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace/aws"
)

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
	t.Cleanup(c.Close)
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
	t.Cleanup(c.Close)
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

// countingStore counts the store reads of each dimension.
type countingStore struct {
	*aws.MemoryEntitlementStore
	reads map[string]int
}

func (s *countingStore) Get(ctx context.Context, customer, dimension string) (*aws.Entitlement, error) {
	s.reads[dimension]++
	return s.MemoryEntitlementStore.Get(ctx, customer, dimension)
}

// TestCheckerInvalidateOneDimension: Invalidate(customer, dimension)
// drops that entry, so the next check of it reads the store, and only
// that one.
func TestCheckerInvalidateOneDimension(t *testing.T) {
	s := &countingStore{MemoryEntitlementStore: aws.NewMemoryEntitlementStore(), reads: map[string]int{}}
	c := aws.NewEntitlementChecker(s, time.Hour)
	t.Cleanup(c.Close)
	ctx := t.Context()
	for _, d := range []string{"a", "b"} {
		if err := s.Put(ctx, aws.Entitlement{CustomerIdentifier: "c", Dimension: d, Value: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		for _, d := range []string{"a", "b"} {
			if ok, err := c.IsEntitled(ctx, "c", d); !ok || err != nil {
				t.Fatalf("%s: %v %v", d, ok, err)
			}
		}
	}
	// Changed behind the checker's back: only the invalidated entry sees it.
	for _, d := range []string{"a", "b"} {
		if err := s.Delete(ctx, "c", d); err != nil {
			t.Fatal(err)
		}
	}
	c.Invalidate("c", "a")
	if ok, _ := c.IsEntitled(ctx, "c", "a"); ok {
		t.Error("a still entitled after Invalidate(c, a): the entry was not dropped")
	}
	if ok, _ := c.IsEntitled(ctx, "c", "b"); !ok {
		t.Error("b was dropped by Invalidate(c, a): the dimension was ignored")
	}
	if s.reads["a"] != 2 || s.reads["b"] != 1 {
		t.Errorf("store reads %v, want a:2 b:1", s.reads)
	}
}
