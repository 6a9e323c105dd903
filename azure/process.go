package azure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/lifecycle"
)

// progressAnswered is recorded in a notification's Progress once its
// operation was PATCHed, so that a retry does not ask Decide again.
const progressAnswered = "answered"

// Process applies one stored webhook call; it is the lifecycle.Handler of
// Azure notifications, run by the engine's worker after the call was
// answered. The payload is only a hint:
//
//  1. It reads the operation from Azure (Get Operation). One Azure does not
//     know, or of another subscription, is parked.
//  2. An operation Azure waits on (ChangePlan, ChangeQuantity, Reinstate
//     while InProgress) is answered: Decide accepts or rejects it and the
//     operation is PATCHed Success or Failure, once (n.Progress records it).
//  3. It follows the operation until it is Succeeded or Failed, since Azure
//     completes it asynchronously, for up to Config.OperationWait; then it
//     returns a retryable error with that wait as its Retry-After hint, and
//     the worker comes back later.
//  4. Only a Succeeded operation is applied: the subscription is read again
//     from Azure (Get Subscription) and its state stored through the
//     engine's Update, with the operation's time as CloudTime, so that an
//     operation older than the stored state changes nothing, unless Azure's
//     state differs from the stored one (the operation completed after a
//     later one was applied): Azure's current state is then stored.
//
// Suspend, Renew and Unsubscribe arrive Succeeded (Azure has applied them)
// and skip step 2; the engine seals the buyer's usage once Update stores
// the subscription as cancelled.
func (p *Provider) Process(ctx context.Context, n *marketplace.Notification) error {
	var wp WebhookPayload
	if err := json.Unmarshal(n.Payload, &wp); err != nil || !validID(wp.ID) || !validID(wp.SubscriptionID) {
		return marketplace.Permanent(fmt.Errorf("azure: notification %s: %w: not a webhook payload (%v)", n.ID, marketplace.ErrInvalidInput, err))
	}
	ctx = WithCorrelationID(ctx, wp.ActivityID)
	log := p.deps.Logger.With("operation", wp.ID, "subscription", wp.SubscriptionID)
	op, err := p.cfg.Client.GetOperation(ctx, wp.SubscriptionID, wp.ID)
	switch {
	case errors.Is(err, marketplace.ErrNotFound):
		return marketplace.Permanent(fmt.Errorf("azure: operation %s of subscription %s is unknown to Azure: %w", wp.ID, wp.SubscriptionID, err))
	case err != nil:
		return retryable(fmt.Errorf("azure: read operation %s: %w", wp.ID, err))
	case op.SubscriptionID != "" && op.SubscriptionID != wp.SubscriptionID:
		return marketplace.Permanent(fmt.Errorf("azure: operation %s belongs to subscription %s, not %s", wp.ID, op.SubscriptionID, wp.SubscriptionID))
	}
	op.ID, op.SubscriptionID = wp.ID, wp.SubscriptionID
	switch {
	case !awaitsAnswer(op.Action) || n.Progress == progressAnswered:
	case op.Status == OpInProgress:
		if err := p.answer(ctx, op); err != nil {
			return err
		}
		n.Progress = progressAnswered
	case op.Done():
		log.Warn("azure decided the operation before it was answered (it accepts a change unanswered for about ten seconds)",
			"action", op.Action, "status", op.Status)
	}
	if !op.Done() {
		if op, err = p.follow(ctx, op); err != nil {
			return err
		}
		op.ID, op.SubscriptionID = wp.ID, wp.SubscriptionID
	}
	if op.Status != OpSucceeded {
		log.Info("azure operation ended without a change", "action", op.Action, "status", op.Status)
		return nil
	}
	return p.apply(ctx, op)
}

// awaitsAnswer reports whether Azure waits on the publisher's PATCH for an
// operation of this action.
func awaitsAnswer(action string) bool {
	return action == ActionChangePlan || action == ActionChangeQuantity || action == ActionReinstate
}

// answer asks Decide and PATCHes the operation.
func (p *Provider) answer(ctx context.Context, op *Operation) error {
	accept := true
	if p.cfg.Decide != nil {
		sub, err := p.current(ctx, op.SubscriptionID)
		if err != nil {
			return err
		}
		if accept, err = p.cfg.Decide(ctx, sub, op); err != nil {
			return fmt.Errorf("azure: decide operation %s: %w", op.ID, err)
		}
	}
	err := p.cfg.Client.UpdateOperation(ctx, op.SubscriptionID, op.ID, accept)
	var ae *APIError
	if errors.As(err, &ae) && ae.StatusCode == http.StatusConflict {
		// Decided already: answered by an earlier attempt whose record was
		// lost, or completed by Azure (it accepts an unanswered change after
		// about ten seconds). Following the operation tells which.
		p.deps.Logger.Info("azure operation was decided already", "operation", op.ID, "err", err)
		return nil
	}
	if err != nil {
		return retryable(fmt.Errorf("azure: answer operation %s: %w", op.ID, err))
	}
	p.deps.Logger.Info("azure operation answered", "operation", op.ID, "action", op.Action, "accepted", accept)
	return nil
}

