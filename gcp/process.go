package gcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"time"

	"google.golang.org/api/cloudcommerceprocurement/v1"
	"google.golang.org/api/googleapi"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/lifecycle"
)

// Attributes a stored Google subscription carries (Subscription.Attributes).
// The store indexes them: notifications and sign-ups find a procurement
// account's subscriptions by AttrAccount.
const (
	AttrAccount          = "account_id"       // procurement account id
	AttrUsageReportingID = "usageReportingId" // Service Control consumerId
	AttrState            = "state"            // the ENTITLEMENT_* state
	AttrPendingPlan      = "newPendingPlan"   // plan change waiting
)

// Event types of the Pub/Sub lifecycle messages about an entitlement.
var entitlementEvents = []string{
	"ENTITLEMENT_CREATION_REQUESTED", "ENTITLEMENT_OFFER_ACCEPTED", "ENTITLEMENT_ACTIVE",
	"ENTITLEMENT_PLAN_CHANGE_REQUESTED", "ENTITLEMENT_PLAN_CHANGED", "ENTITLEMENT_PLAN_CHANGE_CANCELLED",
	"ENTITLEMENT_PENDING_CANCELLATION", "ENTITLEMENT_CANCELLATION_REVERTED", "ENTITLEMENT_CANCELLED",
	"ENTITLEMENT_DELETED", "ENTITLEMENT_OFFER_ENDED",
}

// Message is a decoded Pub/Sub lifecycle message; it is the Payload (as
// JSON) of the marketplace.Notification that NotificationHandler and Run
// store.
type Message struct {
	EventID     string       `json:"eventId"`
	EventType   string       `json:"eventType"`
	ProviderID  string       `json:"providerId"`
	Entitlement *MessageItem `json:"entitlement,omitempty"`
	Account     *MessageItem `json:"account,omitempty"`
}

// MessageItem is the entitlement or account a message is about.
type MessageItem struct {
	ID         string `json:"id"`
	UpdateTime string `json:"updateTime"`
	NewPlan    string `json:"newPlan,omitempty"`
}

// DecodeMessage reads a message's data. It needs eventId and eventType,
// an entitlement id for ENTITLEMENT_* events and an account id for
// ACCOUNT_* events, and a parseable updateTime where one is given; its
// refusals wrap marketplace.ErrInvalidInput. An event type it does not
// know is decoded: Process acknowledges it as unrelated.
func DecodeMessage(data []byte) (*Message, error) {
	var m Message
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("gcp: %w: lifecycle message: %w", marketplace.ErrInvalidInput, err)
	}
	if m.EventID == "" || m.EventType == "" {
		return nil, fmt.Errorf("gcp: %w: lifecycle message needs eventId and eventType", marketplace.ErrInvalidInput)
	}
	if slices.Contains(entitlementEvents, m.EventType) && (m.Entitlement == nil || m.Entitlement.ID == "") {
		return nil, fmt.Errorf("gcp: %w: %s without entitlement.id", marketplace.ErrInvalidInput, m.EventType)
	}
	if (m.EventType == "ACCOUNT_ACTIVE" || m.EventType == "ACCOUNT_DELETED") && (m.Account == nil || m.Account.ID == "") {
		return nil, fmt.Errorf("gcp: %w: %s without account.id", marketplace.ErrInvalidInput, m.EventType)
	}
	for _, it := range []*MessageItem{m.Entitlement, m.Account} {
		if it != nil && it.UpdateTime != "" {
			if _, err := time.Parse(time.RFC3339Nano, it.UpdateTime); err != nil {
				return nil, fmt.Errorf("gcp: %w: updateTime: %w", marketplace.ErrInvalidInput, err)
			}
		}
	}
	return &m, nil
}

// item is the entitlement or account the message is about.
func (m *Message) item() *MessageItem {
	if m.Entitlement != nil {
		return m.Entitlement
	}
	return m.Account
}

