package aws

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // SNS SignatureVersion 1 is SHA1withRSA
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
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

// ErrSNSSignature is wrapped by every refused SNS message.
var ErrSNSSignature = errors.New("aws: SNS message not authentic")

// DecodeSNS parses an SNS delivery; it does not verify it.
func DecodeSNS(body []byte) (*SNSMessage, error) {
	var m SNSMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%w: SNS message: %w", ErrInvalidInput, err)
	}
	switch m.Type {
	case "Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation":
	default:
		return nil, fmt.Errorf("%w: SNS message type %q", ErrInvalidInput, m.Type)
	}
	if m.MessageID == "" || m.TopicArn == "" || m.Timestamp == "" {
		return nil, fmt.Errorf("%w: SNS message needs MessageId, TopicArn and Timestamp", ErrInvalidInput)
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

// SNSVerifier checks SNS signatures (SignatureVersion 1: SHA1withRSA, 2:
// SHA256withRSA) with certificates fetched from allowed URLs and cached,
// and that the TopicArn is one of the configured topics.
type SNSVerifier struct {
	// TopicARNs allowed; a message of any other topic is refused.
	TopicARNs []string
	// AllowURL decides which certificate and subscribe URLs may be
	// fetched; default AWSCertURL. Tests allow the emulator's host.
	AllowURL func(*url.URL) bool
	// HTTPClient fetches certificates and confirms subscriptions.
	HTTPClient *http.Client
	// MaxCerts bounds the certificate cache; default 32.
	MaxCerts int

	mu    sync.Mutex
	certs map[string]*x509.Certificate
}

func (v *SNSVerifier) allow(u *url.URL) bool {
	if v.AllowURL != nil {
		return v.AllowURL(u)
	}
	return AWSCertURL(u)
}

// client is HTTPClient (or a default one) that never follows redirects:
// a certificate must come from the URL that was checked.
func (v *SNSVerifier) client() *http.Client {
	c := http.Client{Timeout: 10 * time.Second}
	if v.HTTPClient != nil {
		c = *v.HTTPClient
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

// Verify checks m's topic, certificate URL and signature.
func (v *SNSVerifier) Verify(ctx context.Context, m *SNSMessage) error {
	if !slices.Contains(v.TopicARNs, m.TopicArn) {
		return fmt.Errorf("%w: topic %q is not configured", ErrSNSSignature, m.TopicArn)
	}
	var h crypto.Hash
	switch m.SignatureVersion {
	case "1":
		h = crypto.SHA1
	case "2":
		h = crypto.SHA256
	default:
		return fmt.Errorf("%w: SignatureVersion %q", ErrSNSSignature, m.SignatureVersion)
	}
	u, err := url.Parse(m.SigningCertURL)
	if err != nil || !v.allow(u) || !strings.HasSuffix(u.Path, ".pem") {
		return fmt.Errorf("%w: SigningCertURL %q is not an SNS certificate URL", ErrSNSSignature, m.SigningCertURL)
	}
	sig, err := base64.StdEncoding.DecodeString(m.Signature)
	if err != nil {
		return fmt.Errorf("%w: Signature is not base64", ErrSNSSignature)
	}
	cert, err := v.cert(ctx, u.String())
	if err != nil {
		return err
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("%w: certificate key is not RSA", ErrSNSSignature)
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
		return fmt.Errorf("%w: bad signature", ErrSNSSignature)
	}
	return nil
}

func (v *SNSVerifier) cert(ctx context.Context, certURL string) (*x509.Certificate, error) {
	v.mu.Lock()
	c, ok := v.certs[certURL]
	v.mu.Unlock()
	if ok {
		return c, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, certURL, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSNSSignature, err)
	}
	resp, err := v.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("aws: fetch SNS certificate: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("aws: fetch SNS certificate: HTTP %d", resp.StatusCode) // transient
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: certificate URL answered HTTP %d", ErrSNSSignature, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("aws: fetch SNS certificate: %w", err)
	}
	block, _ := pem.Decode(body)
	if block == nil {
		return nil, fmt.Errorf("%w: certificate is not PEM", ErrSNSSignature)
	}
	c, err = x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %w", ErrSNSSignature, err)
	}
	if time.Now().After(c.NotAfter) {
		return nil, fmt.Errorf("%w: certificate expired", ErrSNSSignature)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.certs == nil {
		v.certs = map[string]*x509.Certificate{}
	}
	maxCerts := v.MaxCerts
	if maxCerts <= 0 {
		maxCerts = 32
	}
	if len(v.certs) >= maxCerts {
		clear(v.certs) // certificates rotate rarely; start over
	}
	v.certs[certURL] = c
	return c, nil
}

// Confirm visits the SubscribeURL of a verified SubscriptionConfirmation.
func (v *SNSVerifier) Confirm(ctx context.Context, m *SNSMessage) error {
	u, err := url.Parse(m.SubscribeURL)
	if err != nil || !v.allow(u) {
		return fmt.Errorf("%w: SubscribeURL %q is not an SNS URL", ErrSNSSignature, m.SubscribeURL)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := v.client().Do(req)
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

// EventOfSNS turns a verified Notification into an Event.
func EventOfSNS(m *SNSMessage) (Event, error) {
	var p snsPayload
	if err := json.Unmarshal([]byte(m.Message), &p); err != nil {
		return Event{}, fmt.Errorf("%w: SNS Message: %w", ErrInvalidInput, err)
	}
	if p.Action == "" {
		return Event{}, fmt.Errorf("%w: SNS Message without action", ErrInvalidInput)
	}
	t, err := time.Parse(time.RFC3339Nano, m.Timestamp)
	if err != nil {
		return Event{}, fmt.Errorf("%w: SNS Timestamp %q", ErrInvalidInput, m.Timestamp)
	}
	return Event{ID: m.MessageID, Time: t, Kind: p.Action, CustomerIdentifier: p.CustomerIdentifier,
		CustomerAWSAccountId: p.CustomerAWSAccountId, LicenseArn: p.LicenseArn, ProductCode: p.ProductCode}, nil
}

// SNSHandler receives the legacy SNS topics' HTTP(S) deliveries. Every
// message is verified (topic allow-list, certificate URL, signature)
// before anything else; forged ones get 403 and change nothing. A
// SubscriptionConfirmation is confirmed by visiting its SubscribeURL.
func (p *Provider) SNSHandler(v *SNSVerifier) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST SNS messages here", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxNotification))
		if err != nil {
			http.Error(w, "unreadable body", http.StatusBadRequest)
			return
		}
		m, err := DecodeSNS(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := v.Verify(r.Context(), m); err != nil {
			if errors.Is(err, ErrSNSSignature) {
				p.cfg.Logger.Warn("refused SNS message", "topic", m.TopicArn, "err", err)
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			p.cfg.Logger.Error("verify SNS message", "err", err)
			http.Error(w, "could not verify; retry", http.StatusServiceUnavailable)
			return
		}
		switch m.Type {
		case "SubscriptionConfirmation":
			if err := v.Confirm(r.Context(), m); err != nil {
				p.cfg.Logger.Error("confirm SNS subscription", "topic", m.TopicArn, "err", err)
				http.Error(w, "could not confirm the subscription", http.StatusBadGateway)
				return
			}
			p.cfg.Logger.Info("SNS subscription confirmed", "topic", m.TopicArn)
			w.WriteHeader(http.StatusNoContent)
			return
		case "UnsubscribeConfirmation":
			w.WriteHeader(http.StatusNoContent)
			return
		}
		ev, err := EventOfSNS(m)
		if err == nil {
			err = p.Apply(r.Context(), ev)
		}
		p.answer(w, err)
	})
}
