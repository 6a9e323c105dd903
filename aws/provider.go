package aws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
)

// Config wires a Provider.
type Config struct {
	// ProductCode is the product sold.
	ProductCode string
	// LicenseMode is for products that identify buyers by account id and
	// license ARN (all products created from June 2026); otherwise buyers
	// are CustomerIdentifiers of ProductCode.
	LicenseMode bool

	Metering      *Metering
	Entitlements  *Entitlements // optional: contract products
	Ledger        *ledger.Ledger
	Subscriptions marketplace.SubscriptionStore
	EntitlementDB marketplace.EntitlementStore
	Notifications marketplace.NotificationLog

	// Link is the seller's hook on the landing page: it links the buyer's
	// subscription to an account of the seller's own (by session, sign-up
	// form, ...) and returns that account's id. It may write the response
	// (a redirect, a page); if it writes nothing, the landing handler
	// answers 200 with a short confirmation. A nil Link leaves AccountID empty.
	Link func(ctx context.Context, w http.ResponseWriter, r *http.Request, sub *marketplace.Subscription) (accountID string, err error)

	// Cache tunes the entitlement cache.
	Cache entitlement.Config
	// NotificationTTL is how long notification ids are remembered for
	// dedupe; default 14 days.
	NotificationTTL time.Duration
	Clock           func() time.Time
	Logger          *slog.Logger
}

// Provider is AWS Marketplace as a marketplace.Provider: usage goes to the
// ledger (a Reporter sends it), subscriptions come from the landing page
// and notifications, and entitlement checks are answered from a cache.
//
// Customer ids: in product-code mode a buyer's ledger customer id,
// Subscription.CustomerID and UsageRecord.CustomerID are its AWS
// CustomerIdentifier, which BatchMeterUsage bills by; in license mode they
// are LicenseCustomer(CustomerAWSAccountId, LicenseArn), the pair it bills
// by. Subscription.ID is the CustomerIdentifier or the LicenseArn.
type Provider struct {
	cfg     Config
	checker *entitlement.Cache
	ents    EntitlementStore
}

var _ marketplace.Provider = (*Provider)(nil)

// NewProvider checks cfg and returns the provider.
func NewProvider(cfg Config) (*Provider, error) {
	switch {
	case cfg.ProductCode == "":
		return nil, errors.New("aws: Config.ProductCode is required")
	case cfg.Metering == nil, cfg.Ledger == nil, cfg.Subscriptions == nil, cfg.EntitlementDB == nil, cfg.Notifications == nil:
		return nil, errors.New("aws: Config needs Metering, Ledger, Subscriptions, EntitlementDB and Notifications")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.NotificationTTL <= 0 {
		cfg.NotificationTTL = 14 * 24 * time.Hour
	}
	if cfg.Cache.Clock == nil {
		cfg.Cache.Clock = cfg.Clock
	}
	p := &Provider{cfg: cfg, ents: NewEntitlementStore(cfg.EntitlementDB)}
	p.checker = entitlement.New(entitlement.StoreLoader{Subscriptions: cfg.Subscriptions, Entitlements: cfg.EntitlementDB, Clock: cfg.Clock}.Load, cfg.Cache)
	return p, nil
}

// Name implements marketplace.Provider.
func (*Provider) Name() marketplace.CloudProvider { return marketplace.AWS }

// SubmitUsage records usage durably in the ledger; the Reporter bills it.
// In license mode every CustomerID must be a LicenseCustomer id; records
// are refused before anything is stored otherwise.
func (p *Provider) SubmitUsage(ctx context.Context, records []marketplace.UsageRecord) error {
	if p.cfg.LicenseMode {
		for i, r := range records {
			if _, _, err := ParseLicenseCustomer(r.CustomerID); err != nil {
				return fmt.Errorf("%w: record %d: %w", marketplace.ErrMeteringFailed, i, err)
			}
		}
	}
	return ledger.Meter{Ledger: p.cfg.Ledger, Provider: marketplace.AWS}.SubmitUsage(ctx, records)
}

// ResolveSubscription returns the customer's stored subscription.
func (p *Provider) ResolveSubscription(ctx context.Context, customerID string) (*marketplace.Subscription, error) {
	return marketplace.LookupSubscription(ctx, p.cfg.Subscriptions, marketplace.AWS, customerID)
}

// IsActive reports whether the customer's subscription is active.
func (p *Provider) IsActive(ctx context.Context, customerID string) (bool, error) {
	return marketplace.HasActiveSubscription(ctx, p.cfg.Subscriptions, marketplace.AWS, customerID, p.cfg.Clock())
}

// CheckEntitlement answers from the cache: the customer needs an active
// subscription, and for a non-empty feature either the feature among the
// subscription's Entitlements or a valid stored entitlement (from
// GetEntitlements) for that dimension.
func (p *Provider) CheckEntitlement(ctx context.Context, customerID, feature string) error {
	return p.checker.Check(ctx, entitlement.Key{Provider: marketplace.AWS, Customer: customerID, Feature: feature})
}

// customerOf is the ledger customer id of a resolved buyer.
func (p *Provider) customerOf(cust, acct, lic string) (id, subID string, err error) {
	if p.cfg.LicenseMode {
		if acct == "" || lic == "" {
			return "", "", fmt.Errorf("%w: license mode needs CustomerAWSAccountId and LicenseArn", ErrInvalidInput)
		}
		return LicenseCustomer(acct, lic), lic, nil
	}
	if cust == "" {
		return "", "", fmt.Errorf("%w: product-code mode needs a CustomerIdentifier", ErrInvalidInput)
	}
	return cust, cust, nil
}

// RefreshEntitlements re-reads a customer's entitlements from AWS (when
// Config.Entitlements is set) and drops its cached answers.
func (p *Provider) RefreshEntitlements(ctx context.Context, customer string) error {
	defer p.checker.Invalidate(marketplace.AWS, customer)
	if p.cfg.Entitlements == nil {
		return nil
	}
	f := EntitlementFilter{CustomerIdentifier: []string{customer}}
	if p.cfg.LicenseMode {
		acct, lic, err := ParseLicenseCustomer(customer)
		if err != nil {
			return err
		}
		f = EntitlementFilter{CustomerAWSAccountId: []string{acct}, LicenseArn: []string{lic}}
	}
	c := &EntitlementChecker{store: p.ents, cache: p.checker, clock: p.cfg.Clock}
	return c.Refresh(ctx, p.cfg.Entitlements, p.cfg.ProductCode, f)
}

// update applies change to the stored subscription (id, customer) with
// optimistic concurrency, creating it from init when missing.
func (p *Provider) update(ctx context.Context, subID string, init marketplace.Subscription, change func(s *marketplace.Subscription) bool) (*marketplace.Subscription, error) {
	for range 10 {
		s, err := p.cfg.Subscriptions.GetSubscription(ctx, marketplace.AWS, subID)
		if errors.Is(err, marketplace.ErrNotFound) {
			cp := init
			s, err = &cp, nil
		}
		if err != nil {
			return nil, err
		}
		if !change(s) {
			return s, nil
		}
		stored, err := p.cfg.Subscriptions.PutSubscription(ctx, *s)
		if errors.Is(err, marketplace.ErrVersionConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		p.checker.Invalidate(marketplace.AWS, stored.CustomerID)
		return stored, nil
	}
	return nil, fmt.Errorf("aws: subscription %q: %w (10 attempts)", subID, marketplace.ErrVersionConflict)
}
