package aws

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/lifecycle"
)

// maxNotification bounds a notification body.
const maxNotification = 256 << 10

// snsTypeHeader is the header SNS sends with every HTTP(S) delivery; an
// EventBridge API destination does not.
const snsTypeHeader = "x-amz-sns-message-type"

// NotificationHandler receives AWS's push deliveries: events from an
// EventBridge API destination and messages of the legacy SNS topics, told
// apart by the x-amz-sns-message-type header that SNS sends.
//
// It authenticates each one, or answers 401 "not authentic" (the detail is
// logged): an EventBridge call must carry Config.EventBridgeHeader with
// Config.EventBridgeSecret (compared in constant time); an SNS message must
// be of one of Config.SNSTopicARNs, with a certificate URL Config.SNSAllowURL
// allows and a valid signature (SignatureVersion 1 or 2). A body over 256
// KiB answers 413: for EventBridge only once the secret is checked (a
// forged call gets 401 unread), for SNS at once (the signature is in the
// body). It decodes it (400 naming what is wrong), stores it in the
// lifecycle engine's inbox, deduplicated by the EventBridge id or SNS
// MessageId, and only then
// answers 204, to a first delivery and a redelivery alike. It applies
// nothing itself: Process does. A store failure answers 500, and AWS
// delivers again; an SNS certificate that cannot be fetched now answers
// 503. An EventBridge event of another source is acknowledged and not
// stored. An SNS SubscriptionConfirmation is confirmed by visiting its
// SubscribeURL (502 if that fails, so that SNS sends it again).
func (p *Provider) NotificationHandler() http.Handler { return notifications{p} }

type notifications struct{ p *Provider }

func (h notifications) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST EventBridge events or SNS messages here", http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get(snsTypeHeader) != "" {
		h.sns(w, r)
		return
	}
	h.eventBridge(w, r)
}

func (h notifications) eventBridge(w http.ResponseWriter, r *http.Request) {
	p := h.p
	secret := p.cfg.EventBridgeSecret
	if secret == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get(p.cfg.EventBridgeHeader)), []byte(secret)) != 1 {
		why := "missing or wrong " + p.cfg.EventBridgeHeader + " header"
		if secret == "" {
			why = "no EventBridge API key is configured (Config.EventBridgeSecret)"
		}
		p.deps.Logger.Warn("AWS EventBridge delivery refused", "err", fmt.Errorf("aws: EventBridge: %w: %s", marketplace.ErrNotAuthentic, why))
		http.Error(w, "not authentic", http.StatusUnauthorized)
		return
	}
	body, ok := lifecycle.ReadBody(w, r, maxNotification)
	if !ok {
		return
	}
	ev, err := DecodeEventBridge(body)
	switch {
	case errors.Is(err, marketplace.ErrUnrelated):
		p.deps.Logger.Info("AWS EventBridge event ignored", "reason", err)
		w.WriteHeader(http.StatusNoContent)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.accept(r.Context(), w, ev)
}

func (h notifications) sns(w http.ResponseWriter, r *http.Request) {
	p := h.p
	body, ok := lifecycle.ReadBody(w, r, maxNotification)
	if !ok {
		return
	}
	m, err := DecodeSNS(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if t := r.Header.Get(snsTypeHeader); t != m.Type {
		http.Error(w, fmt.Sprintf("aws: %v: header %s %q does not match the message's Type %q", marketplace.ErrInvalidInput, snsTypeHeader, t, m.Type), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	if err := p.verifySNS(ctx, m); err != nil {
		if errors.Is(err, marketplace.ErrNotAuthentic) {
			p.deps.Logger.Warn("AWS SNS message refused", "topic", m.TopicArn, "err", err)
			http.Error(w, "not authentic", http.StatusUnauthorized)
			return
		}
		p.deps.Logger.Error("verify AWS SNS message", "err", err)
		http.Error(w, "could not verify the message now; send it again", http.StatusServiceUnavailable)
		return
	}
	switch m.Type {
	case "SubscriptionConfirmation":
		if err := p.confirmSNS(ctx, m); err != nil {
			p.deps.Logger.Error("confirm AWS SNS subscription", "topic", m.TopicArn, "err", err)
			http.Error(w, "could not confirm the subscription", http.StatusBadGateway)
			return
		}
		p.deps.Logger.Info("AWS SNS subscription confirmed", "topic", m.TopicArn)
		w.WriteHeader(http.StatusNoContent)
		return
	case "UnsubscribeConfirmation":
		w.WriteHeader(http.StatusNoContent)
		return
	}
	ev, err := EventOfSNS(m)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.accept(ctx, w, ev)
}

// accept stores ev in the engine's inbox, then answers the delivery.
func (h notifications) accept(ctx context.Context, w http.ResponseWriter, ev Event) {
	p := h.p
	n, err := ev.notification()
	if err == nil {
		var first bool
		first, err = p.e.Accept(ctx, n)
		p.deps.Logger.Debug("AWS notification accepted", "id", ev.ID, "kind", ev.Kind, "first", first)
	}
	switch {
	case errors.Is(err, marketplace.ErrInvalidInput):
		http.Error(w, err.Error(), http.StatusBadRequest)
	case err != nil:
		p.deps.Logger.Error("AWS notification not stored; AWS will deliver it again", "id", ev.ID, "err", err)
		http.Error(w, "could not store the notification; send it again", http.StatusInternalServerError)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// SQSAPI is the part of the official SQS client Run uses.
type SQSAPI interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
}

// Run is the pull loop: with Config.SQS and Config.QueueURL set, it reads
// EventBridge events from that queue (an EventBridge rule's target) until
// ctx ends, stores each in the lifecycle engine's inbox and deletes it
// from the queue only once stored, so one that could not be stored comes
// back after the queue's visibility timeout. A malformed message, or an
// event of another source, is deleted without being stored. Without a
// queue it waits for ctx. It returns nil when ctx ends. It does not apply
// what it stores: the engine's worker (lifecycle.Engine.Run) does.
func (p *Provider) Run(ctx context.Context) error {
	if p.cfg.SQS == nil {
		<-ctx.Done()
		return nil
	}
	queue := awssdk.String(p.cfg.QueueURL)
	log := p.deps.Logger.With("queue", p.cfg.QueueURL)
	for {
		out, err := p.cfg.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: queue, MaxNumberOfMessages: 10, WaitTimeSeconds: 20})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			log.Error("receive AWS events from SQS", "retry_in", p.cfg.SQSBackoff, "err", err)
			t := time.NewTimer(p.cfg.SQSBackoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		for _, m := range out.Messages {
			ev, err := DecodeEventBridge([]byte(awssdk.ToString(m.Body)))
			if err == nil {
				var n marketplace.Notification
				if n, err = ev.notification(); err == nil {
					_, err = p.e.Accept(ctx, n)
				}
			}
			switch {
			case errors.Is(err, marketplace.ErrInvalidInput) || errors.Is(err, marketplace.ErrUnrelated):
				log.Warn("SQS message dropped: not an AWS Marketplace event", "message", awssdk.ToString(m.MessageId), "err", err)
			case err != nil:
				log.Error("AWS event from SQS not stored; it will be received again", "message", awssdk.ToString(m.MessageId), "err", err)
				continue
			}
			if _, err := p.cfg.SQS.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: queue, ReceiptHandle: m.ReceiptHandle}); err != nil {
				log.Error("delete SQS message; it will be received again and deduplicated", "message", awssdk.ToString(m.MessageId), "err", err)
			}
		}
	}
}
