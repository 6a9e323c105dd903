package aws_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/sqlite"
)

// Example runs a license-based buyer's whole life against the emulator:
// the landing page, usage, License Deprovisioned delivered to the
// NotificationHandler by EventBridge (stored, answered, then applied by
// the engine's worker: cancelled, usage sealed for the final report), and
// the report AWS bills.
func Example() {
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)

	// Our endpoints, which the emulator's EventBridge calls.
	mux := http.NewServeMux()
	hooks := httptest.NewServer(mux)
	defer hooks.Close()
	e := emu.New(emu.Config{Logger: logger, Notify: emu.NotifyConfig{
		EventBridgeEndpoint: hooks.URL + "/aws/notifications", EventBridgeHeader: "X-Api-Key", EventBridgeSecret: "s3cret"}})
	srv := httptest.NewServer(e)
	defer srv.Close()

	// The shared parts: store, ledger, lifecycle engine.
	dir, _ := os.MkdirTemp("", "aws-example")
	defer os.RemoveAll(dir)
	store, err := sqlite.Open(ctx, filepath.Join(dir, "marketplace.db"))
	if err != nil {
		panic(err)
	}
	defer store.Close()
	l := ledger.New(store, ledger.Config{Logger: logger})
	defer l.Close()
	engine, err := lifecycle.New(lifecycle.Deps{Store: store, Ledger: l, Logger: logger}, lifecycle.Config{})
	if err != nil {
		panic(err)
	}

	// AWS's own settings (against real AWS: aws.LoadMetering(ctx, "")).
	meter := aws.NewMetering(marketplacemetering.New(marketplacemetering.Options{Region: "us-east-1",
		BaseEndpoint: awssdk.String(srv.URL), Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", "")}))
	provider, err := aws.NewProvider(engine, aws.Config{
		ProductCode: "prod-example", LicenseMode: true, Metering: meter,
		EventBridgeHeader: "X-Api-Key", EventBridgeSecret: "s3cret",
		Link: func(_ context.Context, _ http.ResponseWriter, _ *http.Request, s *marketplace.Subscription) (string, error) {
			return "account-42", nil // the seller's own account for this buyer
		},
	})
	if err != nil {
		panic(err)
	}
	mux.Handle("POST /aws/register", provider.LandingHandler())
	mux.Handle("POST /aws/notifications", provider.NotificationHandler())

	// The buyer subscribes and AWS posts the registration token.
	buyer := e.AddBuyer(emu.Buyer{ProductCode: "prod-example", LicenseArn: "new"})
	token, _ := e.MintToken(buyer.Key(), time.Hour)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/aws/register", strings.NewReader(url.Values{aws.TokenField: {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	mux.ServeHTTP(rec, req)
	customer := aws.LicenseCustomer(buyer.CustomerAWSAccountId, buyer.LicenseArn)
	s, _ := provider.ResolveSubscription(ctx, customer)
	fmt.Println("landing:", rec.Code, s.Status, "account:", s.AccountID)

	// Usage, then the license ends: EventBridge calls the handler, which
	// stores the event and answers; the engine's worker (a daemon runs
	// engine.Run) cancels the subscription and seals the buyer's usage.
	provider.SubmitUsage(ctx, []marketplace.UsageRecord{{CustomerID: customer, Dimension: "requests", Quantity: 7, Timestamp: time.Now()}})
	status, _ := e.SendEventBridge(ctx, "License Deprovisioned - Manufacturer", buyer.Key())
	fmt.Println("notification:", status)
	engine.Drain(ctx)
	active, _ := provider.IsActive(ctx, customer)
	fmt.Println("active:", active)

	// The final report: sealed usage goes out at once.
	ledger.NewReporter(l, provider.Target(), ledger.ReporterConfig{Logger: logger}).RunOnce(ctx)
	fmt.Println("billed requests:", e.Bill().Sum(buyer.CustomerAWSAccountId, "requests"))
	// Output:
	// landing: 200 active account: account-42
	// notification: 204
	// active: false
	// billed requests: 7
}
