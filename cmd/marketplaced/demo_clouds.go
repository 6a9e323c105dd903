package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/saasmarket/marketplace/emulator/admin"
	awsemu "github.com/saasmarket/marketplace/emulator/aws"
	azureemu "github.com/saasmarket/marketplace/emulator/azure"
	gcpemu "github.com/saasmarket/marketplace/emulator/gcp"
)

// The demo's products: what its catalogue and emulators agree on.
const (
	demoAWSProduct   = "prod-demo"
	demoAWSAccessKey = "AKIDEMULATOR"
	demoAWSSecretKey = "emulator-secret"
	demoAzureOffer   = "inference-api" // the Azure emulator's default offer
	demoGCPService   = "demo.endpoints.demo-project.cloud.goog"
	demoGCPProvider  = "demo-provider"
	demoGCPAudience  = "saas.example.com"
	demoPushAccount  = "marketplace-push@demo-project.iam.gserviceaccount.com"
)

// demoCloud is one cloud as the demo drives it: the emulator, the
// daemon's settings for it, and how a buyer of it arrives. Everything else
// (subscribing, traffic, reading the bill) is the same for the three.
type demoCloud struct {
	provider, title string
	baseURL         string // the emulator's
	adminInfo       string // printed: how to read its bill
	how             string // printed: how its buyers subscribe
	admin           admin.Cloud

	catalogue string            // its product in the daemon's catalogue (JSON)
	serveArgs []string          // the daemon's settings of the cloud
	serveEnv  map[string]string // its secrets, as serve reads them

	buyer admin.BuyerRequest
	// landing is where the marketplace sends the buyer's browser, with the
	// token in field: a form POST, or a GET with the token in the query.
	landingField string
	landingGET   bool
	// customer is the id the daemon knows the buyer by.
	customer func(admin.Buyer) string
	// change is the lifecycle event the demo plays once each cloud has
	// billed: it reaches the daemon through the cloud's notifications.
	change demoChange
}

// demoChange is a lifecycle event on a buyer and what the daemon's API
// shows once the daemon has applied it.
type demoChange struct {
	// newBuyer plays the event on a buyer of its own, who subscribes and
	// uses the product first (a buyer who leaves).
	newBuyer bool
	event    admin.EventRequest
	says     string // printed once applied
	// applied tells from the daemon's subscription that it was applied;
	// nil: once the customer has no open usage left (a final flush).
	applied func(subView) bool
}

type demoClouds []*demoCloud

// startDemoEmulators starts the three emulators on free loopback ports,
// each sending its lifecycle notifications to the daemon at daemonURL.
// They serve until ctx ends; bg tracks the goroutines they leave.
func startDemoEmulators(ctx context.Context, bg *sync.WaitGroup, dataDir, daemonURL string, logger *slog.Logger) (demoClouds, error) {
	aws, err := startDemoAWS(ctx, bg, daemonURL, logger.With("emulator", "aws"))
	if err != nil {
		return nil, fmt.Errorf("AWS emulator: %w", err)
	}
	az, err := startDemoAzure(ctx, dataDir, daemonURL, logger.With("emulator", "azure"))
	if err != nil {
		return nil, fmt.Errorf("Azure emulator: %w", err)
	}
	gcp, err := startDemoGCP(ctx, bg, daemonURL, logger.With("emulator", "gcp"))
	if err != nil {
		return nil, fmt.Errorf("Google emulator: %w", err)
	}
	return demoClouds{aws, az, gcp}, nil
}

