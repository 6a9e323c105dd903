package gcp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/saasmarket/marketplace/emulator/admin"
)

// Event is one lifecycle message as Google publishes it to the provider's
// Pub/Sub topic.
type Event struct {
	EventID     string     `json:"eventId"`
	EventType   string     `json:"eventType"`
	ProviderID  string     `json:"providerId"`
	Entitlement *EventItem `json:"entitlement,omitempty"`
	Account     *EventItem `json:"account,omitempty"`
}

// EventItem names the entitlement or account an Event is about.
type EventItem struct {
	ID         string `json:"id"`
	UpdateTime string `json:"updateTime"`
	NewPlan    string `json:"newPlan,omitempty"`
}

type event struct {
	Event
	data []byte
}

func (e *Emulator) newEventLocked(typ string) Event {
	e.events++
	return Event{EventID: e.instance + "-" + strconv.Itoa(e.events), EventType: typ, ProviderID: e.cfg.ProviderID}
}

func (e *Emulator) entEventLocked(typ string, ent *entitlement, now time.Time) event {
	ev := e.newEventLocked(typ)
	ev.Entitlement = &EventItem{ID: idOf(ent.Name), UpdateTime: stamp(now)}
	if typ == "ENTITLEMENT_PLAN_CHANGE_REQUESTED" || typ == "ENTITLEMENT_PLAN_CHANGED" {
		ev.Entitlement.NewPlan = ent.NewPendingPlan
		if ev.Entitlement.NewPlan == "" {
			ev.Entitlement.NewPlan = ent.Plan
		}
	}
	return marshalEvent(ev)
}

func (e *Emulator) accEventLocked(typ, id string, now time.Time) event {
	ev := e.newEventLocked(typ)
	ev.Account = &EventItem{ID: id, UpdateTime: stamp(now)}
	return marshalEvent(ev)
}

func marshalEvent(ev Event) event {
	data, _ := json.Marshal(ev) // plain strings: cannot fail
	return event{Event: ev, data: data}
}

func idOf(name string) string {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '/' {
			return name[i+1:]
		}
	}
	return name
}

// publish sends events in order; a failure is logged, as Google would
// retry it on its side.
func (e *Emulator) publish(ctx context.Context, evs []event) {
	if e.cfg.Publisher == nil {
		return
	}
	for _, ev := range evs {
		if err := e.cfg.Publisher.Publish(context.WithoutCancel(ctx), ev.data); err != nil {
			e.cfg.Logger.Error("publish lifecycle event", "event", ev.EventID, "type", ev.EventType, "err", err)
		}
	}
}

// PubSubPublisher publishes to a topic through the official Pub/Sub client,
// which reaches Google's Pub/Sub emulator when PUBSUB_EMULATOR_HOST is set,
// or pstest through option.WithGRPCConn.
type PubSubPublisher struct {
	P *pubsub.Publisher
}

// Publish publishes data and waits until the topic holds it.
func (p PubSubPublisher) Publish(ctx context.Context, data []byte) error {
	_, err := p.P.Publish(ctx, &pubsub.Message{Data: data}).Get(ctx)
	if err != nil {
		return fmt.Errorf("emulator/gcp: publish: %w", err)
	}
	return nil
}

// PublishRaw publishes an arbitrary message to the lifecycle topic, as a
// test does to replay, reorder or forge deliveries.
func (e *Emulator) PublishRaw(ctx context.Context, data []byte) error {
	if e.cfg.Publisher == nil {
		return fmt.Errorf("emulator/gcp: no publisher configured")
	}
	return e.cfg.Publisher.Publish(ctx, data)
}

// termEnd is the end of the monthly term that holds now, for a
// subscription that started at start.
func termEnd(start, now time.Time) time.Time {
	end := start.AddDate(0, 1, 0)
	for i := 2; !end.After(now); i++ {
		end = start.AddDate(0, i, 0)
	}
	return end
}

