package azure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// ReporterConfig sets up a Reporter.
type ReporterConfig struct {
	// Client is the marketplace API client (required).
	Client *Client
	// Subscriptions holds each SaaS subscription's plan (required): the
	// plan is frozen into a bucket before its first send.
	Subscriptions marketplace.SubscriptionStore
	// Limits overrides the fields of DefaultLimits that it sets.
	Limits ledger.Limits
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Clock returns the current time; default time.Now.
	Clock func() time.Time
}

// DefaultLimits are Azure's rules for batchUsageEvent: 25 events per call,
// usage accepted for 24 hours after its hour. Azure publishes no call
// rate; the ledger's Reporter follows its 429s.
var DefaultLimits = ledger.Limits{MaxItems: 25, Deadline: 24 * time.Hour}

// Reporter is the ledger's Target for Azure: it sends sealed hours with
// batchUsageEvent. Each event's resourceId is the SaaS subscription id (the
// ledger's customer), its planId the plan of that stored subscription when
// the bucket was first sent (frozen then, ledger.Freezer: a plan change
// never alters a resend), and its effectiveStartTime the hour's start in
// UTC. Azure keeps one event per resource, dimension and hour, so a resend
// of a sealed hour comes back Duplicate carrying the accepted event; with
// the same quantity it counts as reported, with another as a conflict.
type Reporter struct {
	client *Client
	subs   marketplace.SubscriptionStore
	cfg    ReporterConfig
}

var (
	_ ledger.Target  = (*Reporter)(nil)
	_ ledger.Freezer = (*Reporter)(nil)
)

// NewReporter returns the Azure target.
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("azure: ReporterConfig.Client is required")
	case cfg.Subscriptions == nil:
		return nil, errors.New("azure: ReporterConfig.Subscriptions is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	cfg.Limits = ledger.OverrideLimits(DefaultLimits, cfg.Limits)
	return &Reporter{client: cfg.Client, subs: cfg.Subscriptions, cfg: cfg}, nil
}

// Provider returns marketplace.Azure.
func (*Reporter) Provider() marketplace.CloudProvider { return marketplace.Azure }

// Limits implements ledger.Target.
func (r *Reporter) Limits() ledger.Limits { return r.cfg.Limits }

// attrPlanID is the frozen attribute of a bucket: the plan it is billed to.
const attrPlanID = "planId"

// Freeze implements ledger.Freezer: the subscription's plan, read from the
// store.
func (r *Reporter) Freeze(ctx context.Context, rep ledger.Report) (map[string]string, error) {
	sub, err := r.subs.GetSubscription(ctx, marketplace.Azure, rep.Customer)
	switch {
	case errors.Is(err, marketplace.ErrNotFound):
		return nil, marketplace.Permanent(fmt.Errorf("no stored Azure subscription %s", rep.Customer))
	case err != nil:
		return nil, fmt.Errorf("read subscription: %w", err)
	case sub.Plan == "":
		return nil, marketplace.Permanent(fmt.Errorf("stored subscription %s has no plan", rep.Customer))
	}
	return map[string]string{attrPlanID: sub.Plan}, nil
}

