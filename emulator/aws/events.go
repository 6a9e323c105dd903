package aws

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // SNS SignatureVersion 1 is SHA1withRSA
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// snsSigner holds the key and certificate the emulator signs SNS messages
// with; made on first use (RSA key generation takes a moment).
type snsSigner struct {
	once sync.Once
	key  *rsa.PrivateKey
	pem  []byte
	err  error
}

func (s *snsSigner) init() error {
	s.once.Do(func() {
		s.key, s.err = rsa.GenerateKey(rand.Reader, 2048)
		if s.err != nil {
			return
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sns.us-east-1.amazonaws.com (emulator)"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &s.key.PublicKey, s.key)
		if err != nil {
			s.err = err
			return
		}
		s.pem = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	})
	return s.err
}

// SNSCertPath is where the emulator serves its SNS signing certificate.
const SNSCertPath = "/emulator/SimpleNotificationService-emulator.pem"

func (e *Emulator) serveSNSCert(w http.ResponseWriter, _ *http.Request) {
	if err := e.sns.init(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(e.sns.pem)
}

// SNSMessage is an SNS HTTP(S) delivery as the emulator signs it.
type SNSMessage struct {
	Type             string `json:"Type"`
	MessageId        string `json:"MessageId"`
	Token            string `json:"Token,omitempty"`
	TopicArn         string `json:"TopicArn"`
	Subject          string `json:"Subject,omitempty"`
	Message          string `json:"Message"`
	SubscribeURL     string `json:"SubscribeURL,omitempty"`
	UnsubscribeURL   string `json:"UnsubscribeURL,omitempty"`
	Timestamp        string `json:"Timestamp"`
	SignatureVersion string `json:"SignatureVersion"`
	Signature        string `json:"Signature"`
	SigningCertURL   string `json:"SigningCertURL"`
}

func (m *SNSMessage) stringToSign() string {
	var b strings.Builder
	add := func(k, v string) { b.WriteString(k + "\n" + v + "\n") }
	add("Message", m.Message)
	add("MessageId", m.MessageId)
	if m.Type == "Notification" {
		if m.Subject != "" {
			add("Subject", m.Subject)
		}
	} else {
		add("SubscribeURL", m.SubscribeURL)
	}
	add("Timestamp", m.Timestamp)
	if m.Type != "Notification" {
		add("Token", m.Token)
	}
	add("TopicArn", m.TopicArn)
	add("Type", m.Type)
	return b.String()
}

// Sign sets SignatureVersion (1 or 2), SigningCertURL and Signature.
func (e *Emulator) Sign(m *SNSMessage, version int, certURL string) error {
	if err := e.sns.init(); err != nil {
		return err
	}
	m.SignatureVersion = fmt.Sprint(version)
	m.SigningCertURL = certURL
	var sig []byte
	var err error
	switch version {
	case 1:
		d := sha1.Sum([]byte(m.stringToSign())) //nolint:gosec // SignatureVersion 1
		sig, err = rsa.SignPKCS1v15(rand.Reader, e.sns.key, crypto.SHA1, d[:])
	case 2:
		d := sha256.Sum256([]byte(m.stringToSign()))
		sig, err = rsa.SignPKCS1v15(rand.Reader, e.sns.key, crypto.SHA256, d[:])
	default:
		return fmt.Errorf("emulator: SignatureVersion %d", version)
	}
	if err != nil {
		return err
	}
	m.Signature = base64.StdEncoding.EncodeToString(sig)
	return nil
}

// SNSNotification returns a signed notification of an AWS Marketplace
// subscription topic: action is subscribe-success, subscribe-fail,
// unsubscribe-pending, unsubscribe-success or entitlement-updated.
func (e *Emulator) SNSNotification(topicArn, action, buyerKey string, version int, certURL string) (*SNSMessage, error) {
	e.mu.Lock()
	b, ok := e.buyers[buyerKey]
	var payload map[string]string
	if ok {
		payload = map[string]string{"action": action, "customer-identifier": b.CustomerIdentifier, "product-code": b.ProductCode,
			"offer-identifier": "offer-emulator", "isFreeTrialTermPresent": "false"}
		if b.CustomerIdentifier == "" {
			payload["customer-aws-account-id"], payload["license-arn"] = b.CustomerAWSAccountId, b.LicenseArn
		}
	}
	now := e.cfg.Clock()
	if ok {
		switch action {
		case "unsubscribe-pending": // metering stays open for the final hour
			b.Subscribed, b.EndedAt = false, now
		case "unsubscribe-success":
			b.Subscribed = false
		case "subscribe-fail": // the subscription never started: nothing to meter, no final hour
			b.Subscribed, b.EndedAt = false, time.Time{}
		case "subscribe-success":
			b.Subscribed, b.EndedAt = true, time.Time{}
		}
	}
	e.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w %q", errNoBuyer, buyerKey)
	}
	msg, _ := json.Marshal(payload)
	m := &SNSMessage{Type: "Notification", MessageId: uuid.NewString(), TopicArn: topicArn, Message: string(msg),
		Timestamp: now.UTC().Format("2006-01-02T15:04:05.000Z"), UnsubscribeURL: "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"}
	return m, e.Sign(m, version, certURL)
}

// SNSSubscriptionConfirmation returns a signed SubscriptionConfirmation
// whose SubscribeURL the receiver must visit.
func (e *Emulator) SNSSubscriptionConfirmation(topicArn, subscribeURL string, version int, certURL string) (*SNSMessage, error) {
	m := &SNSMessage{Type: "SubscriptionConfirmation", MessageId: uuid.NewString(), Token: uuid.NewString(), TopicArn: topicArn,
		Message: "You have chosen to subscribe to the topic " + topicArn + ".", SubscribeURL: subscribeURL,
		Timestamp: e.cfg.Clock().UTC().Format("2006-01-02T15:04:05.000Z")}
	return m, e.Sign(m, version, certURL)
}

// EventBridgeEvent returns an EventBridge event of source
// aws.agreement-marketplace about the buyer with key, e.g. detailType
// "License Deprovisioned - Manufacturer". Deprovisioning and agreement
// ends unsubscribe the buyer after it.
func (e *Emulator) EventBridgeEvent(detailType, buyerKey string) ([]byte, error) {
	e.mu.Lock()
	b, ok := e.buyers[buyerKey]
	var detail map[string]any
	if ok {
		detail = map[string]any{
			"requestId": uuid.NewString(),
			"agreement": map[string]string{"id": "agmt-" + strings.ReplaceAll(b.CustomerAWSAccountId, "-", ""), "status": "ACTIVE"},
			"acceptor":  map[string]string{"accountId": b.CustomerAWSAccountId},
			"proposer":  map[string]string{"accountId": "999999999999"},
			"product":   map[string]string{"id": "prod-" + b.ProductCode, "code": b.ProductCode},
		}
		if b.LicenseArn != "" && strings.HasPrefix(detailType, "License ") {
			// As AWS documents it: another form than ResolveCustomer's ARN.
			detail["license"] = map[string]string{"arn": eventLicenseArn(b)}
		}
	}
	now := e.cfg.Clock()
	if ok && strings.HasPrefix(detailType, "License Deprovisioned") {
		b.Subscribed, b.EndedAt = false, now // metering stays open for the final hour
	}
	e.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w %q", errNoBuyer, buyerKey)
	}
	return json.Marshal(map[string]any{
		"version": "0", "id": uuid.NewString(), "detail-type": detailType, "source": "aws.agreement-marketplace",
		"account": "999999999999", "time": now.UTC().Format(time.RFC3339), "region": "us-east-1",
		"resources": []string{}, "detail": detail,
	})
}