// Purchase plays a buyer who buys product on plan: it creates the account
// if it is new (publishing ACCOUNT_ACTIVE, with a pending "signup"
// approval) and an entitlement in ENTITLEMENT_ACTIVATION_REQUESTED with a
// fresh usageReportingId, publishing ENTITLEMENT_CREATION_REQUESTED. It
// returns the entitlement id.
func (e *Emulator) Purchase(ctx context.Context, accountID, product, plan string) string {
	e.mu.Lock()
	now := e.now()
	var evs []event
	if _, ok := e.accounts[accountID]; !ok {
		e.accounts[accountID] = &account{Name: e.accountName(accountID), Provider: e.cfg.ProviderID, State: "ACCOUNT_ACTIVE",
			Approvals:  []approval{{Name: SignupApproval, State: "PENDING"}},
			CreateTime: stamp(now), UpdateTime: stamp(now)}
		evs = append(evs, e.accEventLocked("ACCOUNT_ACTIVE", accountID, now))
	}
	id := e.newIDLocked("ent-")
	ent := &entitlement{Name: e.entitlementName(id), Account: e.accountName(accountID), Provider: e.cfg.ProviderID,
		Product: product, ProductExternal: product, Plan: plan, State: StateActivationRequested,
		UsageReportingID: "project_number:" + strconv.Itoa(100000+e.nextID),
		CreateTime:       stamp(now), UpdateTime: stamp(now), created: now}
	e.ents[id] = ent
	e.entOrder = append(e.entOrder, id)
	evs = append(evs, e.entEventLocked("ENTITLEMENT_CREATION_REQUESTED", ent, now))
	e.mu.Unlock()
	e.publish(ctx, evs)
	return id
}

// Entitlement returns an entitlement's state, plan and usageReportingId,
// for tests and tools to look at what Google holds.
func (e *Emulator) Entitlement(id string) (state, plan, usageReportingID string, ok bool) {
	e.Settle(context.Background())
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.ents[id]
	if !ok {
		return "", "", "", false
	}
	return ent.State, ent.Plan, ent.UsageReportingID, true
}

// AccountApproval returns the state of an account's approval.
func (e *Emulator) AccountApproval(accountID, name string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if a, ok := e.accounts[accountID]; ok {
		for _, ap := range a.Approvals {
			if ap.Name == name {
				return ap.State
			}
		}
	}
	return ""
}

// buyerAction applies a buyer or Google action to an entitlement.
func (e *Emulator) buyerAction(ctx context.Context, id, action, plan string) error {
	e.Settle(ctx)
	e.mu.Lock()
	ent, ok := e.ents[id]
	if !ok {
		e.mu.Unlock()
		return notFound("entitlement %s not found", id)
	}
	now := e.now()
	before := ent.State
	var evs []event
	switch action {
	case "changePlan":
		if ent.State != StateActive {
			e.mu.Unlock()
			return precondition("entitlement %s is %s; a plan change needs ENTITLEMENT_ACTIVE", id, ent.State)
		}
		ent.State, ent.NewPendingPlan = StatePendingPlanChangeApproval, plan
		evs = append(evs, e.entEventLocked("ENTITLEMENT_PLAN_CHANGE_REQUESTED", ent, now))
	case "cancelAtTermEnd":
		// ENTITLEMENT_ACTIVE: "the customer can decide to cancel the
		// entitlement, which would change the state to
		// ENTITLEMENT_PENDING_CANCELLATION"; the pending plan change
		// states are "currently active" too.
		if !slices.Contains([]string{StateActive, StatePendingPlanChange, StatePendingPlanChangeApproval}, ent.State) {
			e.mu.Unlock()
			return precondition("entitlement %s is %s; only an active entitlement can be cancelled at term end", id, ent.State)
		}
		ent.State = StatePendingCancellation
		ent.SubscriptionEndTime = stamp(termEnd(ent.created, now))
		evs = append(evs, e.entEventLocked("ENTITLEMENT_PENDING_CANCELLATION", ent, now))
	case "revertCancellation":
		if ent.State != StatePendingCancellation {
			e.mu.Unlock()
			return precondition("entitlement %s is %s, not pending cancellation", id, ent.State)
		}
		ent.State, ent.SubscriptionEndTime = StateActive, ""
		evs = append(evs, e.entEventLocked("ENTITLEMENT_CANCELLATION_REVERTED", ent, now))
	case "cancel":
		if ent.State == StateCancelled {
			e.mu.Unlock()
			return precondition("entitlement %s is already cancelled", id)
		}
		e.cancelLocked(ent, "user-cancelled", now, &evs)
	case "delete":
		// ENTITLEMENT_CANCELLED: "The entitlement can now be deleted."
		if ent.State != StateCancelled {
			e.mu.Unlock()
			return precondition("entitlement %s is %s; only a cancelled entitlement can be deleted", id, ent.State)
		}
		delete(e.ents, id)
		for i, x := range e.entOrder {
			if x == id {
				e.entOrder = append(e.entOrder[:i:i], e.entOrder[i+1:]...)
				break
			}
		}
		evs = append(evs, e.entEventLocked("ENTITLEMENT_DELETED", ent, now))
	default:
		e.mu.Unlock()
		return badRequest("unknown action %q", action)
	}
	if ent.State != before {
		// Entitlement.messageToUser: "This field is cleared automatically
		// when the entitlement state changes."
		ent.MessageToUser = ""
	}
	ent.UpdateTime = stamp(now)
	e.mu.Unlock()
	e.publish(ctx, evs)
	return nil
}

