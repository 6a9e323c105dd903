package aws

// The seed API's subscriptions: see the package doc. Provider keeps
// subscriptions in a marketplace.SubscriptionStore instead.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/saasmarket/marketplace"
)

// SubscriptionStatus is the state of a seed Subscription.
type SubscriptionStatus string

// The seed's subscription states.
const (
	SubscriptionActive       SubscriptionStatus = "active"
	SubscriptionPending      SubscriptionStatus = "pending"
	SubscriptionUnsubscribed SubscriptionStatus = "unsubscribed"
	SubscriptionExpired      SubscriptionStatus = "expired"
)

// Subscription is a buyer's subscription as the seed API keeps it.
type Subscription struct {
	// CustomerIdentifier is the buyer: its AWS CustomerIdentifier, or
	// LicenseCustomer(account, license ARN) for license-based products.
	CustomerIdentifier string
	ProductCode        string
	Status             SubscriptionStatus
	SubscribedAt       time.Time
	// UnsubscribedAt is set by Unsubscribe.
	UnsubscribedAt *time.Time
}

// SubscriptionStore persists seed subscriptions by customer identifier.
type SubscriptionStore interface {
	// Put stores or replaces sub.
	Put(ctx context.Context, sub Subscription) error
	// Get returns nil, nil when there is none.
	Get(ctx context.Context, customerIdentifier string) (*Subscription, error)
	// List returns the subscriptions in status.
	List(ctx context.Context, status SubscriptionStatus) ([]Subscription, error)
	// Delete removes one; deleting a missing one is not an error.
	Delete(ctx context.Context, customerIdentifier string) error
}

var _ SubscriptionStore = (*MemorySubscriptionStore)(nil)

// MemorySubscriptionStore is an in-memory SubscriptionStore for tests.
type MemorySubscriptionStore struct {
	mu   sync.Mutex
	subs map[string]Subscription
}

// NewMemorySubscriptionStore returns an empty store.
func NewMemorySubscriptionStore() *MemorySubscriptionStore {
	return &MemorySubscriptionStore{subs: map[string]Subscription{}}
}

// Put implements SubscriptionStore.
func (s *MemorySubscriptionStore) Put(_ context.Context, sub Subscription) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs[sub.CustomerIdentifier] = sub
	return nil
}

// Get implements SubscriptionStore.
func (s *MemorySubscriptionStore) Get(_ context.Context, customerIdentifier string) (*Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.subs[customerIdentifier]
	if !ok {
		return nil, nil
	}
	return &sub, nil
}

// List implements SubscriptionStore, ordered by customer; an empty status
// lists all.
func (s *MemorySubscriptionStore) List(_ context.Context, status SubscriptionStatus) ([]Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Subscription
	for _, sub := range s.subs {
		if status == "" || sub.Status == status {
			out = append(out, sub)
		}
	}
	slices.SortFunc(out, func(a, b Subscription) int { return strings.Compare(a.CustomerIdentifier, b.CustomerIdentifier) })
	return out, nil
}

// Delete implements SubscriptionStore.
func (s *MemorySubscriptionStore) Delete(_ context.Context, customerIdentifier string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, customerIdentifier)
	return nil
}

// SubscriptionManager is the seed's subscription lifecycle: Subscribe
// resolves a registration token with AWS and stores the buyer as active.
// Provider does the full job (pending until linked, notifications, the
// final usage flush).
type SubscriptionManager struct {
	store    SubscriptionStore
	metering MeteringAPI
	// LicenseMode keys buyers by LicenseCustomer instead of
	// CustomerIdentifier (products created from June 2026 have no
	// CustomerIdentifier, and are keyed so whatever this says).
	LicenseMode bool
	// Clock stamps SubscribedAt and UnsubscribedAt; default time.Now.
	Clock func() time.Time
}

// NewSubscriptionManager returns a manager over store and metering.
func NewSubscriptionManager(store SubscriptionStore, metering MeteringAPI) *SubscriptionManager {
	return &SubscriptionManager{store: store, metering: metering}
}

func (m *SubscriptionManager) now() time.Time {
	if m.Clock != nil {
		return m.Clock()
	}
	return time.Now()
}

// Subscribe resolves registrationToken and stores the buyer as active.
// Invalid and expired tokens fail (errors.Is ErrInvalidToken,
// ErrExpiredToken) and store nothing.
func (m *SubscriptionManager) Subscribe(ctx context.Context, registrationToken string) (*Subscription, error) {
	out, err := m.metering.ResolveCustomer(ctx, registrationToken)
	if err != nil {
		return nil, fmt.Errorf("aws: subscribe: %w", err)
	}
	sub := Subscription{CustomerIdentifier: out.CustomerIdentifier, ProductCode: out.ProductCode,
		Status: SubscriptionActive, SubscribedAt: m.now()}
	if m.LicenseMode || sub.CustomerIdentifier == "" {
		sub.CustomerIdentifier = LicenseCustomer(out.CustomerAWSAccountId, out.LicenseArn)
	}
	if err := m.store.Put(ctx, sub); err != nil {
		return nil, fmt.Errorf("aws: subscribe: %w", err)
	}
	return &sub, nil
}

// Unsubscribe marks the customer's subscription unsubscribed and stamps
// UnsubscribedAt; a missing one fails with marketplace.ErrNotFound.
func (m *SubscriptionManager) Unsubscribe(ctx context.Context, customerIdentifier string) error {
	sub, err := m.store.Get(ctx, customerIdentifier)
	if err != nil {
		return fmt.Errorf("aws: unsubscribe: %w", err)
	}
	if sub == nil {
		return fmt.Errorf("aws: unsubscribe %q: %w", customerIdentifier, marketplace.ErrNotFound)
	}
	now := m.now()
	sub.Status, sub.UnsubscribedAt = SubscriptionUnsubscribed, &now
	if err := m.store.Put(ctx, *sub); err != nil {
		return fmt.Errorf("aws: unsubscribe: %w", err)
	}
	return nil
}

// IsActive reports whether the customer's subscription is active.
func (m *SubscriptionManager) IsActive(ctx context.Context, customerIdentifier string) (bool, error) {
	sub, err := m.store.Get(ctx, customerIdentifier)
	if err != nil {
		return false, fmt.Errorf("aws: is active: %w", err)
	}
	return sub != nil && sub.Status == SubscriptionActive, nil
}
