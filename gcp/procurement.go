package gcp

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/api/cloudcommerceprocurement/v1"
	"google.golang.org/api/googleapi"

	"github.com/saasmarket/marketplace"
)

// Entitlement states of the Partner Procurement API.
const (
	StateActivationRequested       = "ENTITLEMENT_ACTIVATION_REQUESTED"
	StateActive                    = "ENTITLEMENT_ACTIVE"
	StatePendingCancellation       = "ENTITLEMENT_PENDING_CANCELLATION"
	StateCancelled                 = "ENTITLEMENT_CANCELLED"
	StatePendingPlanChange         = "ENTITLEMENT_PENDING_PLAN_CHANGE"
	StatePendingPlanChangeApproval = "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL"
	StateSuspended                 = "ENTITLEMENT_SUSPENDED"
)

// SignupApproval is the account approval the sign-up flow grants.
const SignupApproval = "signup"

// Status maps an entitlement state onto the unified state machine:
//
//	ENTITLEMENT_ACTIVATION_REQUESTED          pending   (waits for the seller's approval)
//	ENTITLEMENT_ACTIVE                        active
//	ENTITLEMENT_PENDING_PLAN_CHANGE           active    (the current plan runs until the change)
//	ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL  active    (the current plan runs until approved)
//	ENTITLEMENT_PENDING_CANCELLATION          active    (usable and billed until the term ends)
//	ENTITLEMENT_SUSPENDED                     suspended
//	ENTITLEMENT_CANCELLED                     cancelled
//	ENTITLEMENT_STATE_UNSPECIFIED, unknown    pending   (not entitled until Google says more)
func Status(state string) string {
	switch state {
	case StateActive, StatePendingPlanChange, StatePendingPlanChangeApproval, StatePendingCancellation:
		return marketplace.StatusActive
	case StateSuspended:
		return marketplace.StatusSuspended
	case StateCancelled:
		return marketplace.StatusCancelled
	}
	return marketplace.StatusPending
}

// Procurement is the seller's side of the Partner Procurement API for one
// provider, on the official client. Names are ids: "E-1234", not
// "providers/p/entitlements/E-1234". A missing account or entitlement is
// an error wrapping marketplace.ErrNotFound.
type Procurement struct {
	svc      *cloudcommerceprocurement.Service
	provider string
}

// NewProcurement returns a client for provider's accounts and entitlements.
func NewProcurement(svc *cloudcommerceprocurement.Service, providerID string) *Procurement {
	return &Procurement{svc: svc, provider: providerID}
}

func (p *Procurement) accountName(id string) string {
	return "providers/" + p.provider + "/accounts/" + id
}

func (p *Procurement) entitlementName(id string) string {
	return "providers/" + p.provider + "/entitlements/" + id
}

func (p *Procurement) parent() string { return "providers/" + p.provider }

// wrap names the method and maps a 404 to marketplace.ErrNotFound.
func wrap(method, name string, err error) error {
	if err == nil {
		return nil
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) && ge.Code == http.StatusNotFound {
		return fmt.Errorf("gcp: %s %s: %w: %w", method, name, marketplace.ErrNotFound, err)
	}
	return fmt.Errorf("gcp: %s %s: %w", method, name, err)
}

// Account returns an account.
func (p *Procurement) Account(ctx context.Context, id string) (*cloudcommerceprocurement.Account, error) {
	a, err := p.svc.Providers.Accounts.Get(p.accountName(id)).Context(ctx).Do()
	return a, wrap("accounts.get", id, err)
}

// Accounts returns every account of the provider, all pages.
func (p *Procurement) Accounts(ctx context.Context) ([]*cloudcommerceprocurement.Account, error) {
	var out []*cloudcommerceprocurement.Account
	err := p.svc.Providers.Accounts.List(p.parent()).Pages(ctx, func(r *cloudcommerceprocurement.ListAccountsResponse) error {
		out = append(out, r.Accounts...)
		return nil
	})
	return out, wrap("accounts.list", p.parent(), err)
}

// ApproveAccount grants an account's approval (SignupApproval after sign-up).
func (p *Procurement) ApproveAccount(ctx context.Context, id, approval, reason string) error {
	_, err := p.svc.Providers.Accounts.Approve(p.accountName(id), &cloudcommerceprocurement.ApproveAccountRequest{
		ApprovalName: approval, Reason: reason}).Context(ctx).Do()
	return wrap("accounts.approve", id, err)
}

