package aws_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/marketplaceentitlementservice"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/sqlite"
)

const product = "prod-landing"

const hdr, secret = "X-Marketplace-Secret", "s3cr3t-value"

// guardedStore is the engine's store in these tests: it fails the test if
// anything lists subscriptions (lookups must use the index), and fails the
// next failAdds inbox writes, as a store outage would.
type guardedStore struct {
	*sqlite.Store
	t        testing.TB
	failAdds atomic.Int32
}

func (g *guardedStore) ListSubscriptions(ctx context.Context, f marketplace.SubscriptionFilter) ([]marketplace.Subscription, error) {
	g.t.Errorf("ListSubscriptions(%+v) on a request or notification path", f)
	return g.Store.ListSubscriptions(ctx, f)
}

func (g *guardedStore) AddNotification(ctx context.Context, n marketplace.Notification) (bool, error) {
	if g.failAdds.Add(-1) >= 0 {
		return false, errors.New("sqlite: database is locked (injected)")
	}
	g.failAdds.Store(0)
	return g.Store.AddNotification(ctx, n)
}

// app is an AWS provider on a lifecycle engine, as a daemon wires it.
type app struct {
	*aws.Provider
	eng   *lifecycle.Engine
	store *guardedStore
}

// baseConfig is the provider's configuration in these tests; license
// mode, a Link hook and other settings are set by each test.
func baseConfig(e *env) aws.Config {
	return aws.Config{ProductCode: product, Metering: e.meter, Entitlements: aws.NewEntitlements(e.ent),
		EventBridgeHeader: hdr, EventBridgeSecret: secret}
}

// newApp makes an engine on e's store and ledger and the provider on it.
func newApp(t testing.TB, e *env, cfg aws.Config) *app {
	t.Helper()
	return newAppOn(t, e, e.store, e.ledger, cfg)
}

