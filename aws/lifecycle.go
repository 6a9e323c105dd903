package aws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/lifecycle"
)

// What a lifecycle notification asks for.
const (
	actionActivate = "activate"
	actionFail     = "fail"
	actionFlush    = "flush"   // final usage, subscription still on
	actionEnd      = "end"     // cancelled; the engine seals the final usage
	actionRefresh  = "refresh" // entitlements changed
)

// The SNS actions (legacy topics) and EventBridge detail-types (source
// aws.agreement-marketplace), and what each does.
var actions = map[string]string{
	"subscribe-success":   actionActivate,
	"subscribe-fail":      actionFail,
	"unsubscribe-pending": actionFlush,
	"unsubscribe-success": actionEnd,
	"entitlement-updated": actionRefresh,

	"Purchase Agreement Created - Manufacturer": actionActivate,
	"Purchase Agreement Amended - Manufacturer": actionRefresh,
	"Purchase Agreement Ended - Manufacturer":   actionFlush,
	"License Updated - Manufacturer":            actionRefresh,
	"License Deprovisioned - Manufacturer":      actionEnd,
	"Purchase Agreement Created - Proposer":     actionActivate,
	"Purchase Agreement Amended - Proposer":     actionRefresh,
	"Purchase Agreement Ended - Proposer":       actionFlush,
}

// Event is one lifecycle notification, from SNS or EventBridge, as
// NotificationHandler and Run decode it; it is the Payload (as JSON) of the
// marketplace.Notification they store.
type Event struct {
	// ID dedupes redeliveries (SNS MessageId, EventBridge id).
	ID string
	// Time is when AWS issued it; older than the stored state is ignored.
	Time time.Time
	// Kind is the SNS action or the EventBridge detail-type.
	Kind                 string
	CustomerIdentifier   string
	CustomerAWSAccountId string
	LicenseArn           string
	ProductCode          string
}

// notification is ev as the lifecycle engine stores it.
func (ev Event) notification() (marketplace.Notification, error) {
	payload, err := json.Marshal(ev)
	if err != nil {
		return marketplace.Notification{}, err
	}
	subject := ev.CustomerIdentifier
	if id := licenseID(ev.LicenseArn); id != "" {
		subject = id
	} else if subject == "" {
		subject = ev.CustomerAWSAccountId
	}
	return marketplace.Notification{Provider: marketplace.AWS, ID: ev.ID, Kind: ev.Kind, Subject: subject, Time: ev.Time, Payload: payload}, nil
}

// licenseIDPattern finds a license's id (l-…) at the end of its ARN. AWS
// writes license ARNs in more than one form (ResolveCustomer:
// arn:aws:license-manager::<account>:license:l-…; the documented
// EventBridge example: aws:license-manager:<region>:<account>:l-…), so
// events are matched to subscriptions on the id.
var licenseIDPattern = regexp.MustCompile(`(?:^|[:/])(l-[0-9A-Za-z]+)$`)

func licenseID(arn string) string {
	if m := licenseIDPattern.FindStringSubmatch(arn); m != nil {
		return m[1]
	}
	return ""
}

// Process applies one stored AWS notification; it is the
// lifecycle.Handler of AWS notifications, run by the engine's worker after
// the delivery was answered.
//
// It finds the subscription the event is about from the store's index:
// SNS messages name the CustomerIdentifier (or, for license-based
// products, the account and license); EventBridge events name the acceptor
// account and, for License events, the license, matched on its l-… id
// (license_id) or else on the account (aws_account_id). An event about a
// license nobody registered yet makes a new subscription in license mode;
// any other event about an unknown buyer, or of another product or kind,
// is acknowledged and changes nothing (marketplace.ErrUnrelated): the
// landing page creates the subscription.
//
// Then, through the engine's Update (so an event older than the stored
// state changes nothing): subscribe-success and Purchase Agreement Created
// activate; subscribe-fail, unsubscribe-success and License Deprovisioned
// cancel (and the engine seals the buyer's usage: the final flush).
// unsubscribe-pending and Purchase Agreement Ended keep the state and seal
// the buyer's usage at once (e.Seal): AWS accepts it for one more hour.
// entitlement-updated, License Updated and Purchase Agreement Amended
// re-read the buyer's entitlements with GetEntitlements (AWS's only read
// of a buyer's state) and drop its cached answers; a failed read is
// retried with backoff.
func (p *Provider) Process(ctx context.Context, n *marketplace.Notification) error {
	var ev Event
	if err := json.Unmarshal(n.Payload, &ev); err != nil || ev.ID == "" {
		return marketplace.Permanent(fmt.Errorf("aws: notification %s: %w: not an AWS event (%v)", n.ID, marketplace.ErrInvalidInput, err))
	}
	action, ok := actions[ev.Kind]
	switch {
	case !ok:
		return fmt.Errorf("aws: %w: kind %q", marketplace.ErrUnrelated, ev.Kind)
	case ev.ProductCode != "" && ev.ProductCode != p.cfg.ProductCode:
		return fmt.Errorf("aws: %w: product %q", marketplace.ErrUnrelated, ev.ProductCode)
	}
	b, err := p.find(ctx, &ev)
	if err != nil {
		return err
	}
	switch action {
	case actionFlush:
		_, err = p.e.Seal(ctx, marketplace.AWS, b.customer)
	case actionRefresh:
		err = p.refreshEntitlements(ctx, b.customer)
	default:
		err = p.setStatus(ctx, action, ev, b)
	}
	if err != nil {
		return fmt.Errorf("aws: apply %s %s: %w", ev.Kind, ev.ID, err)
	}
	return nil
}

