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

	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/server"
	"github.com/saasmarket/marketplace/sqlite"
)

// runServe is marketplaced serve: the store, the ledger, the entitlement
// cache and the configured clouds, served by package server until ctx ends
// (SIGTERM or SIGINT), then drained within -shutdown-timeout.
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

	srv, err := server.New(cfg, server.Deps{
		Ledger: led, Subscriptions: store, Entitlements: cache,
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
