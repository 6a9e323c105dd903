package gcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/api/cloudcommerceprocurement/v1"

	"github.com/saasmarket/marketplace"
)

// Attributes a stored Google subscription carries (Subscription.Attributes).
const (
	AttrAccount          = "account"          // procurement account id
	AttrUsageReportingID = "usageReportingId" // Service Control consumerId
	AttrState            = "state"            // the ENTITLEMENT_* state
	AttrPendingPlan      = "newPendingPlan"   // plan change waiting
)

// Event types of the Pub/Sub lifecycle messages the Lifecycle acts on.
var entitlementEvents = []string{
	"ENTITLEMENT_CREATION_REQUESTED", "ENTITLEMENT_OFFER_ACCEPTED", "ENTITLEMENT_ACTIVE",
	"ENTITLEMENT_PLAN_CHANGE_REQUESTED", "ENTITLEMENT_PLAN_CHANGED", "ENTITLEMENT_PLAN_CHANGE_CANCELLED",
	"ENTITLEMENT_PENDING_CANCELLATION", "ENTITLEMENT_CANCELLATION_REVERTED", "ENTITLEMENT_CANCELLED",
	"ENTITLEMENT_DELETED", "ENTITLEMENT_OFFER_ENDED",
}

// ErrBadMessage is wrapped by DecodeMessage's refusals.
var ErrBadMessage = errors.New("gcp: malformed lifecycle message")

// Message is a decoded Pub/Sub lifecycle message.
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
// ACCOUNT_* events, and a parseable updateTime where one is given.
func DecodeMessage(data []byte) (*Message, error) {
	var m Message
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	if m.EventID == "" || m.EventType == "" {
		return nil, fmt.Errorf("%w: eventId and eventType are required", ErrBadMessage)
	}
	if slices.Contains(entitlementEvents, m.EventType) && (m.Entitlement == nil || m.Entitlement.ID == "") {
		return nil, fmt.Errorf("%w: %s without entitlement.id", ErrBadMessage, m.EventType)
	}
	if (m.EventType == "ACCOUNT_ACTIVE" || m.EventType == "ACCOUNT_DELETED") && (m.Account == nil || m.Account.ID == "") {
		return nil, fmt.Errorf("%w: %s without account.id", ErrBadMessage, m.EventType)
	}
	for _, it := range []*MessageItem{m.Entitlement, m.Account} {
		if it != nil && it.UpdateTime != "" {
			if _, err := time.Parse(time.RFC3339Nano, it.UpdateTime); err != nil {
				return nil, fmt.Errorf("%w: updateTime: %w", ErrBadMessage, err)
			}
		}
	}
	return &m, nil
}

// Decision is a seller policy's answer.
type Decision struct {
	Approve bool
	Reason  string // shown to Google on a rejection
}

// Policy holds the seller's hooks for the approvals Google asks for. A nil
// hook approves. An error leaves the message unacknowledged, to be retried.
type Policy struct {
	// Entitlement decides a new entitlement (ENTITLEMENT_ACTIVATION_REQUESTED).
	Entitlement func(ctx context.Context, e *cloudcommerceprocurement.Entitlement) (Decision, error)
	// PlanChange decides a plan change (e.NewPendingPlan) waiting for approval.
	PlanChange func(ctx context.Context, e *cloudcommerceprocurement.Entitlement) (Decision, error)
	// AccountDeleted, when set, deletes the seller's own data of a deleted
	// procurement account, after the stored subscriptions are gone.
	AccountDeleted func(ctx context.Context, accountID string) error
}

// Sealer is the ledger's final flush (ledger.Ledger implements it).
type Sealer interface {
	SealCustomer(ctx context.Context, p marketplace.CloudProvider, customer string) (int, error)
}

