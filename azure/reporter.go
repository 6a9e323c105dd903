package azure

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// Reporter is the ledger's Target for Azure: it sends sealed hours with
// batchUsageEvent, at most 25 events per call. Each event's resourceId is
// the SaaS subscription id (the ledger's customer), its planId the plan of
// that stored subscription, and its effectiveStartTime the hour's start in
// UTC. Azure keeps one event per resource, dimension and hour, so a resend
// of a sealed hour comes back Duplicate carrying the accepted event; with
// the same quantity it counts as reported, with another as a conflict.
type Reporter struct {
	client *Client
	subs   marketplace.SubscriptionStore
	rate   float64
}

// NewReporter returns the Azure target. subs provides each subscription's
// plan; rate caps calls per second (0: no cap).
func NewReporter(client *Client, subs marketplace.SubscriptionStore, rate float64) *Reporter {
	return &Reporter{client: client, subs: subs, rate: rate}
}

// Provider returns marketplace.Azure.
func (*Reporter) Provider() marketplace.CloudProvider { return marketplace.Azure }

// Limits: 25 events per batch, usage accepted for 24 hours.
func (r *Reporter) Limits() ledger.Limits {
	return ledger.Limits{MaxItems: 25, Rate: r.rate, Deadline: 24 * time.Hour}
}

// Send reports one batch; see Reporter.
func (r *Reporter) Send(ctx context.Context, reports []ledger.Report) ([]ledger.Result, error) {
	results := make([]ledger.Result, len(reports))
	var events []UsageEvent
	var index []int // events[i] is reports[index[i]]
	for i, rep := range reports {
		sub, err := r.subs.GetSubscription(ctx, marketplace.Azure, rep.Customer)
		switch {
		case errors.Is(err, marketplace.ErrNotFound):
			results[i] = ledger.Result{Outcome: ledger.OutcomeRejected, Reason: "no stored Azure subscription " + rep.Customer}
			continue
		case err != nil:
			results[i] = ledger.Result{Outcome: ledger.OutcomeRetry, Reason: "read subscription: " + err.Error()}
			continue
		case sub.Plan == "":
			results[i] = ledger.Result{Outcome: ledger.OutcomeRejected, Reason: "stored subscription " + rep.Customer + " has no plan"}
			continue
		case rep.Quantity <= 0:
			results[i] = ledger.Result{Outcome: ledger.OutcomeReported, Reason: "nothing to bill"}
			continue
		}
		events = append(events, UsageEvent{ResourceID: rep.Customer, Quantity: float64(rep.Quantity),
			Dimension: rep.Dimension, EffectiveStartTime: Time{rep.Hour.UTC().Truncate(time.Hour)}, PlanID: sub.Plan})
		index = append(index, i)
	}
	if len(events) == 0 {
		return results, nil
	}
	res, err := r.client.PostBatchUsageEvent(ctx, events)
	if err != nil {
		return nil, classify(err)
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
func classify(err error) error {
	var ae *APIError
	if !errors.As(err, &ae) {
		return err // transport error or lost response: maybe applied
	}
	switch {
	case ae.StatusCode == http.StatusTooManyRequests:
		return marketplace.WithRetryAfter(fmt.Errorf("%w: %w", ledger.ErrNotApplied, err), ae.RetryAfter)
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
