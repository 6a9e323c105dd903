package gcp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/api/cloudcommerceprocurement/v1"
	"google.golang.org/api/option"
	"google.golang.org/api/servicecontrol/v1"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/gcp"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/sqlite"
)

var discard = slog.New(slog.DiscardHandler)

// testNow: the hours 09:00 to 11:00 are over; the current hour is 12:00.
var testNow = time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)

func onDay(h, m int) time.Time { return time.Date(2026, 3, 10, h, m, 0, 0, time.UTC) }

const service = "example-api.endpoints.seller-project.cloud.goog"

// env is the emulator on a real HTTP server, the official clients pointed
// at it, and a ledger on SQLite, all on one fake clock.
type env struct {
	path   string // the SQLite file
	clock  *ledgertest.Clock
	emu    *emu.Emulator
	srv    *httptest.Server
	store  *sqlite.Store
	ledger *ledger.Ledger
	sc     *servicecontrol.Service
	proc   *gcp.Procurement
}

func newEnv(t testing.TB, cfg emu.Config) *env {
	t.Helper()
	ctx := t.Context()
	e := &env{clock: ledgertest.NewClock(testNow)}
	cfg.ServiceName = service
	if cfg.Audience == "" {
		cfg.Audience = audience
	}
	if cfg.Metrics == nil {
		cfg.Metrics = []string{"tokens_1m", "requests"}
	}
	cfg.Clock = e.clock.Now
	cfg.Logger = discard
	var err error
	e.emu, err = emu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.emu.Handler())
	t.Cleanup(e.srv.Close)
	opts := []option.ClientOption{option.WithEndpoint(e.srv.URL + "/"), option.WithoutAuthentication(), option.WithHTTPClient(e.srv.Client())}
	e.sc, err = servicecontrol.NewService(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := cloudcommerceprocurement.NewService(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	e.proc = gcp.NewProcurement(ps, e.emu.ProviderID())
	e.path = filepath.Join(t.TempDir(), "ledger.db")
	e.store, err = sqlite.Open(ctx, e.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	e.ledger = ledger.New(e.store, ledger.Config{Clock: e.clock.Now, Logger: discard, Units: gcp.LedgerUnits()})
	t.Cleanup(func() { e.ledger.Close() })
	return e
}

// activeConsumer buys and approves an entitlement and returns its
// usageReportingId, the ledger customer.
func (e *env) activeConsumer(t *testing.T, account string) (entID, consumer string) {
	t.Helper()
	id := e.emu.Purchase(t.Context(), account, "example-api", "standard")
	if err := e.proc.ApproveEntitlement(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	_, _, consumer, _ = e.emu.Entitlement(id)
	return id, consumer
}

func (e *env) reporter(t *testing.T) *ledger.Reporter {
	t.Helper()
	target, err := gcp.NewReporter(gcp.ReporterConfig{Client: e.sc, ServiceName: service, Clock: e.clock.Now, Logger: discard,
		Metrics: map[string]string{gcp.DimensionTokens: "tokens_1m", "requests": "requests"}, Limits: ledger.Limits{MaxItems: 5}})
	if err != nil {
		t.Fatal(err)
	}
	// MinRate: the emulator throttles at random, not by rate, and the
	// reporter's pace runs on real time.
	return ledger.NewReporter(e.ledger, target, ledger.ReporterConfig{Lease: time.Minute, BackoffBase: time.Second,
		BackoffMax: 10 * time.Second, MinRate: 200, Logger: discard})
}

// reportAll runs rounds until no bucket is left sealed, moving the clock
// past backoffs.
func (e *env) reportAll(t *testing.T, r *ledger.Reporter) {
	t.Helper()
	ctx := t.Context()
	for round := 0; ; round++ {
		if round == 500 {
			t.Fatal("reporting did not finish in 500 rounds")
		}
		if _, err := r.RunOnce(ctx); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		sealed, err := e.ledger.Buckets(ctx, ledger.BucketFilter{Provider: marketplace.GCP, States: []ledger.State{ledger.StateSealed}})
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) == 0 {
			return
		}
		e.clock.Advance(time.Minute)
	}
}

func (e *env) buckets(t *testing.T, states ...ledger.State) []ledger.Bucket {
	t.Helper()
	bs, err := e.ledger.Buckets(t.Context(), ledger.BucketFilter{Provider: marketplace.GCP, States: states})
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

const (
	audience     = "saas.example.com"
	pushAudience = "https://seller.example.com/gcp/pubsub"
	pushAccount  = "pubsub-push@seller-project.iam.gserviceaccount.com"
)

// baseConfig is a Config against e's emulator: sign-up and push keys from
// its x509 URL.
func baseConfig(e *env) gcp.Config {
	return gcp.Config{Procurement: e.proc, ServiceControl: e.sc, ServiceName: service,
		Metrics:        map[string]string{gcp.DimensionTokens: "tokens_1m", "requests": "requests"},
		SignupAudience: audience, SignupKeysURL: e.srv.URL + "/x509",
		PushServiceAccount: pushAccount, PushAudience: pushAudience, PushKeysURL: e.srv.URL + "/x509"}
}

// flakyStore fails AddNotification and PutSubscription while their
// counters are above zero, and ListSubscriptions always: nothing on a
// request or notification path may list subscriptions (lookups use the
// attribute index).
type flakyStore struct {
	*sqlite.Store
	failAdd, failPut atomic.Int32
}

var errStoreDown = errors.New("store down")

func (f *flakyStore) AddNotification(ctx context.Context, n marketplace.Notification) (bool, error) {
	if f.failAdd.Add(-1) >= 0 {
		return false, errStoreDown
	}
	return f.Store.AddNotification(ctx, n)
}

func (f *flakyStore) ListSubscriptions(context.Context, marketplace.SubscriptionFilter) ([]marketplace.Subscription, error) {
	return nil, errors.New("test store: ListSubscriptions called; look subscriptions up by attribute")
}

func (f *flakyStore) PutSubscription(ctx context.Context, s marketplace.Subscription) (*marketplace.Subscription, error) {
	if f.failPut.Add(-1) >= 0 {
		return nil, errStoreDown
	}
	return f.Store.PutSubscription(ctx, s)
}

// app is a lifecycle engine on env's store (through a flakyStore) with the
// Google provider registered; the plan "pro" includes the feature "gpu".
type app struct {
	*env
	store   *flakyStore
	eng     *lifecycle.Engine
	p       *gcp.Provider
	pub     *recordingPublisher // nil unless made by newLifecycleEnv
	deleted atomic.Int32        // AccountDeleted calls
}

func newApp(t testing.TB, e *env, cfg gcp.Config) *app {
	t.Helper()
	a := &app{env: e, store: &flakyStore{Store: e.store}}
	loader := entitlement.StoreLoader{Subscriptions: a.store, Entitlements: a.store, Clock: e.clock.Now,
		PlanFeatures: map[string][]string{"pro": {"gpu"}}}
	var err error
	a.eng, err = lifecycle.New(lifecycle.Deps{Store: a.store, Ledger: e.ledger, Logger: discard, Clock: e.clock.Now,
		Entitlements: entitlement.New(loader.Load, entitlement.Config{Clock: e.clock.Now})},
		lifecycle.Config{Poll: 10 * time.Millisecond, MinBackoff: time.Second, MaxBackoff: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AccountDeleted == nil {
		cfg.AccountDeleted = func(context.Context, string) error { a.deleted.Add(1); return nil }
	}
	a.p, err = gcp.NewProvider(a.eng, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// newLifecycleEnv is an app whose emulator records every lifecycle event
// it publishes (and forwards it to next, when set).
func newLifecycleEnv(t testing.TB, next interface {
	Publish(context.Context, []byte) error
}, cfg func(*gcp.Config)) *app {
	t.Helper()
	return newLifecycleEnvOf(t, emu.Config{}, next, cfg)
}

// newLifecycleEnvOf is newLifecycleEnv with the emulator set up by ec
// (its Publisher and Clock are the env's).
func newLifecycleEnvOf(t testing.TB, ec emu.Config, next interface {
	Publish(context.Context, []byte) error
}, cfg func(*gcp.Config)) *app {
	t.Helper()
	pub := &recordingPublisher{next: next}
	ec.Publisher = pub
	e := newEnv(t, ec)
	c := baseConfig(e)
	if cfg != nil {
		cfg(&c)
	}
	a := newApp(t, e, c)
	a.pub = pub
	return a
}

// pushBody wraps a lifecycle message as a Pub/Sub push delivery.
func pushBody(data []byte, id string) []byte {
	b, _ := json.Marshal(map[string]any{
		"message":      map[string]any{"data": data, "messageId": id, "attributes": map[string]string{}},
		"subscription": "projects/seller-project/subscriptions/marketplace-push",
	})
	return b
}

// push delivers a message to the NotificationHandler with auth as the
// Authorization header.
func (a *app) push(t testing.TB, body []byte, auth string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/gcp/pubsub", bytes.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	a.p.NotificationHandler().ServeHTTP(w, req)
	return w
}

// bearer mints a valid push token.
func (a *app) bearer(t testing.TB) string {
	t.Helper()
	tok, err := a.emu.MintPushToken(pushAudience, pushAccount, emu.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + tok
}

// deliver pushes one lifecycle message, which must be accepted.
func (a *app) deliver(t testing.TB, data []byte) {
	t.Helper()
	if w := a.push(t, pushBody(data, "m"), a.bearer(t)); w.Code != http.StatusNoContent {
		t.Fatalf("push delivery: %d %s", w.Code, w.Body)
	}
}

// apply runs the engine's worker over everything due.
func (a *app) apply(t testing.TB) {
	t.Helper()
	if err := a.eng.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// drain pushes every event published from index from on, and those their
// application causes, applying each; it returns the new index.
func (a *app) drain(t testing.TB, from int) int {
	t.Helper()
	for {
		evs := a.pub.events()
		if from == len(evs) {
			return from
		}
		for ; from < len(evs); from++ {
			a.deliver(t, evs[from])
		}
		a.apply(t)
	}
}

func (a *app) sub(t testing.TB, id string) *marketplace.Subscription {
	t.Helper()
	s, err := a.env.store.GetSubscription(t.Context(), marketplace.GCP, id)
	if errors.Is(err, marketplace.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// notification returns the stored notification of an event.
func (a *app) notification(t testing.TB, data []byte) *marketplace.Notification {
	t.Helper()
	m, err := gcp.DecodeMessage(data)
	if err != nil {
		t.Fatal(err)
	}
	n, err := a.env.store.GetNotification(t.Context(), marketplace.GCP, m.EventID)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// failN is a transport that fails the first n requests whose path ends
// with suffix (with a 503) and passes the rest on.
type failN struct {
	next   http.RoundTripper
	suffix string
	n      atomic.Int32
	seen   atomic.Int32
}

func (f *failN) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, f.suffix) {
		f.seen.Add(1)
		if f.n.Add(-1) >= 0 {
			return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable", Request: r,
				Header: http.Header{"Content-Type": {"application/json"}},
				Body:   io.NopCloser(strings.NewReader(`{"error":{"code":503,"message":"injected","status":"UNAVAILABLE"}}`))}, nil
		}
	}
	return f.next.RoundTrip(r)
}

// procurementVia returns a Procurement client of e's emulator whose calls
// go through rt.
func (e *env) procurementVia(t testing.TB, rt http.RoundTripper) *gcp.Procurement {
	t.Helper()
	ps, err := cloudcommerceprocurement.NewService(t.Context(), option.WithEndpoint(e.srv.URL+"/"), option.WithoutAuthentication(),
		option.WithHTTPClient(&http.Client{Transport: rt}))
	if err != nil {
		t.Fatal(err)
	}
	return gcp.NewProcurement(ps, e.emu.ProviderID())
}
