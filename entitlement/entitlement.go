// Package entitlement answers "may this customer use this feature?" on the
// seller's hot path, from memory, in nanoseconds.
//
// A Cache holds decisions per (provider, customer, feature), loaded on a
// miss by a LoadFunc that each cloud integration provides (from its stored
// subscriptions and entitlements). Lifecycle events call Invalidate. The
// cache is versioned: a load that began before an Invalidate of its
// customer returns its answer to its own caller but never writes it back,
// so a revoked entitlement cannot reappear from a check that was in flight.
// It is bounded in entries, and every decision expires after a TTL, so a
// missed invalidation heals by itself.
package entitlement

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/saasmarket/marketplace"
)

// Key names one check.
type Key struct {
	Provider marketplace.CloudProvider
	Customer string
	Feature  string
}

// Decision is the answer for one key.
type Decision struct {
	// Err is nil when entitled; otherwise it wraps
	// marketplace.ErrNoActiveSubscription or marketplace.ErrEntitlementDenied.
	Err error
	// Until, when set, is when the answer stops being true (a contract's
	// expiry); the cache never serves it later.
	Until time.Time
}

// LoadFunc decides a key from the system of record. An error means it could
// not decide (the store is down): that is returned to the caller and not cached.
type LoadFunc func(ctx context.Context, k Key) (Decision, error)

// Config tunes a Cache; zero values take the defaults.
type Config struct {
	TTL         time.Duration // how long a grant is served; default 1 minute
	NegativeTTL time.Duration // how long a refusal is served; default 10 seconds
	MaxEntries  int           // bound on cached keys; default 100,000
	Clock       func() time.Time
}

const shardCount = 64

// Cache is an entitlement cache. It is safe for concurrent use.
type Cache struct {
	load     LoadFunc
	cfg      Config
	perShard int
	seed     maphash.Seed
	shards   [shardCount]shard
}

type shard struct {
	mu sync.RWMutex
	m  map[Key]entry
	// gen grows with every Invalidate of a customer of this shard. A load
	// stores its answer only if gen did not move while it ran.
	gen uint64
}

type entry struct {
	err   error
	until time.Time
}

// New returns a cache that loads misses with load.
func New(load LoadFunc, cfg Config) *Cache {
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
	c := &Cache{load: load, cfg: cfg, perShard: max(1, cfg.MaxEntries/shardCount), seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[Key]entry)
	}
	return c
}

type customerKey struct {
	p marketplace.CloudProvider
	c string
}

// shardOf keeps all features of one customer in one shard, so that
// Invalidate touches one shard.
func (c *Cache) shardOf(p marketplace.CloudProvider, customer string) *shard {
	return &c.shards[maphash.Comparable(c.seed, customerKey{p, customer})%shardCount]
}

// Check returns nil if the customer is entitled to the feature; an error
// wrapping marketplace.ErrNoActiveSubscription or ErrEntitlementDenied if
// not; or the load's error if it could not be decided.
func (c *Cache) Check(ctx context.Context, k Key) error {
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
		s.m[k] = entry{err: d.Err, until: until}
	}
	s.mu.Unlock()
	return d.Err
}

// Invalidate forgets every decision about a customer. Loads in flight for
// it still answer their callers, but are not cached.
func (c *Cache) Invalidate(p marketplace.CloudProvider, customer string) {
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
func (c *Cache) InvalidateKey(k Key) {
	s := c.shardOf(k.Provider, k.Customer)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	delete(s.m, k)
}

// Len returns the number of cached decisions.
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// Denied and Inactive build the refusals a LoadFunc returns.
func Denied(k Key) Decision {
	return Decision{Err: fmt.Errorf("%s customer %s, feature %s: %w", k.Provider, k.Customer, k.Feature, marketplace.ErrEntitlementDenied)}
}

// Inactive is the refusal for a customer with no active subscription.
func Inactive(k Key) Decision {
	return Decision{Err: fmt.Errorf("%s customer %s: %w", k.Provider, k.Customer, marketplace.ErrNoActiveSubscription)}
}