// RequestPlanChange plays a buyer asking to move entitlement id to plan:
// ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL, ENTITLEMENT_PLAN_CHANGE_REQUESTED.
func (e *Emulator) RequestPlanChange(ctx context.Context, id, plan string) error {
	return e.buyerAction(ctx, id, "changePlan", plan)
}

// CancelAtTermEnd plays a buyer who stops renewal: ENTITLEMENT_PENDING_CANCELLATION.
func (e *Emulator) CancelAtTermEnd(ctx context.Context, id string) error {
	return e.buyerAction(ctx, id, "cancelAtTermEnd", "")
}

// RevertCancellation plays a buyer who renews after all: ENTITLEMENT_CANCELLATION_REVERTED.
func (e *Emulator) RevertCancellation(ctx context.Context, id string) error {
	return e.buyerAction(ctx, id, "revertCancellation", "")
}

// Cancel ends entitlement id now: ENTITLEMENT_CANCELLED.
func (e *Emulator) Cancel(ctx context.Context, id string) error {
	return e.buyerAction(ctx, id, "cancel", "")
}

// DeleteEntitlement removes entitlement id: ENTITLEMENT_DELETED.
func (e *Emulator) DeleteEntitlement(ctx context.Context, id string) error {
	return e.buyerAction(ctx, id, "delete", "")
}

// DeleteAccount removes an account: ACCOUNT_DELETED.
func (e *Emulator) DeleteAccount(ctx context.Context, accountID string) error {
	e.mu.Lock()
	if _, ok := e.accounts[accountID]; !ok {
		e.mu.Unlock()
		return notFound("account %s not found", accountID)
	}
	delete(e.accounts, accountID)
	evs := []event{e.accEventLocked("ACCOUNT_DELETED", accountID, e.now())}
	e.mu.Unlock()
	e.publish(ctx, evs)
	return nil
}

func (e *Emulator) routes() {
	m := http.NewServeMux()
	api := func(pattern string, h http.HandlerFunc) { m.Handle(pattern, e.withFaults(h)) }
	api("GET /v1/providers/{p}/accounts", e.listAccounts)
	api("GET /v1/providers/{p}/accounts/{name}", e.account)
	api("POST /v1/providers/{p}/accounts/{name}", e.account)
	api("GET /v1/providers/{p}/entitlements", e.listEntitlements)
	api("GET /v1/providers/{p}/entitlements/{name}", e.entitlement)
	api("PATCH /v1/providers/{p}/entitlements/{name}", e.entitlement)
	api("POST /v1/providers/{p}/entitlements/{name}", e.entitlement)
	api("POST /v1/services/{name}", e.serveServiceControl)
	m.HandleFunc("GET /x509", e.serveKeys)
	admin.Register(m, e.Admin())
	// Anything else is Google's JSON 404, not the mux's plain text.
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "%s %s: no such method", r.Method, r.URL.Path)
	})
	e.mux = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.Settle(r.Context())
		m.ServeHTTP(w, r)
	})
}
