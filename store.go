package marketplace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// The stores below are consumed by every cloud integration, so they are
// declared here, once, in the domain language. Package sqlite implements
// them; package storetest checks any implementation.

// SubscriptionStore keeps subscriptions, keyed by provider and id.
type SubscriptionStore interface {
	// GetSubscription returns the stored subscription, or an error wrapping ErrNotFound.
	GetSubscription(ctx context.Context, p CloudProvider, id string) (*Subscription, error)
	// FindSubscription returns the newest stored subscription of a customer,
	// or an error wrapping ErrNotFound.
	FindSubscription(ctx context.Context, p CloudProvider, customerID string) (*Subscription, error)
	// PutSubscription stores s if the stored version still equals s.Version
	// (zero: it must not exist yet) and returns the stored copy, whose
	// Version is one higher. Otherwise it fails with ErrVersionConflict and
	// stores nothing: re-read, re-apply, try again.
	PutSubscription(ctx context.Context, s Subscription) (*Subscription, error)
	// ListSubscriptions returns the subscriptions f selects, ordered by
	// provider and id, at most f.Limit of them (all when zero).
	ListSubscriptions(ctx context.Context, f SubscriptionFilter) ([]Subscription, error)
	// FindSubscriptionsByAttribute returns the subscriptions of p whose
	// Attributes[name] equals value, ordered by id, from an index: it never
	// reads all subscriptions. Finding none is not an error.
	FindSubscriptionsByAttribute(ctx context.Context, p CloudProvider, name, value string) ([]Subscription, error)
	// DeleteSubscription removes a subscription (a buyer's personal data
	// after the cloud deleted the account). Missing is not an error.
	DeleteSubscription(ctx context.Context, p CloudProvider, id string) error
	// CountSubscriptions counts the subscriptions of p per Status, and those
	// linked to an account (AccountID set), in one aggregate query: a
	// dashboard asks on every refresh, and listing every subscription to
	// count them would cost a read per buyer. A cloud with none is not an
	// error: the counts are zero.
	CountSubscriptions(ctx context.Context, p CloudProvider) (SubscriptionCounts, error)
}

// SubscriptionCounts is what CountSubscriptions answers for one cloud. Its
// size grows with the statuses in use, not with the buyers.
type SubscriptionCounts struct {
	// ByStatus is the number of subscriptions per Status; a status no
	// subscription has is absent. Never nil, so that it encodes as {}.
	ByStatus map[string]int
	// Linked is the number of subscriptions, of any status, whose AccountID
	// is set (the landing page linked it to the seller's own account).
	Linked int
}

// SubscriptionFilter selects subscriptions; zero fields match all.
type SubscriptionFilter struct {
	Provider CloudProvider
	Status   string
	// After pages: only subscriptions ordered after (AfterProvider, AfterID).
	AfterProvider CloudProvider
	AfterID       string
	Limit         int
}

// Entitlement is one feature, tier or quota a customer holds.
type Entitlement struct {
	Provider   CloudProvider
	CustomerID string
	Feature    string // a dimension, tier or feature name
	// Value is the cloud's value as text ("true", "10", "gold"); empty means granted.
	Value     string
	ExpiresAt time.Time // zero: no expiry
	Version   int64
	Updated   time.Time
}

// Valid reports whether e grants its feature at time t.
func (e *Entitlement) Valid(t time.Time) bool {
	return e != nil && e.Value != "false" && e.Value != "0" && (e.ExpiresAt.IsZero() || t.Before(e.ExpiresAt))
}

// EntitlementStore keeps entitlements, keyed by provider, customer and feature.
type EntitlementStore interface {
	GetEntitlement(ctx context.Context, p CloudProvider, customerID, feature string) (*Entitlement, error)
	// PutEntitlement stores e, replacing any stored one, and returns the
	// stored copy with its new Version.
	PutEntitlement(ctx context.Context, e Entitlement) (*Entitlement, error)
	DeleteEntitlement(ctx context.Context, p CloudProvider, customerID, feature string) error
	ListEntitlements(ctx context.Context, p CloudProvider, customerID string) ([]Entitlement, error)
}

// LookupSubscription is the ResolveSubscription of every cloud integration:
// the customer's stored subscription, or, when none is stored, an error
// wrapping both ErrNoActiveSubscription and ErrNotFound.
func LookupSubscription(ctx context.Context, store SubscriptionStore, p CloudProvider, customerID string) (*Subscription, error) {
	s, err := store.FindSubscription(ctx, p, customerID)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("%s: customer %s: %w: %w", p, customerID, ErrNoActiveSubscription, err)
	case err != nil:
		return nil, fmt.Errorf("%s: subscription of customer %s: %w", p, customerID, err)
	}
	return s, nil
}

