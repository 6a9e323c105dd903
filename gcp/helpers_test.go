package gcp_test

import (
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/api/cloudcommerceprocurement/v1"
	"google.golang.org/api/option"
	"google.golang.org/api/servicecontrol/v1"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
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
	e.store, err = sqlite.Open(ctx, filepath.Join(t.TempDir(), "ledger.db"))
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
		Metrics: map[string]string{gcp.TokenDimension: "tokens_1m", "requests": "requests"}, Limits: ledger.Limits{MaxItems: 5}})
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
