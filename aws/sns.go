package aws

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // SNS SignatureVersion 1 is SHA1withRSA
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/keyset"
)

// SNSMessage is an SNS HTTP(S) delivery.
type SNSMessage struct {
	Type             string `json:"Type"`
	MessageID        string `json:"MessageId"`
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

// DecodeSNS parses an SNS delivery; it does not verify it. Its errors
// wrap marketplace.ErrInvalidInput.
func DecodeSNS(body []byte) (*SNSMessage, error) {
	var m SNSMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("aws: %w: SNS message: %w", marketplace.ErrInvalidInput, err)
	}
	switch m.Type {
	case "Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation":
	default:
		return nil, fmt.Errorf("aws: %w: SNS message type %q", marketplace.ErrInvalidInput, m.Type)
	}
	if m.MessageID == "" || m.TopicArn == "" || m.Timestamp == "" {
		return nil, fmt.Errorf("aws: %w: SNS message needs MessageId, TopicArn and Timestamp", marketplace.ErrInvalidInput)
	}
	return &m, nil
}

// StringToSign is the canonical text SNS signs: "key\nvalue\n" for each
// signed field, in order.
func (m *SNSMessage) StringToSign() string {
	var b strings.Builder
	add := func(k, v string) { b.WriteString(k + "\n" + v + "\n") }
	add("Message", m.Message)
	add("MessageId", m.MessageID)
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

// snsHost is the host of SNS's certificates and subscribe URLs.
var snsHost = regexp.MustCompile(`^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$`)

// AWSCertURL is the default rule for SigningCertURL and SubscribeURL:
// https, a host like sns.<region>.amazonaws.com, and (for certificates) a
// path ending in .pem.
func AWSCertURL(u *url.URL) bool {
	return u.Scheme == "https" && u.User == nil && u.Port() == "" && snsHost.MatchString(u.Hostname())
}

// verifySNS checks m's topic against Config.SNSTopicARNs, its certificate
// URL against Config.SNSAllowURL, and its signature (SignatureVersion 1:
// SHA1withRSA, 2: SHA256withRSA) with the certificate, which the key-set
// cache fetches once and keeps (package keyset). A forgery wraps
// marketplace.ErrNotAuthentic; a certificate that cannot be fetched now
// is an error that does not.
func (p *Provider) verifySNS(ctx context.Context, m *SNSMessage) error {
	if !slices.Contains(p.cfg.SNSTopicARNs, m.TopicArn) {
		return fmt.Errorf("aws: SNS: %w: topic %q is not configured", marketplace.ErrNotAuthentic, m.TopicArn)
	}
	var h crypto.Hash
	switch m.SignatureVersion {
	case "1":
		h = crypto.SHA1
	case "2":
		h = crypto.SHA256
	default:
		return fmt.Errorf("aws: SNS: %w: SignatureVersion %q", marketplace.ErrNotAuthentic, m.SignatureVersion)
	}
	u, err := url.Parse(m.SigningCertURL)
	if err != nil || !p.cfg.SNSAllowURL(u) || !strings.HasSuffix(u.Path, ".pem") {
		return fmt.Errorf("aws: SNS: %w: SigningCertURL %q is not an SNS certificate URL", marketplace.ErrNotAuthentic, m.SigningCertURL)
	}
	sig, err := base64.StdEncoding.DecodeString(m.Signature)
	if err != nil {
		return fmt.Errorf("aws: SNS: %w: Signature is not base64", marketplace.ErrNotAuthentic)
	}
	cert, err := p.certs.Key(ctx, u.String(), "")
	var fe *keyset.FetchError
	switch {
	case errors.As(err, &fe) && fe.Temporary():
		return fmt.Errorf("aws: SNS certificate: %w", err) // not the message's fault
	case err != nil:
		return fmt.Errorf("aws: SNS: %w: certificate: %w", marketplace.ErrNotAuthentic, err)
	case !p.deps.Clock().Before(cert.NotAfter):
		return fmt.Errorf("aws: SNS: %w: certificate expired %s", marketplace.ErrNotAuthentic, cert.NotAfter.Format(time.RFC3339))
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("aws: SNS: %w: certificate key is not RSA", marketplace.ErrNotAuthentic)
	}
	var digest []byte
	if h == crypto.SHA1 {
		d := sha1.Sum([]byte(m.StringToSign())) //nolint:gosec // mandated by SignatureVersion 1
		digest = d[:]
	} else {
		d := sha256.Sum256([]byte(m.StringToSign()))
		digest = d[:]
	}
	if err := rsa.VerifyPKCS1v15(pub, h, digest, sig); err != nil {
		return fmt.Errorf("aws: SNS: %w: bad signature", marketplace.ErrNotAuthentic)
	}
	return nil
}

// confirmSNS visits the SubscribeURL of a verified SubscriptionConfirmation.
func (p *Provider) confirmSNS(ctx context.Context, m *SNSMessage) error {
	u, err := url.Parse(m.SubscribeURL)
	if err != nil || !p.cfg.SNSAllowURL(u) {
		return fmt.Errorf("aws: SNS: %w: SubscribeURL %q is not an SNS URL", marketplace.ErrNotAuthentic, m.SubscribeURL)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("aws: confirm SNS subscription: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("aws: confirm SNS subscription: HTTP %d", resp.StatusCode)
	}
	return nil
}

// snsPayload is the Message of an AWS Marketplace SNS notification.
type snsPayload struct {
	Action             string `json:"action"`
	CustomerIdentifier string `json:"customer-identifier"`
	ProductCode        string `json:"product-code"`
	OfferIdentifier    string `json:"offer-identifier"`
	FreeTrial          string `json:"isFreeTrialTermPresent"`
	// License-based products name the buyer by account and license.
	CustomerAWSAccountId string `json:"customer-aws-account-id"`
	LicenseArn           string `json:"license-arn"`
}

// EventOfSNS turns a verified Notification into an Event. Its errors wrap
// marketplace.ErrInvalidInput.
func EventOfSNS(m *SNSMessage) (Event, error) {
	var p snsPayload
	if err := json.Unmarshal([]byte(m.Message), &p); err != nil {
		return Event{}, fmt.Errorf("aws: %w: SNS Message: %w", marketplace.ErrInvalidInput, err)
	}
	if p.Action == "" {
		return Event{}, fmt.Errorf("aws: %w: SNS Message without action", marketplace.ErrInvalidInput)
	}
	t, err := time.Parse(time.RFC3339Nano, m.Timestamp)
	if err != nil {
		return Event{}, fmt.Errorf("aws: %w: SNS Timestamp %q", marketplace.ErrInvalidInput, m.Timestamp)
	}
	return Event{ID: m.MessageID, Time: t, Kind: p.Action, CustomerIdentifier: p.CustomerIdentifier,
		CustomerAWSAccountId: p.CustomerAWSAccountId, LicenseArn: p.LicenseArn, ProductCode: p.ProductCode}, nil
}