// RejectAccount refuses an account's approval.
func (p *Procurement) RejectAccount(ctx context.Context, id, approval, reason string) error {
	_, err := p.svc.Providers.Accounts.Reject(p.accountName(id), &cloudcommerceprocurement.RejectAccountRequest{
		ApprovalName: approval, Reason: reason}).Context(ctx).Do()
	return wrap("accounts.reject", id, err)
}

// ResetAccount resets an account's approvals (for testing a sign-up again).
func (p *Procurement) ResetAccount(ctx context.Context, id string) error {
	_, err := p.svc.Providers.Accounts.Reset(p.accountName(id), &cloudcommerceprocurement.ResetAccountRequest{}).Context(ctx).Do()
	return wrap("accounts.reset", id, err)
}

// Entitlement returns an entitlement.
func (p *Procurement) Entitlement(ctx context.Context, id string) (*cloudcommerceprocurement.Entitlement, error) {
	e, err := p.svc.Providers.Entitlements.Get(p.entitlementName(id)).Context(ctx).Do()
	return e, wrap("entitlements.get", id, err)
}

// Entitlements returns every entitlement matching filter (the API's
// syntax, e.g. "state=ACTIVATION_REQUESTED account=E-1234"), all pages.
func (p *Procurement) Entitlements(ctx context.Context, filter string) ([]*cloudcommerceprocurement.Entitlement, error) {
	var out []*cloudcommerceprocurement.Entitlement
	call := p.svc.Providers.Entitlements.List(p.parent())
	if filter != "" {
		call = call.Filter(filter)
	}
	err := call.Pages(ctx, func(r *cloudcommerceprocurement.ListEntitlementsResponse) error {
		out = append(out, r.Entitlements...)
		return nil
	})
	return out, wrap("entitlements.list", filter, err)
}

// SetMessageToUser patches the message shown to the buyer while the
// entitlement waits for the seller (entitlements.patch, mask messageToUser).
func (p *Procurement) SetMessageToUser(ctx context.Context, id, msg string) (*cloudcommerceprocurement.Entitlement, error) {
	e, err := p.svc.Providers.Entitlements.Patch(p.entitlementName(id), &cloudcommerceprocurement.Entitlement{MessageToUser: msg}).
		UpdateMask("messageToUser").Context(ctx).Do()
	return e, wrap("entitlements.patch", id, err)
}

// ApproveEntitlement approves a requested entitlement.
func (p *Procurement) ApproveEntitlement(ctx context.Context, id string) error {
	_, err := p.svc.Providers.Entitlements.Approve(p.entitlementName(id), &cloudcommerceprocurement.ApproveEntitlementRequest{}).Context(ctx).Do()
	return wrap("entitlements.approve", id, err)
}

// RejectEntitlement rejects a requested entitlement.
func (p *Procurement) RejectEntitlement(ctx context.Context, id, reason string) error {
	_, err := p.svc.Providers.Entitlements.Reject(p.entitlementName(id), &cloudcommerceprocurement.RejectEntitlementRequest{Reason: reason}).Context(ctx).Do()
	return wrap("entitlements.reject", id, err)
}

// ApprovePlanChange approves the change to pendingPlan.
func (p *Procurement) ApprovePlanChange(ctx context.Context, id, pendingPlan string) error {
	_, err := p.svc.Providers.Entitlements.ApprovePlanChange(p.entitlementName(id),
		&cloudcommerceprocurement.ApproveEntitlementPlanChangeRequest{PendingPlanName: pendingPlan}).Context(ctx).Do()
	return wrap("entitlements.approvePlanChange", id, err)
}

// RejectPlanChange rejects the change to pendingPlan.
func (p *Procurement) RejectPlanChange(ctx context.Context, id, pendingPlan, reason string) error {
	_, err := p.svc.Providers.Entitlements.RejectPlanChange(p.entitlementName(id),
		&cloudcommerceprocurement.RejectEntitlementPlanChangeRequest{PendingPlanName: pendingPlan, Reason: reason}).Context(ctx).Do()
	return wrap("entitlements.rejectPlanChange", id, err)
}

// SuspendEntitlement suspends an entitlement (Google documents this as
// not yet supported in production).
func (p *Procurement) SuspendEntitlement(ctx context.Context, id, reason string) error {
	_, err := p.svc.Providers.Entitlements.Suspend(p.entitlementName(id), &cloudcommerceprocurement.SuspendEntitlementRequest{Reason: reason}).Context(ctx).Do()
	return wrap("entitlements.suspend", id, err)
}