// notification is m as the lifecycle engine stores it.
func (m *Message) notification() marketplace.Notification {
	payload, _ := json.Marshal(m) // strings only: cannot fail
	n := marketplace.Notification{Provider: marketplace.GCP, ID: m.EventID, Kind: m.EventType, Payload: payload}
	if it := m.item(); it != nil {
		n.Subject, n.Time = it.ID, parseTime(it.UpdateTime)
	}
	return n
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// Process applies one stored Google notification; it is the
// lifecycle.Handler of Google notifications, run by the engine's worker
// after the delivery was answered.
//
// For an ENTITLEMENT_* message older than the stored state it does
// nothing. Otherwise it re-reads the entitlement from the Procurement API
// (a failed read is retried with backoff, after Google's Retry-After if it
// sent one), answers what Google waits on (a requested entitlement or plan
// change: Config.Decide, then approve or reject; the decision is kept in
// n.Progress so that a retry does not ask again), and stores the state it
// read through the engine's Update. A new entitlement of an account the
// seller already linked takes that account's AccountID. An entitlement
// the API no longer has is stored as cancelled. The engine seals the
// buyer's usage once the entitlement is cancelled (the final flush).
//
// ACCOUNT_DELETED, once the Procurement API no longer has the account,
// deletes the account's stored subscriptions and entitlements (the buyer's
// personal data) and calls Config.AccountDeleted. Other events, and those
// of another provider id, change nothing (marketplace.ErrUnrelated).
func (p *Provider) Process(ctx context.Context, n *marketplace.Notification) error {
	var m Message
	if err := json.Unmarshal(n.Payload, &m); err != nil || m.EventID == "" {
		return marketplace.Permanent(fmt.Errorf("gcp: notification %s: %w: not a Google lifecycle message (%v)", n.ID, marketplace.ErrInvalidInput, err))
	}
	if m.ProviderID != "" && m.ProviderID != p.cfg.Procurement.provider {
		return fmt.Errorf("gcp: %w: provider %q", marketplace.ErrUnrelated, m.ProviderID)
	}
	log := p.deps.Logger.With("event", m.EventID, "type", m.EventType)
	var err error
	switch {
	case slices.Contains(entitlementEvents, m.EventType):
		err = p.entitlement(ctx, n, &m, log)
	case m.EventType == "ACCOUNT_DELETED":
		err = p.deleteAccount(ctx, m.Account.ID, log)
	default:
		return fmt.Errorf("gcp: %w: event type %s needs nothing", marketplace.ErrUnrelated, m.EventType)
	}
	if err != nil {
		return fmt.Errorf("gcp: apply %s %s: %w", m.EventType, m.EventID, retryHint(err, p.deps.Clock()))
	}
	return nil
}

// retryHint attaches Google's Retry-After to a throttled call's error.
func retryHint(err error, now time.Time) error {
	var ge *googleapi.Error
	if errors.As(err, &ge) && ge.Code == http.StatusTooManyRequests {
		if d := marketplace.ParseRetryAfter(ge.Header.Get("Retry-After"), now); d > 0 {
			return marketplace.WithRetryAfter(err, d)
		}
	}
	return err
}

// entitlement re-reads the entitlement, answers a pending approval and
// stores the state.
func (p *Provider) entitlement(ctx context.Context, n *marketplace.Notification, m *Message, log *slog.Logger) error {
	id := m.Entitlement.ID
	msgTime := parseTime(m.Entitlement.UpdateTime)
	stored, err := p.deps.Store.GetSubscription(ctx, marketplace.GCP, id)
	switch {
	case errors.Is(err, marketplace.ErrNotFound):
		stored = nil
	case err != nil:
		return err
	case !msgTime.IsZero() && msgTime.Before(stored.CloudUpdated):
		log.Info("stale Google notification ignored", "entitlement", id, "message_time", msgTime, "stored_time", stored.CloudUpdated)
		return nil
	}
	ent, err := p.cfg.Procurement.Entitlement(ctx, id)
	if errors.Is(err, marketplace.ErrNotFound) {
		return p.gone(ctx, id, msgTime, log)
	}
	if err != nil {
		return err
	}
	if err := p.answer(ctx, n, stored, ent, log); err != nil {
		return err
	}
	_, err = p.storeEntitlement(ctx, stored, ent)
	return err
}

// progress is what Process keeps in Notification.Progress: the seller's
// decision on one waiting state of an entitlement.
type progress struct {
	For      string   `json:"for"` // state, pending plan and update time decided on
	Decision Decision `json:"decision"`
}

// answer asks Config.Decide about a waiting entitlement or plan change and
// tells Google.
func (p *Provider) answer(ctx context.Context, n *marketplace.Notification, stored *marketplace.Subscription, ent *cloudcommerceprocurement.Entitlement, log *slog.Logger) error {
	if ent.State != StateActivationRequested && ent.State != StatePendingPlanChangeApproval {
		return nil
	}
	id := idOf(ent.Name)
	key := ent.State + "|" + ent.NewPendingPlan + "|" + ent.UpdateTime
	var pr progress
	if json.Unmarshal([]byte(n.Progress), &pr) != nil || pr.For != key {
		pr = progress{For: key, Decision: Decision{Approve: true}}
		if p.cfg.Decide != nil {
			d, err := p.cfg.Decide(ctx, stored, ent)
			if err != nil {
				return fmt.Errorf("seller's Decide: %w", err)
			}
			pr.Decision = d
		}
		b, _ := json.Marshal(pr)
		n.Progress = string(b)
	}
	d := pr.Decision
	if ent.State == StateActivationRequested {
		log.Info("Google entitlement requested", "entitlement", id, "plan", ent.Plan, "approve", d.Approve, "reason", d.Reason)
		if d.Approve {
			return p.cfg.Procurement.ApproveEntitlement(ctx, id)
		}
		return p.cfg.Procurement.RejectEntitlement(ctx, id, d.Reason)
	}
	log.Info("Google plan change requested", "entitlement", id, "plan", ent.Plan, "new_plan", ent.NewPendingPlan, "approve", d.Approve, "reason", d.Reason)
	if d.Approve {
		return p.cfg.Procurement.ApprovePlanChange(ctx, id, ent.NewPendingPlan)
	}
	return p.cfg.Procurement.RejectPlanChange(ctx, id, ent.NewPendingPlan, d.Reason)
}

func idOf(name string) string {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '/' {
			return name[i+1:]
		}
	}
	return name
}

