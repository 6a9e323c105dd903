// Package marketplace is the domain language shared by every part of the
// project: the clouds, subscriptions and their states, usage records, the
// interfaces a cloud integration implements, and the MultiCloudManager that
// routes to them. It does no I/O and imports no cloud SDK.
//
// Sub-packages do the work: ledger (the durable usage ledger and its
// exactly-once reporter), sqlite (the embedded store), storetest (the
// conformance suite every store passes), and one package per cloud.
package marketplace

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// CloudProvider identifies which cloud marketplace a subscription originates from.
type CloudProvider string

// The three marketplaces.
const (
	AWS   CloudProvider = "aws"
	GCP   CloudProvider = "gcp"
	Azure CloudProvider = "azure"
)

// Providers lists every known cloud, in a stable order.
func Providers() []CloudProvider { return []CloudProvider{AWS, Azure, GCP} }

// Valid reports whether p is one of the known clouds.
func (p CloudProvider) Valid() bool {
	switch p {
	case AWS, GCP, Azure:
		return true
	}
	return false
}

// Common errors returned by marketplace operations. Match them with errors.Is:
// returned errors wrap them with detail (which cloud, which customer).
var (
	ErrProviderNotRegistered = errors.New("marketplace: provider not registered")
	ErrNoActiveSubscription  = errors.New("marketplace: no active subscription")
	ErrEntitlementDenied     = errors.New("marketplace: entitlement denied")
	ErrMeteringFailed        = errors.New("marketplace: metering submission failed")
	// ErrNotFound is returned by stores for a missing subscription,
	// entitlement or bucket.
	ErrNotFound = errors.New("marketplace: not found")
	// ErrVersionConflict is returned by a store when a conditional write
	// found another version than the one the caller read.
	ErrVersionConflict = errors.New("marketplace: version conflict")
	// ErrOutcomeUnknown is wrapped by a MeteringService's error when a
	// submission may or may not have been applied: the caller stopped
	// waiting (its context ended) while the submission was being committed.
	// Such a batch must be neither dropped nor merged back into new usage:
	// resubmit it unchanged under the same idempotency key (see
	// WithIdempotencyKey), and a service that honours the key counts it once.
	ErrOutcomeUnknown = errors.New("marketplace: outcome unknown (the submission may have been applied)")

	// The same failures of outside input carry the same names in every
	// cloud integration:

	// ErrInvalidInput: malformed or incomplete input (a notification, a
	// token, a usage record); its error names what is wrong. HTTP 400.
	ErrInvalidInput = errors.New("marketplace: invalid input")
	// ErrNotAuthentic: a signature, token or secret that does not verify
	// (forged, expired, wrong audience, unknown key). HTTP 401; the
	// response says no more than "not authentic".
	ErrNotAuthentic = errors.New("marketplace: not authentic")
	// ErrUnrelated: a well-formed notification that is not for this
	// integration (another product, another source, an event type it does
	// not act on): acknowledged, never applied.
	ErrUnrelated = errors.New("marketplace: notification not for this integration")
)

// idempotencyKey is the context key of WithIdempotencyKey.
type idempotencyKey struct{}

// WithIdempotencyKey returns a context that asks a MeteringService to apply
// the batch submitted under it at most once per key: a resubmission of the
// same records under the same key is counted once. The key must be unique
// to one batch (a random id); the records of a resubmission must be the
// same, in the same order. ledger.Meter honours it; a service that does not
// ignores it.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idempotencyKey{}, key)
}

// IdempotencyKey returns the key set by WithIdempotencyKey, if any.
func IdempotencyKey(ctx context.Context) (string, bool) {
	k, ok := ctx.Value(idempotencyKey{}).(string)
	return k, ok && k != ""
}

// UsageRecord represents a single unit of metered consumption.
type UsageRecord struct {
	// CustomerID is the cloud-provider-specific customer identifier.
	CustomerID string
	// Dimension identifies what is being metered (e.g. "tokens_1m", "gpu_hours").
	Dimension string
	// Quantity is the amount consumed, in the dimension's raw unit.
	Quantity int64
	// Timestamp is when the usage occurred.
	Timestamp time.Time
}

// Subscription states: one state machine for all clouds. Each cloud package
// documents how its own states map onto these.
const (
	StatusPending   = "pending"   // purchased, not yet linked or activated
	StatusActive    = "active"    // billable and entitled
	StatusSuspended = "suspended" // kept, but not entitled (e.g. payment problem)
	StatusCancelled = "cancelled" // ended by the buyer or the cloud
	StatusExpired   = "expired"   // the term ended without renewal
)

