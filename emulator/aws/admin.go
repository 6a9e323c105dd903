package aws

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/saasmarket/marketplace/emulator/admin"
)

// The SNS actions and EventBridge detail types that POST
// /emulator/buyers/{id}/events sends.
var (
	snsActions = []string{"subscribe-success", "subscribe-fail", "unsubscribe-pending", "unsubscribe-success", "entitlement-updated"}
	ebTypes    = []string{
		"Purchase Agreement Created - Manufacturer", "Purchase Agreement Amended - Manufacturer",
		"Purchase Agreement Ended - Manufacturer", "License Updated - Manufacturer", "License Deprovisioned - Manufacturer",
	}
)

// Admin returns the emulator's side of the shared admin routes (package
// emulator/admin), which ServeHTTP serves under /emulator/.
func (e *Emulator) Admin() admin.Cloud { return adminAPI{e} }

type adminAPI struct{ e *Emulator }

func (a adminAPI) CreateBuyer(_ context.Context, req admin.BuyerRequest) (admin.Buyer, error) {
	if req.Product == "" {
		return admin.Buyer{}, fmt.Errorf("%w: product (the AWS product code) is required", admin.ErrBadRequest)
	}
	if err := a.e.knownProduct(req.Product); err != nil {
		return admin.Buyer{}, fmt.Errorf("%w: %v", admin.ErrBadRequest, err)
	}
	b := Buyer{ProductCode: req.Product, CustomerAWSAccountId: req.Account}
	if req.License {
		b.LicenseArn = "new"
	}
	b = a.e.AddBuyer(b)
	tok, err := a.e.MintToken(b.Key(), time.Hour)
	if err != nil {
		return admin.Buyer{}, err
	}
	out, err := a.Buyer(b.Key())
	out.Token = tok
	return out, err
}

func (a adminAPI) Buyer(id string) (admin.Buyer, error) {
	e := a.e
	e.mu.Lock()
	defer e.mu.Unlock()
	b, ok := e.buyers[id]
	if !ok {
		return admin.Buyer{}, fmt.Errorf("%w: no AWS buyer %q", admin.ErrNotFound, id)
	}
	state := "subscribed"
	switch {
	case !b.Subscribed && b.meterable(e.cfg.Clock()):
		state = "unsubscribe-pending"
	case !b.Subscribed:
		state = "unsubscribed"
	}
	out := admin.Buyer{ID: b.Key(), Account: b.CustomerAWSAccountId, Product: b.ProductCode, State: state,
		Cloud: map[string]string{"CustomerAWSAccountId": b.CustomerAWSAccountId}}
	if b.CustomerIdentifier != "" {
		out.Cloud["CustomerIdentifier"] = b.CustomerIdentifier
	}
	if b.LicenseArn != "" {
		out.Cloud["LicenseArn"] = b.LicenseArn
	}
	return out, nil
}

// Event sends an SNS action or an EventBridge detail type about the buyer
// to the receivers that are configured; the buyer's state changes either way.
func (a adminAPI) Event(ctx context.Context, id string, req admin.EventRequest) (admin.EventResult, error) {
	e, n := a.e, a.e.cfg.Notify
	var res admin.EventResult
	var to string
	var status int
	var err error
	switch {
	case slices.Contains(snsActions, req.Event):
		if n.SNSEndpoint != "" && n.SNSTopicArn != "" && n.SNSCertURL != "" {
			to = n.SNSEndpoint
			status, err = e.SendSNS(ctx, req.Event, id)
		} else {
			_, err = e.SNSNotification(cmpOr(n.SNSTopicArn, "arn:aws:sns:us-east-1:000000000000:emulator"), req.Event, id, 2, n.SNSCertURL)
		}
	case slices.Contains(ebTypes, req.Event):
		if n.EventBridgeEndpoint != "" {
			to = n.EventBridgeEndpoint
			status, err = e.SendEventBridge(ctx, req.Event, id)
		} else {
			_, err = e.EventBridgeEvent(req.Event, id)
		}
	default:
		return res, fmt.Errorf("%w: unknown AWS event %q; want an SNS action (%s) or an EventBridge detail type (%s)",
			admin.ErrBadRequest, req.Event, strings.Join(snsActions, ", "), strings.Join(ebTypes, ", "))
	}
	if errors.Is(err, errNoBuyer) {
		return res, fmt.Errorf("%w: %v", admin.ErrNotFound, err)
	}
	if to != "" {
		d := admin.Delivery{To: to, Status: status}
		if err != nil {
			d.Error = err.Error()
		}
		res.Deliveries = append(res.Deliveries, d)
	} else if err != nil {
		return res, err
	}
	res.Buyer, err = a.Buyer(id)
	return res, err
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (a adminAPI) Bill() admin.Bill {
	return admin.BillOf(a.e.Bill().Lines, func(l Line) admin.Line {
		return admin.Line{ID: l.MeteringRecordId, Buyer: l.Customer, Dimension: l.Dimension, Start: l.Hour, Quantity: float64(l.Quantity)}
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

// faultMapping is AWS's side of the shared faults: AWS sends no
// Retry-After, so RetryAfter is not kept; scope "all" is AllCalls.
var faultMapping = admin.FaultMapping[Faults]{
	To: func(f admin.Faults, meteringOnly bool) Faults {
		return Faults{ThrottleRate: f.ThrottleRate, ThrottleTPS: f.ThrottleTPS, ErrorRate: f.ErrorRate, DropRate: f.DropRate,
			UnprocessedRate: f.UnprocessedRate, Latency: time.Duration(f.Latency), AllCalls: !meteringOnly}
	},
	From: func(f Faults) (admin.Faults, bool) {
		return admin.Faults{ThrottleRate: f.ThrottleRate, ThrottleTPS: f.ThrottleTPS, ErrorRate: f.ErrorRate, DropRate: f.DropRate,
			UnprocessedRate: f.UnprocessedRate, Latency: admin.Duration(f.Latency)}, !f.AllCalls
	},
}
