package azure

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/saasmarket/marketplace/emulator/admin"
)

// actions are the lifecycle events POST /emulator/buyers/{id}/events drives.
var actions = []string{ActionChangePlan, ActionChangeQuantity, ActionSuspend, ActionReinstate, ActionRenew, ActionUnsubscribe}

// Admin returns the emulator's side of the shared admin routes (package
// emulator/admin), which ServeHTTP serves under /emulator/.
func (e *Emulator) Admin() admin.Cloud { return adminAPI{e} }

type adminAPI struct{ e *Emulator }

func (a adminAPI) CreateBuyer(_ context.Context, req admin.BuyerRequest) (admin.Buyer, error) {
	e := a.e
	if req.Product != "" && req.Product != e.cfg.OfferID {
		return admin.Buyer{}, fmt.Errorf("%w: product %q: this emulator serves offer %q", admin.ErrBadRequest, req.Product, e.cfg.OfferID)
	}
	if req.Plan == "" {
		return admin.Buyer{}, fmt.Errorf("%w: plan is required (one of %s)", admin.ErrBadRequest, e.planIDs())
	}
	p, err := e.CreatePurchase(Purchase{PlanID: req.Plan, Quantity: req.Quantity, Email: req.Email})
	if err != nil {
		return admin.Buyer{}, fmt.Errorf("%w: %v (plans: %s)", admin.ErrBadRequest, err, e.planIDs())
	}
	if req.Active {
		e.mu.Lock()
		e.subs[p.SubscriptionID].Status = StatusSubscribed
		e.mu.Unlock()
	}
	b, err := a.Buyer(p.SubscriptionID)
	b.Token = p.Token
	return b, err
}

func (e *Emulator) planIDs() string {
	var ids []string
	for _, p := range e.cfg.Plans {
		ids = append(ids, p.ID)
	}
	return strings.Join(ids, ", ")
}

func (a adminAPI) Buyer(id string) (admin.Buyer, error) {
	e := a.e
	e.mu.Lock()
	defer e.mu.Unlock()
	e.settle()
	s := e.subs[id]
	if s == nil {
		return admin.Buyer{}, fmt.Errorf("%w: no Azure subscription %q", admin.ErrNotFound, id)
	}
	b := admin.Buyer{ID: s.ID, Account: s.Purchaser.TenantID, Product: s.OfferID, Plan: s.PlanID, State: s.Status,
		Cloud: map[string]string{"email": s.Purchaser.EmailID, "name": s.Name}}
	if s.Quantity > 0 {
		b.Cloud["quantity"] = fmt.Sprint(s.Quantity)
	}
	return b, nil
}

// Event drives an Azure action (ChangePlan, Suspend, ...) and calls the
// webhook, if one is configured.
func (a adminAPI) Event(ctx context.Context, id string, req admin.EventRequest) (admin.EventResult, error) {
	var res admin.EventResult
	if !slices.Contains(actions, req.Event) {
		return res, fmt.Errorf("%w: unknown Azure event %q; want one of %s", admin.ErrBadRequest, req.Event, strings.Join(actions, ", "))
	}
	op, status, err := a.e.Drive(ctx, id, Action{Name: req.Event, PlanID: req.Plan, Quantity: req.Quantity})
	switch {
	case errors.Is(err, ErrUnknown):
		return res, fmt.Errorf("%w: %v", admin.ErrNotFound, err)
	case errors.Is(err, ErrInvalidAction):
		return res, fmt.Errorf("%w: %v", admin.ErrConflict, err)
	}
	res.Operation = op
	if a.e.cfg.WebhookURL != "" {
		d := admin.Delivery{To: a.e.cfg.WebhookURL, Status: status}
		if err != nil {
			d.Error = err.Error()
		}
		res.Deliveries = append(res.Deliveries, d)
	}
	res.Buyer, err = a.Buyer(id)
	return res, err
}

func (a adminAPI) Bill() admin.Bill {
	return admin.BillOf(a.e.Bill(), func(l BillLine) admin.Line {
		return admin.Line{ID: l.UsageEventID, Buyer: l.ResourceID, Dimension: l.Dimension, Start: l.Hour, Quantity: l.Quantity}
	})
}

func (a adminAPI) Faults() admin.Faults {
	a.e.mu.Lock()
	defer a.e.mu.Unlock()
	return faultMapping.Shared(a.e.faults)
}

func (a adminAPI) SetFaults(f admin.Faults) error { return faultMapping.Set(f, a.e.SetFaults) }

// FaultsFrom converts the shared fault settings to this emulator's.
func FaultsFrom(f admin.Faults) (Faults, error) { return faultMapping.Convert(f) }

// faultMapping is Azure's side of the shared faults.
var faultMapping = admin.FaultMapping[Faults]{
	NoUnprocessed: "Azure answers each batch event with its own status",
	To: func(f admin.Faults, meteringOnly bool) Faults {
		return Faults{ThrottleRate: f.ThrottleRate, ThrottleTPS: f.ThrottleTPS, RetryAfter: time.Duration(f.RetryAfter), ErrorRate: f.ErrorRate,
			DropRate: f.DropRate, Latency: time.Duration(f.Latency), MeteringOnly: meteringOnly}
	},
	From: func(f Faults) (admin.Faults, bool) {
		return admin.Faults{ThrottleRate: f.ThrottleRate, ThrottleTPS: f.ThrottleTPS, RetryAfter: admin.Duration(f.RetryAfter),
			ErrorRate: f.ErrorRate, DropRate: f.DropRate, Latency: admin.Duration(f.Latency)}, f.MeteringOnly
	},
}
