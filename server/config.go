package server

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/pages"
	"github.com/saasmarket/marketplace/postgres"
)

// Config is marketplaced serve's configuration. Every field comes from a flag
// or a MARKETPLACED_* environment variable (the flag wins), except the product
// and dimension catalogue, which is a file.
type Config struct {
	Addr    string // listen address
	DataDir string // holds marketplace.db (SQLite)
	// Store, when set, is the PostgreSQL database (a postgres:// URL)
	// that replaces the SQLite file, so that several daemons share one
	// state. Secret: it may hold a password; logged only redacted.
	Store string
	// Replicas is how many daemons share Store, and with it the seller's
	// quota at each cloud: each reports at 1/Replicas of a cloud's rate.
	Replicas      int
	CataloguePath string
	Catalogue     *Catalogue
	// APIKeys authenticate /v1 requests; several allow rotation. Secret:
	// never logged (see LogValue).
	APIKeys []string

	MaxBodyBytes int64 // POST /v1/usage body limit (413 above it)
	MaxRecords   int   // records per POST /v1/usage (413 above it)
	MaxInFlight  int   // concurrent POST /v1/usage requests (429 above it)

	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// ShutdownTimeout bounds the drain after SIGTERM: in-flight requests,
	// then the reporters and loops.
	ShutdownTimeout time.Duration

	EntitlementTTL time.Duration // how long a cached grant is served
	// DashboardPassword, when set, signs in to /dashboard/ besides the API
	// keys. Secret.
	DashboardPassword string
	// PagesDir, when set, is a folder of the seller's landing-page
	// templates (package pages), checked at start.
	PagesDir string

	// LinkURL, when set, is the seller's sign-up page: the landing pages
	// redirect each new buyer there with signed query parameters (see
	// LinkHook); the seller's page attaches its account with
	// PUT /v1/subscriptions/{provider}/{customer}/account.
	LinkURL *url.URL
	// LinkSecret signs those parameters (HMAC-SHA256). Secret.
	LinkSecret []byte
	// LinkTTL is how long the signed parameters are valid.
	LinkTTL time.Duration

	LogLevel slog.Level

	// Testing and demos only: the ledger's clock and sealing schedule, so
	// that a test or a demo sees hours end, seal and bill within minutes.
	// The clock reads ClockAnchor + ClockOffset + (now − ClockAnchor) ×
	// ClockRate; the anchor is a fixed instant so that a restarted daemon
	// reads the same time as the one it replaced.
	ClockOffset time.Duration
	ClockRate   float64
	ClockAnchor time.Time
	SealEvery   time.Duration // how often ended hours are sealed
	SealGrace   time.Duration // how long after an hour ends it seals
	// LifecycleLease is how long a notification claimed by a daemon that
	// died waits before another takes it (lifecycle.Config.Lease).
	LifecycleLease time.Duration

	// AWS is set up when AWS.ProductCode is set.
	AWS AWSConfig
	// GCP is set up when GCP.Service is set.
	GCP GCPConfig
	// Azure is set up when Azure.TenantID is set.
	Azure AzureConfig
}

// AWSConfig are the settings of the AWS Marketplace adapter. Credentials,
// and endpoint overrides for the emulator, come from the AWS SDK's own
// environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL_MARKETPLACE_METERING, ...).
type AWSConfig struct {
	ProductCode  string
	LicenseMode  bool
	Region       string
	Entitlements bool // read contract entitlements (GetEntitlements)
	// EventBridgeHeader and EventBridgeSecret authenticate EventBridge API
	// destination deliveries to /aws/notifications. Secret.
	EventBridgeHeader, EventBridgeSecret string
	SQSQueueURL                          string
	SNSTopicARNs                         []string
}

// Enabled reports whether AWS is configured.
func (a AWSConfig) Enabled() bool { return a.ProductCode != "" }

