package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"google.golang.org/api/cloudcommerceprocurement/v1"
	"google.golang.org/api/option"
	"google.golang.org/api/servicecontrol/v1"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	"github.com/saasmarket/marketplace/azure"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/gcp"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/pages"
	"github.com/saasmarket/marketplace/server"
)

// The cloud adapters are what the server mounts.
var (
	_ server.Cloud = (*aws.Provider)(nil)
	_ server.Cloud = (*azure.Provider)(nil)
	_ server.Cloud = (*gcp.Provider)(nil)
)

// runServe is marketplaced serve: the store, the ledger, the entitlement
// cache, the lifecycle engine and the configured clouds, served by package
// server until ctx ends (SIGTERM or SIGINT), then drained within
// -shutdown-timeout.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := server.ParseConfig(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	return serve(ctx, cfg, logger, serveOptions{listening: func(addr net.Addr) {
		// The address on stdout lets a script (or a test) use -addr 127.0.0.1:0.
		fmt.Fprintf(stdout, "marketplaced serve: listening on http://%s\n", addr)
	}})
}

// serveOptions are what a caller other than the serve subcommand (the demo)
// sets on top of the configuration.
type serveOptions struct {
	// ln, when set, is the listener to serve on instead of cfg.Addr: the
	// demo must know the daemon's address before it starts the emulators.
	ln net.Listener
	// listening, when set, is called once the listener is open.
	listening func(net.Addr)
	// aws are added to the AWS SDK's configuration (the demo's emulator
	// endpoint and credentials); serve reads the SDK's environment.
	aws []func(*awsconfig.LoadOptions) error
}

// serve runs the daemon of cfg until ctx ends.
func serve(ctx context.Context, cfg server.Config, logger *slog.Logger, opts serveOptions) error {
	store, err := openStore(ctx, cfg)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer store.Close()
	metrics := server.NewMetrics()
	led := ledger.New(store, ledger.Config{Units: cfg.Catalogue.Units(), Metrics: metrics, Logger: logger,
		Grace: cfg.SealGrace, Clock: cfg.Clock()})
	defer led.Close() // before the store: it commits what is queued
	cache := entitlement.New(entitlement.StoreLoader{Subscriptions: store, Entitlements: store}.Load,
		entitlement.Config{TTL: cfg.EntitlementTTL})
	defer cache.Close() // after the server and the engine, which check through it
	var pg *pages.Pages // nil: the built-in landing pages
	if cfg.PagesDir != "" {
		if pg, err = pages.New(os.DirFS(cfg.PagesDir), logger); err != nil {
			return fmt.Errorf("serve: setting -pages: %w", err)
		}
	}
	engine, err := lifecycle.New(lifecycle.Deps{Store: store, Ledger: led, Entitlements: cache, Logger: logger, Pages: pg}, lifecycle.Config{Lease: cfg.LifecycleLease})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	clouds, closeClouds, err := mountClouds(ctx, cfg, engine, opts.aws)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer closeClouds()

	srv, err := server.New(cfg, server.Deps{
		Ledger: led, Subscriptions: store, Entitlements: cache, Clouds: clouds,
		Lifecycle: engine, Updater: engine, Quarantine: store,
		Parked: func(ctx context.Context, p marketplace.CloudProvider) (int, error) {
			ns, err := engine.Parked(ctx, p)
			return len(ns), err
		},
		Maintain: ledger.MaintainConfig{SealEvery: cfg.SealEvery},
		Metrics:  metrics, Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ln := opts.ln
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return fmt.Errorf("serve: setting -addr: %w", err)
		}
	}
	if opts.listening != nil {
		opts.listening(ln.Addr())
	}
	return srv.Run(ctx, ln)
}

