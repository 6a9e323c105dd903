package aws

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/keyset"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
)

// Config holds AWS's own settings; the shared dependencies (store, ledger,
// entitlements, logger, clock) come from the lifecycle engine.
type Config struct {
	// ProductCode is the product sold (required).
	ProductCode string
	// LicenseMode is for products that identify buyers by account id and
	// license ARN (all products created from June 2026); otherwise buyers
	// are CustomerIdentifiers of ProductCode.
	LicenseMode bool

	// Metering calls ResolveCustomer and BatchMeterUsage (required).
	Metering *Metering
	// Entitlements reads contract entitlements (GetEntitlements); nil for
	// products without contract dimensions.
	Entitlements *Entitlements

	// EventBridgeHeader and EventBridgeSecret are the API key of the
	// EventBridge API destination's connection: the header name and the
	// secret value it sends. Without a secret, EventBridge deliveries to
	// NotificationHandler are refused.
	EventBridgeHeader, EventBridgeSecret string
	// SQS and QueueURL name an SQS queue that an EventBridge rule targets;
	// Run polls it when both are set.
	SQS      SQSAPI
	QueueURL string
	// SQSBackoff is the wait after a failed receive; default 5 seconds.
	SQSBackoff time.Duration

	// SNSTopicARNs are the legacy SNS topics AWS gave the product; an SNS
	// message of any other topic is refused. None: every SNS delivery is.
	SNSTopicARNs []string
	// SNSAllowURL decides which SigningCertURL and SubscribeURL may be
	// fetched; default AWSCertURL. Tests allow the emulator's host.
	SNSAllowURL func(*url.URL) bool
	// HTTPClient fetches SNS certificates and confirms SNS subscriptions;
	// default a client with a 10 s timeout. Redirects are never followed.
	HTTPClient *http.Client

	// Link links a buyer who arrived on the landing page to the seller's
	// own account; nil leaves AccountID empty. It runs once the
	// subscription is stored as pending and before it is activated.
	Link lifecycle.LinkFunc
}

// Provider is the AWS adapter: the marketplace.Provider, the landing page,
// the notification endpoint (EventBridge and SNS), the SQS pull loop, the
// ledger's target, and the lifecycle.Handler of AWS notifications.
//
// Customer ids: in product-code mode a buyer's ledger customer id,
// Subscription.CustomerID and UsageRecord.CustomerID are its AWS
// CustomerIdentifier, which BatchMeterUsage bills by; in license mode they
// are LicenseCustomer(CustomerAWSAccountId, LicenseArn), the pair it bills
// by. Subscription.ID is the CustomerIdentifier or the LicenseArn.
type Provider struct {
	// Base gives Name, SubmitUsage, ResolveSubscription, IsActive and
	// CheckEntitlement, the same for every cloud.
	lifecycle.Base

	e      *lifecycle.Engine
	deps   lifecycle.Deps
	cfg    Config
	target *Reporter
	ents   EntitlementStore
	certs  *keyset.Cache[*x509.Certificate]
	client *http.Client // never follows redirects
}

// The types implement the interfaces they are consumed through.
var (
	_ marketplace.Provider = (*Provider)(nil)
	_ lifecycle.Handler    = (*Provider)(nil)
)

// NewProvider checks cfg, takes the shared dependencies from e, and
// registers the provider as e's handler of AWS notifications.
func NewProvider(e *lifecycle.Engine, cfg Config) (*Provider, error) {
	switch {
	case e == nil:
		return nil, errors.New("aws: NewProvider needs a lifecycle engine")
	case cfg.ProductCode == "":
		return nil, errors.New("aws: Config.ProductCode is required")
	case cfg.Metering == nil:
		return nil, errors.New("aws: Config.Metering is required")
	case cfg.EventBridgeSecret != "" && cfg.EventBridgeHeader == "":
		return nil, errors.New("aws: Config.EventBridgeHeader is required with Config.EventBridgeSecret")
	case (cfg.SQS == nil) != (cfg.QueueURL == ""):
		return nil, errors.New("aws: Config.SQS and Config.QueueURL go together")
	case cfg.SQSBackoff < 0:
		return nil, errors.New("aws: Config.SQSBackoff must not be negative")
	}
	if cfg.SQSBackoff == 0 {
		cfg.SQSBackoff = 5 * time.Second
	}
	if cfg.SNSAllowURL == nil {
		cfg.SNSAllowURL = AWSCertURL
	}
	deps := e.Deps()
	target, err := NewReporter(ReporterConfig{Client: cfg.Metering, ProductCode: cfg.ProductCode, LicenseMode: cfg.LicenseMode,
		Logger: deps.Logger, Clock: deps.Clock})
	if err != nil {
		return nil, err
	}
	// A certificate must come from the URL that was checked.
	client := http.Client{Timeout: 10 * time.Second}
	if cfg.HTTPClient != nil {
		client = *cfg.HTTPClient
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	p := &Provider{
		e: e, deps: deps, cfg: cfg,
		Base:   e.Base(marketplace.AWS),
		target: target,
		ents:   NewEntitlementStore(deps.Store),
		certs:  keyset.New(keyset.PEMCertificate, keyset.Config{HTTPClient: &client, Clock: deps.Clock}),
		client: &client,
	}
	if err := e.Register(marketplace.AWS, p); err != nil {
		return nil, fmt.Errorf("aws: %w", err)
	}
	return p, nil
}

// SubmitUsage records usage durably in the ledger; the Target reports it.
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
	return p.Base.SubmitUsage(ctx, records)
}

// Target is the ledger's reporting target for AWS (see Reporter), made
// from Config.Metering, ProductCode and LicenseMode.
func (p *Provider) Target() ledger.Target { return p.target }

// customerOf is the ledger customer id and subscription id of a buyer.
func (p *Provider) customerOf(cust, acct, lic string) (id, subID string, err error) {
	if p.cfg.LicenseMode {
		if acct == "" || lic == "" {
			return "", "", fmt.Errorf("%w: license mode needs CustomerAWSAccountId and LicenseArn", marketplace.ErrInvalidInput)
		}
		return LicenseCustomer(acct, lic), lic, nil
	}
	if cust == "" {
		return "", "", fmt.Errorf("%w: product-code mode needs a CustomerIdentifier", marketplace.ErrInvalidInput)
	}
	return cust, cust, nil
}

// The attributes a subscription is found by (from the store's index).
const (
	keyLicenseID          = "license_id"     // the l-… id of LicenseArn
	keyAccountID          = "aws_account_id" // CustomerAWSAccountId
	keyLicenseArn         = "license_arn"    // as ResolveCustomer wrote it
	keyCustomerIdentifier = "customer_identifier"
)

// buyerAttributes are the attributes of a buyer's subscription; empty
// identifiers are left out.
func buyerAttributes(cust, acct, lic string) map[string]string {
	attrs := map[string]string{}
	for k, v := range map[string]string{keyCustomerIdentifier: cust, keyAccountID: acct, keyLicenseArn: lic, keyLicenseID: licenseID(lic)} {
		if v != "" {
			attrs[k] = v
		}
	}
	return attrs
}

// setAttributes copies attrs into s and reports whether that changed it.
func setAttributes(s *marketplace.Subscription, attrs map[string]string) bool {
	changed := false
	for k, v := range attrs {
		if s.Attributes[k] != v {
			if s.Attributes == nil {
				s.Attributes = map[string]string{}
			}
			s.Attributes[k] = v
			changed = true
		}
	}
	return changed
}
