package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// runSubscriptions is marketplaced subscriptions list|show.
func runSubscriptions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "subscriptions list [-provider P] [-state S] | show -provider P -customer C   [flags]"
	if len(args) == 0 || (args[0] != "list" && args[0] != "show") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fmt.Fprintln(stdout, "usage: marketplaced "+usage)
			return flag.ErrHelp
		}
		return errors.New("subscriptions: want list or show: marketplaced " + usage)
	}
	action := args[0]
	var prov, state, customer string
	f, src, err := adminCommand(ctx, "subscriptions "+action, usage, args[1:], stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&prov, "provider", "", "aws, azure or gcp (list: empty for all)")
		fs.StringVar(&customer, "customer", "", "show: the customer id")
		if action == "list" {
			fs.StringVar(&state, "state", "", "list: pending, active, suspended, cancelled or expired (empty: all)")
		}
	})
	if err != nil {
		return err
	}
	defer src.Close()
	if action == "show" {
		if err := required("subscriptions show", "provider", prov, "customer", customer); err != nil {
			return err
		}
		s, err := src.Subscription(ctx, prov, customer)
		if err != nil {
			return fmt.Errorf("subscriptions show: %w", err)
		}
		if f.json {
			return printJSON(stdout, s)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		for _, kv := range [][2]string{{"provider", string(s.Provider)}, {"customer", s.Customer}, {"id", s.ID}, {"product", s.Product},
			{"status", s.Status}, {"plan", s.Plan}, {"quantity", strconv.FormatInt(s.Quantity, 10)}, {"entitlements", fmt.Sprint(s.Entitlements)},
			{"account", s.AccountID}, {"expires", timeOrDash(s.ExpiresAt)}, {"cloud updated", timeOrDash(s.CloudUpdated)},
			{"updated", s.Updated.Format(time.RFC3339)}, {"version", strconv.FormatInt(s.Version, 10)}} {
			fmt.Fprintf(tw, "%s\t%s\n", kv[0], kv[1])
		}
		return tw.Flush()
	}
	subs, err := src.Subscriptions(ctx, prov, state)
	if err != nil {
		return fmt.Errorf("subscriptions list: %w", err)
	}
	if f.json {
		if subs == nil {
			subs = []subView{}
		}
		return printJSON(stdout, subs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tCUSTOMER\tSTATUS\tPRODUCT\tPLAN\tACCOUNT\tUPDATED")
	for _, s := range subs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Provider, s.Customer, s.Status, s.Product, dash(s.Plan), dash(s.AccountID), s.Updated.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d subscriptions\n", len(subs))
	return nil
}

// runUsage is marketplaced usage: a customer's buckets and their report
// state.
func runUsage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var prov, customer, from, to string
	f, src, err := adminCommand(ctx, "usage", "usage -provider P -customer C [-from T] [-to T] [flags]", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&prov, "provider", "", "aws, azure or gcp; required")
		fs.StringVar(&customer, "customer", "", "the customer id; required")
		fs.StringVar(&from, "from", "", "first hour, RFC 3339 (default: 48 hours ago)")
		fs.StringVar(&to, "to", "", "end, RFC 3339, exclusive (default: an hour from now)")
	})
	if err != nil {
		return err
	}
	defer src.Close()
	if err := required("usage", "provider", prov, "customer", customer); err != nil {
		return err
	}
	now := time.Now()
	start, end, err := timeRange(from, to, now.Add(-48*time.Hour), now.Add(time.Hour))
	if err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	bs, err := src.Usage(ctx, prov, customer, start, end)
	if err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	sortBuckets(bs)
	if f.json {
		return printJSON(stdout, bs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DIMENSION\tHOUR (UTC)\tQUANTITY\tLATE\tUNITS\tSTATE\tATTEMPTS\tRECORD ID\tREASON")
	for _, b := range bs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%d\t%s\t%s\n", b.Dimension, b.Hour.UTC().Format("2006-01-02 15:04"), b.Quantity, b.Late,
			b.Units, b.State, b.Attempts, dash(b.RecordID), dash(b.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d buckets of %s customer %s\n", len(bs), prov, customer)
	return nil
}

// runSeal is marketplaced seal: a customer's final flush, now.
func runSeal(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var prov, customer string
	f, src, err := adminCommand(ctx, "seal", "seal -provider P -customer C [flags]\n\nSeals every open bucket of the customer now, as when a subscription ends; the daemon's reporter sends them.", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&prov, "provider", "", "aws, azure or gcp; required")
		fs.StringVar(&customer, "customer", "", "the customer id; required")
	})
	if err != nil {
		return err
	}
	defer src.Close()
	if err := required("seal", "provider", prov, "customer", customer); err != nil {
		return err
	}
	n, err := src.Seal(ctx, prov, customer)
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	if f.json {
		return printJSON(stdout, map[string]int{"sealed": n})
	}
	fmt.Fprintf(stdout, "sealed %d buckets of %s customer %s\n", n, prov, customer)
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}
