package azure

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/keyset"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
)

// DecideFunc is the seller's answer to an operation Azure waits on: true
// accepts a buyer's plan or quantity change, or a reinstatement; false
// rejects it. sub is the stored subscription (or Azure's copy when none is
// stored yet). An error leaves the operation unanswered; it is asked again
// on the next attempt, unless Azure has accepted the change meanwhile (it
// does so with a change left unanswered for about ten seconds).
type DecideFunc func(ctx context.Context, sub *marketplace.Subscription, op *Operation) (bool, error)

// Config holds Azure's own settings; the shared dependencies (store,
// ledger, entitlements, logger, clock) come from the lifecycle engine.
type Config struct {
	// Client calls the SaaS Fulfillment and Metering APIs (required).
	Client *Client
	// TenantID and AppID are the publisher's Entra tenant and app
	// registration: Azure's webhook tokens carry them as tid and aud
	// (required).
	TenantID, AppID string
	// JWKSURL is the tenant's key set; default
	// https://login.microsoftonline.com/{TenantID}/discovery/v2.0/keys.
	JWKSURL string
	// Issuers allowed; default https://login.microsoftonline.com/{TenantID}/v2.0
	// and https://sts.windows.net/{TenantID}/.
	Issuers []string
	// HTTPClient fetches the key set; default a client with a 10 s timeout.
	HTTPClient *http.Client
	// Leeway for the tokens' exp and nbf; default 1 minute.
	Leeway time.Duration
	// KeyRefresh is the minimum time between key set refreshes caused by an
	// unknown key id; default 10 seconds.
	KeyRefresh time.Duration

	// Link links a buyer who arrived on the landing page to the seller's
	// own account; nil leaves AccountID empty. It runs once the purchase is
	// stored as pending and before it is activated; what it writes to the
	// response is held until the activation succeeded, then sent.
	Link lifecycle.LinkFunc
	// Decide accepts or rejects the operations Azure waits on (ChangePlan,
	// ChangeQuantity, Reinstate); nil accepts every one.
	Decide DecideFunc
	// OperationWait is how long Process follows an answered operation that
	// Azure has not completed yet before it lets the worker come back (after
	// the same time); default 10 seconds, and less than half the engine's
	// Lease. Azure completes an operation asynchronously, usually within
	// seconds.
	OperationWait time.Duration
}

// Provider is the Azure adapter: the marketplace.Provider, the landing
// page, the webhook, the ledger's target, and the lifecycle.Handler of
// Azure's notifications.
type Provider struct {
	// Base gives Name, SubmitUsage, ResolveSubscription, IsActive and
	// CheckEntitlement, the same for every cloud.
	lifecycle.Base

	e      *lifecycle.Engine
	deps   lifecycle.Deps
	cfg    Config
	target *Reporter
	keys   *keyset.Cache[crypto.PublicKey]
	parser *jwt.Parser
}

// NewProvider checks cfg, takes the shared dependencies from e, and
// registers the provider as e's handler of Azure notifications.
func NewProvider(e *lifecycle.Engine, cfg Config) (*Provider, error) {
	switch {
	case e == nil:
		return nil, errors.New("azure: NewProvider needs a lifecycle engine")
	case cfg.Client == nil:
		return nil, errors.New("azure: Config.Client is required")
	case cfg.TenantID == "":
		return nil, errors.New("azure: Config.TenantID is required (the publisher's Entra tenant)")
	case cfg.AppID == "":
		return nil, errors.New("azure: Config.AppID is required (the publisher's Entra app, the webhook tokens' audience)")
	case cfg.Leeway < 0:
		return nil, errors.New("azure: Config.Leeway must not be negative")
	case cfg.OperationWait < 0:
		return nil, errors.New("azure: Config.OperationWait must not be negative")
	}
	if cfg.JWKSURL == "" {
		cfg.JWKSURL = "https://login.microsoftonline.com/" + cfg.TenantID + "/discovery/v2.0/keys"
	}
	if len(cfg.Issuers) == 0 {
		cfg.Issuers = []string{"https://login.microsoftonline.com/" + cfg.TenantID + "/v2.0", "https://sts.windows.net/" + cfg.TenantID + "/"}
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = time.Minute
	}
	if cfg.OperationWait == 0 {
		cfg.OperationWait = 10 * time.Second
	}
	if lease := e.Config().Lease; cfg.OperationWait >= lease/2 {
		return nil, fmt.Errorf("azure: Config.OperationWait (%s) must be less than half the engine's Lease (%s), which bounds an attempt", cfg.OperationWait, lease)
	}
	deps := e.Deps()
	target, err := NewReporter(ReporterConfig{Client: cfg.Client, Subscriptions: deps.Store, Logger: deps.Logger, Clock: deps.Clock})
	if err != nil {
		return nil, err
	}
	p := &Provider{
		e: e, deps: deps, cfg: cfg,
		Base:   e.Base(marketplace.Azure),
		target: target,
		keys: keyset.New(keyset.JWKS, keyset.Config{HTTPClient: cfg.HTTPClient, RefreshInterval: cfg.KeyRefresh,
			Clock: deps.Clock}),
		parser: jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(cfg.AppID),
			jwt.WithLeeway(cfg.Leeway), jwt.WithExpirationRequired(), jwt.WithTimeFunc(deps.Clock)),
	}
	if err := e.Register(marketplace.Azure, p); err != nil {
		return nil, fmt.Errorf("azure: %w", err)
	}
	return p, nil
}

// Run returns when ctx ends: Azure pushes its notifications (see
// NotificationHandler) and offers nothing to pull.
func (p *Provider) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Target is the ledger's reporting target for Azure (see Reporter).
func (p *Provider) Target() ledger.Target { return p.target }

// The types implement the interfaces they are consumed through.
var (
	_ marketplace.Provider = (*Provider)(nil)
	_ lifecycle.Handler    = (*Provider)(nil)
	_ ledger.Target        = (*Reporter)(nil)
)
