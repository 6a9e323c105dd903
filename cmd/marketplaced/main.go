// Command marketplaced is the marketplace daemon. Its subcommands:
//
//	marketplaced serve [flags]     serve the HTTP API, landing and notification endpoints
//	marketplaced demo [flags]      serve and the three emulators in one process, with demo buyers and traffic
//	marketplaced emulate [flags]   run the AWS, Azure and Google marketplace emulators
//	marketplaced subscriptions list|show, usage, seal, reconcile, quarantine list|show|restore|discard [flags]
//	                               admin commands, on a daemon's API or its store
//
// marketplaced -h lists them; marketplaced SUBCOMMAND -h lists a
// subcommand's flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "marketplaced:", err)
		os.Exit(2)
	}
}

// subcommand is one entry of marketplaced's command table.
type subcommand struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// subcommands is the command table: adding a subcommand is one line.
func subcommands() []subcommand {
	return []subcommand{
		{"emulate", "run the AWS, Azure and Google marketplace emulators on loopback", runEmulateCmd},
		{"serve", "serve the HTTP API, landing and notification endpoints", runServe},
		{"demo", "serve and the three emulators in one process, with demo buyers and traffic", runDemo},
		{"subscriptions", "list or show subscriptions (a daemon's API, or -data)", runSubscriptions},
		{"usage", "a customer's hourly buckets and their report state", runUsage},
		{"seal", "seal a customer's open usage now (a final flush)", runSeal},
		{"reconcile", "compare the buckets reported to Azure with Azure's usage events", runReconcile},
		{"quarantine", "list, show, put back or discard stored rows the daemon could not read", runQuarantine},
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmds := subcommands()
	if len(args) == 0 {
		usage(stderr, cmds)
		return errors.New("no subcommand given")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout, cmds)
		return nil
	}
	for _, c := range cmds {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, stderr)
			if errors.Is(err, flag.ErrHelp) {
				return nil // -h printed the flags: that is a success
			}
			return err
		}
	}
	usage(stderr, cmds)
	return fmt.Errorf("unknown subcommand %q", args[0])
}

func usage(w io.Writer, cmds []subcommand) {
	fmt.Fprintln(w, "usage: marketplaced SUBCOMMAND [flags]   (marketplaced SUBCOMMAND -h lists its flags)")
	fmt.Fprintln(w, "\nsubcommands:")
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, c := range cmds {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
}
