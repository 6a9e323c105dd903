package gcp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/api/cloudcommerceprocurement/v1"
	"google.golang.org/api/option"
	"google.golang.org/api/servicecontrol/v1"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/sqlite"
)

// Example runs a buyer's first billed hour against the emulator: the
// buyer signs up (Link links the seller's account), Google's lifecycle
// messages are pushed to NotificationHandler and applied by the engine
// (the purchase approved by Decide), the provider records tokens, and the
// Target bills whole millions through Service Control.
func Example() {
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	now := time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	var events [][]byte
	e, _ := emu.New(emu.Config{ServiceName: service, Audience: "saas.example.com", Clock: clock, Logger: logger,
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

	// One engine for every cloud; the daemon runs its worker (eng.Run).
	eng, _ := lifecycle.New(lifecycle.Deps{Store: store, Ledger: led, Logger: logger, Clock: clock}, lifecycle.Config{})
	provider, err := gcp.NewProvider(eng, gcp.Config{
		Procurement:    gcp.NewProcurement(procSvc, e.ProviderID()),
		ServiceControl: scSvc, ServiceName: service,
		Metrics:        map[string]string{gcp.DimensionTokens: "tokens_1m"},
		SignupAudience: "saas.example.com", SignupKeysURL: srv.URL + "/x509",
		PushServiceAccount: "pubsub-push@seller-project.iam.gserviceaccount.com",
		PushAudience:       "https://saas.example.com/gcp/pubsub", PushKeysURL: srv.URL + "/x509",
		Link: func(ctx context.Context, w http.ResponseWriter, r *http.Request, sub *marketplace.Subscription) (string, error) {
			http.Redirect(w, r, "/welcome", http.StatusSeeOther)
			return "seller-account-7", nil
		},
		Decide: func(ctx context.Context, _ *marketplace.Subscription, ent *cloudcommerceprocurement.Entitlement) (gcp.Decision, error) {
			return gcp.Decision{Approve: ent.Plan != "legacy", Reason: "plan not sold"}, nil
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	id := e.Purchase(ctx, "acc-1", "example-api", "standard")

	// The buyer signs up on the seller's site.
	token, _ := e.MintSignupToken("acc-1", emu.TokenOptions{})
	req := httptest.NewRequest(http.MethodPost, "/gcp/signup", strings.NewReader(url.Values{gcp.SignupField: {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	provider.LandingHandler().ServeHTTP(w, req)
	fmt.Println("sign-up:", w.Code, w.Header().Get("Location"), e.AccountApproval("acc-1", gcp.SignupApproval))

	// Pub/Sub pushes each lifecycle message; the engine applies them.
	for i := 0; i < len(events); i++ {
		bearer, _ := e.MintPushToken("https://saas.example.com/gcp/pubsub", "pubsub-push@seller-project.iam.gserviceaccount.com", emu.TokenOptions{})
		body, _ := json.Marshal(map[string]any{"message": map[string]any{"data": events[i], "messageId": fmt.Sprint(i)}})
		req := httptest.NewRequest(http.MethodPost, "/gcp/pubsub", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+bearer)
		provider.NotificationHandler().ServeHTTP(httptest.NewRecorder(), req)
		_ = eng.Drain(ctx)
	}
	sub, _ := store.GetSubscription(ctx, marketplace.GCP, id)
	fmt.Println("subscription:", sub.Status, sub.Plan, sub.CustomerID, sub.AccountID)
	fmt.Println("entitled to standard:", provider.CheckEntitlement(ctx, sub.CustomerID, "standard") == nil)

	_ = provider.SubmitUsage(ctx, []marketplace.UsageRecord{
		{CustomerID: sub.CustomerID, Dimension: gcp.DimensionTokens, Quantity: 2_400_000, Timestamp: now.Add(-2 * time.Hour)},
	})
	_, _ = led.Seal(ctx)
	_, _ = ledger.NewReporter(led, provider.Target(), ledger.ReporterConfig{Logger: logger}).RunOnce(ctx)
	for _, l := range e.Bill() {
		fmt.Println("billed:", l.ConsumerID, l.MetricName, l.StartTime.Format("15:04"), l.Value)
	}
	// Output:
	// sign-up: 303 /welcome APPROVED
	// subscription: active standard project_number:100001 seller-account-7
	// entitled to standard: true
	// billed: project_number:100001 example-api.endpoints.seller-project.cloud.goog/tokens_1m 10:00 2
}

type publisherFunc func(context.Context, []byte) error

func (f publisherFunc) Publish(ctx context.Context, b []byte) error { return f(ctx, b) }