// eventLicenseArn writes a license ARN as AWS's EventBridge examples do:
// aws:license-manager:<region>:<account>:l-…
func eventLicenseArn(b *Buyer) string {
	id := b.LicenseArn[strings.LastIndex(b.LicenseArn, ":")+1:]
	return "aws:license-manager:us-east-1:" + b.CustomerAWSAccountId + ":" + id
}

// Deliver POSTs a notification body to endpoint with the given headers,
// as SNS or an EventBridge API destination would, and returns the HTTP
// status.
func Deliver(ctx context.Context, client *http.Client, endpoint string, body []byte, header http.Header) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, nil
}

// SendEventBridge sends an EventBridge event about the buyer with key to
// Notify.EventBridgeEndpoint and returns the receiver's HTTP status.
func (e *Emulator) SendEventBridge(ctx context.Context, detailType, buyerKey string) (int, error) {
	n := e.cfg.Notify
	if n.EventBridgeEndpoint == "" {
		return 0, fmt.Errorf("emulator: no EventBridge endpoint configured")
	}
	body, err := e.EventBridgeEvent(detailType, buyerKey)
	if err != nil {
		return 0, err
	}
	h := http.Header{}
	if n.EventBridgeHeader != "" {
		h.Set(n.EventBridgeHeader, n.EventBridgeSecret)
	}
	return Deliver(ctx, n.Client, n.EventBridgeEndpoint, body, h)
}

// SendSNS sends a signed SNS notification (SignatureVersion 2) with action
// about the buyer with key to Notify.SNSEndpoint.
func (e *Emulator) SendSNS(ctx context.Context, action, buyerKey string) (int, error) {
	n := e.cfg.Notify
	if n.SNSEndpoint == "" || n.SNSTopicArn == "" || n.SNSCertURL == "" {
		return 0, fmt.Errorf("emulator: SNS endpoint, topic and certificate URL must be configured")
	}
	m, err := e.SNSNotification(n.SNSTopicArn, action, buyerKey, 2, n.SNSCertURL)
	if err != nil {
		return 0, err
	}
	body, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	h := http.Header{}
	h.Set("x-amz-sns-message-type", m.Type)
	h.Set("x-amz-sns-message-id", m.MessageId)
	h.Set("x-amz-sns-topic-arn", m.TopicArn)
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	return Deliver(ctx, n.Client, n.SNSEndpoint, body, h)
}
