package aws

// The seed API's entitlement checker: see the package doc. Provider
// answers marketplace.EntitlementChecker from the same cache.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/entitlement"
)

// EntitlementChecker answers entitlement checks from an in-process cache
// with a TTL (package entitlement: nanoseconds on a hit, bounded, and
// versioned, so that a check that read the store before a revoke can never
// cache the old answer), loading from the store on a miss.
type EntitlementChecker struct {
	store EntitlementStore
	cache *entitlement.Cache
	clock func() time.Time
}

// NewEntitlementChecker returns a checker over store whose answers live
// for cacheTTL (refusals for at most 10 s).
func NewEntitlementChecker(store EntitlementStore, cacheTTL time.Duration) *EntitlementChecker {
	return NewEntitlementCheckerConfig(store, entitlement.Config{TTL: cacheTTL})
}

// NewEntitlementCheckerConfig is NewEntitlementChecker with the cache's
// full configuration (size bound, clock).
func NewEntitlementCheckerConfig(store EntitlementStore, cfg entitlement.Config) *EntitlementChecker {
	c := &EntitlementChecker{store: store, clock: cfg.Clock}
	if c.clock == nil {
		c.clock = time.Now
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = min(cfg.TTL, 10*time.Second)
	}
	c.cache = entitlement.New(c.load, cfg)
	return c
}

func (c *EntitlementChecker) load(ctx context.Context, k entitlement.Key) (entitlement.Decision, error) {
	e, err := c.store.Get(ctx, k.Customer, k.Feature)
	if err != nil {
		return entitlement.Decision{}, fmt.Errorf("aws: load entitlement: %w", err)
	}
	if !e.valid(c.clock()) {
		return entitlement.Denied(k), nil
	}
	return entitlement.Decision{Until: e.ExpiresAt}, nil
}

func entitlementKey(customer, dimension string) entitlement.Key {
	return entitlement.Key{Provider: marketplace.AWS, Customer: customer, Feature: dimension}
}

// IsEntitled reports whether customerIdentifier holds dimension now: an
// entitlement that has not expired (a zero ExpiresAt never does) and whose
// value is not zero or false.
func (c *EntitlementChecker) IsEntitled(ctx context.Context, customerIdentifier, dimension string) (bool, error) {
	err := c.cache.Check(ctx, entitlementKey(customerIdentifier, dimension))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, marketplace.ErrEntitlementDenied), errors.Is(err, marketplace.ErrNoActiveSubscription):
		return false, nil
	}
	return false, err
}

// Invalidate drops the cached answer for customerIdentifier and dimension,
// so the next check reads the store; the customer's other dimensions stay
// cached.
func (c *EntitlementChecker) Invalidate(customerIdentifier, dimension string) {
	c.cache.InvalidateKey(entitlementKey(customerIdentifier, dimension))
}

// Close stops the cache's clock goroutine (entitlement.Cache.Close); the
// checker still answers afterwards, reading the system clock on hits.
func (c *EntitlementChecker) Close() { c.cache.Close() }

// GrantEntitlement stores ent and drops its cached answer.
func (c *EntitlementChecker) GrantEntitlement(ctx context.Context, ent Entitlement) error {
	if err := c.store.Put(ctx, ent); err != nil {
		return fmt.Errorf("aws: grant entitlement: %w", err)
	}
	c.Invalidate(ent.Customer(), ent.Dimension)
	return nil
}

// RevokeEntitlement deletes an entitlement and drops its cached answer;
// once it returns, no check answers from before it.
func (c *EntitlementChecker) RevokeEntitlement(ctx context.Context, customerIdentifier, dimension string) error {
	if err := c.store.Delete(ctx, customerIdentifier, dimension); err != nil {
		return fmt.Errorf("aws: revoke entitlement: %w", err)
	}
	c.Invalidate(customerIdentifier, dimension)
	return nil
}
