package aws

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/saasmarket/marketplace"
)

// What a lifecycle notification asks for.
const (
	actionActivate = "activate"
	actionFail     = "fail"
	actionFlush    = "flush"   // final usage, subscription still on
	actionEnd      = "end"     // cancelled, with a final flush
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

// Event is one lifecycle notification, from SNS or EventBridge.
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

// ErrUnknownEvent is returned for a notification this package does not
// act on (another product, another source); it is acknowledged, not retried.
var ErrUnknownEvent = errors.New("aws: notification not for this integration")

// Apply acts on a lifecycle event once: it is deduped by ID (durably, in
// the NotificationLog), ignored if older than the stored subscription's
// CloudUpdated, and then activates, cancels, refreshes entitlements, or
// seals the buyer's usage for the final report (unsubscribe-pending,
// License Deprovisioned: AWS accepts it for one more hour; the Reporter
// sends sealed buckets on its next round).
func (p *Provider) Apply(ctx context.Context, ev Event) error {
	action, ok := actions[ev.Kind]
	if !ok {
		return fmt.Errorf("%w: kind %q", ErrUnknownEvent, ev.Kind)
	}
	if ev.ProductCode != "" && ev.ProductCode != p.cfg.ProductCode {
		return fmt.Errorf("%w: product %q", ErrUnknownEvent, ev.ProductCode)
	}
	if ev.ID == "" {
		return fmt.Errorf("%w: notification without an id", ErrInvalidInput)
	}
	cust, subID, err := p.eventCustomer(ctx, &ev)
	if err != nil {
		return err
	}
	done, err := p.cfg.Notifications.Processed(ctx, marketplace.AWS, ev.ID)
	if err != nil {
		return fmt.Errorf("aws: notification log: %w", err)
	}
	if done {
		return nil
	}
	if err := p.apply(ctx, action, ev, cust, subID); err != nil {
		return err
	}
	if _, err := p.cfg.Notifications.MarkProcessed(ctx, marketplace.AWS, ev.ID, p.cfg.Clock().Add(p.cfg.NotificationTTL)); err != nil {
		return fmt.Errorf("aws: notification log: %w", err)
	}
	return nil
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

// eventCustomer finds whom an event is about. SNS messages name the
// CustomerIdentifier; EventBridge events name the acceptor account and
// (License events) the license, so they are matched to a stored
// subscription by license id, or by account for events without a license.
// An event about a license nobody registered yet names a new subscription
// in license mode; otherwise it is acknowledged and ignored
// (ErrUnknownEvent): the landing page or a later event creates it.
func (p *Provider) eventCustomer(ctx context.Context, ev *Event) (cust, subID string, err error) {
	if ev.CustomerIdentifier != "" {
		return p.customerOf(ev.CustomerIdentifier, ev.CustomerAWSAccountId, ev.LicenseArn)
	}
	lid := licenseID(ev.LicenseArn)
	if lid != "" || ev.CustomerAWSAccountId != "" {
		subs, err := p.cfg.Subscriptions.ListSubscriptions(ctx, marketplace.SubscriptionFilter{Provider: marketplace.AWS})
		if err != nil {
			return "", "", fmt.Errorf("aws: find the event's subscription: %w", err)
		}
		var byAccount []marketplace.Subscription
		for _, s := range subs {
			if s.ProductCode != p.cfg.ProductCode {
				continue
			}
			if lid != "" && licenseID(s.Attributes["license_arn"]) == lid {
				ev.LicenseArn = s.Attributes["license_arn"]
				return s.CustomerID, s.ID, nil
			}
			if lid == "" && s.Attributes["customer_aws_account_id"] == ev.CustomerAWSAccountId {
				byAccount = append(byAccount, s)
			}
		}
		if len(byAccount) == 1 {
			return byAccount[0].CustomerID, byAccount[0].ID, nil
		}
	}
	if p.cfg.LicenseMode && ev.LicenseArn != "" && ev.CustomerAWSAccountId != "" {
		return p.customerOf("", ev.CustomerAWSAccountId, ev.LicenseArn)
	}
	return "", "", fmt.Errorf("%w: no subscription known for account %q, license %q", ErrUnknownEvent, ev.CustomerAWSAccountId, ev.LicenseArn)
}

func (p *Provider) apply(ctx context.Context, action string, ev Event, cust, subID string) error {
	init := marketplace.Subscription{ID: subID, CustomerID: cust, Provider: marketplace.AWS, ProductCode: p.cfg.ProductCode,
		Attributes: map[string]string{"customer_identifier": ev.CustomerIdentifier, "customer_aws_account_id": ev.CustomerAWSAccountId, "license_arn": ev.LicenseArn}}
	stale := false
	setStatus := func(status string) error {
		_, err := p.update(ctx, subID, init, func(s *marketplace.Subscription) bool {
			if !ev.Time.IsZero() && ev.Time.Before(s.CloudUpdated) {
				stale = true
				return false
			}
			switch {
			case status == marketplace.StatusActive && s.Status == marketplace.StatusPending && s.Version > 0:
				// Awaiting the landing page's link; it activates.
			case status == marketplace.StatusCancelled && s.Status == marketplace.StatusActive && action == actionFail:
				return false // a failed attempt does not end a live subscription
			default:
				s.Status = status
			}
			if ev.Time.After(s.CloudUpdated) {
				s.CloudUpdated = ev.Time
			}
			return true
		})
		return err
	}
	var err error
	switch action {
	case actionActivate:
		err = setStatus(marketplace.StatusActive)
	case actionFail:
		err = setStatus(marketplace.StatusCancelled)
	case actionEnd:
		if err = setStatus(marketplace.StatusCancelled); err == nil && !stale {
			err = p.finalFlush(ctx, cust)
		}
	case actionFlush:
		err = p.finalFlush(ctx, cust)
	case actionRefresh:
		err = p.RefreshEntitlements(ctx, cust)
	}
	if err != nil {
		return fmt.Errorf("aws: apply %s %s: %w", ev.Kind, ev.ID, err)
	}
	if stale {
		p.cfg.Logger.Info("stale AWS notification ignored", "id", ev.ID, "kind", ev.Kind, "customer", cust)
	}
	return nil
}

func (p *Provider) finalFlush(ctx context.Context, cust string) error {
	n, err := p.cfg.Ledger.SealCustomer(ctx, marketplace.AWS, cust)
	if err != nil {
		return fmt.Errorf("final usage flush: %w", err)
	}
	p.cfg.Logger.Info("final usage sealed for AWS buyer", "customer", cust, "buckets", n)
	return nil
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
// aws.agreement-marketplace.
func DecodeEventBridge(body []byte) (Event, error) {
	var e eventBridgeEvent
	if err := json.Unmarshal(body, &e); err != nil {
		return Event{}, fmt.Errorf("%w: EventBridge event: %w", ErrInvalidInput, err)
	}
	if e.Source != EventBridgeSource {
		return Event{}, fmt.Errorf("%w: source %q", ErrUnknownEvent, e.Source)
	}
	if e.ID == "" || e.DetailType == "" || e.Time.IsZero() {
		return Event{}, fmt.Errorf("%w: EventBridge event needs id, detail-type and time", ErrInvalidInput)
	}
	var d agreementDetail
	if len(e.Detail) > 0 {
		if err := json.Unmarshal(e.Detail, &d); err != nil {
			return Event{}, fmt.Errorf("%w: EventBridge detail: %w", ErrInvalidInput, err)
		}
	}
	lic := d.LicenseArn
	if lic == "" {
		lic = d.License.Arn
	}
	code := d.Product.Code
	return Event{ID: e.ID, Time: e.Time, Kind: e.DetailType, CustomerIdentifier: d.CustomerIdentifier,
		CustomerAWSAccountId: d.Acceptor.AccountID, LicenseArn: lic, ProductCode: code}, nil
}

// maxNotification bounds a notification body.
const maxNotification = 256 << 10

// EventBridgeHandler receives events from an EventBridge API destination.
// The connection's API key authorization sends header with the secret
// value; a request without it, or with another value (compared in
// constant time), gets 401 and changes nothing. Malformed events get 400;
// failures to apply get 500, so that EventBridge retries.
func (p *Provider) EventBridgeHandler(header, secret string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST EventBridge events here", http.StatusMethodNotAllowed)
			return
		}
		if secret == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get(header)), []byte(secret)) != 1 {
			http.Error(w, "missing or wrong "+header+" header", http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxNotification))
		if err != nil {
			http.Error(w, "unreadable body: "+err.Error(), http.StatusBadRequest)
			return
		}
		ev, err := DecodeEventBridge(body)
		if err == nil {
			err = p.Apply(r.Context(), ev)
		}
		p.answer(w, err)
	})
}

