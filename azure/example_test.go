package azure_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/azure"
	emu "github.com/saasmarket/marketplace/emulator/azure"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/sqlite"
)

// Example runs the whole loop against the emulator: a purchase, the
// landing page, an entitlement check, usage billed per million tokens,
// and the report Azure bills.
func Example() {
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	e := emu.New(emu.Config{Logger: logger})
	srv := httptest.NewTLSServer(e) // the Entra authority must be https
	defer srv.Close()
	cfg := e.Config()

	dir, _ := os.MkdirTemp("", "azure-example")
	defer os.RemoveAll(dir)
	store, err := sqlite.Open(ctx, filepath.Join(dir, "marketplace.db"))
	if err != nil {
		panic(err)
	}
	defer store.Close()
	l := ledger.New(store, ledger.Config{Units: map[string]int64{"tokens_1m": 1_000_000}, Logger: logger})
	defer l.Close()

	cred, err := azure.NewCredential(azure.CredentialConfig{TenantID: cfg.TenantID, ClientID: cfg.PublisherApp,
		ClientSecret: "any", Authority: srv.URL, HTTPClient: srv.Client()})
	if err != nil {
		panic(err)
	}
	client := azure.NewClient(azure.ClientConfig{BaseURL: srv.URL + "/api", HTTPClient: srv.Client(), Tokens: azure.NewTokens(cred, 0)})
	provider := azure.NewProvider(l, store, store, entitlement.Config{})
	landing := azure.NewLanding(azure.LandingConfig{Client: client, Subs: store, Logger: logger,
		Activated: func(_ context.Context, s *marketplace.Subscription) { provider.Invalidate(s.CustomerID) }})

	// The buyer purchases and Azure sends them to the landing page.
	p, _ := e.CreatePurchase(emu.Purchase{PlanID: "pro"})
	rec := httptest.NewRecorder()
	landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/azure/landing?token="+url.QueryEscape(p.Token), nil))
	fmt.Println("landing:", rec.Code)
	fmt.Println("entitled to pro:", provider.CheckEntitlement(ctx, p.SubscriptionID, "pro") == nil)

	// Usage of an hour that has ended (and its grace period), then the report.
	hour := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	provider.SubmitUsage(ctx, []marketplace.UsageRecord{
		{CustomerID: p.SubscriptionID, Dimension: "tokens_1m", Quantity: 2_500_000, Timestamp: hour.Add(10 * time.Minute)},
	})
	l.Seal(ctx)
	target, err := azure.NewReporter(azure.ReporterConfig{Client: client, Subscriptions: store, Logger: logger})
	if err != nil {
		panic(err)
	}
	rep := ledger.NewReporter(l, target, ledger.ReporterConfig{Logger: logger})
	rep.RunOnce(ctx)
	for _, line := range e.Bill() {
		fmt.Println("billed:", line.Dimension, line.Quantity, "plan", line.PlanID)
	}
	// Output:
	// landing: 200
	// entitled to pro: true
	// billed: tokens_1m 2 plan pro
}
