package marketplace

import (
	"context"
	"fmt"
	"sync"
)

// MultiCloudManager routes marketplace operations to the Provider registered
// for a cloud, so that callers holding a customer's cloud need not know which
// integration serves it. The zero value is not usable; create one with
// NewMultiCloudManager. A MultiCloudManager is safe for concurrent use:
// providers may be registered or replaced while requests are being routed.
type MultiCloudManager struct {
	mu        sync.RWMutex
	providers map[CloudProvider]Provider
}

// NewMultiCloudManager returns a manager with the given providers registered,
// as if by Register in order (so a later provider for the same cloud wins).
func NewMultiCloudManager(providers ...Provider) *MultiCloudManager {
	m := &MultiCloudManager{providers: make(map[CloudProvider]Provider, len(providers))}
	for _, p := range providers {
		m.Register(p)
	}
	return m
}

// Register makes p serve the cloud p.Name() reports, replacing any provider
// registered for that cloud before. Replacing lets a caller swap an
// integration (new credentials, a test double) without rebuilding the
// manager; calls already routed to the old provider finish with it.
// Register panics if p is nil, as that is a programming error.
func (m *MultiCloudManager) Register(p Provider) {
	if p == nil {
		panic("marketplace: Register called with a nil Provider")
	}
	name := p.Name()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.providers[name] = p
}

// Provider returns the provider registered for cloud. If there is none, the
// error matches ErrProviderNotRegistered and names the cloud.
func (m *MultiCloudManager) Provider(cloud CloudProvider) (Provider, error) {
	m.mu.RLock()
	p, ok := m.providers[cloud]
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrProviderNotRegistered, cloud)
	}
	return p, nil
}

// SubmitUsage sends records to cloud's metering service. The provider's
// error is returned wrapped with the cloud's name, so a *SubmitError (some
// records not accepted) still matches errors.As.
func (m *MultiCloudManager) SubmitUsage(ctx context.Context, cloud CloudProvider, records []UsageRecord) error {
	p, err := m.Provider(cloud)
	if err != nil {
		return err
	}
	if err := p.SubmitUsage(ctx, records); err != nil {
		return fmt.Errorf("marketplace: %s: submit usage: %w", cloud, err)
	}
	return nil
}

// ResolveSubscription looks up customerID's subscription on cloud. The
// provider's error (for example one matching ErrNotFound) is returned wrapped
// with the cloud's name.
func (m *MultiCloudManager) ResolveSubscription(ctx context.Context, cloud CloudProvider, customerID string) (*Subscription, error) {
	p, err := m.Provider(cloud)
	if err != nil {
		return nil, err
	}
	sub, err := p.ResolveSubscription(ctx, customerID)
	if err != nil {
		return nil, fmt.Errorf("marketplace: %s: resolve subscription of customer %q: %w", cloud, customerID, err)
	}
	return sub, nil
}

// IsActive reports whether customerID has an active subscription on cloud.
// An error means the answer is unknown, not that the customer is inactive.
func (m *MultiCloudManager) IsActive(ctx context.Context, cloud CloudProvider, customerID string) (bool, error) {
	p, err := m.Provider(cloud)
	if err != nil {
		return false, err
	}
	active, err := p.IsActive(ctx, customerID)
	if err != nil {
		return false, fmt.Errorf("marketplace: %s: check subscription of customer %q: %w", cloud, customerID, err)
	}
	return active, nil
}

// CheckEntitlement returns nil if customerID is entitled to feature on cloud.
// The provider's ErrNoActiveSubscription and ErrEntitlementDenied come back
// wrapped with the cloud's name and still match errors.Is, so callers can
// tell "not subscribed" from "subscribed, but not to this".
func (m *MultiCloudManager) CheckEntitlement(ctx context.Context, cloud CloudProvider, customerID, feature string) error {
	p, err := m.Provider(cloud)
	if err != nil {
		return err
	}
	if err := p.CheckEntitlement(ctx, customerID, feature); err != nil {
		return fmt.Errorf("marketplace: %s: entitlement %q of customer %q: %w", cloud, feature, customerID, err)
	}
	return nil
}