// answer maps Apply's error to the notification's HTTP answer.
func (p *Provider) answer(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, ErrUnknownEvent):
		w.WriteHeader(http.StatusNoContent) // acknowledged, nothing to do
	case errors.Is(err, ErrInvalidInput):
		http.Error(w, err.Error(), http.StatusBadRequest)
	default:
		p.cfg.Logger.Error("apply AWS notification", "err", err)
		http.Error(w, "could not apply the notification; retry", http.StatusInternalServerError)
	}
}

// SQSAPI is the part of the official SQS client PollSQS uses.
type SQSAPI interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
}

// PollSQS reads EventBridge events from an SQS queue (an EventBridge rule
// with the queue as target) until ctx is done. A message is deleted once
// applied (or found malformed or not ours); one that fails to apply stays
// and comes back after the queue's visibility timeout.
func (p *Provider) PollSQS(ctx context.Context, client SQSAPI, queueURL string) error {
	for {
		out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: awssdk.String(queueURL), MaxNumberOfMessages: 10, WaitTimeSeconds: 20})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			p.cfg.Logger.Error("receive AWS events from SQS", "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Second):
			}
			continue
		}
		for _, m := range out.Messages {
			ev, err := DecodeEventBridge([]byte(awssdk.ToString(m.Body)))
			if err == nil {
				err = p.Apply(ctx, ev)
			}
			if err != nil && !errors.Is(err, ErrUnknownEvent) && !errors.Is(err, ErrInvalidInput) {
				p.cfg.Logger.Error("apply AWS event from SQS; it will be redelivered", "err", err)
				continue
			}
			if err != nil {
				p.cfg.Logger.Warn("AWS event from SQS dropped", "err", err)
			}
			if _, err := client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: awssdk.String(queueURL), ReceiptHandle: m.ReceiptHandle}); err != nil {
				p.cfg.Logger.Error("delete SQS message", "err", err)
			}
		}
	}
}
