// Command marketplaced is the marketplace daemon. For now it has one
// subcommand:
//
//	marketplaced emulate [flags]   run the AWS, Azure and Google marketplace emulators
//
// serve (the HTTP API, landing and notification endpoints, reporter) and demo
// (everything wired together with demo traffic) follow.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "marketplaced:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: marketplaced emulate [flags] (run marketplaced emulate -h for the flags)")
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	switch args[0] {
	case "emulate":
		return runEmulate(ctx, args[1:], stdout, stderr, logger)
	default:
		return fmt.Errorf("unknown subcommand %q: want emulate", args[0])
	}
}
