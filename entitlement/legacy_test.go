package entitlement

// The design Cache replaced, kept verbatim (renamed) so that the benchmarks
// can measure both in the same run: BENCHMARKS.md compares them.

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/saasmarket/marketplace"
)

const legacyShards = 64

// legacyCache is the entitlement cache before the lock-free design,
// kept for the comparison benchmarks. It is safe for concurrent use.
type legacyCache struct {
	load     LoadFunc
	cfg      Config
	perShard int
	seed     maphash.Seed
	shards   [legacyShards]legacyShard
}

type legacyShard struct {
	mu sync.RWMutex
	m  map[Key]legacyEntry
	// gen grows with every Invalidate of a customer of this shard. A load
	// stores its answer only if gen did not move while it ran.
	gen uint64
}

type legacyEntry struct {
	err   error
	until time.Time
}

// newLegacy returns a cache that loads misses with load.
func newLegacy(load LoadFunc, cfg Config) *legacyCache {
	if cfg.TTL <= 0 {
		cfg.TTL = time.Minute
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = 10 * time.Second
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 100_000
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	c := &legacyCache{load: load, cfg: cfg, perShard: max(1, cfg.MaxEntries/legacyShards), seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[Key]legacyEntry)
	}
	return c
}

type legacyCustomerKey struct {
	p marketplace.CloudProvider
	c string
}

// shardOf keeps all features of one customer in one shard, so that
// Invalidate touches one shard.
func (c *legacyCache) shardOf(p marketplace.CloudProvider, customer string) *legacyShard {
	return &c.shards[maphash.Comparable(c.seed, legacyCustomerKey{p, customer})%legacyShards]
}

// Check returns nil if the customer is entitled to the feature; an error
// wrapping marketplace.ErrNoActiveSubscription or ErrEntitlementDenied if
// not; or the load's error if it could not be decided.
func (c *legacyCache) Check(ctx context.Context, k Key) error {
	s := c.shardOf(k.Provider, k.Customer)
	now := c.cfg.Clock()
	s.mu.RLock()
	e, ok := s.m[k]
	gen := s.gen
	s.mu.RUnlock()
	if ok && now.Before(e.until) {
		return e.err
	}
	d, err := c.load(ctx, k)
	if err != nil {
		return fmt.Errorf("entitlement: check %s/%s/%s: %w", k.Provider, k.Customer, k.Feature, err)
	}
	ttl := c.cfg.TTL
	if d.Err != nil {
		ttl = c.cfg.NegativeTTL
	}
	until := now.Add(ttl)
	if !d.Until.IsZero() && d.Until.Before(until) {
		until = d.Until
	}
	s.mu.Lock()
	if s.gen == gen { // no Invalidate of this shard began since we looked
		if _, exists := s.m[k]; !exists && len(s.m) >= c.perShard {
			for victim := range s.m { // map order is random: a random eviction
				delete(s.m, victim)
				break
			}
		}
		s.m[k] = legacyEntry{err: d.Err, until: until}
	}
	s.mu.Unlock()
	return d.Err
}

// Invalidate forgets every decision about a customer. Loads in flight for
// it still answer their callers, but are not cached.
func (c *legacyCache) Invalidate(p marketplace.CloudProvider, customer string) {
	s := c.shardOf(p, customer)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	for k := range s.m {
		if k.Provider == p && k.Customer == customer {
			delete(s.m, k)
		}
	}
}

// InvalidateKey forgets one decision. Loads in flight for the key's
// shard still answer their callers, but are not cached.
func (c *legacyCache) InvalidateKey(k Key) {
	s := c.shardOf(k.Provider, k.Customer)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	delete(s.m, k)
}
