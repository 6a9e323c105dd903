package aws_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger"
)

const topic = "arn:aws:sns:us-east-1:287250355862:aws-mp-subscription-notification-prod"

// snsApp serves the emulator's SNS certificate and a SubscribeURL over
// TLS on 127.0.0.1, and a provider that trusts only that host for
// certificates. It counts visits to the SubscribeURL and certificate
// fetches.
func snsApp(t *testing.T, e *env) (a *app, certURL string, confirms, certFetches *atomic.Int32) {
	t.Helper()
	confirms, certFetches = &atomic.Int32{}, &atomic.Int32{}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == emu.SNSCertPath {
			certFetches.Add(1)
		}
		e.emu.ServeHTTP(w, r)
	})
	mux.HandleFunc("/confirm", func(w http.ResponseWriter, _ *http.Request) { confirms.Add(1) })
	mux.HandleFunc("/unavailable.pem", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "try later", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/redirect.pem", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://attacker.example.com/SimpleNotificationService-x.pem", http.StatusFound)
	})
	tls := httptest.NewTLSServer(mux)
	t.Cleanup(tls.Close)
	u, _ := url.Parse(tls.URL)
	cfg := baseConfig(e)
	cfg.SNSTopicARNs, cfg.HTTPClient = []string{topic}, tls.Client()
	cfg.SNSAllowURL = func(x *url.URL) bool { return x.Scheme == "https" && x.Host == u.Host }
	return newApp(t, e, cfg), tls.URL + emu.SNSCertPath, confirms, certFetches
}

// post delivers an SNS message as SNS does, with its type in the
// x-amz-sns-message-type header.
func post(t *testing.T, h http.Handler, m *emu.SNSMessage) int {
	t.Helper()
	return postAs(t, h, m, m.Type)
}

func postAs(t *testing.T, h http.Handler, m *emu.SNSMessage, typ string) int {
	t.Helper()
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/aws/sns", strings.NewReader(string(body)))
	req.Header.Set("x-amz-sns-message-type", typ)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code == http.StatusUnauthorized && strings.TrimSpace(w.Body.String()) != "not authentic" {
		t.Errorf("401 body %q, want \"not authentic\" and no detail", w.Body)
	}
	return w.Code
}

// TestSNSForgeries: forged messages get 401 (malformed ones 400), are not
// stored and change nothing; genuine ones of both signature versions are
// stored and applied, and the certificate is fetched once.
func TestSNSForgeries(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a, certURL, _, fetches := snsApp(t, e)
	h := a.NotificationHandler()
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	good := func(version int) *emu.SNSMessage {
		m, err := e.emu.SNSNotification(topic, "subscribe-success", b.Key(), version, certURL)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		name   string
		forge  func(m *emu.SNSMessage)
		status int
	}{
		{"tampered message", func(m *emu.SNSMessage) {
			m.Message = strings.Replace(m.Message, b.CustomerIdentifier, "someone-else", 1)
		}, http.StatusUnauthorized},
		{"bad signature", func(m *emu.SNSMessage) { m.Signature = "AAAA" + m.Signature[4:] }, http.StatusUnauthorized},
		{"certificate on a foreign host", func(m *emu.SNSMessage) {
			m.SigningCertURL = "https://attacker.example.com/SimpleNotificationService-x.pem"
		}, http.StatusUnauthorized},
		{"certificate over http", func(m *emu.SNSMessage) { m.SigningCertURL = strings.Replace(m.SigningCertURL, "https:", "http:", 1) }, http.StatusUnauthorized},
		{"certificate not .pem", func(m *emu.SNSMessage) { m.SigningCertURL = strings.TrimSuffix(m.SigningCertURL, ".pem") + ".txt" }, http.StatusUnauthorized},
		{"certificate URL redirects elsewhere", func(m *emu.SNSMessage) {
			m.SigningCertURL = strings.TrimSuffix(m.SigningCertURL, emu.SNSCertPath) + "/redirect.pem"
		}, http.StatusUnauthorized},
		{"wrong topic", func(m *emu.SNSMessage) { m.TopicArn = "arn:aws:sns:us-east-1:111111111111:other" }, http.StatusUnauthorized},
		{"missing version", func(m *emu.SNSMessage) { m.SignatureVersion = "" }, http.StatusUnauthorized},
		{"unknown version", func(m *emu.SNSMessage) { m.SignatureVersion = "3" }, http.StatusUnauthorized},
		{"no type", func(m *emu.SNSMessage) { m.Type = "" }, http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := good(2)
			tc.forge(m)
			if got := postAs(t, h, m, "Notification"); got != tc.status {
				t.Errorf("status %d, want %d", got, tc.status)
			}
		})
	}
	if got := postAs(t, h, good(2), "SubscriptionConfirmation"); got != http.StatusBadRequest {
		t.Errorf("header type other than the message's: %d, want 400", got)
	}
	a.drain(t)
	subs, _ := e.store.ListSubscriptions(t.Context(), marketplace.SubscriptionFilter{Provider: marketplace.AWS})
	ns, _ := e.store.ListNotifications(t.Context(), marketplace.AWS, "", 0)
	if len(subs) != 0 || len(ns) != 0 {
		t.Fatalf("forged messages stored %d subscriptions, %d notifications", len(subs), len(ns))
	}
	for _, version := range []int{1, 2} {
		if got := post(t, h, good(version)); got != http.StatusNoContent {
			t.Errorf("genuine SignatureVersion %d: status %d", version, got)
		}
	}
	a.drain(t)
	if ok, _ := a.IsActive(t.Context(), b.Key()); !ok {
		t.Error("genuine subscribe-success did not activate")
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("certificate fetched %d times, want once (cached)", n)
	}
}