// startDemoAWS: EventBridge deliveries to /aws/notifications with the API
// destination's secret, SigV4 checked, the product's one dimension.
func startDemoAWS(ctx context.Context, bg *sync.WaitGroup, daemonURL string, logger *slog.Logger) (*demoCloud, error) {
	secret := randomKey()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	base := "http://" + ln.Addr().String()
	e := awsemu.New(awsemu.Config{
		Credentials: []awsemu.Credentials{{AccessKeyID: demoAWSAccessKey, SecretAccessKey: demoAWSSecretKey}},
		Products:    map[string][]string{demoAWSProduct: {"tokens_1m"}},
		Notify: awsemu.NotifyConfig{EventBridgeEndpoint: daemonURL + "/aws/notifications",
			EventBridgeHeader: "X-Marketplace-Secret", EventBridgeSecret: secret, SNSCertURL: base + awsemu.SNSCertPath},
		Logger: logger,
	})
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second}
	bg.Add(2)
	go func() {
		defer bg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("AWS emulator stopped", "err", err)
		}
	}()
	go func() {
		defer bg.Done()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return &demoCloud{
		provider: "aws", title: "AWS", baseURL: base, admin: e.Admin(),
		adminInfo: "curl " + base + "/emulator/bill", how: "landing page (ResolveCustomer)",
		catalogue: `{"provider": "aws", "product": "` + demoAWSProduct + `", "metrics": {"tokens": {"dimension": "tokens_1m", "unit": 1000000}}}`,
		serveArgs: []string{"-aws-product-code", demoAWSProduct, "-aws-region", "us-east-1"},
		serveEnv:  map[string]string{"MARKETPLACED_AWS_EVENTBRIDGE_SECRET": secret},
		buyer:     admin.BuyerRequest{Product: demoAWSProduct}, landingField: "x-amzn-marketplace-token",
		customer: func(b admin.Buyer) string { return b.ID },
		change: demoChange{newBuyer: true, event: admin.EventRequest{Event: "Purchase Agreement Ended - Manufacturer"},
			says: "agreement ended (EventBridge): its usage is sealed at once, to be billed"},
	}, nil
}