// current returns the stored subscription, or Azure's copy when none is
// stored yet.
func (p *Provider) current(ctx context.Context, id string) (*marketplace.Subscription, error) {
	s, err := p.deps.Store.GetSubscription(ctx, marketplace.Azure, id)
	if !errors.Is(err, marketplace.ErrNotFound) {
		return s, err
	}
	az, err := p.cfg.Client.GetSubscription(ctx, id)
	if err != nil {
		return nil, retryable(fmt.Errorf("azure: read subscription %s: %w", id, err))
	}
	out := fromAzure(az)
	return &out, nil
}

// follow polls the operation until it is done, for up to OperationWait.
func (p *Provider) follow(ctx context.Context, op *Operation) (*Operation, error) {
	wctx, cancel := context.WithTimeout(ctx, p.cfg.OperationWait)
	defer cancel()
	path := subPath(op.SubscriptionID) + "/operations/" + url.PathEscape(op.ID)
	done, err := p.cfg.Client.WaitOperation(wctx, path)
	switch {
	case err == nil:
		return done, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case wctx.Err() != nil:
		return nil, marketplace.WithRetryAfter(fmt.Errorf("azure: operation %s (%s) is not complete after %s",
			op.ID, op.Action, p.cfg.OperationWait), p.cfg.OperationWait)
	}
	return nil, retryable(fmt.Errorf("azure: follow operation %s: %w", op.ID, err))
}

// apply reads the subscription from Azure and stores its state.
func (p *Provider) apply(ctx context.Context, op *Operation) error {
	id := op.SubscriptionID
	change := lifecycle.Change{Provider: marketplace.Azure, ID: id, CloudTime: op.TimeStamp.Time}
	az, err := p.cfg.Client.GetSubscription(ctx, id)
	switch {
	case errors.Is(err, marketplace.ErrNotFound) && op.Action == ActionUnsubscribe:
		// Gone at Azure: it is unsubscribed, whatever else we hold.
		change.Init = &marketplace.Subscription{CustomerID: id, Status: marketplace.StatusCancelled}
		change.Apply = func(s *marketplace.Subscription) bool {
			changed := s.Status != marketplace.StatusCancelled || s.Version == 0
			s.Status = marketplace.StatusCancelled
			return changed
		}
	case errors.Is(err, marketplace.ErrNotFound):
		return marketplace.Permanent(fmt.Errorf("azure: subscription %s of operation %s is unknown to Azure: %w", id, op.ID, err))
	case err != nil:
		return retryable(fmt.Errorf("azure: read subscription %s: %w", id, err))
	default:
		fresh := fromAzure(az)
		change.Init = &fresh
		change.Apply = func(s *marketplace.Subscription) bool { return refresh(s, &fresh) || s.Version == 0 }
	}
	res, err := p.e.Update(ctx, change)
	if err == nil && res.Stale && res.Subscription != nil && differs(res.Subscription, change.Apply) {
		// The operation is older than the stored state, yet what Azure
		// holds now differs from it: this operation completed after a
		// later one was applied (a plan change Azure finished after a
		// Suspend). Azure's state, read just now, is newer than both:
		// store it, keeping the stored time.
		change.CloudTime = res.Subscription.CloudUpdated
		res, err = p.e.Update(ctx, change)
	}
	if err != nil {
		return err
	}
	p.deps.Logger.Info("azure operation applied", "operation", op.ID, "action", op.Action, "subscription", id,
		"changed", res.Changed, "stale", res.Stale, "sealed", res.Sealed)
	return nil
}

// differs reports whether apply would change s.
func differs(s *marketplace.Subscription, apply func(*marketplace.Subscription) bool) bool {
	c := *s
	c.Attributes = maps.Clone(s.Attributes)
	c.Entitlements = slices.Clone(s.Entitlements)
	return apply(&c)
}

// retryable marks an API error for the engine: Azure's Retry-After as the
// hint, and a 400 (the call can never succeed) as permanent.
func retryable(err error) error {
	var ae *APIError
	if !errors.As(err, &ae) {
		return err
	}
	switch {
	case ae.StatusCode == http.StatusBadRequest:
		return marketplace.Permanent(err)
	case ae.RetryAfter > 0:
		return marketplace.WithRetryAfter(err, ae.RetryAfter)
	}
	return err
}
