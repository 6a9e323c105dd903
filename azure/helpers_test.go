package azure_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/azure"
	emu "github.com/saasmarket/marketplace/emulator/azure"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
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
	store  *sqlite.Store
	ledger *ledger.Ledger
	clock  *ledgertest.Clock
	tenant string
	app    string
}

func newEnv(t testing.TB, cfg emu.Config, lcfg ledger.Config) *env {
	t.Helper()
	clock := ledgertest.NewClock(testNow)
	cfg.Clock = clock.Now
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
	store, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	lcfg.Clock = clock.Now
	lcfg.Logger = discard
	l := ledger.New(store, lcfg)
	t.Cleanup(func() { l.Close() })
	return &env{emu: e, srv: srv, client: client, store: store, ledger: l, clock: clock, tenant: ec.TenantID, app: ec.PublisherApp}
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