// Send reports one batch; see Reporter.
func (r *Reporter) Send(ctx context.Context, reports []ledger.Report) ([]ledger.Result, error) {
	results := make([]ledger.Result, len(reports))
	var events []UsageEvent
	var index []int // events[i] is reports[index[i]]
	now := r.cfg.Clock()
	for i, rep := range reports {
		if res, early := ledger.Early(rep, now); early {
			results[i] = res
			continue
		}
		if rep.Quantity <= 0 {
			results[i] = ledger.Result{Outcome: ledger.OutcomeReported, Reason: "nothing to bill"}
			continue
		}
		plan := rep.Attributes[attrPlanID]
		if plan == "" {
			// Not frozen (a direct call of Send): freeze it now.
			attrs, err := r.Freeze(ctx, rep)
			if err != nil {
				res := ledger.ResultOf(err)
				res.MaybeApplied = false
				results[i] = res
				continue
			}
			plan = attrs[attrPlanID]
		}
		events = append(events, UsageEvent{ResourceID: rep.Customer, Quantity: float64(rep.Quantity),
			Dimension: rep.Dimension, EffectiveStartTime: Time{rep.Hour.UTC().Truncate(time.Hour)}, PlanID: plan})
		index = append(index, i)
	}
	if len(events) == 0 {
		return results, nil
	}
	res, err := r.client.PostBatchUsageEvent(ctx, events)
	if err != nil {
		return nil, r.classify(err)
	}
	if len(res.Result) != len(events) {
		return nil, fmt.Errorf("azure: batchUsageEvent answered %d results for %d events", len(res.Result), len(events))
	}
	// Match each result to its event by what it echoes (resource, dimension,
	// hour: unique in a batch, as Azure takes one event per hour); the
	// documentation does not promise the order. A result that echoes
	// nothing falls back to its position.
	byKey := make(map[eventKey]int, len(events))
	for j, ev := range events {
		byKey[keyOfEvent(ev.ResourceID, ev.Dimension, ev.EffectiveStartTime.Time)] = j
	}
	answered := make([]bool, len(events))
	for pos, item := range res.Result {
		j, ok := byKey[keyOfEvent(item.ResourceID, item.Dimension, item.EffectiveStartTime.Time)]
		if !ok || answered[j] {
			r.cfg.Logger.Warn("azure: a batchUsageEvent result does not echo its event; matched by position",
				"position", pos, "resourceId", item.ResourceID, "dimension", item.Dimension)
			j = pos
		}
		if answered[j] {
			return nil, fmt.Errorf("azure: batchUsageEvent answered event %d twice", j)
		}
		answered[j] = true
		results[index[j]] = resultOf(item, events[j])
	}
	return results, nil
}

// eventKey is what Azure dedupes usage by: resource, dimension and hour.
type eventKey struct {
	resource, dimension string
	hour                int64
}

func keyOfEvent(resource, dimension string, t time.Time) eventKey {
	return eventKey{resource, dimension, t.UTC().Truncate(time.Hour).Unix()}
}

// classify maps a failed call to the ledger's whole-call errors.
func (r *Reporter) classify(err error) error {
	var ae *APIError
	if !errors.As(err, &ae) {
		return err // transport error or lost response: maybe applied
	}
	switch {
	case ae.StatusCode == http.StatusTooManyRequests:
		return marketplace.WithRetryAfter(fmt.Errorf("%w: %w", ledger.ErrThrottled, err), ae.RetryAfter)
	case ae.StatusCode == http.StatusUnauthorized || ae.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: %w", ledger.ErrNotApplied, err) // fix the credentials; nothing was applied
	case ae.StatusCode >= 500:
		return marketplace.WithRetryAfter(err, ae.RetryAfter)
	case ae.StatusCode == http.StatusBadRequest:
		return marketplace.Permanent(err)
	}
	return err
}

// resultOf maps one per-item status.
func resultOf(item UsageEventResult, sent UsageEvent) ledger.Result {
	reason := item.Status
	if item.Error != nil && item.Error.Message != "" {
		reason += ": " + item.Error.Message
	}
	switch item.Status {
	case UsageAccepted:
		return ledger.Result{Outcome: ledger.OutcomeReported, RecordID: item.UsageEventID}
	case UsageDuplicate:
		acc := item.Error.Accepted()
		switch {
		case acc == nil:
			return ledger.Result{Outcome: ledger.OutcomeConflict, Reason: "Duplicate without the accepted event; reconcile with GET usageEvents"}
		case acc.Quantity == sent.Quantity:
			return ledger.Result{Outcome: ledger.OutcomeReported, RecordID: acc.UsageEventID}
		default:
			return ledger.Result{Outcome: ledger.OutcomeConflict, RecordID: acc.UsageEventID,
				Reason: fmt.Sprintf("Azure holds quantity %v for this hour, we sent %v", acc.Quantity, sent.Quantity)}
		}
	case UsageExpired:
		return ledger.Result{Outcome: ledger.OutcomeExpired, Reason: reason}
	case UsageResourceNotFound, UsageResourceNotActive, UsageResourceNotAuthorized,
		UsageInvalidDimension, UsageInvalidQuantity, UsageBadArgument:
		return ledger.Result{Outcome: ledger.OutcomeRejected, Reason: reason}
	case UsageError:
		return ledger.Result{Outcome: ledger.OutcomeRetry, Reason: reason}
	}
	return ledger.Result{Outcome: ledger.OutcomeRetry, MaybeApplied: true, Reason: "unknown status " + reason}
}