// GCPConfig are the settings of the Google Cloud Marketplace adapter.
// Credentials come from Application Default Credentials; the Pub/Sub client
// honours PUBSUB_EMULATOR_HOST.
type GCPConfig struct {
	// Service is the product's Service Control service name, a gcp
	// product of the catalogue.
	Service        string
	ProviderID     string
	SignupAudience string
	// PushServiceAccount and PushAudience authenticate Pub/Sub push
	// deliveries to /gcp/notifications.
	PushServiceAccount, PushAudience string
	// Subscription is a Pub/Sub pull subscription on Google's lifecycle
	// topic (projects/P/subscriptions/S); Run receives from it.
	Subscription string
	// EmulatorURL points every Google client and key fetch at
	// marketplaced emulate, without authentication: tests and demos only.
	EmulatorURL string
}

// AzureConfig are the settings of the Azure Marketplace adapter.
type AzureConfig struct {
	TenantID, AppID string
	ClientSecret    string // secret
	ManagedIdentity bool
	// EmulatorURL points the Fulfillment and Metering APIs, Entra ID and
	// the webhook key set at marketplaced emulate; EmulatorCAFile is its
	// TLS certificate. Tests and demos only.
	EmulatorURL, EmulatorCAFile string
}

// Enabled reports whether Azure is configured.
func (a AzureConfig) Enabled() bool { return a.TenantID != "" }

// Enabled reports whether GCP is configured.
func (g GCPConfig) Enabled() bool { return g.Service != "" }

func (c Config) linkURL() string {
	if c.LinkURL == nil {
		return ""
	}
	return c.LinkURL.Redacted()
}

// LinkFunc returns the daemon's link hook for every cloud's landing page
// (LinkHook.Link), or nil when no -link-url is set.
func (c Config) LinkFunc(logger *slog.Logger) lifecycle.LinkFunc {
	if c.LinkURL == nil {
		return nil
	}
	if logger == nil {
		logger = slog.Default()
	}
	h := &LinkHook{URL: c.LinkURL, Secret: c.LinkSecret, TTL: c.LinkTTL, Clock: time.Now, Logger: logger}
	return h.Link
}

// Clock returns the ledger's clock (see ClockOffset); time.Now unless a
// test or demo setting is given.
func (c Config) Clock() func() time.Time {
	if c.ClockOffset == 0 && (c.ClockRate == 0 || c.ClockRate == 1) {
		return time.Now
	}
	rate, anchor, offset := c.ClockRate, c.ClockAnchor, c.ClockOffset
	if rate == 0 || rate == 1 {
		// No anchor needed (and none may be set: the zero time is
		// centuries away, past what a Duration holds).
		return func() time.Time { return time.Now().Add(offset) }
	}
	return func() time.Time {
		now := time.Now()
		return anchor.Add(offset + time.Duration(float64(now.Sub(anchor))*rate))
	}
}

// DBPath is the SQLite file in the data folder.
func (c Config) DBPath() string { return filepath.Join(c.DataDir, "marketplace.db") }

// StoreName names the store as it may be shown: the SQLite file, or the
// PostgreSQL URL with its password redacted.
func (c Config) StoreName() string {
	if c.Store == "" {
		return "sqlite:" + c.DBPath()
	}
	return postgres.Redact(c.Store)
}

// LogValue keeps secrets out of logs: the API keys are shown as a count.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.String("data", c.DataDir),
		slog.String("store", c.StoreName()),
		slog.Int("replicas", c.Replicas),
		slog.String("catalogue", c.CataloguePath),
		slog.Int("api_keys", len(c.APIKeys)),
		slog.Int64("max_body_bytes", c.MaxBodyBytes),
		slog.Int("max_records", c.MaxRecords),
		slog.Int("max_in_flight", c.MaxInFlight),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
		slog.String("log_level", c.LogLevel.String()),
		slog.String("link_url", c.linkURL()), slog.Bool("link_secret_set", len(c.LinkSecret) > 0),
		slog.Group("aws", slog.String("product_code", c.AWS.ProductCode), slog.Bool("license_mode", c.AWS.LicenseMode),
			slog.String("region", c.AWS.Region), slog.Bool("entitlements", c.AWS.Entitlements),
			slog.Bool("eventbridge_secret_set", c.AWS.EventBridgeSecret != ""), slog.String("sqs_queue_url", c.AWS.SQSQueueURL),
			slog.Int("sns_topics", len(c.AWS.SNSTopicARNs))),
		slog.Group("gcp", slog.String("service", c.GCP.Service), slog.String("provider_id", c.GCP.ProviderID),
			slog.String("signup_audience", c.GCP.SignupAudience), slog.String("push_service_account", c.GCP.PushServiceAccount),
			slog.String("pubsub_subscription", c.GCP.Subscription), slog.String("emulator_url", c.GCP.EmulatorURL)),
		slog.Group("azure", slog.String("tenant_id", c.Azure.TenantID), slog.String("app_id", c.Azure.AppID),
			slog.Bool("client_secret_set", c.Azure.ClientSecret != ""), slog.Bool("managed_identity", c.Azure.ManagedIdentity),
			slog.String("emulator_url", c.Azure.EmulatorURL)),
	)
}

