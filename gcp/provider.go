package gcp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/api/cloudcommerceprocurement/v1"
	"google.golang.org/api/servicecontrol/v1"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
)

// Config holds Google's own settings; the shared dependencies (store,
// ledger, entitlements, logger, clock) come from the lifecycle engine.
type Config struct {
	// Procurement is the Partner Procurement API client for the seller's
	// provider id (required).
	Procurement *Procurement
	// ServiceControl is the official Service Control client that Target
	// reports through (required).
	ServiceControl *servicecontrol.Service
	// ServiceName is the product's Service Control service, e.g.
	// "example-api.endpoints.my-project.cloud.goog" (required).
	ServiceName string
	// Metrics maps a ledger dimension to its metric name in the service
	// config (see ReporterConfig.Metrics).
	Metrics map[string]string

	// SignupAudience is the product's domain as registered in the Producer
	// Portal: the aud of Google's sign-up JWTs (required).
	SignupAudience string
	// SignupKeysURL is for the emulator only; default SignupKeysURL.
	SignupKeysURL string
	// PushServiceAccount is the service account the Pub/Sub push
	// subscription authenticates as, and PushAudience the audience set on
	// it (default: none accepted). Without PushServiceAccount every push
	// delivery to NotificationHandler is refused.
	PushServiceAccount, PushAudience string
	// PushKeysURL is for the emulator only; default OIDCKeysURL.
	PushKeysURL string
	// HTTPClient fetches Google's signing keys; default a client with a
	// 10 s timeout.
	HTTPClient *http.Client
	// Leeway for the tokens' exp and iat; default 30 s.
	Leeway time.Duration

	// Subscriber is the seller's Pub/Sub pull subscription on Google's
	// lifecycle topic; Run receives from it when set. Its ReceiveSettings
	// (flow control) are the caller's; see LeaseExtension.
	Subscriber *pubsub.Subscriber

	// Link links a buyer who arrived on the sign-up URL to the seller's
	// own account; nil leaves AccountID empty. It runs before the account's
	// "signup" approval is granted, and what it writes to the response is
	// held until that approval succeeded, then sent.
	Link lifecycle.LinkFunc
	// Decide approves or rejects a new entitlement or a plan change
	// waiting for the seller; nil approves every one.
	Decide DecideFunc
	// AccountDeleted, when set, deletes the seller's own data of a deleted
	// procurement account, after its stored subscriptions are gone.
	AccountDeleted func(ctx context.Context, accountID string) error
}

// DecideFunc is the seller's answer to what Google waits on: a new
// entitlement (ent.State is ENTITLEMENT_ACTIVATION_REQUESTED) or a plan
// change (ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL, to ent.NewPendingPlan).
// sub is the stored subscription, nil when none is stored yet. An error
// leaves the notification to be retried.
type DecideFunc func(ctx context.Context, sub *marketplace.Subscription, ent *cloudcommerceprocurement.Entitlement) (Decision, error)

// Decision is a DecideFunc's answer.
type Decision struct {
	Approve bool
	Reason  string // shown to Google on a rejection
}

// Provider is the Google adapter: the marketplace.Provider, the sign-up
// URL, the Pub/Sub push endpoint and pull loop, the ledger's target, and
// the lifecycle.Handler of Google notifications. Customer ids are
// usageReportingIds (see the package doc).
type Provider struct {
	// Base gives Name, SubmitUsage, ResolveSubscription, IsActive and
	// CheckEntitlement, the same for every cloud.
	lifecycle.Base

	e      *lifecycle.Engine
	deps   lifecycle.Deps
	cfg    Config
	target *Reporter
	signup *SignupVerifier
	push   *pushVerifier
}

// The types implement the interfaces they are consumed through.
var (
	_ marketplace.Provider = (*Provider)(nil)
	_ lifecycle.Handler    = (*Provider)(nil)
)

// NewProvider checks cfg, takes the shared dependencies from e, and
// registers the provider as e's handler of Google notifications.
func NewProvider(e *lifecycle.Engine, cfg Config) (*Provider, error) {
	switch {
	case e == nil:
		return nil, errors.New("gcp: NewProvider needs a lifecycle engine")
	case cfg.Procurement == nil:
		return nil, errors.New("gcp: Config.Procurement is required")
	case cfg.ServiceControl == nil:
		return nil, errors.New("gcp: Config.ServiceControl is required")
	case cfg.ServiceName == "":
		return nil, errors.New("gcp: Config.ServiceName is required")
	case cfg.SignupAudience == "":
		return nil, errors.New("gcp: Config.SignupAudience is required (the product's domain)")
	case cfg.PushServiceAccount != "" && cfg.PushAudience == "":
		return nil, errors.New("gcp: Config.PushAudience is required with Config.PushServiceAccount")
	case cfg.Leeway < 0:
		return nil, errors.New("gcp: Config.Leeway must not be negative")
	}
	deps := e.Deps()
	target, err := NewReporter(ReporterConfig{Client: cfg.ServiceControl, ServiceName: cfg.ServiceName, Metrics: cfg.Metrics,
		Logger: deps.Logger, Clock: deps.Clock})
	if err != nil {
		return nil, err
	}
	p := &Provider{
		e: e, deps: deps, cfg: cfg,
		Base:   e.Base(marketplace.GCP),
		target: target,
		signup: NewSignupVerifier(SignupVerifierConfig{Audience: cfg.SignupAudience, KeysURL: cfg.SignupKeysURL,
			Leeway: cfg.Leeway, HTTPClient: cfg.HTTPClient, Clock: deps.Clock}),
		push: newPushVerifier(cfg.PushAudience, cfg.PushServiceAccount, cfg.PushKeysURL, cfg.Leeway, cfg.HTTPClient, deps.Clock),
	}
	if err := e.Register(marketplace.GCP, p); err != nil {
		return nil, fmt.Errorf("gcp: %w", err)
	}
	return p, nil
}

// Target is the ledger's reporting target for Google (see Reporter), made
// from Config.ServiceControl, ServiceName and Metrics.
func (p *Provider) Target() ledger.Target { return p.target }
