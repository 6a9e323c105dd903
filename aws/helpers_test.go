package aws_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/marketplaceentitlementservice"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering"

	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
	"github.com/saasmarket/marketplace/sqlite"
)

// testNow is the fake clock's start: hours 09:00 to 11:00 are over and
// seal at once; the current hour is 12:00.
var testNow = time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)

func onDay(h, m int) time.Time { return time.Date(2026, 3, 10, h, m, 0, 0, time.UTC) }

var discard = slog.New(slog.DiscardHandler)

var testCreds = emu.Credentials{AccessKeyID: "AKIDEMULATOR", SecretAccessKey: "emulator-secret"}

// env is an emulator on 127.0.0.1 with SigV4 checks on, the official SDK
// clients pointed at it, and a ledger on SQLite with a fake clock that the
// emulator shares.
type env struct {
	clock  *ledgertest.Clock
	emu    *emu.Emulator
	srv    *httptest.Server
	sdk    *marketplacemetering.Client
	ent    *marketplaceentitlementservice.Client
	meter  *aws.Metering
	ledger *ledger.Ledger
	store  *sqlite.Store
	path   string // of the store's file
	// wrap, when set, serves the emulator's requests instead (to watch them).
	wrap atomic.Pointer[http.Handler]
}

func newEnv(t testing.TB, cfg emu.Config) *env {
	t.Helper()
	e := &env{clock: ledgertest.NewClock(testNow)}
	if cfg.Clock == nil {
		cfg.Clock = e.clock.Now
	}
	cfg.Credentials = []emu.Credentials{testCreds}
	cfg.Logger = discard
	e.emu = emu.New(cfg)
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := e.wrap.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		e.emu.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	creds := awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
		return awssdk.Credentials{AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: testCreds.SecretAccessKey}, nil
	})
	e.sdk = marketplacemetering.New(marketplacemetering.Options{Region: "us-east-1", BaseEndpoint: awssdk.String(e.srv.URL), Credentials: creds})
	e.ent = marketplaceentitlementservice.New(marketplaceentitlementservice.Options{Region: "us-east-1", BaseEndpoint: awssdk.String(e.srv.URL), Credentials: creds})
	e.meter = aws.NewMetering(e.sdk)
	e.path = filepath.Join(t.TempDir(), "ledger.db")
	store, err := sqlite.Open(t.Context(), e.path)
	if err != nil {
		t.Fatal(err)
	}
	e.store = store
	t.Cleanup(func() { store.Close() })
	e.ledger = ledger.New(store, ledger.Config{Clock: e.clock.Now, Logger: discard, Units: map[string]int64{aws.DimensionTokens: 1_000_000}})
	t.Cleanup(func() { e.ledger.Close() })
	return e
}

var fastReporting = ledger.ReporterConfig{Lease: time.Minute, BackoffBase: time.Second, BackoffMax: 10 * time.Second, Logger: discard}

// reportAll runs the reporters until no sealed bucket is left, moving the
// clock past backoffs between rounds.
func (e *env) reportAll(t testing.TB, reporters ...*ledger.Reporter) {
	t.Helper()
	ctx := t.Context()
	for round := 0; ; round++ {
		if round == 500 {
			t.Fatal("reporting did not finish in 500 rounds")
		}
		var wg sync.WaitGroup
		errs := make([]error, len(reporters))
		for i, r := range reporters {
			wg.Go(func() { _, errs[i] = r.RunOnce(ctx) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		sealed, err := e.ledger.Buckets(ctx, ledger.BucketFilter{States: []ledger.State{ledger.StateSealed}})
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) == 0 {
			return
		}
		e.clock.Advance(30 * time.Second)
	}
}
