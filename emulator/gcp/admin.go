package gcp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/saasmarket/marketplace/emulator/admin"
)

// events are the lifecycle events POST /emulator/buyers/{id}/events plays:
// the buyer's or Google's side of an entitlement.
var events = []string{"changePlan", "cancelAtTermEnd", "revertCancellation", "cancel", "delete", "deleteAccount"}

// Admin returns the emulator's side of the shared admin routes (package
// emulator/admin), which Handler serves under /emulator/.
func (e *Emulator) Admin() admin.Cloud { return adminAPI{e} }

type adminAPI struct{ e *Emulator }

// CreateBuyer purchases a product on a plan (creating the account if it is
// new) and mints the sign-up JWT; Active also approves the account's
// sign-up and the entitlement, as the seller would, and activates it at
// once: the buyer is set up as already active, with no processing delay.
func (a adminAPI) CreateBuyer(ctx context.Context, req admin.BuyerRequest) (admin.Buyer, error) {
	e := a.e
	if req.Product == "" || req.Plan == "" {
		return admin.Buyer{}, fmt.Errorf("%w: product and plan are required", admin.ErrBadRequest)
	}
	if req.Account == "" {
		e.mu.Lock()
		req.Account = fmt.Sprintf("acc-%d", len(e.accounts)+1)
		for e.accounts[req.Account] != nil {
			req.Account += "x"
		}
		e.mu.Unlock()
	}
	id := e.Purchase(ctx, req.Account, req.Product, req.Plan)
	if req.Active {
		e.mu.Lock()
		now := stamp(e.now())
		_ = setApproval(e.accounts[req.Account], SignupApproval, "APPROVED", "", now)
		var evs []event
		err := e.transitionLocked(e.ents[id], "approve", "", "", "", "", &evs)
		if ent := e.ents[id]; err == nil && ent.State == StateActivationRequested {
			e.activateLocked(ent, e.now(), &evs) // Settle drops it from pending
		}
		e.mu.Unlock()
		if err != nil {
			return admin.Buyer{}, err
		}
		e.publish(ctx, evs)
	}
	tok, err := e.MintSignupToken(req.Account, TokenOptions{})
	if err != nil {
		return admin.Buyer{}, err
	}
	b, err := a.Buyer(id)
	b.Token = tok
	return b, err
}

func (a adminAPI) Buyer(id string) (admin.Buyer, error) {
	e := a.e
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.ents[id]
	if !ok {
		return admin.Buyer{}, fmt.Errorf("%w: no Google entitlement %q", admin.ErrNotFound, id)
	}
	acc := idOf(ent.Account)
	b := admin.Buyer{ID: id, Account: acc, Product: ent.Product, Plan: ent.Plan, State: ent.State,
		Cloud: map[string]string{"usageReportingId": ent.UsageReportingID}}
	if a, ok := e.accounts[acc]; ok {
		for _, ap := range a.Approvals {
			b.Cloud["approval/"+ap.Name] = ap.State
		}
	}
	if ent.NewPendingPlan != "" {
		b.Cloud["newPendingPlan"] = ent.NewPendingPlan
	}
	if ent.SubscriptionEndTime != "" {
		b.Cloud["subscriptionEndTime"] = ent.SubscriptionEndTime
	}
	return b, nil
}

// Event plays a buyer's or Google's action and publishes its Pub/Sub event.
func (a adminAPI) Event(ctx context.Context, id string, req admin.EventRequest) (admin.EventResult, error) {
	var res admin.EventResult
	if !slices.Contains(events, req.Event) {
		return res, fmt.Errorf("%w: unknown Google event %q; want one of %s", admin.ErrBadRequest, req.Event, strings.Join(events, ", "))
	}
	if req.Event == "changePlan" && req.Plan == "" {
		return res, fmt.Errorf("%w: changePlan needs a plan", admin.ErrBadRequest)
	}
	before, err := a.Buyer(id)
	if err != nil {
		return res, err
	}
	a.e.mu.Lock()
	last := a.e.events
	a.e.mu.Unlock()
	if req.Event == "deleteAccount" {
		err = a.e.DeleteAccount(ctx, before.Account)
	} else {
		err = a.e.buyerAction(ctx, id, req.Event, req.Plan)
	}
	var ae *apiError
	if errors.As(err, &ae) {
		switch ae.code {
		case http.StatusNotFound:
			return res, fmt.Errorf("%w: %s", admin.ErrNotFound, ae.msg)
		case http.StatusBadRequest:
			return res, fmt.Errorf("%w: %s", admin.ErrBadRequest, ae.msg)
		default:
			return res, fmt.Errorf("%w: %s", admin.ErrConflict, ae.msg)
		}
	}
	if err != nil {
		return res, err
	}
	a.e.mu.Lock()
	if a.e.events > last {
		res.Operation = fmt.Sprintf("%s-%d", a.e.instance, a.e.events)
	}
	a.e.mu.Unlock()
	if a.e.cfg.Publisher != nil {
		res.Deliveries = append(res.Deliveries, admin.Delivery{To: "pubsub"})
	}
	res.Buyer, err = a.Buyer(id)
	if errors.Is(err, admin.ErrNotFound) { // deleted: show what it was
		res.Buyer, err = before, nil
		res.Buyer.State = "DELETED"
	}
	return res, err
}

func (a adminAPI) Bill() admin.Bill {
	return admin.BillOf(a.e.Bill(), func(l BillLine) admin.Line {
		return admin.Line{ID: l.OperationID, Buyer: l.ConsumerID, Dimension: l.MetricName, Start: l.StartTime, Quantity: float64(l.Value)}
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

// faultMapping is Google's side of the shared faults: scope "metering" is
// Service Control.
var faultMapping = admin.FaultMapping[Faults]{
	NoUnprocessed: "Service Control reports each operation's error",
	To: func(f admin.Faults, meteringOnly bool) Faults {
		scope := ""
		if meteringOnly {
			scope = "servicecontrol"
		}
		return Faults{Throttle: f.ThrottleRate, ThrottleTPS: f.ThrottleTPS, RetryAfter: time.Duration(f.RetryAfter), ErrorRate: f.ErrorRate,
			DropResponse: f.DropRate, Latency: time.Duration(f.Latency), Scope: scope}
	},
	From: func(f Faults) (admin.Faults, bool) {
		return admin.Faults{ThrottleRate: f.Throttle, ThrottleTPS: f.ThrottleTPS, RetryAfter: admin.Duration(f.RetryAfter),
			ErrorRate: f.ErrorRate, DropRate: f.DropResponse, Latency: admin.Duration(f.Latency)}, f.Scope == "servicecontrol"
	},
}
