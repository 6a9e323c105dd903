// Command ledger-example runs the usage ledger end to end on one machine,
// with no cloud account: it records demo usage of a few customers on the
// three clouds into a SQLite ledger, seals the hours that are over,
// reports them to fake metering APIs (ledgertest.FakeCloud) that lose
// answers and throttle, and prints the bill each cloud holds and the
// ledger's counters.
//
// Along the way it shows the ledger's promises: a record resent with the
// same event id is counted once; tokens are billed per million, whole
// units only, the remainder carrying to the next hour; usage that arrives
// for an hour already reported goes to the next open hour and is counted
// as late; a customer the cloud no longer knows is rejected, loudly; and
// however many calls lose their answer, each hour is billed exactly once.
//
// Usage:
//
//	go run ./cmd/ledger-example [-data DIR] [-seed N] [-v]
//
// Without -data the ledger lives in a temporary folder removed at exit;
// with it, the SQLite file stays there to be inspected. A second run on the
// same folder adds its usage to hours the first one sealed, so the ledger
// treats all of it as late; it prints only the buckets of its own run.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
	"github.com/saasmarket/marketplace/sqlite"
)

func main() {
	data := flag.String("data", "", "folder of the SQLite ledger (default: a temporary folder, removed at exit)")
	seed := flag.Uint64("seed", 1, "seed of the fake clouds' faults")
	verbose := flag.Bool("v", false, "log the reporters' warnings (rejections) to standard error")
	flag.Parse()

	level := slog.LevelError
	if *verbose {
		level = slog.LevelWarn
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout, *data, *seed, logger); err != nil {
		fmt.Fprintln(os.Stderr, "ledger-example:", err)
		os.Exit(1)
	}
}

// demo is the ledger, its store and the fake clouds it reports to.
type demo struct {
	start     time.Time // buckets sealed before it belong to an earlier run
	w         io.Writer
	l         *ledger.Ledger
	metrics   *ledger.Counters
	clouds    map[marketplace.CloudProvider]*ledgertest.FakeCloud
	reporters []*ledger.Reporter
	logger    *slog.Logger
}

