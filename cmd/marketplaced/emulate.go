package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/saasmarket/marketplace/emulator/admin"
)

// cloudEmulator is one cloud's emulator as the emulate subcommand runs it.
// Each cloud has its own file (emulate_aws.go, ...).
type cloudEmulator interface {
	Name() string
	// RegisterFlags adds the cloud's flags (its listen address, its faults)
	// to fs, each prefixed with the cloud's name.
	RegisterFlags(fs *flag.FlagSet)
	// Start starts serving and returns once it listens, with the lines to
	// print for the user (base URL, how to point the official clients at
	// it). It serves until ctx is done.
	Start(ctx context.Context, logger *slog.Logger) (info string, err error)
}

// errNotBuilt is returned by the emulators that do not exist yet.
var errNotBuilt = errors.New("not built yet")

func emulators() []cloudEmulator {
	return []cloudEmulator{newAWSEmulator(), newAzureEmulator(), newGCPEmulator()}
}

// runEmulateCmd is the emulate subcommand; it logs to stderr.
func runEmulateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runEmulate(ctx, args, stdout, stderr, slog.New(slog.NewTextHandler(stderr, nil)))
}

func runEmulate(ctx context.Context, args []string, stdout, stderr io.Writer, logger *slog.Logger) error {
	fs := flag.NewFlagSet("marketplaced emulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: marketplaced emulate [flags]\n\n"+
			"Runs the AWS, Azure and Google marketplace emulators on loopback. Each has the same admin API\n"+
			"(buyers, lifecycle events, the bill, faults) under /emulator/: see docs/emulators.md.\n\nflags:")
		fs.PrintDefaults()
	}
	clouds := fs.String("clouds", "aws,azure,gcp", "comma-separated emulators to run")
	all := emulators()
	for _, e := range all {
		e.RegisterFlags(fs)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	want := strings.Split(*clouds, ",")
	started := 0
	for _, e := range all {
		if !slices.Contains(want, e.Name()) {
			continue
		}
		info, err := e.Start(ctx, logger.With("cloud", e.Name()))
		if errors.Is(err, errNotBuilt) {
			fmt.Fprintf(stdout, "%s emulator: %v\n", e.Name(), err)
			continue
		}
		if err != nil {
			return fmt.Errorf("%s emulator: %w", e.Name(), err)
		}
		started++
		fmt.Fprintf(stdout, "%s emulator\n%s", e.Name(), indent(info, "  "))
	}
	if started == 0 {
		return fmt.Errorf("no emulator started (asked for %q)", *clouds)
	}
	fmt.Fprintln(stdout, "serving; Ctrl-C stops")
	<-ctx.Done()
	return nil
}

// indent re-indents text by prefix, keeping its lines' relative indentation.
func indent(text, prefix string) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	common := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		if n := len(l) - len(strings.TrimLeft(l, " \t")); common < 0 || n < common {
			common = n
		}
	}
	var b strings.Builder
	for _, l := range lines {
		if len(l) >= common && common > 0 {
			l = l[common:]
		}
		b.WriteString(prefix + l + "\n")
	}
	return b.String()
}

// catalogue is a flag holding "key=a,b;key2=c": products (or plans) and
// their dimensions. Empty leaves it nil: anything goes.
type catalogue map[string][]string

func (c catalogue) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, k+"="+strings.Join(c[k], ","))
	}
	return strings.Join(parts, ";")
}

func (c *catalogue) Set(s string) error {
	out := catalogue{}
	for _, part := range strings.Split(s, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, dims, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.TrimSpace(dims) == "" {
			return fmt.Errorf("%q: want name=dimension,dimension", part)
		}
		for _, d := range strings.Split(dims, ",") {
			if d = strings.TrimSpace(d); d == "" {
				return fmt.Errorf("%q: an empty dimension", part)
			}
			out[k] = append(out[k], d)
		}
	}
	*c = out
	return nil
}

// describeFaults prints the fault settings in their JSON form, as the
// admin API's GET /emulator/faults shows them.
func describeFaults(f admin.Faults) string {
	b, _ := json.Marshal(f)
	return string(b)
}