// TestSNSLifecycle: subscription confirmation, unsubscribe-pending seals
// the buyer's usage (final flush), unsubscribe-success cancels,
// redeliveries are applied once.
func TestSNSLifecycle(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a, certURL, confirms, _ := snsApp(t, e)
	h := a.NotificationHandler()
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})

	subscribeURL := strings.TrimSuffix(certURL, emu.SNSCertPath) + "/confirm"
	conf, err := e.emu.SNSSubscriptionConfirmation(topic, subscribeURL, 1, certURL)
	if err != nil {
		t.Fatal(err)
	}
	if got := post(t, h, conf); got != http.StatusNoContent || confirms.Load() != 1 {
		t.Fatalf("confirmation: status %d, %d visits to SubscribeURL", got, confirms.Load())
	}
	forged := *conf
	forged.SubscribeURL = "https://attacker.example.com/confirm"
	if got := post(t, h, &forged); got != http.StatusUnauthorized || confirms.Load() != 1 {
		t.Errorf("forged confirmation: status %d, %d visits", got, confirms.Load())
	}

	sub, _ := e.emu.SNSNotification(topic, "subscribe-success", b.Key(), 2, certURL)
	if got := post(t, h, sub); got != http.StatusNoContent {
		t.Fatalf("subscribe-success: %d", got)
	}
	a.drain(t)
	if err := a.SubmitUsage(t.Context(), []marketplace.UsageRecord{{CustomerID: b.Key(), Dimension: "requests", Quantity: 3, Timestamp: e.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	pending, _ := e.emu.SNSNotification(topic, "unsubscribe-pending", b.Key(), 2, certURL)
	for range 2 { // a redelivery is applied once
		if got := post(t, h, pending); got != http.StatusNoContent {
			t.Fatalf("unsubscribe-pending: %d", got)
		}
		a.drain(t)
	}
	bs, _ := e.ledger.Buckets(t.Context(), ledger.BucketFilter{Customer: b.Key(), States: []ledger.State{ledger.StateSealed}})
	if len(bs) != 1 || bs[0].Units != 3 {
		t.Fatalf("unsubscribe-pending sealed %+v, want one bucket of 3", bs)
	}
	if ok, _ := a.IsActive(t.Context(), b.Key()); !ok {
		t.Error("unsubscribe-pending ended the subscription early")
	}
	e.clock.Advance(time.Second)
	done, _ := e.emu.SNSNotification(topic, "unsubscribe-success", b.Key(), 2, certURL)
	if got := post(t, h, done); got != http.StatusNoContent {
		t.Fatalf("unsubscribe-success: %d", got)
	}
	a.drain(t)
	if ok, _ := a.IsActive(t.Context(), b.Key()); ok {
		t.Error("still active after unsubscribe-success")
	}
	// The older subscribe-success, delivered again late, is a duplicate.
	if got := post(t, h, sub); got != http.StatusNoContent {
		t.Fatalf("late redelivery: %d", got)
	}
	a.drain(t)
	if ok, _ := a.IsActive(t.Context(), b.Key()); ok {
		t.Error("a late redelivery reactivated the buyer")
	}
}

// TestSNSCertificateFaults: a certificate URL that fails now answers 503
// (SNS delivers again; nothing is stored), and an expired certificate, by
// the injected clock, is not authentic.
func TestSNSCertificateFaults(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a, certURL, _, _ := snsApp(t, e)
	h := a.NotificationHandler()
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	unavailable := strings.TrimSuffix(certURL, emu.SNSCertPath) + "/unavailable.pem"
	m, err := e.emu.SNSNotification(topic, "subscribe-success", b.Key(), 2, unavailable)
	if err != nil {
		t.Fatal(err)
	}
	if got := post(t, h, m); got != http.StatusServiceUnavailable {
		t.Errorf("certificate URL answering 503: %d, want 503", got)
	}
	e.clock.Set(time.Now().Add(2 * 365 * 24 * time.Hour))
	m, err = e.emu.SNSNotification(topic, "subscribe-success", b.Key(), 2, certURL)
	if err != nil {
		t.Fatal(err)
	}
	if got := post(t, h, m); got != http.StatusUnauthorized {
		t.Errorf("expired certificate: %d, want 401", got)
	}
	if ns, _ := e.store.ListNotifications(t.Context(), marketplace.AWS, "", 0); len(ns) != 0 {
		t.Errorf("%d notifications stored", len(ns))
	}
}
