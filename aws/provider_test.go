package aws_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger"
)

const product = "prod-landing"

func newProvider(t *testing.T, e *env, licenseMode bool, link func(context.Context, http.ResponseWriter, *http.Request, *marketplace.Subscription) (string, error)) *aws.Provider {
	t.Helper()
	p, err := aws.NewProvider(aws.Config{ProductCode: product, LicenseMode: licenseMode, Metering: e.meter, Entitlements: aws.NewEntitlements(e.ent),
		Ledger: e.ledger, Subscriptions: e.store, EntitlementDB: e.store, Notifications: e.store, Link: link, Clock: e.clock.Now, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func postToken(t *testing.T, h http.Handler, token string) *httptest.ResponseRecorder {
	t.Helper()
	form := url.Values{}
	if token != "" {
		form.Set(aws.TokenField, token)
	}
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/aws/register", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// land registers the buyer through the landing page, as AWS sends it.
func land(t *testing.T, e *env, p *aws.Provider, b emu.Buyer) {
	t.Helper()
	tok, err := e.emu.MintToken(b.Key(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if w := postToken(t, p.LandingHandler(), tok); w.Code != http.StatusOK {
		t.Fatalf("landing: %d %s", w.Code, w.Body)
	}
}

func TestLanding(t *testing.T) {
	for _, licenseMode := range []bool{false, true} {
		t.Run(map[bool]string{false: "product-code", true: "license"}[licenseMode], func(t *testing.T) {
			e := newEnv(t, emu.Config{})
			var linked *marketplace.Subscription
			p := newProvider(t, e, licenseMode, func(_ context.Context, _ http.ResponseWriter, _ *http.Request, s *marketplace.Subscription) (string, error) {
				linked = s
				return "acct-42", nil
			})
			bb := emu.Buyer{ProductCode: product}
			if licenseMode {
				bb.LicenseArn = "new"
			}
			b := e.emu.AddBuyer(bb)
			tok, err := e.emu.MintToken(b.Key(), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			w := postToken(t, p.LandingHandler(), tok)
			if w.Code != http.StatusOK {
				t.Fatalf("landing: %d %s", w.Code, w.Body)
			}
			cust := b.CustomerIdentifier
			if licenseMode {
				cust = aws.LicenseCustomer(b.CustomerAWSAccountId, b.LicenseArn)
			}
			if linked == nil || linked.Status != marketplace.StatusPending || linked.CustomerID != cust {
				t.Fatalf("link hook saw %+v, want a pending subscription of %q", linked, cust)
			}
			sub, err := p.ResolveSubscription(t.Context(), cust)
			if err != nil {
				t.Fatal(err)
			}
			if sub.Status != marketplace.StatusActive || sub.AccountID != "acct-42" {
				t.Errorf("after landing: status %q account %q", sub.Status, sub.AccountID)
			}
			if err := p.CheckEntitlement(t.Context(), cust, ""); err != nil {
				t.Errorf("active buyer not entitled: %v", err)
			}
		})
	}
}

func TestLandingRefusesBadTokens(t *testing.T) {
	e := newEnv(t, emu.Config{})
	p := newProvider(t, e, false, nil)
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	expired, err := e.emu.MintToken(b.Key(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Minute)
	other := e.emu.AddBuyer(emu.Buyer{ProductCode: "another-product"})
	otherTok, _ := e.emu.MintToken(other.Key(), time.Hour)
	tests := []struct {
		name, token, says string
		code              int
	}{
		{"missing", "", "missing", http.StatusBadRequest},
		{"invalid", "forged-token", "not valid", http.StatusBadRequest},
		{"expired", expired, "expired", http.StatusBadRequest},
		{"other product", otherTok, "another product", http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := postToken(t, p.LandingHandler(), tc.token)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.says) {
				t.Errorf("got %d %q, want %d saying %q", w.Code, w.Body, tc.code, tc.says)
			}
		})
	}
	subs, err := e.store.ListSubscriptions(t.Context(), marketplace.SubscriptionFilter{Provider: marketplace.AWS})
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != 0 {
		t.Errorf("refused tokens stored %d subscriptions", len(subs))
	}
}

const hdr, secret = "X-Marketplace-Secret", "s3cr3t-value"

func sendEB(t *testing.T, h http.Handler, body []byte, secretValue string) int {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/aws/events", strings.NewReader(string(body)))
	if secretValue != "" {
		req.Header.Set(hdr, secretValue)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code
}

// TestEventBridgeLifecycle: a deprovisioned license is cancelled and its
// usage sealed and reported at once (the final flush), a redelivery
// changes nothing, a stale event is ignored, and calls without the secret
// are refused and change nothing.
func TestEventBridgeLifecycle(t *testing.T) {
	e := newEnv(t, emu.Config{})
	p := newProvider(t, e, true, nil)
	h := p.EventBridgeHandler(hdr, secret)
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product, LicenseArn: "new"})
	cust := aws.LicenseCustomer(b.CustomerAWSAccountId, b.LicenseArn)

	// An agreement event names no license: before the buyer registered,
	// it is acknowledged and changes nothing.
	created, err := e.emu.EventBridgeEvent("Purchase Agreement Created - Manufacturer", b.Key())
	if err != nil {
		t.Fatal(err)
	}
	if code := sendEB(t, h, created, secret); code != http.StatusNoContent {
		t.Fatalf("created: %d", code)
	}
	if _, err := p.ResolveSubscription(t.Context(), cust); !errors.Is(err, marketplace.ErrNotFound) {
		t.Fatalf("an agreement event for an unknown buyer created %v", err)
	}
	land(t, e, p, b)
	deprovEarly, err := e.emu.EventBridgeEvent("License Deprovisioned - Manufacturer", b.Key())
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "wrong", secret + "x"} {
		if code := sendEB(t, h, deprovEarly, bad); code != http.StatusUnauthorized {
			t.Errorf("secret %q: %d, want 401", bad, code)
		}
	}
	if ok, _ := p.IsActive(t.Context(), cust); !ok {
		t.Fatal("unauthenticated events changed the subscription, or landing did not activate")
	}
	// Usage in the current hour, then deprovisioning: the final flush seals it.
	if err := p.SubmitUsage(t.Context(), []marketplace.UsageRecord{{CustomerID: cust, Dimension: "requests", Quantity: 7, Timestamp: e.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	deprov, err := e.emu.EventBridgeEvent("License Deprovisioned - Manufacturer", b.Key())
	if err != nil {
		t.Fatal(err)
	}
	if code := sendEB(t, h, deprov, secret); code != http.StatusNoContent {
		t.Fatalf("deprovisioned: %d", code)
	}
	if ok, _ := p.IsActive(t.Context(), cust); ok {
		t.Error("still active after License Deprovisioned")
	}
	if err := p.CheckEntitlement(t.Context(), cust, ""); !errors.Is(err, marketplace.ErrNoActiveSubscription) {
		t.Errorf("entitlement after deprovisioning: %v", err)
	}
	bs, err := e.ledger.Buckets(t.Context(), ledger.BucketFilter{Customer: cust, States: []ledger.State{ledger.StateSealed}})
	if err != nil || len(bs) != 1 {
		t.Fatalf("final flush sealed %d buckets (%v), want 1", len(bs), err)
	}
	rep := ledger.NewReporter(e.ledger, mustReporter(t, aws.ReporterConfig{Client: e.meter, ProductCode: product, LicenseMode: true, Logger: discard}), fastReporting)
	if _, err := rep.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := e.emu.Bill().Sum(b.CustomerAWSAccountId, "requests"); got != 7 {
		t.Errorf("final usage billed %d, want 7", got)
	}
	// A stale Created (older than the stored state) and a redelivery change nothing.
	if code := sendEB(t, h, created, secret); code != http.StatusNoContent {
		t.Fatalf("redelivery: %d", code)
	}
	e.clock.Set(testNow.Add(-time.Hour))
	stale, err := e.emu.EventBridgeEvent("Purchase Agreement Created - Manufacturer", b.Key())
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Set(testNow.Add(2 * time.Minute))
	if code := sendEB(t, h, stale, secret); code != http.StatusNoContent {
		t.Fatalf("stale: %d", code)
	}
	if ok, _ := p.IsActive(t.Context(), cust); ok {
		t.Error("a stale or redelivered event reactivated the buyer")
	}
	for name, body := range map[string]string{
		"not json":     "{",
		"no id":        `{"source":"aws.agreement-marketplace","detail-type":"License Updated - Manufacturer","time":"2026-03-10T12:00:00Z"}`,
		"other source": `{"id":"x","source":"aws.ec2","detail-type":"X","time":"2026-03-10T12:00:00Z"}`,
	} {
		code := sendEB(t, h, []byte(body), secret)
		if name == "other source" {
			if code != http.StatusNoContent {
				t.Errorf("%s: %d, want 204 (acknowledged, ignored)", name, code)
			}
			continue
		}
		if code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", name, code)
		}
	}
}

// TestEntitlementsRefresh: License Updated re-reads GetEntitlements
// (through an empty page) and the cache answers the new state at once.
func TestEntitlementsRefresh(t *testing.T) {
	e := newEnv(t, emu.Config{EmptyPages: true})
	p := newProvider(t, e, false, nil)
	h := p.EventBridgeHandler(hdr, secret)
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	land(t, e, p, b)
	if err := p.CheckEntitlement(t.Context(), b.Key(), "gpu"); !errors.Is(err, marketplace.ErrEntitlementDenied) {
		t.Fatalf("before any entitlement: %v", err)
	}
	n, yes := int64(4), true
	if err := e.emu.SetEntitlements(b.Key(), []emu.Entitlement{{Dimension: "gpu", IntegerValue: &n}, {Dimension: "sso", BooleanValue: &yes}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	upd, _ := e.emu.EventBridgeEvent("License Updated - Manufacturer", b.Key())
	if code := sendEB(t, h, upd, secret); code != http.StatusNoContent {
		t.Fatalf("updated: %d", code)
	}
	for _, f := range []string{"gpu", "sso"} {
		if err := p.CheckEntitlement(t.Context(), b.Key(), f); err != nil {
			t.Errorf("%s after License Updated: %v", f, err)
		}
	}
	if err := e.emu.SetEntitlements(b.Key(), []emu.Entitlement{{Dimension: "sso", BooleanValue: &yes}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	upd2, _ := e.emu.EventBridgeEvent("License Updated - Manufacturer", b.Key())
	if code := sendEB(t, h, upd2, secret); code != http.StatusNoContent {
		t.Fatalf("updated: %d", code)
	}
	if err := p.CheckEntitlement(t.Context(), b.Key(), "gpu"); !errors.Is(err, marketplace.ErrEntitlementDenied) {
		t.Errorf("gpu after removal: %v", err)
	}
}

// TestEmulatorDeliversEvents: the emulator sends EventBridge events and
// signed SNS messages over HTTP to the provider's endpoints.
func TestEmulatorDeliversEvents(t *testing.T) {
	var h http.Handler = http.NotFoundHandler()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) })
	recv := httptest.NewServer(mux)
	t.Cleanup(recv.Close)
	e := newEnv(t, emu.Config{Notify: emu.NotifyConfig{EventBridgeEndpoint: recv.URL + "/events", EventBridgeHeader: hdr, EventBridgeSecret: secret,
		SNSEndpoint: recv.URL + "/sns", SNSTopicArn: topic}})
	p := newProvider(t, e, false, nil)
	v, _, _ := snsEnv(t, e)
	routes := http.NewServeMux()
	routes.Handle("/events", p.EventBridgeHandler(hdr, secret))
	routes.Handle("/sns", p.SNSHandler(v))
	h = routes
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	land(t, e, p, b)
	if code, err := e.emu.SendEventBridge(t.Context(), "Purchase Agreement Ended - Manufacturer", b.Key()); err != nil || code != http.StatusNoContent {
		t.Fatalf("EventBridge delivery: %d %v", code, err)
	}
	e.clock.Advance(time.Second)
	if code, err := e.emu.SendEventBridge(t.Context(), "License Deprovisioned - Manufacturer", b.Key()); err != nil || code != http.StatusNoContent {
		t.Fatalf("EventBridge delivery: %d %v", code, err)
	}
	if ok, _ := p.IsActive(t.Context(), b.Key()); ok {
		t.Fatal("still active after the delivered events")
	}
	// SNS needs the certificate on the TLS host the verifier trusts; without it the message is refused.
	if code, err := e.emu.SendSNS(t.Context(), "unsubscribe-success", b.Key()); err == nil {
		t.Fatalf("SNS without a certificate URL configured: %d", code)
	}
}

// TestPollSQS: EventBridge events read from an SQS queue with the official
// SQS client are applied and deleted; a malformed one is deleted too.
func TestPollSQS(t *testing.T) {
	e := newEnv(t, emu.Config{})
	p := newProvider(t, e, false, nil)
	creds := sqsCreds()
	client := sqs.New(sqs.Options{Region: "us-east-1", BaseEndpoint: awssdk.String(e.srv.URL), Credentials: creds})
	queue := e.srv.URL + "/123456789012/marketplace-events"
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	land(t, e, p, b)
	e.clock.Advance(time.Second)
	if err := e.emu.Enqueue(queue, "License Deprovisioned - Manufacturer", b.Key()); err != nil {
		t.Fatal(err)
	}
	e.emu.EnqueueRaw(queue, "not an event")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- p.PollSQS(ctx, client, queue) }()
	deadline := time.Now().Add(10 * time.Second)
	for e.emu.QueueLen(queue) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("PollSQS returned %v", err)
	}
	if n := e.emu.QueueLen(queue); n != 0 {
		t.Errorf("%d messages left on the queue", n)
	}
	if ok, _ := p.IsActive(t.Context(), b.Key()); ok {
		t.Error("event from SQS not applied")
	}
}

func sqsCreds() awssdk.CredentialsProvider {
	return awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
		return awssdk.Credentials{AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: testCreds.SecretAccessKey}, nil
	})
}

func TestSubmitUsageLicenseMode(t *testing.T) {
	e := newEnv(t, emu.Config{})
	p := newProvider(t, e, true, nil)
	err := p.SubmitUsage(t.Context(), []marketplace.UsageRecord{{CustomerID: "cust-legacy", Dimension: "d", Quantity: 1, Timestamp: e.clock.Now()}})
	if !errors.Is(err, marketplace.ErrMeteringFailed) || !errors.Is(err, aws.ErrInvalidInput) {
		t.Errorf("a legacy customer id in license mode: %v", err)
	}
	ok := aws.LicenseCustomer("123456789012", "arn:aws:license-manager::123456789012:license:l-1")
	if err := p.SubmitUsage(t.Context(), []marketplace.UsageRecord{{CustomerID: ok, Dimension: "d", Quantity: 1, Timestamp: e.clock.Now()}}); err != nil {
		t.Error(err)
	}
}
