// Command marketplaced-load is a load generator for a running marketplaced:
// usage ingest (POST /v1/usage in batches) or entitlement checks
// (GET /v1/entitlements/check), with concurrent keep-alive connections, for a
// bounded time. It reports the rate, latency percentiles and its own CPU
// share, so that a figure measured on a shared machine says how much of the
// CPU the generator took from the daemon.
//
//	MARKETPLACED_API_KEY=... marketplaced-load -url http://127.0.0.1:8080 -mode ingest -duration 10s
//
// It sends traffic only to the URL given; use loopback addresses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "marketplaced-load:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("marketplaced-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	fs.StringVar(&o.URL, "url", "http://127.0.0.1:8080", "the daemon's base URL (loopback)")
	mode := fs.String("mode", "ingest", "ingest (POST /v1/usage) or check (GET /v1/entitlements/check)")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to send (at most 10m)")
	fs.IntVar(&o.Concurrency, "concurrency", 0, "concurrent connections (default: 8 for ingest, 32 for check)")
	fs.IntVar(&o.Batch, "batch", 1000, "ingest: records per request")
	fs.BoolVar(&o.NoEventIDs, "no-event-ids", false, "ingest: send records without event ids")
	fs.BoolVar(&o.BatchKeys, "idempotency-key", false, "ingest: send each batch under its own Idempotency-Key header")
	fs.IntVar(&o.Customers, "customers", 1000, "distinct customers (check: cust-0000 … must be subscribed for grants)")
	fs.StringVar(&o.Provider, "provider", "aws", "the provider to name")
	fs.StringVar(&o.Metric, "metric", "tokens", "ingest: the catalogue metric to send")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.APIKey = os.Getenv("MARKETPLACED_API_KEY")
	if o.APIKey == "" {
		return errors.New("MARKETPLACED_API_KEY is required")
	}
	if o.Duration <= 0 || o.Duration > 10*time.Minute {
		return fmt.Errorf("-duration: want 1s to 10m, got %v", o.Duration)
	}
	var (
		res Result
		err error
	)
	switch *mode {
	case "ingest":
		res, err = Ingest(ctx, o)
	case "check":
		res, err = Check(ctx, o)
	default:
		return fmt.Errorf("-mode: want ingest or check, got %q", *mode)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res)
	return nil
}
