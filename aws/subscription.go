package aws

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/saasmarket/marketplace"
)

// Subscription states of the seed API; they are the shared
// marketplace.Status* values.
const (
	SubscriptionPending      = marketplace.StatusPending
	SubscriptionActive       = marketplace.StatusActive
	SubscriptionUnsubscribed = marketplace.StatusCancelled
)

// Subscription is a buyer's subscription as the seed API keeps it.
type Subscription struct {
	// CustomerIdentifier is the ledger customer id: the AWS
	// CustomerIdentifier, or LicenseCustomer for license-based products.
	CustomerIdentifier   string
	CustomerAWSAccountId string
	LicenseArn           string
	ProductCode          string
	Status               string
	SubscribedAt         time.Time
	UpdatedAt            time.Time
}

// SubscriptionStore persists seed subscriptions by customer.
type SubscriptionStore interface {
	Put(ctx context.Context, sub Subscription) error
	// Get returns nil, nil when there is none.
	Get(ctx context.Context, customer string) (*Subscription, error)
	List(ctx context.Context, status string) ([]Subscription, error)
}

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
func (s *MemorySubscriptionStore) Get(_ context.Context, customer string) (*Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.subs[customer]
	if !ok {
		return nil, nil
	}
	return &sub, nil
}

// List implements SubscriptionStore; an empty status lists all.
func (s *MemorySubscriptionStore) List(_ context.Context, status string) ([]Subscription, error) {
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

// SubscriptionManager is the seed's subscription lifecycle: Subscribe
// resolves a registration token with AWS and stores the buyer as active.
// Provider does the full job (pending until linked, notifications, final
// usage flush); this stays for code written against the seed.
type SubscriptionManager struct {
	store    SubscriptionStore
	metering MeteringAPI
	// LicenseMode keys buyers by LicenseCustomer instead of CustomerIdentifier.
	LicenseMode bool
}

// NewSubscriptionManager returns a manager over store and metering.
func NewSubscriptionManager(store SubscriptionStore, metering MeteringAPI) *SubscriptionManager {
	return &SubscriptionManager{store: store, metering: metering}
}

// Subscribe resolves registrationToken and stores the buyer as active.
// Invalid and expired tokens fail (errors.Is ErrInvalidToken,
// ErrExpiredToken) and store nothing.
func (m *SubscriptionManager) Subscribe(ctx context.Context, registrationToken string) (*Subscription, error) {
	out, err := m.metering.ResolveCustomer(ctx, registrationToken)
	if err != nil {
		return nil, fmt.Errorf("aws: subscribe: %w", err)
	}
	sub := Subscription{CustomerIdentifier: out.CustomerIdentifier, CustomerAWSAccountId: out.CustomerAWSAccountId,
		LicenseArn: out.LicenseArn, ProductCode: out.ProductCode, Status: SubscriptionActive}
	if m.LicenseMode || sub.CustomerIdentifier == "" {
		sub.CustomerIdentifier = LicenseCustomer(out.CustomerAWSAccountId, out.LicenseArn)
	}
	now := time.Now()
	sub.SubscribedAt, sub.UpdatedAt = now, now
	if err := m.store.Put(ctx, sub); err != nil {
		return nil, fmt.Errorf("aws: subscribe: %w", err)
	}
	return &sub, nil
}

// Unsubscribe marks the customer's subscription as unsubscribed; a missing
// one fails with marketplace.ErrNotFound.
func (m *SubscriptionManager) Unsubscribe(ctx context.Context, customer string) error {
	sub, err := m.store.Get(ctx, customer)
	if err != nil {
		return fmt.Errorf("aws: unsubscribe: %w", err)
	}
	if sub == nil {
		return fmt.Errorf("aws: unsubscribe %q: %w", customer, marketplace.ErrNotFound)
	}
	sub.Status, sub.UpdatedAt = SubscriptionUnsubscribed, time.Now()
	return m.store.Put(ctx, *sub)
}

// IsActive reports whether the customer's subscription is active.
func (m *SubscriptionManager) IsActive(ctx context.Context, customer string) (bool, error) {
	sub, err := m.store.Get(ctx, customer)
	if err != nil {
		return false, fmt.Errorf("aws: is active: %w", err)
	}
	return sub != nil && sub.Status == SubscriptionActive, nil
}
