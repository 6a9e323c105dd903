package gcp_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/api/cloudcommerceprocurement/v1"
	"google.golang.org/api/option"
	"google.golang.org/api/servicecontrol/v1"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/sqlite"
)

// Example runs a buyer's first billed hour against the emulator: the
// lifecycle approves the purchase, the provider records tokens, and the
// reporter bills whole millions through Service Control.
func Example() {
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	now := time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	var events [][]byte
	e, _ := emu.New(emu.Config{ServiceName: service, Clock: clock, Logger: logger,
		Publisher: publisherFunc(func(_ context.Context, b []byte) error { events = append(events, b); return nil })})
	srv := httptest.NewServer(e.Handler())
	defer srv.Close()
	opts := []option.ClientOption{option.WithEndpoint(srv.URL + "/"), option.WithoutAuthentication()}
	procSvc, _ := cloudcommerceprocurement.NewService(ctx, opts...)
	scSvc, _ := servicecontrol.NewService(ctx, opts...)

	dir, _ := os.MkdirTemp("", "gcp-example")
	defer os.RemoveAll(dir)
	store, _ := sqlite.Open(ctx, filepath.Join(dir, "db"))
	defer store.Close()
	led := ledger.New(store, ledger.Config{Units: gcp.LedgerUnits(), Clock: clock, Logger: logger})
	defer led.Close()

	proc := gcp.NewProcurement(procSvc, e.ProviderID())
	provider, _ := gcp.NewProvider(gcp.ProviderConfig{Ledger: led, Subscriptions: store})
	lc, _ := gcp.NewLifecycle(gcp.LifecycleConfig{Procurement: proc, Subscriptions: store, Notifications: store,
		Ledger: led, Invalidate: provider.Invalidate, Clock: clock, Logger: logger})

	id := e.Purchase(ctx, "acc-1", "example-api", "standard")
	for i := 0; i < len(events); i++ { // as Pub/Sub would deliver them
		if err := lc.Handle(ctx, events[i]); err != nil {
			fmt.Println(err)
		}
	}
	sub, _ := store.GetSubscription(ctx, marketplace.GCP, id)
	fmt.Println("subscription:", sub.Status, sub.Plan, sub.CustomerID)
	fmt.Println("entitled to standard:", provider.CheckEntitlement(ctx, sub.CustomerID, "standard") == nil)

	_ = provider.SubmitUsage(ctx, []marketplace.UsageRecord{
		{CustomerID: sub.CustomerID, Dimension: gcp.TokenDimension, Quantity: 2_400_000, Timestamp: now.Add(-2 * time.Hour)},
	})
	_, _ = led.Seal(ctx)
	target, _ := gcp.NewReporter(gcp.ReporterConfig{Client: scSvc, ServiceName: service, Logger: logger, Metrics: map[string]string{gcp.TokenDimension: "tokens_1m"}})
	_, _ = ledger.NewReporter(led, target, ledger.ReporterConfig{Logger: logger}).RunOnce(ctx)
	for _, l := range e.Bill() {
		fmt.Println("billed:", l.ConsumerID, l.MetricName, l.StartTime.Format("15:04"), l.Value)
	}
	// Output:
	// subscription: active standard project_number:100001
	// entitled to standard: true
	// billed: project_number:100001 example-api.endpoints.seller-project.cloud.goog/tokens_1m 10:00 2
}

type publisherFunc func(context.Context, []byte) error

func (f publisherFunc) Publish(ctx context.Context, b []byte) error { return f(ctx, b) }