// CustomerOf is the ledger customer of an entitlement: its
// usageReportingId, or "account:<id>" for a product without usage billing.
func CustomerOf(ent *cloudcommerceprocurement.Entitlement) string {
	if ent.UsageReportingId != "" {
		return ent.UsageReportingId
	}
	return "account:" + idOf(ent.Account)
}

// storeEntitlement stores the entitlement's state as a Subscription
// through the engine's Update (stale states are ignored there). stored is
// the stored copy as last read, nil if none: a new subscription of a
// linked account takes its AccountID.
func (p *Provider) storeEntitlement(ctx context.Context, stored *marketplace.Subscription, ent *cloudcommerceprocurement.Entitlement) (lifecycle.Result, error) {
	account := idOf(ent.Account)
	init := &marketplace.Subscription{}
	if stored == nil {
		linked, err := p.linkedAccount(ctx, account)
		if err != nil {
			return lifecycle.Result{}, err
		}
		init.AccountID = linked
	}
	product := ent.ProductExternalName
	if product == "" {
		product = ent.Product
	}
	attrs := map[string]string{AttrAccount: account, AttrUsageReportingID: ent.UsageReportingId, AttrState: ent.State}
	if ent.NewPendingPlan != "" {
		attrs[AttrPendingPlan] = ent.NewPendingPlan
	}
	var expires time.Time
	if ent.State == StatePendingCancellation {
		// Entitled until the term ends, even if the cancellation message is late.
		expires = parseTime(ent.SubscriptionEndTime)
	}
	return p.e.Update(ctx, lifecycle.Change{Provider: marketplace.GCP, ID: idOf(ent.Name), Init: init, CloudTime: parseTime(ent.UpdateTime),
		Apply: func(s *marketplace.Subscription) bool {
			want := *s
			want.CustomerID, want.ProductCode, want.Status, want.Plan = CustomerOf(ent), product, Status(ent.State), ent.Plan
			want.Entitlements, want.Attributes, want.ExpiresAt = []string{ent.Plan}, attrs, expires
			changed := s.Version == 0 || s.CustomerID != want.CustomerID || s.ProductCode != want.ProductCode ||
				s.Status != want.Status || s.Plan != want.Plan || !slices.Equal(s.Entitlements, want.Entitlements) ||
				!maps.Equal(s.Attributes, want.Attributes) || !s.ExpiresAt.Equal(want.ExpiresAt)
			*s = want
			return changed
		}})
}