func newAppOn(t testing.TB, e *env, store *sqlite.Store, led *ledger.Ledger, cfg aws.Config) *app {
	t.Helper()
	g := &guardedStore{Store: store, t: t}
	eng, err := lifecycle.New(lifecycle.Deps{Store: g, Ledger: led, Logger: discard, Clock: e.clock.Now}, lifecycle.Config{MinBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p, err := aws.NewProvider(eng, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &app{Provider: p, eng: eng, store: g}
}

// drain applies what the engine holds, as its worker would.
func (a *app) drain(t testing.TB) {
	t.Helper()
	if err := a.eng.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// licenseApp and codeApp are the two modes with the base configuration.
func licenseApp(t *testing.T, e *env) *app {
	cfg := baseConfig(e)
	cfg.LicenseMode = true
	return newApp(t, e, cfg)
}

func codeApp(t *testing.T, e *env) *app { return newApp(t, e, baseConfig(e)) }

func postToken(t testing.TB, h http.Handler, token string) *httptest.ResponseRecorder {
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
func land(t testing.TB, e *env, p *aws.Provider, b emu.Buyer) {
	t.Helper()
	tok, err := e.emu.MintToken(b.Key(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if w := postToken(t, p.LandingHandler(), tok); w.Code != http.StatusOK {
		t.Fatalf("landing: %d %s", w.Code, w.Body)
	}
}

// customer is the ledger customer id of an emulator buyer.
func customer(b emu.Buyer, licenseMode bool) string {
	if licenseMode {
		return aws.LicenseCustomer(b.CustomerAWSAccountId, b.LicenseArn)
	}
	return b.CustomerIdentifier
}

func TestNewProviderChecksConfig(t *testing.T) {
	e := newEnv(t, emu.Config{})
	eng, err := lifecycle.New(lifecycle.Deps{Store: e.store, Ledger: e.ledger, Logger: discard}, lifecycle.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg  aws.Config
		says string
	}{
		{aws.Config{Metering: e.meter}, "Config.ProductCode is required"},
		{aws.Config{ProductCode: "p"}, "Config.Metering is required"},
		{aws.Config{ProductCode: "p", Metering: e.meter, EventBridgeSecret: "x"}, "Config.EventBridgeHeader"},
		{aws.Config{ProductCode: "p", Metering: e.meter, QueueURL: "https://sqs/q"}, "Config.SQS and Config.QueueURL"},
	} {
		if _, err := aws.NewProvider(eng, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("NewProvider(%+v) = %v, want an error naming %q", tc.cfg, err, tc.says)
		}
	}
	if _, err := aws.NewProvider(eng, aws.Config{ProductCode: "p", Metering: e.meter}); err != nil {
		t.Fatal(err)
	}
	if _, err := aws.NewProvider(eng, aws.Config{ProductCode: "p", Metering: e.meter}); err == nil {
		t.Error("a second AWS provider registered on one engine")
	}
}

func TestLanding(t *testing.T) {
	for _, licenseMode := range []bool{false, true} {
		t.Run(map[bool]string{false: "product-code", true: "license"}[licenseMode], func(t *testing.T) {
			e := newEnv(t, emu.Config{})
			var linked *marketplace.Subscription
			cfg := baseConfig(e)
			cfg.LicenseMode = licenseMode
			cfg.Link = func(_ context.Context, w http.ResponseWriter, _ *http.Request, s *marketplace.Subscription) (string, error) {
				linked = s
				w.Header().Set("Location", "/app")
				w.WriteHeader(http.StatusSeeOther)
				return "acct-42", nil
			}
			a := newApp(t, e, cfg)
			bb := emu.Buyer{ProductCode: product}
			if licenseMode {
				bb.LicenseArn = "new"
			}
			b := e.emu.AddBuyer(bb)
			tok, err := e.emu.MintToken(b.Key(), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			w := postToken(t, a.LandingHandler(), tok)
			if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/app" {
				t.Fatalf("landing: %d %s; want Link's redirect, released once active", w.Code, w.Body)
			}
			cust := customer(b, licenseMode)
			if linked == nil || linked.Status != marketplace.StatusPending || linked.CustomerID != cust {
				t.Fatalf("link hook saw %+v, want a pending subscription of %q", linked, cust)
			}
			sub, err := a.ResolveSubscription(t.Context(), cust)
			if err != nil {
				t.Fatal(err)
			}
			if sub.Status != marketplace.StatusActive || sub.AccountID != "acct-42" {
				t.Errorf("after landing: status %q account %q", sub.Status, sub.AccountID)
			}
			if got := sub.Attributes["aws_account_id"]; got != b.CustomerAWSAccountId {
				t.Errorf("aws_account_id attribute %q, want %q", got, b.CustomerAWSAccountId)
			}
			if id := sub.Attributes["license_id"]; licenseMode && (id == "" || !strings.HasSuffix(b.LicenseArn, ":"+id)) {
				t.Errorf("license_id attribute %q of %q", id, b.LicenseArn)
			}
			if err := a.CheckEntitlement(t.Context(), cust, ""); err != nil {
				t.Errorf("active buyer not entitled: %v", err)
			}
			// A reload changes nothing.
			if w := postToken(t, a.LandingHandler(), tok); w.Code != http.StatusSeeOther {
				t.Fatalf("reload: %d %s", w.Code, w.Body)
			}
			again, _ := a.ResolveSubscription(t.Context(), cust)
			if again.Version != sub.Version {
				t.Errorf("a reload stored version %d over %d", again.Version, sub.Version)
			}
		})
	}
}

func TestLandingRefusesBadTokens(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a := codeApp(t, e)
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
			w := postToken(t, a.LandingHandler(), tc.token)
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

// sendEB posts an EventBridge event with the API key header (if any) and
// returns the answer.
func sendEB(t testing.TB, h http.Handler, body []byte, secretValue string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/aws/events", strings.NewReader(string(body)))
	if secretValue != "" {
		req.Header.Set(hdr, secretValue)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func event(t testing.TB, e *env, detailType string, b emu.Buyer) []byte {
	t.Helper()
	body, err := e.emu.EventBridgeEvent(detailType, b.Key())
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// deliver sends an event with the right key, wants 204, and applies it.
func (a *app) deliver(t testing.TB, body []byte) {
	t.Helper()
	if w := sendEB(t, a.NotificationHandler(), body, secret); w.Code != http.StatusNoContent {
		t.Fatalf("delivery: %d %s", w.Code, w.Body)
	}
	a.drain(t)
}

// TestEventBridgeLifecycle: a deprovisioned license is cancelled and its
// usage sealed and reported at once (the final flush), a redelivery
// changes nothing, a stale event is ignored, and calls without the secret
// are refused and change nothing.
func TestEventBridgeLifecycle(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a := licenseApp(t, e)
	h := a.NotificationHandler()
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product, LicenseArn: "new"})
	cust := customer(b, true)

	// An agreement event names no license: before the buyer registered,
	// it is acknowledged and changes nothing.
	created := event(t, e, "Purchase Agreement Created - Manufacturer", b)
	a.deliver(t, created)
	if _, err := a.ResolveSubscription(t.Context(), cust); !errors.Is(err, marketplace.ErrNotFound) {
		t.Fatalf("an agreement event for an unknown buyer created %v", err)
	}
	land(t, e, a.Provider, b)
	deprovEarly := event(t, e, "License Deprovisioned - Manufacturer", b)
	for _, bad := range []string{"", "wrong", secret + "x"} {
		w := sendEB(t, h, deprovEarly, bad)
		if w.Code != http.StatusUnauthorized || strings.TrimSpace(w.Body.String()) != "not authentic" {
			t.Errorf("secret %q: %d %q, want 401 not authentic", bad, w.Code, w.Body)
		}
	}
	a.drain(t)
	if ok, _ := a.IsActive(t.Context(), cust); !ok {
		t.Fatal("unauthenticated events changed the subscription, or landing did not activate")
	}
	// Usage in the current hour, then deprovisioning: the final flush seals it.
	if err := a.SubmitUsage(t.Context(), []marketplace.UsageRecord{{CustomerID: cust, Dimension: "requests", Quantity: 7, Timestamp: e.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	a.deliver(t, event(t, e, "License Deprovisioned - Manufacturer", b))
	if ok, _ := a.IsActive(t.Context(), cust); ok {
		t.Error("still active after License Deprovisioned")
	}
	if err := a.CheckEntitlement(t.Context(), cust, ""); !errors.Is(err, marketplace.ErrNoActiveSubscription) {
		t.Errorf("entitlement after deprovisioning: %v", err)
	}
	bs, err := e.ledger.Buckets(t.Context(), ledger.BucketFilter{Customer: cust, States: []ledger.State{ledger.StateSealed}})
	if err != nil || len(bs) != 1 {
		t.Fatalf("final flush sealed %d buckets (%v), want 1", len(bs), err)
	}
	rep := ledger.NewReporter(e.ledger, a.Target(), fastReporting)
	if _, err := rep.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := e.emu.Bill().Sum(b.CustomerAWSAccountId, "requests"); got != 7 {
		t.Errorf("final usage billed %d, want 7", got)
	}
	// A stale Created (older than the stored state) and a redelivery change nothing.
	a.deliver(t, created)
	e.clock.Set(testNow.Add(-time.Hour))
	stale := event(t, e, "Purchase Agreement Created - Manufacturer", b)
	e.clock.Set(testNow.Add(2 * time.Minute))
	a.deliver(t, stale)
	if ok, _ := a.IsActive(t.Context(), cust); ok {
		t.Error("a stale or redelivered event reactivated the buyer")
	}
	for name, tc := range map[string]struct {
		body string
		code int
	}{
		"not json":     {"{", http.StatusBadRequest},
		"no id":        {`{"source":"aws.agreement-marketplace","detail-type":"License Updated - Manufacturer","time":"2026-03-10T12:00:00Z"}`, http.StatusBadRequest},
		"other source": {`{"id":"x","source":"aws.ec2","detail-type":"X","time":"2026-03-10T12:00:00Z"}`, http.StatusNoContent},
	} {
		if w := sendEB(t, h, []byte(tc.body), secret); w.Code != tc.code {
			t.Errorf("%s: %d %s, want %d", name, w.Code, w.Body, tc.code)
		}
	}
	if n, err := a.store.ListNotifications(t.Context(), marketplace.AWS, "", 0); err != nil || len(n) != 3 {
		t.Errorf("inbox holds %d notifications (%v), want the 3 distinct authentic events of this source", len(n), err)
	}
}

// TestLicenseEventBeforeLanding: in license mode a License event about a
// license nobody registered makes its subscription (under the event's form
// of the ARN); the landing page then finds it by license id and gives it
// ResolveCustomer's identity instead of making a second one.
func TestLicenseEventBeforeLanding(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a := licenseApp(t, e)
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product, LicenseArn: "new"})
	a.deliver(t, event(t, e, "License Deprovisioned - Manufacturer", b))
	subs, _ := e.store.ListSubscriptions(t.Context(), marketplace.SubscriptionFilter{Provider: marketplace.AWS})
	if len(subs) != 1 || subs[0].Status != marketplace.StatusCancelled || subs[0].ID == b.LicenseArn {
		t.Fatalf("after the event: %+v, want one cancelled subscription under the event's ARN", subs)
	}
	eventID := subs[0].ID
	e.clock.Advance(time.Minute)
	land(t, e, a.Provider, b)
	subs, _ = e.store.ListSubscriptions(t.Context(), marketplace.SubscriptionFilter{Provider: marketplace.AWS})
	if len(subs) != 1 {
		t.Fatalf("%d subscriptions after landing, want the event's one taken over", len(subs))
	}
	s := subs[0]
	if s.ID != eventID || s.CustomerID != customer(b, true) || s.Status != marketplace.StatusActive || s.Attributes["license_arn"] != b.LicenseArn {
		t.Errorf("after landing: %+v", s)
	}
}

// TestProcessSettles: what Process makes of notifications it cannot or
// need not apply: not an event (parked, with its reason), another product,
// an unknown kind, and an agreement event of an account with two licenses
// (acknowledged, nothing changed).
func TestProcessSettles(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a := licenseApp(t, e)
	b1 := e.emu.AddBuyer(emu.Buyer{ProductCode: product, LicenseArn: "new"})
	b2 := e.emu.AddBuyer(emu.Buyer{ProductCode: product, LicenseArn: "new", CustomerAWSAccountId: b1.CustomerAWSAccountId})
	land(t, e, a.Provider, b1)
	land(t, e, a.Provider, b2)
	e.clock.Advance(time.Minute)
	agreement, _ := aws.DecodeEventBridge(event(t, e, "Purchase Agreement Ended - Manufacturer", b1))
	ev := func(id, kind, product string) []byte {
		body, _ := json.Marshal(aws.Event{ID: id, Kind: kind, ProductCode: product, CustomerAWSAccountId: b1.CustomerAWSAccountId, Time: e.clock.Now()})
		return body
	}
	if err := a.SubmitUsage(t.Context(), []marketplace.UsageRecord{{CustomerID: customer(b1, true), Dimension: "d", Quantity: 1, Timestamp: e.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	agreementPayload, _ := json.Marshal(agreement)
	for _, tc := range []struct {
		id      string
		payload []byte
		state   string
	}{
		{"garbage", []byte("{"), marketplace.NotificationParked},
		{"other-product", ev("other-product", "License Deprovisioned - Manufacturer", "prod-other"), marketplace.NotificationDone},
		{"unknown-kind", ev("unknown-kind", "Something New - Manufacturer", product), marketplace.NotificationDone},
		{agreement.ID, agreementPayload, marketplace.NotificationDone},
	} {
		if _, err := a.eng.Accept(t.Context(), marketplace.Notification{Provider: marketplace.AWS, ID: tc.id, Payload: tc.payload}); err != nil {
			t.Fatal(err)
		}
		a.drain(t)
		n, err := a.store.GetNotification(t.Context(), marketplace.AWS, tc.id)
		if err != nil || n.State != tc.state {
			t.Errorf("%s: %+v, %v; want %s", tc.id, n, err, tc.state)
		}
	}
	if parked, _ := a.eng.Parked(t.Context(), marketplace.AWS); len(parked) != 1 || !strings.Contains(parked[0].Reason, "not an AWS event") {
		t.Errorf("parked: %+v", parked)
	}
	if bs, _ := e.ledger.Buckets(t.Context(), ledger.BucketFilter{States: []ledger.State{ledger.StateSealed}}); len(bs) != 0 {
		t.Errorf("an ambiguous agreement event sealed %d buckets", len(bs))
	}
}

// TestEventBridgeNotConfigured: without an API key configured, every
// EventBridge delivery is refused.
func TestEventBridgeNotConfigured(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a := newApp(t, e, aws.Config{ProductCode: product, Metering: e.meter})
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	for _, v := range []string{"", secret} {
		if w := sendEB(t, a.NotificationHandler(), event(t, e, "Purchase Agreement Created - Manufacturer", b), v); w.Code != http.StatusUnauthorized {
			t.Errorf("key %q: %d", v, w.Code)
		}
	}
}

// TestDuplicateAndOutOfOrder: deprovisioning arrives before the older
// agreement event, and each is delivered twice (once more after it was
// applied): each is stored once, applied once, and the older one does not
// undo the newer.
func TestDuplicateAndOutOfOrder(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a := licenseApp(t, e)
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product, LicenseArn: "new"})
	land(t, e, a.Provider, b)
	cust := customer(b, true)
	e.clock.Advance(time.Minute)
	created := event(t, e, "Purchase Agreement Created - Manufacturer", b)
	e.clock.Advance(time.Minute)
	deprov := event(t, e, "License Deprovisioned - Manufacturer", b)
	if err := a.SubmitUsage(t.Context(), []marketplace.UsageRecord{{CustomerID: cust, Dimension: "requests", Quantity: 2, Timestamp: e.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	h := a.NotificationHandler()
	for _, body := range [][]byte{deprov, deprov, created, created} {
		if w := sendEB(t, h, body, secret); w.Code != http.StatusNoContent {
			t.Fatalf("delivery: %d %s", w.Code, w.Body)
		}
	}
	a.drain(t)
	for _, body := range [][]byte{created, deprov} { // again, after they were applied
		if w := sendEB(t, h, body, secret); w.Code != http.StatusNoContent {
			t.Fatalf("late redelivery: %d", w.Code)
		}
	}
	a.drain(t)
	sub, err := a.ResolveSubscription(t.Context(), cust)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Status != marketplace.StatusCancelled {
		t.Errorf("status %s: the older Created undid the newer Deprovisioned", sub.Status)
	}
	ns, err := a.store.ListNotifications(t.Context(), marketplace.AWS, "", 0)
	if err != nil || len(ns) != 2 {
		t.Fatalf("inbox: %d notifications (%v), want 2", len(ns), err)
	}
	for _, n := range ns {
		if n.State != marketplace.NotificationDone || n.Attempts != 0 {
			t.Errorf("%s %s: %s after %d failed attempts", n.Kind, n.ID, n.State, n.Attempts)
		}
	}
	bs, _ := e.ledger.Buckets(t.Context(), ledger.BucketFilter{Customer: cust})
	if len(bs) != 1 || bs[0].State != ledger.StateSealed || bs[0].Units != 2 {
		t.Errorf("buckets %+v, want one sealed bucket of 2", bs)
	}
}

// TestCloudReadFailsThenSucceeds: License Updated re-reads GetEntitlements;
// while the Entitlement Service fails, the notification stays pending and
// is retried with growing backoff, and it applies once the read works.
func TestCloudReadFailsThenSucceeds(t *testing.T) {
	e := newEnv(t, emu.Config{})
	var failures atomic.Int32
	failures.Store(2)
	var reads atomic.Int32
	var fault http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".GetEntitlements") {
			reads.Add(1)
			if failures.Add(-1) >= 0 {
				w.Header().Set("Content-Type", "application/x-amz-json-1.1")
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"__type":"InternalServiceErrorException","message":"injected"}`))
				return
			}
		}
		e.emu.ServeHTTP(w, r)
	})
	e.wrap.Store(&fault)
	cfg := baseConfig(e)
	// No SDK retries: each engine attempt is one read.
	cfg.Entitlements = aws.NewEntitlements(marketplaceentitlementservice.New(marketplaceentitlementservice.Options{Region: "us-east-1",
		BaseEndpoint: awssdk.String(e.srv.URL), Credentials: sqsCreds(), RetryMaxAttempts: 1}))
	a := newApp(t, e, cfg)
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	land(t, e, a.Provider, b)
	n := int64(3)
	if err := e.emu.SetEntitlements(b.Key(), []emu.Entitlement{{Dimension: "gpu", IntegerValue: &n}}); err != nil {
		t.Fatal(err)
	}
	upd := event(t, e, "License Updated - Manufacturer", b)
	var id string
	if ev, err := aws.DecodeEventBridge(upd); err == nil {
		id = ev.ID
	}
	if w := sendEB(t, a.NotificationHandler(), upd, secret); w.Code != http.StatusNoContent {
		t.Fatalf("delivery: %d", w.Code)
	}
	for i, wait := range []time.Duration{time.Second, 2 * time.Second} {
		a.drain(t)
		got, err := a.store.GetNotification(t.Context(), marketplace.AWS, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != marketplace.NotificationPending || got.Attempts != i+1 || !got.NextAttempt.Equal(e.clock.Now().Add(wait)) {
			t.Fatalf("after failed read %d: %s, %d attempts, next %v", i+1, got.State, got.Attempts, got.NextAttempt)
		}
		if err := a.CheckEntitlement(t.Context(), b.Key(), "gpu"); !errors.Is(err, marketplace.ErrEntitlementDenied) {
			t.Fatalf("entitled before the read worked: %v", err)
		}
		e.clock.Advance(wait)
	}
	a.drain(t)
	if err := a.CheckEntitlement(t.Context(), b.Key(), "gpu"); err != nil {
		t.Errorf("gpu after the read recovered: %v", err)
	}
	if got, _ := a.store.GetNotification(t.Context(), marketplace.AWS, id); got.State != marketplace.NotificationDone {
		t.Errorf("notification %s after the read recovered", got.State)
	}
	if reads.Load() != 3 {
		t.Errorf("%d GetEntitlements calls, want 3", reads.Load())
	}
}

// TestCrashBetweenAcceptAndApply: a notification stored and answered by a
// process that stops before applying it is applied by a new engine on the
// same store file; an inbox that cannot store it answers 500, so AWS
// delivers it again.
func TestCrashBetweenAcceptAndApply(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a := licenseApp(t, e)
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product, LicenseArn: "new"})
	land(t, e, a.Provider, b)
	e.clock.Advance(time.Minute)
	deprov := event(t, e, "License Deprovisioned - Manufacturer", b)
	a.store.failAdds.Store(1)
	if w := sendEB(t, a.NotificationHandler(), deprov, secret); w.Code != http.StatusInternalServerError || strings.Contains(w.Body.String(), "locked") {
		t.Fatalf("store failure: %d %q, want 500 without internal detail", w.Code, w.Body)
	}
	if w := sendEB(t, a.NotificationHandler(), deprov, secret); w.Code != http.StatusNoContent {
		t.Fatalf("redelivery: %d", w.Code)
	}
	// The process dies here. A new one opens the same file.
	store, err := sqlite.Open(t.Context(), e.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	led := ledger.New(store, ledger.Config{Clock: e.clock.Now, Logger: discard})
	t.Cleanup(func() { led.Close() })
	cfg := baseConfig(e)
	cfg.LicenseMode = true
	restarted := newAppOn(t, e, store, led, cfg)
	restarted.drain(t)
	if ok, err := restarted.IsActive(t.Context(), customer(b, true)); ok || err != nil {
		t.Errorf("after the restart: active %v (%v), want the stored deprovisioning applied", ok, err)
	}
}

// TestEntitlementsRefresh: License Updated re-reads GetEntitlements
// (through an empty page) and the cache answers the new state at once.
func TestEntitlementsRefresh(t *testing.T) {
	e := newEnv(t, emu.Config{EmptyPages: true})
	a := codeApp(t, e)
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	land(t, e, a.Provider, b)
	if err := a.CheckEntitlement(t.Context(), b.Key(), "gpu"); !errors.Is(err, marketplace.ErrEntitlementDenied) {
		t.Fatalf("before any entitlement: %v", err)
	}
	n, yes := int64(4), true
	if err := e.emu.SetEntitlements(b.Key(), []emu.Entitlement{{Dimension: "gpu", IntegerValue: &n}, {Dimension: "sso", BooleanValue: &yes}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	a.deliver(t, event(t, e, "License Updated - Manufacturer", b))
	for _, f := range []string{"gpu", "sso"} {
		if err := a.CheckEntitlement(t.Context(), b.Key(), f); err != nil {
			t.Errorf("%s after License Updated: %v", f, err)
		}
	}
	if err := e.emu.SetEntitlements(b.Key(), []emu.Entitlement{{Dimension: "sso", BooleanValue: &yes}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	a.deliver(t, event(t, e, "License Updated - Manufacturer", b))
	if err := a.CheckEntitlement(t.Context(), b.Key(), "gpu"); !errors.Is(err, marketplace.ErrEntitlementDenied) {
		t.Errorf("gpu after removal: %v", err)
	}
}

// TestEmulatorDeliversEvents: the emulator sends EventBridge events over
// HTTP to the provider's NotificationHandler.
func TestEmulatorDeliversEvents(t *testing.T) {
	var h atomic.Pointer[http.Handler]
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*h.Load()).ServeHTTP(w, r) }))
	t.Cleanup(recv.Close)
	e := newEnv(t, emu.Config{Notify: emu.NotifyConfig{EventBridgeEndpoint: recv.URL + "/events", EventBridgeHeader: hdr, EventBridgeSecret: secret}})
	a := codeApp(t, e)
	nh := a.NotificationHandler()
	h.Store(&nh)
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	land(t, e, a.Provider, b)
	for _, kind := range []string{"Purchase Agreement Ended - Manufacturer", "License Deprovisioned - Manufacturer"} {
		if code, err := e.emu.SendEventBridge(t.Context(), kind, b.Key()); err != nil || code != http.StatusNoContent {
			t.Fatalf("EventBridge delivery: %d %v", code, err)
		}
		e.clock.Advance(time.Second)
	}
	a.drain(t)
	if ok, _ := a.IsActive(t.Context(), b.Key()); ok {
		t.Fatal("still active after the delivered events")
	}
}

// TestRunSQS: Run reads EventBridge events from an SQS queue with the
// official SQS client, stores them and deletes them once stored; a
// malformed one is deleted unstored; one the inbox could not store stays
// on the queue; a queue that cannot be read yet is tried again.
func TestRunSQS(t *testing.T) {
	e := newEnv(t, emu.Config{})
	queue := e.srv.URL + "/123456789012/marketplace-events"
	cfg := baseConfig(e)
	cfg.SQS = sqs.New(sqs.Options{Region: "us-east-1", BaseEndpoint: awssdk.String(e.srv.URL), Credentials: sqsCreds(), RetryMaxAttempts: 1})
	cfg.QueueURL, cfg.SQSBackoff = queue, 10*time.Millisecond
	a := newApp(t, e, cfg)
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	land(t, e, a.Provider, b)
	e.clock.Advance(time.Second)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	time.Sleep(50 * time.Millisecond) // the queue does not exist yet: receives fail
	a.store.failAdds.Store(1)
	if err := e.emu.Enqueue(queue, "License Deprovisioned - Manufacturer", b.Key()); err != nil {
		t.Fatal(err)
	}
	e.emu.EnqueueRaw(queue, "not an event")
	waitFor(t, "the malformed message deleted and the event's first store failed", func() bool {
		return e.emu.QueueLen(queue) == 1 && a.store.failAdds.Load() == 0
	})
	// The event stays on the queue (invisible for the visibility timeout).
	time.Sleep(50 * time.Millisecond)
	if n := e.emu.QueueLen(queue); n != 1 {
		t.Fatalf("%d messages on the queue; an event that was not stored was deleted", n)
	}
	if err := e.emu.Enqueue(queue, "Purchase Agreement Ended - Manufacturer", b.Key()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second event stored and deleted", func() bool { return e.emu.QueueLen(queue) == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v, want nil", err)
	}
	a.drain(t)
	if ns, _ := a.store.ListNotifications(t.Context(), marketplace.AWS, "", 0); len(ns) != 1 || ns[0].Kind != "Purchase Agreement Ended - Manufacturer" {
		t.Errorf("inbox %+v, want the one stored event", ns)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRunWithoutQueue: with no queue configured Run waits for ctx.
func TestRunWithoutQueue(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a := codeApp(t, e)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := a.Run(ctx); err != nil || ctx.Err() == nil {
		t.Errorf("Run = %v before ctx ended (%v)", err, ctx.Err())
	}
}

func sqsCreds() awssdk.CredentialsProvider {
	return awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
		return awssdk.Credentials{AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: testCreds.SecretAccessKey}, nil
	})
}

func TestSubmitUsageLicenseMode(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a := licenseApp(t, e)
	err := a.SubmitUsage(t.Context(), []marketplace.UsageRecord{{CustomerID: "cust-legacy", Dimension: "d", Quantity: 1, Timestamp: e.clock.Now()}})
	if !errors.Is(err, marketplace.ErrMeteringFailed) || !errors.Is(err, marketplace.ErrInvalidInput) {
		t.Errorf("a legacy customer id in license mode: %v", err)
	}
	ok := aws.LicenseCustomer("123456789012", "arn:aws:license-manager::123456789012:license:l-1")
	if err := a.SubmitUsage(t.Context(), []marketplace.UsageRecord{{CustomerID: ok, Dimension: "d", Quantity: 1, Timestamp: e.clock.Now()}}); err != nil {
		t.Error(err)
	}
}