// HasActiveSubscription is the IsActive of every cloud integration: whether
// the customer's stored subscription is active at now. No stored
// subscription is not an error: the answer is false.
func HasActiveSubscription(ctx context.Context, store SubscriptionStore, p CloudProvider, customerID string, now time.Time) (bool, error) {
	s, err := LookupSubscription(ctx, store, p, customerID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return s.ActiveAt(now), nil
}

// Notification states in a NotificationInbox.
const (
	NotificationPending = "pending" // stored, to be applied (now or at NextAttempt)
	NotificationDone    = "done"    // applied, or found to need nothing; kept for dedupe until Expires
	NotificationParked  = "parked"  // can never apply: kept with its Reason for an operator
)

// Notification is one cloud lifecycle notification as the inbox keeps it:
// stored before the cloud's delivery is answered, applied by a worker.
type Notification struct {
	Provider CloudProvider
	// ID is the cloud's id for the delivery (SNS MessageId, EventBridge id,
	// Azure operation id, Pub/Sub eventId): the dedupe key.
	ID string
	// Kind is the cloud's event type (an action, a detail-type, an eventType).
	Kind string
	// Subject names whom it concerns (a subscription or account id), as far
	// as the delivery says; for listing and ordering only.
	Subject string
	// Time is the cloud's time of the event; zero when the cloud gives none.
	Time time.Time
	// Payload is the decoded delivery in the cloud adapter's own encoding.
	Payload []byte

	State string
	// Attempts counts failed applications.
	Attempts    int
	NextAttempt time.Time
	// Progress is the adapter's own record of steps already taken towards
	// applying it (Azure: the operation was answered), kept across retries.
	Progress string
	// Reason is why the last attempt failed, or why it is parked.
	Reason   string
	Received time.Time
	// Expires is when a done notification may be forgotten (and a
	// redelivery of it would be applied again).
	Expires time.Time
}

// NotificationClaim asks an inbox for work.
type NotificationClaim struct {
	Owner string    // the claimant; SettleNotification must name it
	Now   time.Time // due and lease times are compared with it
	Lease time.Duration
	Limit int
}

// NotificationInbox is the durable inbox of cloud lifecycle notifications:
// a delivery is stored (deduplicated by provider and id) before the cloud
// is answered, and a worker claims, applies and settles it. Package
// storetest checks implementations.
type NotificationInbox interface {
	// AddNotification stores n as pending, due at once, unless a
	// notification with its provider and id is stored: then it stores
	// nothing and first is false.
	AddNotification(ctx context.Context, n Notification) (first bool, err error)
	// ClaimNotifications leases up to c.Limit pending notifications that are
	// due (NextAttempt <= c.Now) and not leased by another owner (or whose
	// lease ran out), oldest Time first (then Received). Two owners never
	// hold the same notification at once.
	ClaimNotifications(ctx context.Context, c NotificationClaim) ([]Notification, error)
	// SettleNotification stores the outcome of a claimed notification: its
	// State (pending again for a retry at NextAttempt, done, or parked),
	// Attempts, NextAttempt, Progress, Reason and Expires, and releases the
	// lease. It fails with ErrVersionConflict when owner no longer holds
	// the lease.
	SettleNotification(ctx context.Context, owner string, n Notification) error
	// GetNotification returns one stored notification, or an error wrapping
	// ErrNotFound (also when its row could not be read: the store moves such
	// a row to its quarantine, as every reader of the inbox does).
	GetNotification(ctx context.Context, p CloudProvider, id string) (*Notification, error)
	// ListNotifications returns the notifications of p (all clouds if empty)
	// in state (any if empty), oldest first, at most limit (all when zero).
	// A row that cannot be read is quarantined and left out.
	ListNotifications(ctx context.Context, p CloudProvider, state string, limit int) ([]Notification, error)
	// RequeueNotification makes a parked notification pending and due at
	// now, with its attempts reset (an operator mended its cause).
	RequeueNotification(ctx context.Context, p CloudProvider, id string, now time.Time) error
	// PurgeNotifications forgets done notifications that expired before t.
	PurgeNotifications(ctx context.Context, t time.Time) (int64, error)
}

// Quarantine sources: the part of a store a quarantined row came from.
const (
	QuarantineUsageLog = "usage_log" // an entry of the ledger's append log
	QuarantineInbox    = "inbox"     // a notification of the inbox
)

// Quarantined is a stored row that could not be read. The store moved it
// aside, in the same commit that would have read it, so that it halts
// nothing else (folding, sealing and reporting usage, applying
// notifications), and keeps it with its reason until an operator puts it
// back or discards it. Nothing in it is applied or billed while it is
// quarantined.
type Quarantined struct {
	ID     int64
	Source string // QuarantineUsageLog or QuarantineInbox
	// Ref says where the row was ("seq 42", "aws/<notification id>").
	Ref string
	// Data is the row as it was stored: the log entry's bytes, or the JSON
	// of an InboxRow.
	Data   []byte
	Reason string
	At     time.Time
}

// QuarantineStore keeps the rows a store moved aside. Package storetest
// checks implementations by damaging rows.
type QuarantineStore interface {
	// ListQuarantined returns quarantined rows, oldest first, at most limit
	// (all when zero).
	ListQuarantined(ctx context.Context, limit int) ([]Quarantined, error)
	// GetQuarantined returns one quarantined row, or an error wrapping
	// ErrNotFound.
	GetQuarantined(ctx context.Context, id int64) (*Quarantined, error)
	// CountQuarantined returns the number of quarantined rows per Source.
	CountQuarantined(ctx context.Context) (map[string]int64, error)
	// RestoreQuarantined puts row id back where it came from, with data in
	// place of what was stored (nil: as stored, for a row the store could
	// not read because of a defect since mended), and removes it from the
	// quarantine, in one commit. A usage-log entry must pass
	// ledger.CheckEntry and an inbox row InboxRow.Notification, and a
	// notification's provider and id must not be in the inbox again;
	// otherwise it fails with an error wrapping ErrInvalidInput and saying
	// what is wrong, and the row stays quarantined.
	RestoreQuarantined(ctx context.Context, id int64, data []byte) error
	// DiscardQuarantined removes row id from the quarantine, in one
	// commit, and returns it as it was, for the caller to log or keep. It
	// is for a row the operator gave up on (garbage that cannot be
	// mended): a discarded usage-log entry's usage is never billed, a
	// discarded inbox row's notification is never applied (its cloud may
	// still deliver it again, as a new notification). An unknown id (or
	// one restored or discarded already) is an error wrapping ErrNotFound.
	DiscardQuarantined(ctx context.Context, id int64) (*Quarantined, error)
}

// InboxRow is an inbox notification as a store holds it: its columns as
// text, times in unix milliseconds. Stores read inbox rows in this form and
// convert them with Notification, so every store reads by the same rules
// and quarantines a row it cannot read as the JSON of its InboxRow; an
// operator mends that JSON and restores it.
type InboxRow struct {
	Provider    string `json:"provider"`
	ID          string `json:"id"`
	Kind        string `json:"kind"`
	Subject     string `json:"subject"`
	Time        string `json:"event_time"`
	Payload     []byte `json:"payload"`
	State       string `json:"state"`
	Attempts    string `json:"attempts"`
	NextAttempt string `json:"next_attempt"`
	Progress    string `json:"progress"`
	Reason      string `json:"reason"`
	Received    string `json:"received"`
	Expires     string `json:"expires"`
}

// InboxRowOf is the row of n.
func InboxRowOf(n Notification) InboxRow {
	ms := func(t time.Time) string {
		if t.IsZero() {
			return "0"
		}
		return strconv.FormatInt(t.UnixMilli(), 10)
	}
	return InboxRow{Provider: string(n.Provider), ID: n.ID, Kind: n.Kind, Subject: n.Subject, Time: ms(n.Time),
		Payload: n.Payload, State: n.State, Attempts: strconv.Itoa(n.Attempts), NextAttempt: ms(n.NextAttempt),
		Progress: n.Progress, Reason: n.Reason, Received: ms(n.Received), Expires: ms(n.Expires)}
}

// ParseInboxRow decodes the JSON of an InboxRow (a quarantined inbox row,
// perhaps mended by an operator) and converts it with Notification. Errors
// wrap ErrInvalidInput and say what is wrong.
func ParseInboxRow(data []byte) (Notification, error) {
	var r InboxRow
	if err := json.Unmarshal(data, &r); err != nil {
		return Notification{}, fmt.Errorf("%w: inbox row: %w", ErrInvalidInput, err)
	}
	return r.Notification()
}

// Notification converts the row, checking every column; the error wraps
// ErrInvalidInput and names the column.
func (r InboxRow) Notification() (Notification, error) {
	var errs []error
	bad := func(col, val, want string) {
		errs = append(errs, fmt.Errorf("column %s: %q is not %s", col, val, want))
	}
	when := func(col, val string) time.Time {
		v, err := strconv.ParseInt(val, 10, 64)
		if err != nil || v < 0 {
			bad(col, val, "a time in unix milliseconds")
			return time.Time{}
		}
		if v == 0 {
			return time.Time{}
		}
		return time.UnixMilli(v).UTC()
	}
	n := Notification{Provider: CloudProvider(r.Provider), ID: r.ID, Kind: r.Kind, Subject: r.Subject,
		Payload: r.Payload, State: r.State, Progress: r.Progress, Reason: r.Reason}
	if !n.Provider.Valid() {
		bad("provider", r.Provider, "aws, azure or gcp")
	}
	if r.ID == "" {
		bad("id", r.ID, "a notification id")
	}
	switch r.State {
	case NotificationPending, NotificationDone, NotificationParked:
	default:
		bad("state", r.State, "pending, done or parked")
	}
	if a, err := strconv.Atoi(r.Attempts); err != nil || a < 0 {
		bad("attempts", r.Attempts, "a count")
	} else {
		n.Attempts = a
	}
	n.Time, n.NextAttempt = when("event_time", r.Time), when("next_attempt", r.NextAttempt)
	n.Received, n.Expires = when("received", r.Received), when("expires", r.Expires)
	if n.Payload == nil {
		n.Payload = []byte{}
	}
	if len(errs) > 0 {
		return Notification{}, fmt.Errorf("%w: inbox row %s/%s: %w", ErrInvalidInput, r.Provider, r.ID, errors.Join(errs...))
	}
	return n, nil
}