// linkedAccount returns the seller account already linked to a procurement
// account (by sign-up), for a new entitlement of a buyer who signed up
// before; "" if none.
func (p *Provider) linkedAccount(ctx context.Context, procurementAccount string) (string, error) {
	subs, err := p.deps.Store.FindSubscriptionsByAttribute(ctx, marketplace.GCP, AttrAccount, procurementAccount)
	if err != nil {
		return "", fmt.Errorf("gcp: find the subscriptions of account %s: %w", procurementAccount, err)
	}
	for _, s := range subs {
		if s.AccountID != "" {
			return s.AccountID, nil
		}
	}
	return "", nil
}

// gone stores as cancelled an entitlement the Procurement API no longer has.
func (p *Provider) gone(ctx context.Context, id string, msgTime time.Time, log *slog.Logger) error {
	_, err := p.e.Update(ctx, lifecycle.Change{Provider: marketplace.GCP, ID: id, CloudTime: msgTime,
		Apply: func(s *marketplace.Subscription) bool {
			if s.Status == marketplace.StatusCancelled && s.Attributes[AttrState] == "DELETED" {
				return false
			}
			s.Status = marketplace.StatusCancelled
			if s.Attributes == nil {
				s.Attributes = map[string]string{}
			}
			s.Attributes[AttrState] = "DELETED"
			return true
		}})
	if errors.Is(err, marketplace.ErrNotFound) {
		return fmt.Errorf("%w: entitlement %s is neither stored nor at Google", marketplace.ErrUnrelated, id)
	}
	if err == nil {
		log.Info("Google entitlement no longer exists; stored as cancelled", "entitlement", id)
	}
	return err
}

// deleteAccount removes every stored subscription and entitlement of a
// deleted procurement account: the buyer's personal data. An account the
// Procurement API still has is not deleted (retried: Google may not show
// the deletion yet).
func (p *Provider) deleteAccount(ctx context.Context, accountID string, log *slog.Logger) error {
	_, err := p.cfg.Procurement.Account(ctx, accountID)
	switch {
	case err == nil:
		return fmt.Errorf("account %s still exists at Google", accountID)
	case !errors.Is(err, marketplace.ErrNotFound):
		return err
	}
	store := p.deps.Store
	subs, err := store.FindSubscriptionsByAttribute(ctx, marketplace.GCP, AttrAccount, accountID)
	if err != nil {
		return err
	}
	for _, s := range subs {
		ents, err := store.ListEntitlements(ctx, marketplace.GCP, s.CustomerID)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := store.DeleteEntitlement(ctx, marketplace.GCP, s.CustomerID, e.Feature); err != nil {
				return err
			}
		}
		if err := store.DeleteSubscription(ctx, marketplace.GCP, s.ID); err != nil && !errors.Is(err, marketplace.ErrNotFound) {
			return err
		}
		p.e.Invalidate(marketplace.GCP, s.CustomerID)
	}
	if p.cfg.AccountDeleted != nil {
		if err := p.cfg.AccountDeleted(ctx, accountID); err != nil {
			return fmt.Errorf("seller's AccountDeleted: %w", err)
		}
	}
	log.Info("Google account deleted with its data", "account", accountID, "subscriptions", len(subs))
	return nil
}
