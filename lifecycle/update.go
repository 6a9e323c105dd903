package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/saasmarket/marketplace"
)

// Change is one change of one subscription, computed from its stored copy.
type Change struct {
	Provider marketplace.CloudProvider
	// ID is the subscription's id.
	ID string
	// Init is the subscription to start from when none is stored; nil makes
	// a missing subscription an error wrapping marketplace.ErrNotFound.
	Init *marketplace.Subscription
	// CloudTime is the cloud's time of the state this change applies. When
	// the stored subscription's CloudUpdated is later, the change is stale:
	// Apply is not called and nothing is stored. Otherwise CloudUpdated
	// moves up to CloudTime. Zero skips the check.
	CloudTime time.Time
	// Apply changes s in place and reports whether it changed anything.
	Apply func(s *marketplace.Subscription) bool
}

// Result is what Update did.
type Result struct {
	// Subscription is the stored copy after the change (or as found, when
	// nothing changed). Nil only when Init was nil and none is stored.
	Subscription *marketplace.Subscription
	Changed      bool // a new version was stored
	Stale        bool // ignored: the stored state is newer
	Sealed       int  // buckets sealed because the subscription has ended
}

// maxVersionRetries bounds Update's re-read, re-apply loop.
const maxVersionRetries = 10

// Update applies c with optimistic concurrency: read, apply, store if the
// version is unchanged, otherwise again (the one version-conflict retry of
// every cloud). After a stored change it invalidates the customer's cached
// entitlements; whenever the subscription is ended (cancelled or expired)
// it seals the customer's usage for the final report, which is idempotent,
// so a retry after a failed seal completes it.
func (e *Engine) Update(ctx context.Context, c Change) (Result, error) {
	if c.Apply == nil {
		return Result{}, errors.New("lifecycle: Change.Apply is required")
	}
	store := e.deps.Store
	for range maxVersionRetries {
		cur, err := store.GetSubscription(ctx, c.Provider, c.ID)
		switch {
		case errors.Is(err, marketplace.ErrNotFound) && c.Init != nil:
			init := *c.Init
			init.Provider, init.ID, init.Version = c.Provider, c.ID, 0
			init.Attributes = maps.Clone(init.Attributes)
			cur, err = &init, nil
		case err != nil:
			return Result{}, fmt.Errorf("lifecycle: subscription %s/%s: %w", c.Provider, c.ID, err)
		}
		if !c.CloudTime.IsZero() && c.CloudTime.Before(cur.CloudUpdated) {
			if cur.Version == 0 {
				cur = nil
			}
			return Result{Subscription: cur, Stale: true}, nil
		}
		was := *cur
		was.Attributes = maps.Clone(cur.Attributes)
		changed := c.Apply(cur)
		if c.CloudTime.After(cur.CloudUpdated) {
			cur.CloudUpdated = c.CloudTime
			changed = true
		}
		if !changed {
			res := Result{Subscription: cur}
			if cur.Version == 0 {
				res.Subscription = nil
			}
			return e.afterChange(ctx, res)
		}
		stored, err := store.PutSubscription(ctx, *cur)
		if errors.Is(err, marketplace.ErrVersionConflict) {
			continue
		}
		if err != nil {
			return Result{}, fmt.Errorf("lifecycle: store subscription %s/%s: %w", c.Provider, c.ID, err)
		}
		e.deps.Entitlements.Invalidate(c.Provider, stored.CustomerID)
		if was.CustomerID != "" && was.CustomerID != stored.CustomerID {
			e.deps.Entitlements.Invalidate(c.Provider, was.CustomerID)
		}
		return e.afterChange(ctx, Result{Subscription: stored, Changed: true})
	}
	return Result{}, fmt.Errorf("lifecycle: subscription %s/%s: %w (%d attempts)", c.Provider, c.ID, marketplace.ErrVersionConflict, maxVersionRetries)
}

// afterChange seals the usage of a subscription that has ended.
func (e *Engine) afterChange(ctx context.Context, res Result) (Result, error) {
	s := res.Subscription
	if s == nil || !Ended(s.Status) || s.CustomerID == "" {
		return res, nil
	}
	n, err := e.Seal(ctx, s.Provider, s.CustomerID)
	if err != nil {
		return res, err
	}
	res.Sealed = n
	return res, nil
}

// Seal seals a customer's open usage now, for the final report (a
// subscription ended, or the cloud announced it will end).
func (e *Engine) Seal(ctx context.Context, p marketplace.CloudProvider, customer string) (int, error) {
	n, err := e.deps.Ledger.SealCustomer(ctx, p, customer)
	if err != nil {
		return 0, fmt.Errorf("lifecycle: final usage seal of %s customer %s: %w", p, customer, err)
	}
	if n > 0 {
		e.deps.Logger.Info("final usage sealed", "provider", p, "customer", customer, "buckets", n)
	}
	return n, nil
}

// Invalidate drops a customer's cached entitlement answers (after a
// change the engine did not make, such as refreshed cloud entitlements).
func (e *Engine) Invalidate(p marketplace.CloudProvider, customer string) {
	e.deps.Entitlements.Invalidate(p, customer)
}

// Ended reports whether a status ends a subscription (its usage is sealed).
func Ended(status string) bool {
	return status == marketplace.StatusCancelled || status == marketplace.StatusExpired
}

// FindOne returns the one subscription of p whose attribute name has value,
// from the store's index: ErrNotFound when there is none, and an error
// naming the count when several match (the caller cannot tell which).
func (e *Engine) FindOne(ctx context.Context, p marketplace.CloudProvider, name, value string) (*marketplace.Subscription, error) {
	subs, err := e.deps.Store.FindSubscriptionsByAttribute(ctx, p, name, value)
	if err != nil {
		return nil, fmt.Errorf("lifecycle: find %s subscription by %s: %w", p, name, err)
	}
	switch len(subs) {
	case 0:
		return nil, fmt.Errorf("lifecycle: no %s subscription with %s %q: %w", p, name, value, marketplace.ErrNotFound)
	case 1:
		return &subs[0], nil
	}
	return nil, fmt.Errorf("lifecycle: %d %s subscriptions with %s %q", len(subs), p, name, value)
}
