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
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger"
)

const topic = "arn:aws:sns:us-east-1:287250355862:aws-mp-subscription-notification-prod"

// snsEnv serves the emulator's SNS certificate and a SubscribeURL over
// TLS on 127.0.0.1, and a verifier that trusts only that host.
func snsEnv(t *testing.T, e *env) (v *aws.SNSVerifier, certURL string, confirms *atomic.Int32) {
	v, certURL, confirms, _ = snsEnvCounting(t, e)
	return v, certURL, confirms
}

func snsEnvCounting(t *testing.T, e *env) (v *aws.SNSVerifier, certURL string, confirms, certFetches *atomic.Int32) {
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
	mux.HandleFunc("/redirect.pem", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://attacker.example.com/SimpleNotificationService-x.pem", http.StatusFound)
	})
	tls := httptest.NewTLSServer(mux)
	t.Cleanup(tls.Close)
	u, _ := url.Parse(tls.URL)
	v = &aws.SNSVerifier{TopicARNs: []string{topic}, HTTPClient: tls.Client(),
		AllowURL: func(x *url.URL) bool { return x.Scheme == "https" && x.Host == u.Host }}
	return v, tls.URL + emu.SNSCertPath, confirms, certFetches
}

func post(t *testing.T, h http.Handler, m any) int {
	t.Helper()
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/aws/sns", strings.NewReader(string(body)))
	req.Header.Set("x-amz-sns-message-type", "Notification")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code
}

// TestSNSForgeries: forged messages get 4xx and change nothing.
func TestSNSForgeries(t *testing.T) {
	e := newEnv(t, emu.Config{})
	p := newProvider(t, e, false, nil)
	v, certURL, _, fetches := snsEnvCounting(t, e)
	h := p.SNSHandler(v)
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
		}, http.StatusForbidden},
		{"bad signature", func(m *emu.SNSMessage) { m.Signature = "AAAA" + m.Signature[4:] }, http.StatusForbidden},
		{"certificate on a foreign host", func(m *emu.SNSMessage) {
			m.SigningCertURL = "https://attacker.example.com/SimpleNotificationService-x.pem"
		}, http.StatusForbidden},
		{"certificate over http", func(m *emu.SNSMessage) { m.SigningCertURL = strings.Replace(m.SigningCertURL, "https:", "http:", 1) }, http.StatusForbidden},
		{"certificate not .pem", func(m *emu.SNSMessage) { m.SigningCertURL = strings.TrimSuffix(m.SigningCertURL, ".pem") + ".txt" }, http.StatusForbidden},
		{"certificate URL redirects elsewhere", func(m *emu.SNSMessage) {
			m.SigningCertURL = strings.TrimSuffix(m.SigningCertURL, emu.SNSCertPath) + "/redirect.pem"
		}, http.StatusForbidden},
		{"wrong topic", func(m *emu.SNSMessage) { m.TopicArn = "arn:aws:sns:us-east-1:111111111111:other" }, http.StatusForbidden},
		{"missing version", func(m *emu.SNSMessage) { m.SignatureVersion = "" }, http.StatusForbidden},
		{"unknown version", func(m *emu.SNSMessage) { m.SignatureVersion = "3" }, http.StatusForbidden},
		{"no type", func(m *emu.SNSMessage) { m.Type = "" }, http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := good(2)
			tc.forge(m)
			if got := post(t, h, m); got != tc.status {
				t.Errorf("status %d, want %d", got, tc.status)
			}
		})
	}
	subs, _ := e.store.ListSubscriptions(t.Context(), marketplace.SubscriptionFilter{Provider: marketplace.AWS})
	if len(subs) != 0 {
		t.Fatalf("forged messages stored %d subscriptions", len(subs))
	}
	for _, version := range []int{1, 2} {
		if got := post(t, h, good(version)); got != http.StatusNoContent {
			t.Errorf("genuine SignatureVersion %d: status %d", version, got)
		}
	}
	if ok, _ := p.IsActive(t.Context(), b.Key()); !ok {
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
	p := newProvider(t, e, false, nil)
	v, certURL, confirms := snsEnv(t, e)
	h := p.SNSHandler(v)
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
	if got := post(t, h, &forged); got != http.StatusForbidden || confirms.Load() != 1 {
		t.Errorf("forged confirmation: status %d, %d visits", got, confirms.Load())
	}

	sub, _ := e.emu.SNSNotification(topic, "subscribe-success", b.Key(), 2, certURL)
	if got := post(t, h, sub); got != http.StatusNoContent {
		t.Fatalf("subscribe-success: %d", got)
	}
	if err := p.SubmitUsage(t.Context(), []marketplace.UsageRecord{{CustomerID: b.Key(), Dimension: "requests", Quantity: 3, Timestamp: e.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	pending, _ := e.emu.SNSNotification(topic, "unsubscribe-pending", b.Key(), 2, certURL)
	for range 2 { // a redelivery is applied once
		if got := post(t, h, pending); got != http.StatusNoContent {
			t.Fatalf("unsubscribe-pending: %d", got)
		}
	}
	bs, _ := e.ledger.Buckets(t.Context(), ledger.BucketFilter{Customer: b.Key(), States: []ledger.State{ledger.StateSealed}})
	if len(bs) != 1 || bs[0].Units != 3 {
		t.Fatalf("unsubscribe-pending sealed %+v, want one bucket of 3", bs)
	}
	if ok, _ := p.IsActive(t.Context(), b.Key()); !ok {
		t.Error("unsubscribe-pending ended the subscription early")
	}
	e.clock.Advance(time.Second)
	done, _ := e.emu.SNSNotification(topic, "unsubscribe-success", b.Key(), 2, certURL)
	if got := post(t, h, done); got != http.StatusNoContent {
		t.Fatalf("unsubscribe-success: %d", got)
	}
	if ok, _ := p.IsActive(t.Context(), b.Key()); ok {
		t.Error("still active after unsubscribe-success")
	}
	// The older subscribe-success, delivered again late, is a duplicate.
	if got := post(t, h, sub); got != http.StatusNoContent {
		t.Fatalf("late redelivery: %d", got)
	}
	if ok, _ := p.IsActive(t.Context(), b.Key()); ok {
		t.Error("a late redelivery reactivated the buyer")
	}
}