// LifecycleConfig sets up a Lifecycle.
type LifecycleConfig struct {
	Procurement   *Procurement
	Subscriptions marketplace.SubscriptionStore
	Entitlements  marketplace.EntitlementStore // optional: deleted with the account
	Notifications marketplace.NotificationLog
	// Ledger seals a buyer's usage when the entitlement is cancelled.
	Ledger Sealer
	Policy Policy
	// Invalidate is called with the customer after every stored change
	// (entitlement.Cache.Invalidate for marketplace.GCP).
	Invalidate func(customer string)
	// DedupeWindow is how long event ids are remembered; default 7 days.
	DedupeWindow time.Duration
	Clock        func() time.Time
	Logger       *slog.Logger
}

// Lifecycle applies Google's lifecycle messages: each once (by eventId,
// durably), never older over newer (updateTime), always from the state the
// Procurement API holds now, and answering the approvals Google waits for.
//
// Messages about one entitlement or account are handled one at a time in a
// process (striped locks), so concurrent duplicate deliveries do not race
// to answer the same approval; across processes a lost race fails the
// approval call, and the redelivery finds the work done.
type Lifecycle struct {
	cfg   LifecycleConfig
	seed  maphash.Seed
	locks [64]sync.Mutex
}

// NewLifecycle returns a Lifecycle; Procurement, Subscriptions and
// Notifications are required.
func NewLifecycle(cfg LifecycleConfig) (*Lifecycle, error) {
	if cfg.Procurement == nil || cfg.Subscriptions == nil || cfg.Notifications == nil {
		return nil, errors.New("gcp: LifecycleConfig needs Procurement, Subscriptions and Notifications")
	}
	if cfg.DedupeWindow <= 0 {
		cfg.DedupeWindow = 7 * 24 * time.Hour
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Lifecycle{cfg: cfg, seed: maphash.MakeSeed()}, nil
}

// lock serializes the messages of one entitlement or account.
func (l *Lifecycle) lock(key string) func() {
	mu := &l.locks[maphash.String(l.seed, key)%uint64(len(l.locks))]
	mu.Lock()
	return mu.Unlock
}

// Handle applies one message's data. It returns nil when the message is
// done with (applied, a duplicate, stale, unknown or malformed: the last
// two are logged) and may be acknowledged; an error means it was not
// applied and must be delivered again.
func (l *Lifecycle) Handle(ctx context.Context, data []byte) error {
	m, err := DecodeMessage(data)
	if err != nil {
		l.cfg.Logger.Error("gcp lifecycle: dropping malformed message", "err", err)
		return nil
	}
	log := l.cfg.Logger.With("event", m.EventID, "type", m.EventType)
	key := "account/"
	if m.Entitlement != nil {
		key = "entitlement/" + m.Entitlement.ID
	} else if m.Account != nil {
		key += m.Account.ID
	}
	defer l.lock(key)()
	seen, err := l.cfg.Notifications.Processed(ctx, marketplace.GCP, m.EventID)
	if err != nil {
		return fmt.Errorf("gcp: lifecycle %s: %w", m.EventID, err)
	}
	if seen {
		log.Debug("gcp lifecycle: duplicate delivery")
		return nil
	}
	switch {
	case slices.Contains(entitlementEvents, m.EventType):
		err = l.entitlement(ctx, m, log)
	case m.EventType == "ACCOUNT_DELETED":
		err = l.deleteAccount(ctx, m.Account.ID, log)
	case m.EventType == "ACCOUNT_ACTIVE":
		log.Info("gcp lifecycle: account active", "account", m.Account.ID)
	default:
		log.Warn("gcp lifecycle: unknown event type; acknowledged")
		return nil
	}
	if err != nil {
		return fmt.Errorf("gcp: lifecycle %s %s: %w", m.EventType, m.EventID, err)
	}
	if _, err := l.cfg.Notifications.MarkProcessed(ctx, marketplace.GCP, m.EventID, l.cfg.Clock().Add(l.cfg.DedupeWindow)); err != nil {
		return fmt.Errorf("gcp: lifecycle %s: mark processed: %w", m.EventID, err)
	}
	return nil
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// entitlement re-reads the entitlement, answers a pending approval and
// stores the state, retrying a concurrent write.
func (l *Lifecycle) entitlement(ctx context.Context, m *Message, log *slog.Logger) error {
	id := m.Entitlement.ID
	msgTime := parseTime(m.Entitlement.UpdateTime)
	for attempt := 0; ; attempt++ {
		stored, err := l.cfg.Subscriptions.GetSubscription(ctx, marketplace.GCP, id)
		if err != nil && !errors.Is(err, marketplace.ErrNotFound) {
			return err
		}
		if stored != nil && !msgTime.IsZero() && msgTime.Before(stored.CloudUpdated) {
			log.Info("gcp lifecycle: stale message ignored", "entitlement", id, "message_time", msgTime, "stored_time", stored.CloudUpdated)
			return nil
		}
		ent, err := l.cfg.Procurement.Entitlement(ctx, id)
		if errors.Is(err, marketplace.ErrNotFound) {
			return l.gone(ctx, stored, msgTime, log)
		}
		if err != nil {
			return err
		}
		fresh := parseTime(ent.UpdateTime)
		if stored != nil && fresh.Before(stored.CloudUpdated) {
			return nil // the store already holds a newer state
		}
		if err := l.answer(ctx, ent, log); err != nil {
			return err
		}
		err = l.store(ctx, stored, ent, fresh)
		if errors.Is(err, marketplace.ErrVersionConflict) && attempt < 5 {
			continue
		}
		return err
	}
}

// answer calls the seller's policy for a pending approval and tells Google.
func (l *Lifecycle) answer(ctx context.Context, ent *cloudcommerceprocurement.Entitlement, log *slog.Logger) error {
	id := idOf(ent.Name)
	switch ent.State {
	case StateActivationRequested:
		d, err := decide(ctx, l.cfg.Policy.Entitlement, ent)
		if err != nil {
			return err
		}
		log.Info("gcp lifecycle: entitlement requested", "entitlement", id, "approve", d.Approve, "reason", d.Reason)
		if d.Approve {
			return l.cfg.Procurement.ApproveEntitlement(ctx, id)
		}
		return l.cfg.Procurement.RejectEntitlement(ctx, id, d.Reason)
	case StatePendingPlanChangeApproval:
		d, err := decide(ctx, l.cfg.Policy.PlanChange, ent)
		if err != nil {
			return err
		}
		log.Info("gcp lifecycle: plan change requested", "entitlement", id, "plan", ent.Plan, "new_plan", ent.NewPendingPlan, "approve", d.Approve)
		if d.Approve {
			return l.cfg.Procurement.ApprovePlanChange(ctx, id, ent.NewPendingPlan)
		}
		return l.cfg.Procurement.RejectPlanChange(ctx, id, ent.NewPendingPlan, d.Reason)
	}
	return nil
}

func decide(ctx context.Context, hook func(context.Context, *cloudcommerceprocurement.Entitlement) (Decision, error), ent *cloudcommerceprocurement.Entitlement) (Decision, error) {
	if hook == nil {
		return Decision{Approve: true}, nil
	}
	d, err := hook(ctx, ent)
	if err != nil {
		return Decision{}, fmt.Errorf("seller policy: %w", err)
	}
	return d, nil
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

// store writes the entitlement's state as a Subscription, and on
// cancellation seals the buyer's usage for the final report.
func (l *Lifecycle) store(ctx context.Context, stored *marketplace.Subscription, ent *cloudcommerceprocurement.Entitlement, fresh time.Time) error {
	s := marketplace.Subscription{}
	if stored != nil {
		s = *stored
	} else {
		s.AccountID = l.sellerAccount(ctx, idOf(ent.Account))
	}
	s.ID, s.Provider = idOf(ent.Name), marketplace.GCP
	s.CustomerID = CustomerOf(ent)
	s.ProductCode = ent.ProductExternalName
	if s.ProductCode == "" {
		s.ProductCode = ent.Product
	}
	s.Status = Status(ent.State)
	s.Plan = ent.Plan
	s.Entitlements = []string{ent.Plan}
	s.Attributes = map[string]string{AttrAccount: idOf(ent.Account), AttrUsageReportingID: ent.UsageReportingId, AttrState: ent.State}
	if ent.NewPendingPlan != "" {
		s.Attributes[AttrPendingPlan] = ent.NewPendingPlan
	}
	s.ExpiresAt = time.Time{}
	if ent.State == StatePendingCancellation {
		// Entitled until the term ends, even if the cancellation message is late.
		s.ExpiresAt = parseTime(ent.SubscriptionEndTime)
	}
	s.CloudUpdated = fresh
	if _, err := l.cfg.Subscriptions.PutSubscription(ctx, s); err != nil {
		return err
	}
	return l.after(ctx, s)
}

// gone handles an entitlement the Procurement API no longer has.
func (l *Lifecycle) gone(ctx context.Context, stored *marketplace.Subscription, msgTime time.Time, log *slog.Logger) error {
	if stored == nil {
		return nil
	}
	log.Info("gcp lifecycle: entitlement no longer exists", "entitlement", stored.ID)
	s := *stored
	s.Status = marketplace.StatusCancelled
	s.Attributes = maps(s.Attributes)
	s.Attributes[AttrState] = "DELETED"
	if msgTime.After(s.CloudUpdated) {
		s.CloudUpdated = msgTime
	}
	if _, err := l.cfg.Subscriptions.PutSubscription(ctx, s); err != nil {
		return err
	}
	return l.after(ctx, s)
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// after invalidates cached checks and, once cancelled, seals the usage.
func (l *Lifecycle) after(ctx context.Context, s marketplace.Subscription) error {
	if l.cfg.Invalidate != nil {
		l.cfg.Invalidate(s.CustomerID)
	}
	if s.Status == marketplace.StatusCancelled && l.cfg.Ledger != nil {
		if _, err := l.cfg.Ledger.SealCustomer(ctx, marketplace.GCP, s.CustomerID); err != nil {
			return fmt.Errorf("final usage flush: %w", err)
		}
	}
	return nil
}

// sellerAccount finds the seller account already linked to a procurement
// account, for a new entitlement of a buyer who signed up before.
func (l *Lifecycle) sellerAccount(ctx context.Context, procurementAccount string) string {
	subs, err := l.cfg.Subscriptions.ListSubscriptions(ctx, marketplace.SubscriptionFilter{Provider: marketplace.GCP})
	if err != nil {
		return ""
	}
	for _, s := range subs {
		if s.Attributes[AttrAccount] == procurementAccount && s.AccountID != "" {
			return s.AccountID
		}
	}
	return ""
}

// deleteAccount removes every stored subscription and entitlement of a
// deleted procurement account: the buyer's personal data.
func (l *Lifecycle) deleteAccount(ctx context.Context, accountID string, log *slog.Logger) error {
	subs, err := l.cfg.Subscriptions.ListSubscriptions(ctx, marketplace.SubscriptionFilter{Provider: marketplace.GCP})
	if err != nil {
		return err
	}
	n := 0
	for _, s := range subs {
		if s.Attributes[AttrAccount] != accountID {
			continue
		}
		if l.cfg.Entitlements != nil {
			ents, err := l.cfg.Entitlements.ListEntitlements(ctx, marketplace.GCP, s.CustomerID)
			if err != nil {
				return err
			}
			for _, e := range ents {
				if err := l.cfg.Entitlements.DeleteEntitlement(ctx, marketplace.GCP, s.CustomerID, e.Feature); err != nil {
					return err
				}
			}
		}
		if err := l.cfg.Subscriptions.DeleteSubscription(ctx, marketplace.GCP, s.ID); err != nil {
			return err
		}
		if l.cfg.Invalidate != nil {
			l.cfg.Invalidate(s.CustomerID)
		}
		n++
	}
	if l.cfg.Policy.AccountDeleted != nil {
		if err := l.cfg.Policy.AccountDeleted(ctx, accountID); err != nil {
			return fmt.Errorf("seller hook: %w", err)
		}
	}
	log.Info("gcp lifecycle: account deleted with its data", "account", accountID, "subscriptions", n)
	return nil
}
