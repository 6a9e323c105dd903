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
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/sqlite"
)

// Example runs the whole loop against the emulator: a purchase, the
// landing page, a plan change through the webhook (accepted by Decide,
// applied once Azure completed it), an entitlement check, usage billed per
// million tokens, and the report Azure bills.
func Example() {
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)

	// The emulator, calling the webhook we mount below.
	mux := http.NewServeMux()
	hooks := httptest.NewServer(mux)
	defer hooks.Close()
	e := emu.New(emu.Config{Logger: logger, WebhookURL: hooks.URL + "/azure/webhook", PatchDelay: 200 * time.Millisecond})
	srv := httptest.NewTLSServer(e) // the Entra authority must be https
	defer srv.Close()
	ecfg := e.Config()

	// The shared parts: store, ledger, lifecycle engine.
	dir, _ := os.MkdirTemp("", "azure-example")
	defer os.RemoveAll(dir)
	store, err := sqlite.Open(ctx, filepath.Join(dir, "marketplace.db"))
	if err != nil {
		panic(err)
	}
	defer store.Close()
	l := ledger.New(store, ledger.Config{Units: map[string]int64{"tokens_1m": 1_000_000}, Logger: logger})
	defer l.Close()
	engine, err := lifecycle.New(lifecycle.Deps{Store: store, Ledger: l, Logger: logger}, lifecycle.Config{})
	if err != nil {
		panic(err)
	}

	// Azure's own settings.
	cred, err := azure.NewCredential(azure.CredentialConfig{TenantID: ecfg.TenantID, ClientID: ecfg.PublisherApp,
		ClientSecret: "any", Authority: srv.URL, HTTPClient: srv.Client()})
	if err != nil {
		panic(err)
	}
	client := azure.NewClient(azure.ClientConfig{BaseURL: srv.URL + "/api", HTTPClient: srv.Client(), Tokens: azure.NewTokens(cred, 0),
		PollInterval: 50 * time.Millisecond})
	provider, err := azure.NewProvider(engine, azure.Config{
		Client: client, TenantID: ecfg.TenantID, AppID: ecfg.PublisherApp,
		JWKSURL: srv.URL + "/" + ecfg.TenantID + "/discovery/v2.0/keys", HTTPClient: srv.Client(),
		Link: func(_ context.Context, _ http.ResponseWriter, _ *http.Request, s *marketplace.Subscription) (string, error) {
			return "account-42", nil // the seller's own account for this buyer
		},
		Decide: func(_ context.Context, _ *marketplace.Subscription, op *azure.Operation) (bool, error) {
			return op.Action != azure.ActionChangeQuantity || op.Quantity <= 100, nil
		},
	})
	if err != nil {
		panic(err)
	}
	mux.Handle("/azure/landing", provider.LandingHandler())
	mux.Handle("/azure/webhook", provider.NotificationHandler())

	// The buyer purchases and Azure sends them to the landing page.
	p, _ := e.CreatePurchase(emu.Purchase{PlanID: "basic"})
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/azure/landing?token="+url.QueryEscape(p.Token), nil))
	fmt.Println("landing:", rec.Code)

	// The buyer moves to pro: Azure calls the webhook, which stores the call
	// and answers; the engine's worker (a daemon runs engine.Run) answers
	// the operation and applies it once Azure completed it.
	_, status, _ := e.Drive(ctx, p.SubscriptionID, emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"})
	fmt.Println("webhook:", status)
	engine.Drain(ctx)
	s, _ := provider.ResolveSubscription(ctx, p.SubscriptionID)
	fmt.Println("plan:", s.Plan, "account:", s.AccountID)
	fmt.Println("entitled to pro:", provider.CheckEntitlement(ctx, p.SubscriptionID, "pro") == nil)

	// Usage of an hour that has ended (and its grace period), then the report.
	hour := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	provider.SubmitUsage(ctx, []marketplace.UsageRecord{
		{CustomerID: p.SubscriptionID, Dimension: "tokens_1m", Quantity: 2_500_000, Timestamp: hour.Add(10 * time.Minute)},
	})
	l.Seal(ctx)
	ledger.NewReporter(l, provider.Target(), ledger.ReporterConfig{Logger: logger}).RunOnce(ctx)
	for _, line := range e.Bill() {
		fmt.Println("billed:", line.Dimension, line.Quantity, "plan", line.PlanID)
	}
	// Output:
	// landing: 200
	// webhook: 200
	// plan: pro account: account-42
	// entitled to pro: true
	// billed: tokens_1m 2 plan pro
}