// Subscription represents a marketplace subscription.
type Subscription struct {
	// ID is the cloud-provider-specific subscription identifier (AWS:
	// customer identifier or license ARN; Azure: SaaS subscription id; Google:
	// entitlement id).
	ID string
	// CustomerID is the cloud-provider-specific customer identifier.
	CustomerID string
	// Provider indicates which cloud marketplace this subscription belongs to.
	Provider CloudProvider
	// ProductCode is the marketplace product identifier.
	ProductCode string
	// Status is one of the Status* constants.
	Status string
	// Entitlements lists the features or tiers the customer is entitled to.
	Entitlements []string
	// ExpiresAt is when the subscription expires, if applicable.
	ExpiresAt time.Time

	// Plan is the cloud's plan (Azure planId, Google plan, AWS offer).
	Plan string
	// Quantity is the seat count where the plan has one.
	Quantity int64
	// AccountID links the subscription to the seller's own account, once the
	// landing page has done so.
	AccountID string
	// Attributes hold cloud-specific facts the integrations need later
	// (AWS license ARN, Google usageReportingId, ...).
	Attributes map[string]string
	// CloudUpdated is the cloud's own update time of the state held here;
	// older notifications than this are ignored.
	CloudUpdated time.Time
	// Version increases by one on every stored change; stores use it for
	// optimistic concurrency.
	Version int64
	// Updated is when this copy was last stored.
	Updated time.Time
}

// Active reports whether the subscription is billable and entitled now.
func (s *Subscription) Active() bool { return s.ActiveAt(time.Now()) }

// ActiveAt reports whether the subscription is billable and entitled at t.
func (s *Subscription) ActiveAt(t time.Time) bool {
	if s == nil || s.Status != StatusActive {
		return false
	}
	return s.ExpiresAt.IsZero() || t.Before(s.ExpiresAt)
}

// MeteringService submits consumption usage records to a cloud marketplace.
//
// When only some records were accepted, SubmitUsage returns a *SubmitError
// listing the ones that were not; an error wrapping ErrOutcomeUnknown means
// the batch may or may not have been accepted; any other error means none
// were accepted.
type MeteringService interface {
	// SubmitUsage sends a batch of usage records to the cloud provider's metering API.
	SubmitUsage(ctx context.Context, records []UsageRecord) error
}

// SubscriptionManager resolves and manages marketplace subscriptions.
type SubscriptionManager interface {
	// ResolveSubscription looks up a subscription by customer ID.
	ResolveSubscription(ctx context.Context, customerID string) (*Subscription, error)
	// IsActive returns whether the customer has an active subscription.
	IsActive(ctx context.Context, customerID string) (bool, error)
}

// EntitlementChecker verifies whether a customer is entitled to a specific feature.
type EntitlementChecker interface {
	// CheckEntitlement returns nil if the customer is entitled to the given
	// feature, an error wrapping ErrNoActiveSubscription if the customer has
	// no active subscription, and one wrapping ErrEntitlementDenied if the
	// subscription is active but does not include the feature.
	CheckEntitlement(ctx context.Context, customerID string, feature string) error
}

// Provider bundles all marketplace operations for a single cloud provider.
type Provider interface {
	MeteringService
	SubscriptionManager
	EntitlementChecker
	// Name returns the cloud provider identifier.
	Name() CloudProvider
}

// SubmitError is returned by a MeteringService when part of a batch was not
// accepted. Failed lists exactly the records that were not; every other
// record of the batch was accepted, so a SubmitError with an empty Failed
// list means all were. For a total failure return a plain error instead.
type SubmitError struct {
	Failed []UsageRecord
	Err    error
}

func (e *SubmitError) Error() string {
	return fmt.Sprintf("marketplace: %d usage records not accepted: %v", len(e.Failed), e.Err)
}

// Unwrap returns the cause and ErrMeteringFailed, so both match with errors.Is.
func (e *SubmitError) Unwrap() []error { return []error{ErrMeteringFailed, e.Err} }

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: RetryFunc returns it at once.
// A nil err stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err, or any error it wraps, was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// retryAfterError carries the server's hint of when to try again.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e retryAfterError) Error() string { return e.err.Error() }
func (e retryAfterError) Unwrap() error { return e.err }

// WithRetryAfter attaches a retry-after hint (an HTTP Retry-After header, a
// throttling response) to err. RetryFunc waits at least that long before the
// next attempt. A nil err stays nil.
func WithRetryAfter(err error, after time.Duration) error {
	if err == nil {
		return nil
	}
	return retryAfterError{err: err, after: after}
}

// RetryAfter returns the retry-after hint carried by err, if any.
func RetryAfter(err error) (time.Duration, bool) {
	var r retryAfterError
	if errors.As(err, &r) {
		return r.after, true
	}
	return 0, false
}
