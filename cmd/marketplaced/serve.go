package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/server"
	"github.com/saasmarket/marketplace/sqlite"
)

// The cloud adapters are what the server mounts.
var _ server.Cloud = (*aws.Provider)(nil)

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

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("serve: setting -data: %w", err)
	}
	store, err := sqlite.Open(ctx, cfg.DBPath())
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer store.Close()
	metrics := server.NewMetrics()
	led := ledger.New(store, ledger.Config{Units: cfg.Catalogue.Units(), Metrics: metrics, Logger: logger})
	defer led.Close() // before the store: it commits what is queued
	cache := entitlement.New(entitlement.StoreLoader{Subscriptions: store, Entitlements: store}.Load,
		entitlement.Config{TTL: cfg.EntitlementTTL})
	engine, err := lifecycle.New(lifecycle.Deps{Store: store, Ledger: led, Entitlements: cache, Logger: logger}, lifecycle.Config{})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	clouds, err := mountClouds(ctx, cfg, engine)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}

	srv, err := server.New(cfg, server.Deps{
		Ledger: led, Subscriptions: store, Entitlements: cache, Clouds: clouds,
		Lifecycle: engine,
		Parked: func(ctx context.Context, p marketplace.CloudProvider) (int, error) {
			ns, err := engine.Parked(ctx, p)
			return len(ns), err
		},
		Metrics: metrics, Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("serve: setting -addr: %w", err)
	}
	// The address on stdout lets a script (or a test) use -addr 127.0.0.1:0.
	fmt.Fprintf(stdout, "marketplaced serve: listening on http://%s\n", ln.Addr())
	return srv.Run(ctx, ln)
}

// mountClouds builds the adapter of every configured cloud.
func mountClouds(ctx context.Context, cfg server.Config, engine *lifecycle.Engine) ([]server.Cloud, error) {
	var clouds []server.Cloud
	if a := cfg.AWS; a.Enabled() {
		var opts []func(*awsconfig.LoadOptions) error
		if a.Region != "" {
			opts = append(opts, awsconfig.WithRegion(a.Region))
		}
		metering, err := aws.LoadMetering(ctx, "", opts...)
		if err != nil {
			return nil, fmt.Errorf("AWS: %w", err)
		}
		ac := aws.Config{
			ProductCode: a.ProductCode, LicenseMode: a.LicenseMode, Metering: metering,
			EventBridgeHeader: a.EventBridgeHeader, EventBridgeSecret: a.EventBridgeSecret,
			SNSTopicARNs: a.SNSTopicARNs,
		}
		if a.Entitlements {
			if ac.Entitlements, err = aws.LoadEntitlements(ctx, "", opts...); err != nil {
				return nil, fmt.Errorf("AWS: %w", err)
			}
		}
		if a.SQSQueueURL != "" {
			sdk, err := awsconfig.LoadDefaultConfig(ctx, opts...)
			if err != nil {
				return nil, fmt.Errorf("AWS: SQS: %w", err)
			}
			ac.SQS, ac.QueueURL = sqs.NewFromConfig(sdk), a.SQSQueueURL
		}
		p, err := aws.NewProvider(engine, ac)
		if err != nil {
			return nil, fmt.Errorf("AWS: %w", err)
		}
		clouds = append(clouds, p)
	}
	return clouds, nil
}