// setStatus applies an activating or ending event to the subscription.
func (p *Provider) setStatus(ctx context.Context, action string, ev Event, b buyer) error {
	status := marketplace.StatusCancelled
	if action == actionActivate {
		status = marketplace.StatusActive
	}
	res, err := p.e.Update(ctx, lifecycle.Change{Provider: marketplace.AWS, ID: b.subID, Init: b.init, CloudTime: ev.Time,
		Apply: func(s *marketplace.Subscription) bool {
			switch {
			case status == marketplace.StatusActive && s.Status == marketplace.StatusPending && s.Version > 0:
				return false // awaiting the landing page's link, which activates
			case action == actionFail && s.Status == marketplace.StatusActive:
				return false // a failed attempt does not end a live subscription
			case s.Status == status:
				return false
			}
			s.Status = status
			return true
		}})
	if err != nil {
		return err
	}
	if res.Stale {
		p.deps.Logger.Info("stale AWS notification ignored", "id", ev.ID, "kind", ev.Kind, "subscription", b.subID)
	}
	return nil
}

// buyer is whom an event is about: a subscription id, its customer, and
// (when none is stored yet) the subscription to create.
type buyer struct {
	subID, customer string
	init            *marketplace.Subscription
}

// find returns whom ev is about, from the store's index: by license id,
// by CustomerIdentifier (the subscription id in product-code mode), or by
// account. It fills in ev.LicenseArn from a stored subscription.
func (p *Provider) find(ctx context.Context, ev *Event) (buyer, error) {
	store := p.deps.Store
	lookups := []func() ([]marketplace.Subscription, error){
		func() ([]marketplace.Subscription, error) {
			if lid := licenseID(ev.LicenseArn); lid != "" {
				return store.FindSubscriptionsByAttribute(ctx, marketplace.AWS, keyLicenseID, lid)
			}
			return nil, nil
		},
		func() ([]marketplace.Subscription, error) {
			if ev.CustomerIdentifier == "" || p.cfg.LicenseMode {
				return nil, nil
			}
			s, err := store.GetSubscription(ctx, marketplace.AWS, ev.CustomerIdentifier)
			if errors.Is(err, marketplace.ErrNotFound) {
				return nil, nil
			}
			if err != nil {
				return nil, err
			}
			return []marketplace.Subscription{*s}, nil
		},
		func() ([]marketplace.Subscription, error) {
			if ev.CustomerAWSAccountId == "" || ev.LicenseArn != "" || ev.CustomerIdentifier != "" {
				return nil, nil // the event names its buyer more precisely
			}
			return store.FindSubscriptionsByAttribute(ctx, marketplace.AWS, keyAccountID, ev.CustomerAWSAccountId)
		},
	}
	for _, lookup := range lookups {
		subs, err := lookup()
		if err != nil {
			return buyer{}, fmt.Errorf("aws: find the subscription of event %s: %w", ev.ID, err)
		}
		var ours []marketplace.Subscription
		for _, s := range subs {
			if s.ProductCode == p.cfg.ProductCode {
				ours = append(ours, s)
			}
		}
		switch len(ours) {
		case 0:
			continue
		case 1:
			if arn := ours[0].Attributes[keyLicenseArn]; arn != "" {
				ev.LicenseArn = arn
			}
			return buyer{subID: ours[0].ID, customer: ours[0].CustomerID}, nil
		}
		return buyer{}, fmt.Errorf("aws: %w: %d subscriptions of account %q; the event names none of them", marketplace.ErrUnrelated, len(ours), ev.CustomerAWSAccountId)
	}
	// None stored: SNS names the buyer, and so does a License event in
	// license mode; an agreement event (no license) cannot name one.
	if ev.CustomerIdentifier == "" && (!p.cfg.LicenseMode || ev.LicenseArn == "" || ev.CustomerAWSAccountId == "") {
		return buyer{}, fmt.Errorf("aws: %w: no subscription known for account %q, license %q", marketplace.ErrUnrelated, ev.CustomerAWSAccountId, ev.LicenseArn)
	}
	cust, subID, err := p.customerOf(ev.CustomerIdentifier, ev.CustomerAWSAccountId, ev.LicenseArn)
	if err != nil {
		return buyer{}, marketplace.Permanent(fmt.Errorf("aws: event %s: %w", ev.ID, err))
	}
	return buyer{subID: subID, customer: cust, init: &marketplace.Subscription{CustomerID: cust, ProductCode: p.cfg.ProductCode,
		Attributes: buyerAttributes(ev.CustomerIdentifier, ev.CustomerAWSAccountId, ev.LicenseArn)}}, nil
}