// startDemoAzure: TLS with the emulator's own certificate (written to the
// data folder for the daemon to trust), Entra tokens for the publisher
// app's secret, the webhook at /azure/notifications.
func startDemoAzure(ctx context.Context, dataDir, daemonURL string, logger *slog.Logger) (*demoCloud, error) {
	secret := randomKey()
	cfg := azureemu.Config{WebhookURL: daemonURL + "/azure/notifications", OfferID: demoAzureOffer,
		PublisherApp: azureemu.DefaultPublisherApp, Clients: map[string]string{azureemu.DefaultPublisherApp: secret},
		OperationDelay: 2 * time.Second, PatchDelay: time.Second, Logger: logger}
	e := azureemu.New(cfg)
	base, certPEM, err := e.Start(ctx, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	caFile := filepath.Join(dataDir, "azure-emulator-ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o644); err != nil {
		return nil, err
	}
	c := e.Config()
	return &demoCloud{
		provider: "azure", title: "Azure", baseURL: base, admin: e.Admin(),
		adminInfo: fmt.Sprintf("curl --cacert %s %s/emulator/bill", caFile, base), how: "landing page (resolve, activate)",
		catalogue: `{"provider": "azure", "product": "` + demoAzureOffer + `", "metrics": {"tokens": {"dimension": "tokens_1m", "unit": 1000000}}}`,
		serveArgs: []string{"-azure-tenant-id", c.TenantID, "-azure-app-id", c.PublisherApp,
			"-azure-emulator-url", base, "-azure-emulator-ca-file", caFile},
		serveEnv: map[string]string{"MARKETPLACED_AZURE_CLIENT_SECRET": secret},
		buyer:    admin.BuyerRequest{Plan: "basic", Email: "buyer@example.com"}, landingField: "token", landingGET: true,
		customer: func(b admin.Buyer) string { return b.ID },
		change: demoChange{event: admin.EventRequest{Event: "ChangePlan", Plan: "pro"},
			says:    "changed plan to pro (webhook, operation acknowledged): usage from now on is billed on pro",
			applied: func(s subView) bool { return s.Plan == "pro" }},
	}, nil
}

// startDemoGCP: sign-up JWTs for the product's domain, and the lifecycle
// topic delivered as a Pub/Sub push subscription would deliver it (no
// Pub/Sub emulator needed): to /gcp/notifications with an OIDC token of the
// push service account, signed by the emulator's keys.
func startDemoGCP(ctx context.Context, bg *sync.WaitGroup, daemonURL string, logger *slog.Logger) (*demoCloud, error) {
	push := &pushDelivery{url: daemonURL + "/gcp/notifications", audience: daemonURL + "/gcp/notifications", account: demoPushAccount,
		subscription: "projects/demo-project/subscriptions/marketplaced-push", queue: make(chan []byte, 1024),
		client: &http.Client{Timeout: 10 * time.Second}, logger: logger, done: ctx.Done()}
	e, err := gcpemu.New(gcpemu.Config{ProviderID: demoGCPProvider, ServiceName: demoGCPService, Metrics: []string{"tokens"},
		Audience: demoGCPAudience, Publisher: push, ActivationDelay: 2 * time.Second, Logger: logger})
	if err != nil {
		return nil, err
	}
	push.mint = func(audience, email string) (string, error) {
		return e.MintPushToken(audience, email, gcpemu.TokenOptions{})
	}
	base, err := e.Start(ctx, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	bg.Add(1)
	go func() {
		defer bg.Done()
		push.run(ctx)
	}()
	return &demoCloud{
		provider: "gcp", title: "Google", baseURL: base, admin: e.Admin(),
		adminInfo: "curl " + base + "/emulator/bill", how: "landing page (sign-up JWT), approved through a Pub/Sub push",
		catalogue: `{"provider": "gcp", "product": "` + demoGCPService + `", "metrics": {"tokens": {"dimension": "` + demoGCPService + `/tokens"}}}`,
		serveArgs: []string{"-gcp-service", demoGCPService, "-gcp-provider-id", demoGCPProvider, "-gcp-signup-audience", demoGCPAudience,
			"-gcp-push-service-account", demoPushAccount, "-gcp-push-audience", push.audience, "-gcp-emulator-url", base},
		buyer:        admin.BuyerRequest{Product: "demo", Plan: "standard"},
		landingField: "x-gcp-marketplace-token",
		customer:     func(b admin.Buyer) string { return b.Cloud["usageReportingId"] },
	}, nil
}

// landingRequest is the request the buyer's browser makes when the
// marketplace sends it to the seller with token.
func (c *demoCloud) landingRequest(ctx context.Context, daemonURL, token string) (*http.Request, error) {
	u := daemonURL + "/" + c.provider + "/landing"
	if c.landingGET {
		return http.NewRequestWithContext(ctx, http.MethodGet, u+"?"+url.Values{c.landingField: {token}}.Encode(), nil)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(url.Values{c.landingField: {token}}.Encode()))
	if err == nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return req, err
}

// pushDelivery is the Google emulator's Publisher in the demo: it delivers
// each lifecycle event as a Pub/Sub push subscription does, in its own
// goroutine (Pub/Sub is asynchronous), again until the daemon answers 2xx.
type pushDelivery struct {
	url, audience, account, subscription string
	mint                                 func(audience, email string) (string, error)
	queue                                chan []byte
	client                               *http.Client
	logger                               *slog.Logger
	done                                 <-chan struct{}
	n                                    int // message ids; run's alone
}

// Publish queues data for delivery.
func (p *pushDelivery) Publish(ctx context.Context, data []byte) error {
	select {
	case p.queue <- data:
		return nil
	case <-p.done:
		return errors.New("the demo is stopping")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run delivers the queued events in order until ctx ends.
func (p *pushDelivery) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case data := <-p.queue:
			p.n++
			p.deliver(ctx, data, strconv.Itoa(p.n))
		}
	}
}

func (p *pushDelivery) deliver(ctx context.Context, data []byte, id string) {
	body, _ := json.Marshal(map[string]any{ // []byte is base64, as Pub/Sub sends it
		"message":      map[string]any{"data": data, "messageId": id, "publishTime": time.Now().UTC().Format(time.RFC3339Nano)},
		"subscription": p.subscription,
	})
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		status, err := p.post(ctx, body)
		if err == nil && status/100 == 2 {
			return
		}
		p.logger.Warn("Pub/Sub push delivery refused; delivering again", "message", id, "status", status, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (p *pushDelivery) post(ctx context.Context, body []byte) (int, error) {
	token, err := p.mint(p.audience, p.account)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