// mountClouds builds the adapter of every configured cloud; closeAll
// releases their clients once the server has stopped.
func mountClouds(ctx context.Context, cfg server.Config, engine *lifecycle.Engine, awsOpts []func(*awsconfig.LoadOptions) error) (clouds []server.Cloud, closeAll func(), err error) {
	var closers []func()
	closeAll = func() {
		for _, c := range closers {
			c()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	if a := cfg.AWS; a.Enabled() {
		opts := slices.Clone(awsOpts)
		if a.Region != "" {
			opts = append(opts, awsconfig.WithRegion(a.Region))
		}
		metering, err := aws.LoadMetering(ctx, "", opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("AWS: %w", err)
		}
		ac := aws.Config{
			ProductCode: a.ProductCode, LicenseMode: a.LicenseMode, Metering: metering,
			EventBridgeHeader: a.EventBridgeHeader, EventBridgeSecret: a.EventBridgeSecret,
			SNSTopicARNs: a.SNSTopicARNs, Link: cfg.LinkFunc(engine.Deps().Logger),
		}
		if a.Entitlements {
			if ac.Entitlements, err = aws.LoadEntitlements(ctx, "", opts...); err != nil {
				return nil, nil, fmt.Errorf("AWS: %w", err)
			}
		}
		if a.SQSQueueURL != "" {
			sdk, err := awsconfig.LoadDefaultConfig(ctx, opts...)
			if err != nil {
				return nil, nil, fmt.Errorf("AWS: SQS: %w", err)
			}
			ac.SQS, ac.QueueURL = sqs.NewFromConfig(sdk), a.SQSQueueURL
		}
		p, err := aws.NewProvider(engine, ac)
		if err != nil {
			return nil, nil, fmt.Errorf("AWS: %w", err)
		}
		clouds = append(clouds, p)
	}
	if az := cfg.Azure; az.Enabled() {
		ac, err := azureConfig(az)
		if err != nil {
			return nil, nil, fmt.Errorf("Azure: %w", err)
		}
		ac.Link = cfg.LinkFunc(engine.Deps().Logger)
		p, err := azure.NewProvider(engine, ac)
		if err != nil {
			return nil, nil, fmt.Errorf("Azure: %w", err)
		}
		clouds = append(clouds, p)
	}
	if g := cfg.GCP; g.Enabled() {
		p, closeGCP, err := mountGCP(ctx, cfg)
		if err != nil {
			return nil, nil, fmt.Errorf("Google: %w", err)
		}
		closers = append(closers, closeGCP)
		p.Link = cfg.LinkFunc(engine.Deps().Logger)
		gp, err := gcp.NewProvider(engine, p)
		if err != nil {
			return nil, nil, fmt.Errorf("Google: %w", err)
		}
		clouds = append(clouds, gp)
	}
	return clouds, closeAll, nil
}

// azureConfig builds the Azure adapter's configuration: the Entra
// credential and the Fulfillment and Metering client, pointed at the
// emulator when one is set.
func azureConfig(az server.AzureConfig) (azure.Config, error) {
	cfg := azure.Config{TenantID: az.TenantID, AppID: az.AppID}
	cc := azure.CredentialConfig{TenantID: az.TenantID, ClientID: az.AppID, ClientSecret: az.ClientSecret, ManagedIdentity: az.ManagedIdentity}
	cl := azure.ClientConfig{}
	if az.EmulatorURL != "" {
		pem, err := os.ReadFile(az.EmulatorCAFile)
		if err != nil {
			return cfg, fmt.Errorf("setting -azure-emulator-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("setting -azure-emulator-ca-file: %s holds no PEM certificate", az.EmulatorCAFile)
		}
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		base := strings.TrimSuffix(az.EmulatorURL, "/")
		cc.Authority, cc.HTTPClient = base, hc
		cl.BaseURL, cl.HTTPClient = base+"/api", hc
		cfg.JWKSURL, cfg.HTTPClient = base+"/"+az.TenantID+"/discovery/v2.0/keys", hc
	}
	cred, err := azure.NewCredential(cc)
	if err != nil {
		return cfg, err
	}
	cl.Tokens = azure.NewTokens(cred, 0)
	cfg.Client = azure.NewClient(cl)
	return cfg, nil
}

// mountGCP builds the Google adapter's configuration: the Procurement and
// Service Control clients, the catalogue's metrics of the service, and the
// Pub/Sub subscriber when one is set.
func mountGCP(ctx context.Context, cfg server.Config) (gcp.Config, func(), error) {
	g := cfg.GCP
	var opts []option.ClientOption
	c := gcp.Config{ServiceName: g.Service, SignupAudience: g.SignupAudience,
		PushServiceAccount: g.PushServiceAccount, PushAudience: g.PushAudience, Metrics: map[string]string{}}
	if g.EmulatorURL != "" {
		opts = append(opts, option.WithEndpoint(strings.TrimSuffix(g.EmulatorURL, "/")+"/"), option.WithoutAuthentication())
		c.SignupKeysURL = strings.TrimSuffix(g.EmulatorURL, "/") + "/x509"
		c.PushKeysURL = c.SignupKeysURL
	}
	proc, err := cloudcommerceprocurement.NewService(ctx, opts...)
	if err != nil {
		return c, nil, fmt.Errorf("Procurement client: %w", err)
	}
	c.Procurement = gcp.NewProcurement(proc, g.ProviderID)
	if c.ServiceControl, err = servicecontrol.NewService(ctx, opts...); err != nil {
		return c, nil, fmt.Errorf("Service Control client: %w", err)
	}
	for _, p := range cfg.Catalogue.Products {
		if p.Provider == marketplace.GCP && p.Product == g.Service {
			for _, m := range p.Metrics {
				c.Metrics[m.Dimension] = strings.TrimPrefix(m.Dimension, g.Service+"/")
			}
		}
	}
	closeFn := func() {}
	if g.Subscription != "" {
		project := strings.Split(g.Subscription, "/")[1]
		client, err := pubsub.NewClient(ctx, project)
		if err != nil {
			return c, nil, fmt.Errorf("Pub/Sub client: %w", err)
		}
		c.Subscriber = client.Subscriber(g.Subscription)
		c.Subscriber.ReceiveSettings.MaxDurationPerAckExtension = gcp.LeaseExtension
		closeFn = func() { client.Close() }
	}
	return c, closeFn, nil
}