func run(ctx context.Context, w io.Writer, dir string, seed uint64, logger *slog.Logger) error {
	if dir == "" {
		tmp, err := os.MkdirTemp("", "ledger-example-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	path := filepath.Join(dir, "ledger.db")
	store, err := sqlite.Open(ctx, path)
	if err != nil {
		return err
	}
	defer store.Close()

	d := &demo{start: time.Now(), w: w, metrics: &ledger.Counters{}, logger: logger,
		clouds: make(map[marketplace.CloudProvider]*ledgertest.FakeCloud)}
	d.l = ledger.New(store, ledger.Config{
		Units:   map[string]int64{"tokens_1m": 1_000_000}, // billed per million tokens
		Settle:  ledger.SettleDrop,                        // a remainder under a million is forgiven at the end
		Metrics: d.metrics,
		Logger:  logger,
	})
	defer d.l.Close()
	faults := ledgertest.Faults{DropResponse: 0.3, NotApplied: 0.2, RetryAfter: 20 * time.Millisecond}
	for i, p := range marketplace.Providers() {
		c := ledgertest.NewFakeCloud(ledgertest.Config{Provider: p, Seed: seed + uint64(i), Faults: faults,
			Limits: ledger.Limits{Deadline: 24 * time.Hour}})
		d.clouds[p] = c
		d.reporters = append(d.reporters, ledger.NewReporter(d.l, c, ledger.ReporterConfig{
			Lease: 10 * time.Second, BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Logger: logger,
		}))
	}
	d.clouds[marketplace.GCP].Unsubscribe("gcp-piedpiper")
	fmt.Fprintf(w, "ledger: %s\nfake clouds lose the answer of 30%% of calls after applying them, and throttle 20%%\n\n", path)
	return d.script(ctx)
}

// script is the story the demo tells.
func (d *demo) script(ctx context.Context) error {
	now := time.Now().UTC()
	run := now.UnixNano() // event ids are unique per run, so a rerun on the same -data counts again
	h3, h2 := now.Add(-3*time.Hour), now.Add(-2*time.Hour)
	n := 0
	rec := func(p marketplace.CloudProvider, customer, dim string, q int64, t time.Time) ledger.Record {
		n++
		return ledger.Record{Provider: p, Customer: customer, Dimension: dim, Quantity: q, Time: t,
			EventID: fmt.Sprintf("demo-%d-%d", run, n)}
	}
	var usage []ledger.Record
	for _, h := range []time.Time{h3, h2} {
		usage = append(usage,
			rec(marketplace.AWS, "aws-acme", "tokens_1m", 450_000, h),
			rec(marketplace.AWS, "aws-acme", "tokens_1m", 380_000, h.Add(time.Minute)),
			rec(marketplace.AWS, "aws-acme", "requests", 120, h),
			rec(marketplace.AWS, "aws-globex", "tokens_1m", 2_600_000, h),
			rec(marketplace.Azure, "az-initech", "tokens_1m", 700_000, h),
			rec(marketplace.Azure, "az-umbrella", "requests", 75, h),
			rec(marketplace.GCP, "gcp-hooli", "tokens_1m", 1_250_000, h),
			rec(marketplace.GCP, "gcp-piedpiper", "tokens_1m", 3_000_000, h),
		)
	}
	res, err := d.l.Ingest(ctx, usage)
	if err != nil {
		return fmt.Errorf("record usage: %w", err)
	}
	fmt.Fprintf(d.w, "1. recorded %d usage records of 6 customers over two past hours (%d accepted)\n", len(usage), res.Accepted)

	// A client that timed out resends two records with the same event ids.
	res, err = d.l.Ingest(ctx, usage[:2])
	if err != nil {
		return fmt.Errorf("resend usage: %w", err)
	}
	fmt.Fprintf(d.w, "2. resent 2 of them with the same event ids: %d accepted, %d duplicates\n", res.Accepted, res.Duplicates)

	sealed, err := d.l.Seal(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.w, "3. sealed %d buckets (customer, dimension, hour), each with its frozen units and report id\n", sealed)
	calls, err := d.reportAll(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.w, "4. reported them in %s, retrying lost answers and throttled calls\n", plural(calls, "call"))

	// Usage for an hour already reported: it goes to the next open hour.
	late := rec(marketplace.AWS, "aws-acme", "tokens_1m", 900_000, h3.Add(5*time.Minute))
	if err := d.l.Record(ctx, late); err != nil {
		return fmt.Errorf("record late usage: %w", err)
	}
	if err := d.l.Fold(ctx); err != nil {
		return err
	}
	fmt.Fprintf(d.w, "5. late usage: 900000 tokens of aws-acme for %s, already reported, went to the next open hour (late: %d)\n",
		ledger.HourOf(h3).Format("15:04"), d.metrics.Get("late"))

	// aws-acme cancels: its final flush seals everything it has, now.
	sealed, err = d.l.SealCustomer(ctx, marketplace.AWS, "aws-acme")
	if err != nil {
		return err
	}
	fmt.Fprintf(d.w, "6. aws-acme cancelled: the final flush sealed its last open hours (%s); the remainder under a million tokens is forgiven\n", plural(sealed, "bucket"))
	more, err := d.reportAll(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.w, "7. reported them in %s\n\n", plural(more, "call"))
	return d.printBill(ctx)
}

// reportAll runs the reporters until no sealed bucket is left, and returns
// how many calls they made.
func (d *demo) reportAll(ctx context.Context) (int, error) {
	calls := 0
	for {
		for _, r := range d.reporters {
			st, err := r.RunOnce(ctx)
			if err != nil {
				return calls, err
			}
			calls += st.Calls
		}
		left, err := d.l.Buckets(ctx, ledger.BucketFilter{States: []ledger.State{ledger.StateSealed}, Limit: 1})
		if err != nil {
			return calls, err
		}
		if len(left) == 0 {
			return calls, nil
		}
		select { // wait out the backoff of the retried buckets
		case <-ctx.Done():
			return calls, fmt.Errorf("reporting: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// printBill prints what each cloud bills, what the ledger says of every
// bucket, checks that the two agree, and prints the counters.
func (d *demo) printBill(ctx context.Context) error {
	buckets, err := d.l.Buckets(ctx, ledger.BucketFilter{})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(d.w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLOUD\tCUSTOMER\tDIMENSION\tHOUR (UTC)\tUSAGE\tUNITS\tLEDGER\tCLOUD RECORD ID")
	var problems []string
	for _, b := range buckets {
		if b.State != ledger.StateOpen && b.SealedAt.Before(d.start) {
			continue // an earlier run's
		}
		usage := fmt.Sprint(b.Quantity)
		if b.Late > 0 {
			usage += fmt.Sprintf(" (%d late)", b.Late)
		}
		state := string(b.State)
		if b.Reason != "" {
			state += ": " + b.Reason
		}
		line, billed := d.clouds[b.Provider].Bill().Line(b.Customer, b.Dimension, b.Hour)
		units := "-"
		if billed {
			units = fmt.Sprint(line.Quantity)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.Provider, b.Customer, b.Dimension,
			b.Hour.Format("2006-01-02 15:04"), usage, units, state, line.RecordID)
		switch {
		case b.State == ledger.StateReported && (!billed || line.Quantity != b.Units || line.RecordID != b.RecordID):
			problems = append(problems, fmt.Sprintf("%s: ledger reported %d units as %q, cloud holds %+v", b.BucketKey, b.Units, b.RecordID, line))
		case b.State != ledger.StateReported && billed:
			problems = append(problems, fmt.Sprintf("%s: %s in the ledger, but billed", b.BucketKey, b.State))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(d.w)
	for _, p := range marketplace.Providers() {
		b := d.clouds[p].Bill()
		per := b.Totals()
		keys := make([]string, 0, len(per))
		for k := range per {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %d", k, per[k]))
		}
		st := b.Stats
		fmt.Fprintf(d.w, "%-5s bills %s\n      %s: %d lost their answer after being applied, %d throttled; %d records resent and recognised, %d conflicts\n",
			p, cmp.Or(strings.Join(parts, ", "), "nothing"), plural(st.Calls, "call"), st.Dropped, st.Throttled, st.Duplicates, st.Conflicts)
		if st.Conflicts > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d conflicting reports", p, st.Conflicts))
		}
	}

	fmt.Fprintf(d.w, "\nledger counters:")
	for _, name := range []string{"recorded", "duplicates", "late", "sealed", "reported", "rejected", "conflict", "retried", "missed"} {
		fmt.Fprintf(d.w, " %s=%d", name, d.metrics.Get(name))
	}
	fmt.Fprintln(d.w)
	if len(problems) > 0 {
		return errors.New("the bill and the ledger disagree:\n  " + strings.Join(problems, "\n  "))
	}
	fmt.Fprintln(d.w, "check: every reported bucket is billed once, with the ledger's units and record id")
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