// refreshEntitlements replaces a customer's stored entitlements with what
// GetEntitlements says now (when Config.Entitlements is set) and drops its
// cached answers.
func (p *Provider) refreshEntitlements(ctx context.Context, customer string) error {
	defer p.e.Invalidate(marketplace.AWS, customer)
	if p.cfg.Entitlements == nil {
		return nil
	}
	f := EntitlementFilter{CustomerIdentifier: []string{customer}}
	if p.cfg.LicenseMode {
		acct, lic, err := ParseLicenseCustomer(customer)
		if err != nil {
			return marketplace.Permanent(err)
		}
		f = EntitlementFilter{CustomerAWSAccountId: []string{acct}, LicenseArn: []string{lic}}
	}
	customers, err := replaceEntitlements(ctx, p.ents, p.cfg.Entitlements, p.cfg.ProductCode, f)
	for _, c := range customers {
		p.e.Invalidate(marketplace.AWS, c)
	}
	return err
}

// eventBridgeEvent is an EventBridge event as an API destination or an SQS
// target receives it.
type eventBridgeEvent struct {
	Version    string          `json:"version"`
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Time       time.Time       `json:"time"`
	Region     string          `json:"region"`
	Resources  []string        `json:"resources"`
	Detail     json.RawMessage `json:"detail"`
}

// agreementDetail holds the parts of an aws.agreement-marketplace
// event's detail this package reads: the acceptor (buyer) account, the
// product and the license.
type agreementDetail struct {
	Agreement struct {
		ID string `json:"id"`
	} `json:"agreement"`
	Acceptor struct {
		AccountID string `json:"accountId"`
	} `json:"acceptor"`
	Product struct {
		ID   string `json:"id"`
		Code string `json:"code"`
	} `json:"product"`
	License struct {
		Arn string `json:"arn"`
	} `json:"license"`
	LicenseArn         string `json:"licenseArn"`
	CustomerIdentifier string `json:"customerIdentifier"`
}

// EventBridgeSource is the source of AWS Marketplace agreement events.
const EventBridgeSource = "aws.agreement-marketplace"

// DecodeEventBridge reads an EventBridge event of source
// aws.agreement-marketplace. A malformed event wraps
// marketplace.ErrInvalidInput; one of another source wraps
// marketplace.ErrUnrelated.
func DecodeEventBridge(body []byte) (Event, error) {
	var e eventBridgeEvent
	if err := json.Unmarshal(body, &e); err != nil {
		return Event{}, fmt.Errorf("aws: %w: EventBridge event: %w", marketplace.ErrInvalidInput, err)
	}
	if e.Source != EventBridgeSource {
		return Event{}, fmt.Errorf("aws: %w: source %q", marketplace.ErrUnrelated, e.Source)
	}
	if e.ID == "" || e.DetailType == "" || e.Time.IsZero() {
		return Event{}, fmt.Errorf("aws: %w: EventBridge event needs id, detail-type and time", marketplace.ErrInvalidInput)
	}
	var d agreementDetail
	if len(e.Detail) > 0 {
		if err := json.Unmarshal(e.Detail, &d); err != nil {
			return Event{}, fmt.Errorf("aws: %w: EventBridge detail: %w", marketplace.ErrInvalidInput, err)
		}
	}
	lic := d.LicenseArn
	if lic == "" {
		lic = d.License.Arn
	}
	return Event{ID: e.ID, Time: e.Time, Kind: e.DetailType, CustomerIdentifier: d.CustomerIdentifier,
		CustomerAWSAccountId: d.Acceptor.AccountID, LicenseArn: lic, ProductCode: d.Product.Code}, nil
}
