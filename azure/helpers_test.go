package azure_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/azure"
	emu "github.com/saasmarket/marketplace/emulator/azure"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/sqlite"
)

// testNow is the fake clock's start: hours 09:00 to 11:00 are over and
// seal at once; the current hour is 12:00.
var testNow = time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)

func onDay(h, m int) time.Time { return time.Date(2026, 3, 10, h, m, 0, 0, time.UTC) }

var discard = slog.New(slog.DiscardHandler)

const clientSecret = "s3cret"

// env is the emulator on a TLS test server, our client authenticated by a
// real azidentity credential against the emulator's token endpoint, and a
// ledger and stores on SQLite.
type env struct {
	emu    *emu.Emulator
	srv    *httptest.Server
	client *azure.Client
	path   string // of the SQLite store
	store  *sqlite.Store
	ledger *ledger.Ledger
	clock  *ledgertest.Clock
	// now is the clock of the emulator and ledger: clock.Now, unless the
	// emulator's Config.Clock was given.
	now    func() time.Time
	tenant string
	app    string
}

func newEnv(t testing.TB, cfg emu.Config, lcfg ledger.Config) *env {
	t.Helper()
	clock := ledgertest.NewClock(testNow)
	if cfg.Clock == nil {
		cfg.Clock = clock.Now
	}
	cfg.Logger = discard
	if cfg.PublisherApp == "" {
		cfg.PublisherApp = "6a1e7f7c-3d8e-4b5a-9c2f-0e1d2c3b4a59"
	}
	if cfg.Clients == nil {
		cfg.Clients = map[string]string{cfg.PublisherApp: clientSecret}
	}
	if cfg.OperationDelay == 0 {
		cfg.OperationDelay = 10 * time.Millisecond
	}
	e := emu.New(cfg)
	srv := httptest.NewTLSServer(e)
	t.Cleanup(srv.Close)
	ec := e.Config()
	cred, err := azure.NewCredential(azure.CredentialConfig{TenantID: ec.TenantID, ClientID: ec.PublisherApp,
		ClientSecret: clientSecret, Authority: srv.URL, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	client := azure.NewClient(azure.ClientConfig{BaseURL: srv.URL + "/api", HTTPClient: srv.Client(),
		Tokens: azure.NewTokens(cred, 0), PollInterval: 5 * time.Millisecond})
	path := filepath.Join(t.TempDir(), "m.db")
	store, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	lcfg.Clock = cfg.Clock
	lcfg.Logger = discard
	l := ledger.New(store, lcfg)
	t.Cleanup(func() { l.Close() })
	return &env{emu: e, srv: srv, client: client, path: path, store: store, ledger: l, clock: clock, now: cfg.Clock,
		tenant: ec.TenantID, app: ec.PublisherApp}
}

// subscribe purchases plan, activates it through the client, and stores
// the subscription as active.
func (v *env) subscribe(t testing.TB, plan string) string {
	t.Helper()
	p, err := v.emu.CreatePurchase(emu.Purchase{PlanID: plan})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.client.Activate(t.Context(), p.SubscriptionID, plan, 0); err != nil {
		t.Fatal(err)
	}
	v.put(t, marketplace.Subscription{ID: p.SubscriptionID, CustomerID: p.SubscriptionID, Provider: marketplace.Azure,
		Status: marketplace.StatusActive, Plan: plan})
	return p.SubscriptionID
}

func (v *env) put(t testing.TB, s marketplace.Subscription) {
	t.Helper()
	if _, err := v.store.PutSubscription(t.Context(), s); err != nil {
		t.Fatal(err)
	}
}

// reportAll seals and reports until no sealed bucket is left, moving the
// clock past backoffs.
func (v *env) reportAll(t testing.TB, r *ledger.Reporter) {
	t.Helper()
	if _, err := v.ledger.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	for round := 0; ; round++ {
		if round == 500 {
			t.Fatal("reporting did not finish in 500 rounds")
		}
		if _, err := r.RunOnce(t.Context()); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		sealed, err := v.ledger.Buckets(t.Context(), ledger.BucketFilter{States: []ledger.State{ledger.StateSealed}})
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) == 0 {
			return
		}
		v.clock.Advance(15 * time.Second)
	}
}

var fastReporting = ledger.ReporterConfig{Lease: time.Minute, BackoffBase: time.Second, BackoffMax: 5 * time.Second, Logger: discard}

// webhookSink serves a handler and lets tests swap it.
type webhookSink struct {
	mu sync.Mutex
	h  http.Handler
}

func (s *webhookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	h := s.h
	s.mu.Unlock()
	h.ServeHTTP(w, r)
}

// options of a hooked fixture.
type options struct {
	emu emu.Config
	// cfg is the provider's Config; Client, TenantID, AppID, JWKSURL and
	// HTTPClient are filled in, and Decide when nil (from hooked.decide).
	cfg azure.Config
	// transport wraps the client's transport (fault injection).
	transport func(http.RoundTripper) http.RoundTripper
	// engine tunes the lifecycle engine.
	engine lifecycle.Config
}

// hooked is an env with a lifecycle engine and the Azure provider, whose
// webhook the emulator calls (through sink, which tests may swap).
type hooked struct {
	*env
	eng      *lifecycle.Engine
	provider *azure.Provider
	hook     http.Handler // the provider's NotificationHandler
	landing  http.Handler // the provider's LandingHandler
	sink     *webhookSink

	mu      sync.Mutex
	decide  func(op *azure.Operation) bool
	decided int // Decide calls
}

func newHooked(t testing.TB, o options) *hooked {
	t.Helper()
	sink := &webhookSink{h: http.NotFoundHandler()}
	hs := httptest.NewServer(sink)
	t.Cleanup(hs.Close)
	o.emu.WebhookURL = hs.URL
	v := newEnv(t, o.emu, ledger.Config{})
	h := &hooked{env: v, sink: sink}
	h.eng = newEngine(t, v.store, v.ledger, v.now, o.engine)
	h.provider = h.newProvider(t, h.eng, o)
	h.hook = h.provider.NotificationHandler()
	h.landing = h.provider.LandingHandler()
	h.setSink(h.hook)
	return h
}

func newEngine(t testing.TB, store *sqlite.Store, l *ledger.Ledger, now func() time.Time, cfg lifecycle.Config) *lifecycle.Engine {
	t.Helper()
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	e, err := lifecycle.New(lifecycle.Deps{Store: store, Ledger: l, Logger: discard, Clock: now}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// newProvider registers an Azure provider with e, talking to h's emulator.
func (h *hooked) newProvider(t testing.TB, e *lifecycle.Engine, o options) *azure.Provider {
	t.Helper()
	cfg := o.cfg
	cfg.Client = h.client
	if o.transport != nil {
		cfg.Client = azure.NewClient(azure.ClientConfig{BaseURL: h.srv.URL + "/api", HTTPClient: &http.Client{Transport: o.transport(h.srv.Client().Transport)},
			Tokens: tokensOf(t, h.env), PollInterval: 5 * time.Millisecond})
	}
	cfg.TenantID, cfg.AppID = h.tenant, h.app
	cfg.JWKSURL = h.srv.URL + "/" + h.tenant + "/discovery/v2.0/keys"
	cfg.HTTPClient = h.srv.Client()
	if cfg.Decide == nil {
		cfg.Decide = func(_ context.Context, _ *marketplace.Subscription, op *azure.Operation) (bool, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.decided++
			if h.decide != nil {
				return h.decide(op), nil
			}
			return true, nil
		}
	}
	if cfg.OperationWait == 0 {
		cfg.OperationWait = 20 * time.Millisecond // the fake clock stands still meanwhile
	}
	p, err := azure.NewProvider(e, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func tokensOf(t testing.TB, v *env) azure.TokenSource {
	t.Helper()
	cred, err := azure.NewCredential(azure.CredentialConfig{TenantID: v.tenant, ClientID: v.app, ClientSecret: clientSecret,
		Authority: v.srv.URL, HTTPClient: v.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return azure.NewTokens(cred, 0)
}

func (h *hooked) setSink(handler http.Handler) {
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	h.sink.h = handler
}

// lose makes the emulator's webhook calls go nowhere (answered 200 unseen).
func (h *hooked) lose() { h.setSink(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})) }

// decisions returns how often Decide was asked.
func (h *hooked) decisions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.decided
}

// land buys plan and goes through the landing page.
func (h *hooked) land(t testing.TB, plan string) string {
	t.Helper()
	p, err := h.emu.CreatePurchase(emu.Purchase{PlanID: plan})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/azure/landing?token="+url.QueryEscape(p.Token), nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("landing: %d %s", rec.Code, rec.Body)
	}
	return p.SubscriptionID
}

// drive makes the emulator apply a and call the webhook, which must
// answer 200; it returns the operation id. Nothing is applied yet.
func (h *hooked) drive(t testing.TB, id string, a emu.Action) string {
	t.Helper()
	h.clock.Advance(time.Second)
	op, status, err := h.emu.Drive(t.Context(), id, a)
	if err != nil || status != http.StatusOK {
		t.Fatalf("%s: webhook answered %d, %v", a.Name, status, err)
	}
	return op
}

// settle lets the worker apply everything accepted: it drains the engine
// and moves the fake clock on (past PatchDelay and backoffs) until no
// notification is pending.
func (h *hooked) settle(t testing.TB) { t.Helper(); settleWith(t, h, h.eng) }

// settleWith settles with engine e (another process's, say).
func settleWith(t testing.TB, h *hooked, e *lifecycle.Engine) {
	t.Helper()
	for round := range 30 {
		if err := e.Drain(t.Context()); err != nil {
			t.Fatalf("drain, round %d: %v", round, err)
		}
		pending, err := h.store.ListNotifications(t.Context(), marketplace.Azure, marketplace.NotificationPending, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) == 0 {
			return
		}
		h.clock.Advance(5 * time.Second)
	}
	t.Fatal("notifications still pending after 30 rounds")
}

func (h *hooked) stored(t testing.TB, id string) *marketplace.Subscription {
	t.Helper()
	s, err := h.store.GetSubscription(t.Context(), marketplace.Azure, id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (h *hooked) notification(t testing.TB, op string) *marketplace.Notification {
	t.Helper()
	n, err := h.store.GetNotification(t.Context(), marketplace.Azure, op)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// describe shows a notification's state without its payload.
func describe(n *marketplace.Notification) string {
	return fmt.Sprintf("%s %s: state %s, attempts %d, next %s, progress %q, reason %q",
		n.Kind, n.ID, n.State, n.Attempts, n.NextAttempt.Format(time.RFC3339), n.Progress, n.Reason)
}