// setting is one configuration value: its flag (envName gives its
// environment variable), its default and how to apply it.
type setting struct {
	flag   string
	def    string
	usage  string
	secret bool // never echoed: not in -h, not in errors
	apply  func(c *Config, v string) error
	// cloud names the cloud whose adapter the setting belongs to.
	cloud string
}

// EnvPrefix starts every environment variable marketplaced serve reads.
const EnvPrefix = "MARKETPLACED_"

func settings() []setting {
	dur := func(dst func(*Config) *time.Duration) func(*Config, string) error {
		return func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return fmt.Errorf("want a positive duration such as 30s, got %q", v)
			}
			*dst(c) = d
			return nil
		}
	}
	posInt := func(dst func(*Config) *int) func(*Config, string) error {
		return func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return fmt.Errorf("want a positive integer, got %q", v)
			}
			*dst(c) = n
			return nil
		}
	}
	boolean := func(dst func(*Config) *bool) func(*Config, string) error {
		return func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("want true or false, got %q", v)
			}
			*dst(c) = b
			return nil
		}
	}
	return []setting{
		{flag: "addr", def: "127.0.0.1:8080", usage: "listen address (host:port) for the API, landing and notification endpoints, metrics and health",
			apply: func(c *Config, v string) error {
				if !strings.Contains(v, ":") {
					return fmt.Errorf("want host:port, got %q", v)
				}
				c.Addr = v
				return nil
			}},
		{flag: "data", def: "marketplaced-data", usage: "data folder; the SQLite store is marketplace.db in it (created if missing)",
			apply: func(c *Config, v string) error {
				if v == "" {
					return errors.New("is empty")
				}
				c.DataDir = v
				return nil
			}},
		{flag: "store", secret: true, usage: "the database: empty for SQLite in the data folder, or a PostgreSQL URL (postgres://USER:PASSWORD@HOST:5432/DB?sslmode=verify-full) that several daemons share; see docs/scale-out.md. Secret: prefer the environment variable, flags show in ps",
			apply: func(c *Config, v string) error {
				if v == "" {
					return nil
				}
				if err := CheckStoreURL(v); err != nil {
					return fmt.Errorf("want empty (SQLite in -data) or %w", err)
				}
				c.Store = v
				return nil
			}},
		{flag: "replicas", def: "1", usage: "how many daemons run on one -store database: each reports at 1/N of each cloud's rate (AWS: 10 calls/s per seller account), so that together they stay under it",
			apply: posInt(func(c *Config) *int { return &c.Replicas })},
		{flag: "catalogue", usage: "product and dimension catalogue file (JSON; see docs/configuration.md); required",
			apply: func(c *Config, v string) error {
				if v == "" {
					return errors.New("is required: the file that maps your metric names to each cloud's dimensions")
				}
				cat, err := LoadCatalogue(v)
				if err != nil {
					return err
				}
				c.CataloguePath, c.Catalogue = v, cat
				return nil
			}},
		{flag: "api-keys", secret: true, usage: "comma-separated API keys for /v1 (Authorization: Bearer KEY); several allow rotation; required. Prefer the environment variable: flags show in ps",
			apply: func(c *Config, v string) error {
				c.APIKeys = nil
				for k := range strings.SplitSeq(v, ",") {
					k = strings.TrimSpace(k)
					if k == "" {
						continue
					}
					if len(k) < 16 {
						return fmt.Errorf("key %d is shorter than 16 characters", len(c.APIKeys)+1)
					}
					c.APIKeys = append(c.APIKeys, k)
				}
				if len(c.APIKeys) == 0 {
					return errors.New("is required: at least one key")
				}
				return nil
			}},
		{flag: "max-body", def: "16777216", usage: "largest POST /v1/usage body in bytes (413 above it)",
			apply: func(c *Config, v string) error {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n < 1024 {
					return fmt.Errorf("want a number of bytes, at least 1024, got %q", v)
				}
				c.MaxBodyBytes = n
				return nil
			}},
		{flag: "max-records", def: "10000", usage: "most records in one POST /v1/usage (413 above it)", apply: posInt(func(c *Config) *int { return &c.MaxRecords })},
		{flag: "max-in-flight", def: "64", usage: "most POST /v1/usage requests served at once (429 with Retry-After above it)", apply: posInt(func(c *Config) *int { return &c.MaxInFlight })},
		{flag: "read-header-timeout", def: "5s", usage: "HTTP server: time to read a request's headers", apply: dur(func(c *Config) *time.Duration { return &c.ReadHeaderTimeout })},
		{flag: "read-timeout", def: "30s", usage: "HTTP server: time to read a whole request", apply: dur(func(c *Config) *time.Duration { return &c.ReadTimeout })},
		{flag: "write-timeout", def: "30s", usage: "HTTP server: time from the end of the request headers to the end of the response", apply: dur(func(c *Config) *time.Duration { return &c.WriteTimeout })},
		{flag: "idle-timeout", def: "2m", usage: "HTTP server: how long an idle keep-alive connection is kept", apply: dur(func(c *Config) *time.Duration { return &c.IdleTimeout })},
		{flag: "shutdown-timeout", def: "20s", usage: "on SIGTERM: the bound for draining in-flight requests and stopping the reporters", apply: dur(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
		{flag: "entitlement-ttl", def: "1m", usage: "how long a cached entitlement grant is served (lifecycle events invalidate it sooner)", apply: dur(func(c *Config) *time.Duration { return &c.EntitlementTTL })},
		{flag: "aws-product-code", cloud: "aws", usage: "AWS Marketplace: the product code; setting it turns AWS on (it must be an aws product of the catalogue)",
			apply: func(c *Config, v string) error { c.AWS.ProductCode = v; return nil }},
		{flag: "aws-license-mode", cloud: "aws", def: "false", usage: "AWS Marketplace: buyers are identified by account id and license ARN (products created from June 2026)",
			apply: boolean(func(c *Config) *bool { return &c.AWS.LicenseMode })},
		{flag: "aws-region", cloud: "aws", usage: "AWS Marketplace: the region of the Metering and Entitlement APIs (default: the SDK's AWS_REGION)",
			apply: func(c *Config, v string) error { c.AWS.Region = v; return nil }},
		{flag: "aws-entitlements", cloud: "aws", def: "false", usage: "AWS Marketplace: read contract entitlements (GetEntitlements) for entitlement checks",
			apply: boolean(func(c *Config) *bool { return &c.AWS.Entitlements })},
		{flag: "aws-eventbridge-header", cloud: "aws", def: "X-Marketplace-Secret", usage: "AWS Marketplace: the header of the EventBridge API destination's API key",
			apply: func(c *Config, v string) error { c.AWS.EventBridgeHeader = v; return nil }},
		{flag: "aws-eventbridge-secret", cloud: "aws", secret: true, usage: "AWS Marketplace: the EventBridge API destination's API key value; without it EventBridge deliveries are refused. Secret",
			apply: func(c *Config, v string) error { c.AWS.EventBridgeSecret = v; return nil }},
		{flag: "aws-sqs-queue-url", cloud: "aws", usage: "AWS Marketplace: an SQS queue an EventBridge rule targets; polled when set",
			apply: func(c *Config, v string) error { c.AWS.SQSQueueURL = v; return nil }},
		{flag: "aws-sns-topic-arns", cloud: "aws", usage: "AWS Marketplace: comma-separated legacy SNS topic ARNs whose messages /aws/notifications accepts",
			apply: func(c *Config, v string) error {
				c.AWS.SNSTopicARNs = nil
				for a := range strings.SplitSeq(v, ",") {
					if a = strings.TrimSpace(a); a != "" {
						if !strings.HasPrefix(a, "arn:aws:sns:") {
							return fmt.Errorf("%q is not an SNS topic ARN (arn:aws:sns:…)", a)
						}
						c.AWS.SNSTopicARNs = append(c.AWS.SNSTopicARNs, a)
					}
				}
				return nil
			}},
		{flag: "pages", usage: "a folder of your own landing-page templates (layout.html, landing.html, error.html; see docs/pages.md) that replace the built-in ones; checked at start",
			apply: func(c *Config, v string) error {
				if v == "" {
					return nil
				}
				if _, err := pages.New(os.DirFS(v), slog.New(slog.DiscardHandler)); err != nil {
					return fmt.Errorf("%s: %w", v, err)
				}
				c.PagesDir = v
				return nil
			}},
		{flag: "dashboard-password", secret: true, usage: "a password that signs in to the dashboard (/dashboard/) besides the API keys; at least 12 characters. Secret",
			apply: func(c *Config, v string) error {
				if v != "" && len(v) < 12 {
					return errors.New("too short: use at least 12 characters")
				}
				c.DashboardPassword = v
				return nil
			}},
		{flag: "gcp-service", cloud: "gcp", usage: "Google Cloud Marketplace: the product's Service Control service name; setting it turns Google on (it must be a gcp product of the catalogue)",
			apply: func(c *Config, v string) error { c.GCP.Service = v; return nil }},
		{flag: "gcp-provider-id", cloud: "gcp", usage: "Google Cloud Marketplace: the seller's provider id (providers/ID in the Procurement API)",
			apply: func(c *Config, v string) error { c.GCP.ProviderID = v; return nil }},
		{flag: "gcp-signup-audience", cloud: "gcp", usage: "Google Cloud Marketplace: the product's domain as registered in the Producer Portal (the aud of sign-up JWTs)",
			apply: func(c *Config, v string) error { c.GCP.SignupAudience = v; return nil }},
		{flag: "gcp-push-service-account", cloud: "gcp", usage: "Google Cloud Marketplace: the service account a Pub/Sub push subscription to /gcp/notifications authenticates as (none: push refused)",
			apply: func(c *Config, v string) error { c.GCP.PushServiceAccount = v; return nil }},
		{flag: "gcp-push-audience", cloud: "gcp", usage: "Google Cloud Marketplace: the audience set on that push subscription",
			apply: func(c *Config, v string) error { c.GCP.PushAudience = v; return nil }},
		{flag: "gcp-pubsub-subscription", cloud: "gcp", usage: "Google Cloud Marketplace: a Pub/Sub pull subscription on the lifecycle topic, projects/P/subscriptions/S; pulled when set",
			apply: func(c *Config, v string) error {
				if v != "" && !regexp.MustCompile(`^projects/[^/]+/subscriptions/[^/]+$`).MatchString(v) {
					return fmt.Errorf("want projects/PROJECT/subscriptions/NAME, got %q", v)
				}
				c.GCP.Subscription = v
				return nil
			}},
		{flag: "gcp-emulator-url", cloud: "gcp", usage: "Google Cloud Marketplace: the base URL of marketplaced emulate's Google emulator; every Google call goes there unauthenticated (tests and demos only)",
			apply: func(c *Config, v string) error {
				if v != "" && !strings.HasPrefix(v, "http://127.") && !strings.HasPrefix(v, "http://localhost") {
					return fmt.Errorf("want a loopback http:// URL, got %q", v)
				}
				c.GCP.EmulatorURL = v
				return nil
			}},
		{flag: "azure-tenant-id", cloud: "azure", usage: "Azure Marketplace: the publisher's Entra tenant id; setting it turns Azure on",
			apply: func(c *Config, v string) error { c.Azure.TenantID = v; return nil }},
		{flag: "azure-app-id", cloud: "azure", usage: "Azure Marketplace: the publisher's app registration (client) id, the aud of Azure's webhook tokens",
			apply: func(c *Config, v string) error { c.Azure.AppID = v; return nil }},
		{flag: "azure-client-secret", cloud: "azure", secret: true, usage: "Azure Marketplace: the app registration's client secret. Secret",
			apply: func(c *Config, v string) error { c.Azure.ClientSecret = v; return nil }},
		{flag: "azure-managed-identity", cloud: "azure", def: "false", usage: "Azure Marketplace: authenticate with the Azure host's managed identity instead of a client secret",
			apply: boolean(func(c *Config) *bool { return &c.Azure.ManagedIdentity })},
		{flag: "azure-emulator-url", cloud: "azure", usage: "Azure Marketplace: the base URL of marketplaced emulate's Azure emulator (a loopback https:// URL); APIs, Entra ID and keys are read there (tests and demos only)",
			apply: func(c *Config, v string) error {
				if v != "" && !strings.HasPrefix(v, "https://127.") && !strings.HasPrefix(v, "https://localhost") {
					return fmt.Errorf("want a loopback https:// URL, got %q", v)
				}
				c.Azure.EmulatorURL = v
				return nil
			}},
		{flag: "azure-emulator-ca-file", cloud: "azure", usage: "Azure Marketplace: the Azure emulator's TLS certificate (PEM), trusted for its URL only",
			apply: func(c *Config, v string) error { c.Azure.EmulatorCAFile = v; return nil }},
		{flag: "link-url", usage: "your sign-up page: each new buyer's landing redirects there (303) with signed query parameters naming the subscription; your page links its account with PUT /v1/subscriptions/{provider}/{customer}/account (see docs/api.md). Needs -link-secret",
			apply: func(c *Config, v string) error {
				if v == "" {
					return nil
				}
				u, err := url.Parse(v)
				switch {
				case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
					return fmt.Errorf("want an absolute https:// URL, got %q", v)
				case u.Scheme == "http" && !loopbackHost(u.Hostname()):
					return fmt.Errorf("want https:// (http:// only on loopback, for development), got %q", v)
				case u.Fragment != "":
					return fmt.Errorf("want a URL without a #fragment, got %q", v)
				case u.User != nil:
					return errors.New("want a URL without user:password@")
				}
				c.LinkURL = u
				return nil
			}},
		{flag: "link-secret", secret: true, usage: "the key that signs -link-url's parameters (HMAC-SHA256), at least 32 bytes; your sign-up page verifies with it. Secret",
			apply: func(c *Config, v string) error {
				if v != "" && len(v) < 32 {
					return fmt.Errorf("too short: %d bytes, want at least 32 (openssl rand -hex 32)", len(v))
				}
				c.LinkSecret = []byte(v)
				return nil
			}},
		{flag: "link-ttl", def: "10m", usage: "how long -link-url's signed parameters are valid", apply: dur(func(c *Config) *time.Duration { return &c.LinkTTL })},
		{flag: "seal-every", def: "15s", usage: "how often the ledger seals the hours that have ended", apply: dur(func(c *Config) *time.Duration { return &c.SealEvery })},
		{flag: "seal-grace", def: "5m", usage: "how long after an hour ends its usage is sealed (records arriving later go to the earliest open hour)", apply: dur(func(c *Config) *time.Duration { return &c.SealGrace })},
		{flag: "lifecycle-lease", def: "2m", usage: "how long a lifecycle notification claimed by a daemon that died waits before another daemon (or the restarted one) takes it; at least 25s, above twice Azure's operation wait",
			apply: func(c *Config, v string) error {
				d, err := time.ParseDuration(v)
				if err != nil || d < 25*time.Second {
					return fmt.Errorf("want a duration of at least 25s, got %q", v)
				}
				c.LifecycleLease = d
				return nil
			}},
		{flag: "clock-offset", def: "0s", usage: "testing and demos only: added to the ledger's clock, which decides when hours end (e.g. -1h)",
			apply: func(c *Config, v string) error {
				d, err := time.ParseDuration(v)
				if err != nil {
					return fmt.Errorf("want a duration such as -6h, got %q", v)
				}
				c.ClockOffset = d
				return nil
			}},
		{flag: "clock-rate", def: "1", usage: "testing and demos only: how fast the ledger's clock runs (60: an hour ends, seals and bills every minute); needs -clock-anchor when not 1",
			apply: func(c *Config, v string) error {
				r, err := strconv.ParseFloat(v, 64)
				if err != nil || !(r >= 1 && r <= 3600) {
					return fmt.Errorf("want a rate from 1 to 3600, got %q", v)
				}
				c.ClockRate = r
				return nil
			}},
		{flag: "clock-anchor", usage: "testing and demos only: the instant (RFC 3339) from which -clock-rate counts; give every restart the same one",
			apply: func(c *Config, v string) error {
				if v == "" {
					if c.ClockRate != 1 {
						return errors.New("is required when -clock-rate is not 1")
					}
					return nil
				}
				t, err := time.Parse(time.RFC3339, v)
				if err != nil {
					return fmt.Errorf("want an RFC 3339 time such as 2026-01-01T00:00:00Z, got %q", v)
				}
				c.ClockAnchor = t
				return nil
			}},
		{flag: "log-level", def: "info", usage: "log level: debug, info, warn or error (logs are JSON on stderr)",
			apply: func(c *Config, v string) error {
				return c.LogLevel.UnmarshalText([]byte(v))
			}},
	}
}

// CheckStoreURL checks that v is a postgres:// URL; the error shows it
// only with its password redacted.
func CheckStoreURL(v string) error {
	if !strings.HasPrefix(v, "postgres://") && !strings.HasPrefix(v, "postgresql://") {
		return fmt.Errorf("a postgres:// URL, got %q", postgres.Redact(v))
	}
	// url.Parse's error quotes the URL, password and all.
	if _, err := url.Parse(v); err != nil {
		return errors.New("a valid postgres:// URL (a password with special characters must be percent-encoded)")
	}
	return nil
}

func envName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ParseConfig reads the configuration from args (flags) and getenv, applies
// defaults and validates every setting. An error names the flag and the
// environment variable. -h prints every setting with its default to out and
// returns flag.ErrHelp.
func ParseConfig(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	fs := flag.NewFlagSet("marketplaced serve", flag.ContinueOnError)
	fs.SetOutput(out)
	ss := settings()
	vals := make([]*string, len(ss))
	for i, s := range ss {
		usage := s.usage + " [" + envName(s.flag) + "]"
		vals[i] = fs.String(s.flag, s.def, usage)
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: marketplaced serve [flags]\n\nEvery flag can also be set by the environment variable in brackets; a flag wins.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var c Config
	var errs []error
	// given names, per cloud, a setting given explicitly: it needs the
	// cloud's required settings.
	given := map[string]string{}
	for i, s := range ss {
		v, from := *vals[i], "-"+s.flag
		if !set[s.flag] {
			if e, ok := lookup(getenv, envName(s.flag)); ok {
				v, from = e, envName(s.flag)
			} else {
				from = "-" + s.flag + " / " + envName(s.flag)
			}
		}
		if s.cloud != "" && v != s.def && given[s.cloud] == "" {
			given[s.cloud] = from
		}
		if err := s.apply(&c, v); err != nil {
			errs = append(errs, fmt.Errorf("setting %s: %w", from, err))
		}
	}
	if from := given["aws"]; from != "" && !c.AWS.Enabled() {
		errs = append(errs, fmt.Errorf("setting -aws-product-code / %s: is required for AWS (%s is set)", envName("aws-product-code"), from))
	}
	if c.AWS.Enabled() && c.Catalogue != nil && !c.Catalogue.has(marketplace.AWS, c.AWS.ProductCode) {
		errs = append(errs, fmt.Errorf("setting -aws-product-code / %s: product %q is not an aws product of the catalogue %s",
			envName("aws-product-code"), c.AWS.ProductCode, c.CataloguePath))
	}
	if c.AWS.Enabled() && c.AWS.Region == "" && getenv("AWS_REGION") == "" && getenv("AWS_DEFAULT_REGION") == "" {
		errs = append(errs, fmt.Errorf("setting -aws-region / %s: is required for AWS (or the SDK's AWS_REGION)", envName("aws-region")))
	}
	if from := given["gcp"]; from != "" && !c.GCP.Enabled() {
		errs = append(errs, fmt.Errorf("setting -gcp-service / %s: is required for Google (%s is set)", envName("gcp-service"), from))
	}
	if c.GCP.Enabled() {
		if c.Catalogue != nil && !c.Catalogue.has(marketplace.GCP, c.GCP.Service) {
			errs = append(errs, fmt.Errorf("setting -gcp-service / %s: service %q is not a gcp product of the catalogue %s",
				envName("gcp-service"), c.GCP.Service, c.CataloguePath))
		}
		if c.Catalogue != nil {
			for _, p := range c.Catalogue.Products {
				if p.Provider != marketplace.GCP || p.Product != c.GCP.Service {
					continue
				}
				for name, m := range p.Metrics {
					if !strings.HasPrefix(m.Dimension, c.GCP.Service+"/") {
						errs = append(errs, fmt.Errorf("catalogue %s: gcp product %s: metric %s: dimension %q is not a metric of service %s (want %s/NAME)",
							c.CataloguePath, p.Product, name, m.Dimension, c.GCP.Service, c.GCP.Service))
					}
				}
			}
		}
		for _, req := range []struct{ flag, v string }{{"gcp-provider-id", c.GCP.ProviderID}, {"gcp-signup-audience", c.GCP.SignupAudience}} {
			if req.v == "" {
				errs = append(errs, fmt.Errorf("setting -%s / %s: is required for Google", req.flag, envName(req.flag)))
			}
		}
	}
	if from := given["azure"]; from != "" && !c.Azure.Enabled() {
		errs = append(errs, fmt.Errorf("setting -azure-tenant-id / %s: is required for Azure (%s is set)", envName("azure-tenant-id"), from))
	}
	if c.Azure.Enabled() {
		if c.Azure.AppID == "" {
			errs = append(errs, fmt.Errorf("setting -azure-app-id / %s: is required for Azure", envName("azure-app-id")))
		}
		if c.Azure.ClientSecret == "" && !c.Azure.ManagedIdentity {
			errs = append(errs, fmt.Errorf("setting -azure-client-secret / %s: is required for Azure (or -azure-managed-identity)", envName("azure-client-secret")))
		}
		if (c.Azure.EmulatorURL == "") != (c.Azure.EmulatorCAFile == "") {
			errs = append(errs, fmt.Errorf("settings -azure-emulator-url and -azure-emulator-ca-file: set both or neither"))
		}
		if c.Catalogue != nil && !slices.Contains(c.Catalogue.Providers(), marketplace.Azure) {
			errs = append(errs, fmt.Errorf("setting -azure-tenant-id / %s: the catalogue %s has no azure product", envName("azure-tenant-id"), c.CataloguePath))
		}
	}
	switch {
	case c.LinkURL != nil && len(c.LinkSecret) == 0:
		errs = append(errs, fmt.Errorf("setting -link-secret / %s: is required with -link-url (it signs the redirect's parameters)", envName("link-secret")))
	case c.LinkURL == nil && len(c.LinkSecret) > 0:
		errs = append(errs, fmt.Errorf("setting -link-url / %s: is required with -link-secret (where to send buyers)", envName("link-url")))
	}
	if c.Replicas > 1 && c.Store == "" {
		errs = append(errs, fmt.Errorf("setting -replicas / %s: %d daemons need a shared database: set -store / %s to a postgres:// URL",
			envName("replicas"), c.Replicas, envName("store")))
	}
	if c.AWS.SQSQueueURL != "" && !strings.HasPrefix(c.AWS.SQSQueueURL, "https://") && !strings.HasPrefix(c.AWS.SQSQueueURL, "http://") {
		errs = append(errs, fmt.Errorf("setting -aws-sqs-queue-url / %s: want the queue's URL, got %q", envName("aws-sqs-queue-url"), c.AWS.SQSQueueURL))
	}
	return c, errors.Join(errs...)
}

func loopbackHost(h string) bool {
	return h == "localhost" || strings.HasPrefix(h, "127.") || h == "::1"
}

func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}
