package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/saasmarket/marketplace/azure"
	"github.com/saasmarket/marketplace/server"
)

// difference is one hour on which the daemon's ledger and Azure disagree.
type difference struct {
	Kind      string    `json:"kind"` // not_at_azure, quantity, not_reported_by_us
	Customer  string    `json:"customer"`
	Dimension string    `json:"dimension"`
	Hour      time.Time `json:"hour"`
	// Ours is the ledger's state and units ("" when it holds no bucket).
	OurState string  `json:"our_state"`
	OurUnits int64   `json:"our_units"`
	RecordID string  `json:"record_id"`
	Azure    float64 `json:"azure_quantity"` // processed; 0 when Azure holds none
}

// reconciliation is marketplaced reconcile's result.
type reconciliation struct {
	Provider     string       `json:"provider"`
	From         time.Time    `json:"from"`
	To           time.Time    `json:"to"`
	Customers    int          `json:"customers"`
	Reported     int          `json:"reported_buckets"`
	AzureRecords int          `json:"azure_records"`
	Differences  []difference `json:"differences"`
}

// errDifferences: the comparison ran and found differences (exit status 2).
var errDifferences = errors.New("the ledger and the cloud differ")

// runReconcile is marketplaced reconcile --provider azure: every bucket the
// ledger reported to Azure in a time range, compared with the usage Azure
// recorded (GET usageEvents); every difference is listed.
func runReconcile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var prov, from, to string
	var az server.AzureConfig
	env := func(k string) string { return os.Getenv(server.EnvPrefix + k) }
	f, src, err := adminCommand(ctx, "reconcile", "reconcile -provider azure [-from T] [-to T] [-azure-… settings] [flags]\n\n"+
		"Compares the buckets the ledger reported to Azure with the usage Azure recorded (GET usageEvents) and lists\n"+
		"every difference; the exit status is 2 when there is one.", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&prov, "provider", "", "the cloud to reconcile with: azure (the one whose metering API lists recorded usage)")
		fs.StringVar(&from, "from", "", "first hour, RFC 3339 (default: 7 days ago)")
		fs.StringVar(&to, "to", "", "end, RFC 3339, exclusive (default: now)")
		fs.StringVar(&az.TenantID, "azure-tenant-id", env("AZURE_TENANT_ID"), "the publisher's Entra tenant id [MARKETPLACED_AZURE_TENANT_ID]")
		fs.StringVar(&az.AppID, "azure-app-id", env("AZURE_APP_ID"), "the publisher's app registration id [MARKETPLACED_AZURE_APP_ID]")
		fs.BoolVar(&az.ManagedIdentity, "azure-managed-identity", env("AZURE_MANAGED_IDENTITY") == "true", "authenticate with the host's managed identity [MARKETPLACED_AZURE_MANAGED_IDENTITY]")
		fs.StringVar(&az.EmulatorURL, "azure-emulator-url", env("AZURE_EMULATOR_URL"), "the Azure emulator's base URL (tests and demos) [MARKETPLACED_AZURE_EMULATOR_URL]")
		fs.StringVar(&az.EmulatorCAFile, "azure-emulator-ca-file", env("AZURE_EMULATOR_CA_FILE"), "the Azure emulator's certificate [MARKETPLACED_AZURE_EMULATOR_CA_FILE]")
	})
	if err != nil {
		return err
	}
	defer src.Close()
	// The secret only from the environment: flags show in ps.
	az.ClientSecret = env("AZURE_CLIENT_SECRET")
	switch {
	case prov == "":
		return errors.New("reconcile: setting -provider: is required (azure)")
	case prov != "azure":
		return fmt.Errorf("reconcile: setting -provider: %q cannot be reconciled: only Azure's metering API lists the usage it recorded", prov)
	}
	if err := required("reconcile", "azure-tenant-id", az.TenantID, "azure-app-id", az.AppID); err != nil {
		return err
	}
	if az.ClientSecret == "" && !az.ManagedIdentity {
		return errors.New("reconcile: setting MARKETPLACED_AZURE_CLIENT_SECRET: is required (or -azure-managed-identity)")
	}
	now := time.Now().UTC().Truncate(time.Hour)
	start, end, err := timeRange(from, to, now.Add(-7*24*time.Hour), time.Now().UTC())
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	acfg, err := azureConfig(az)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	res, err := reconcileAzure(ctx, src, acfg.Client, start, end, newProgress(stderr, time.Now))
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	if f.json {
		err = printJSON(stdout, res)
	} else {
		err = printReconciliation(stdout, res)
	}
	if err == nil && len(res.Differences) > 0 {
		return fmt.Errorf("reconcile: %d differences: %w", len(res.Differences), errDifferences)
	}
	return err
}

// reconcileAzure reads our side (every Azure customer's buckets, one
// customer at a time, with progress) and Azure's, and compares them per
// resource, dimension and hour.
func reconcileAzure(ctx context.Context, src adminSource, client *azure.Client, from, to time.Time, prog *progress) (reconciliation, error) {
	res := reconciliation{Provider: "azure", From: from, To: to, Differences: []difference{}}
	subs, err := src.Subscriptions(ctx, "azure", "")
	if err != nil {
		return res, err
	}
	customers := map[string]bool{}
	for _, s := range subs {
		customers[s.Customer] = true
	}
	type key struct {
		customer, dimension string
		hour                time.Time
	}
	ours := map[key]bucketView{}
	res.Customers = len(customers)
	i := 0
	for _, c := range slices.Sorted(maps.Keys(customers)) {
		i++
		prog.update("reading the ledger: customer %d of %d", i, len(customers))
		bs, err := src.Usage(ctx, "azure", c, from, to)
		if err != nil {
			return res, err
		}
		for _, b := range bs {
			ours[key{b.Customer, b.Dimension, b.Hour.UTC()}] = b
			if b.State == "reported" {
				res.Reported++
			}
		}
	}
	prog.update("reading Azure's usage events from %s to %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	recs, err := client.GetUsageEvents(ctx, azure.UsageQuery{Start: from, End: to})
	if err != nil {
		return res, fmt.Errorf("Azure usage events: %w", err)
	}
	prog.done()
	theirs := map[key]float64{}
	for _, r := range recs {
		h := r.UsageDate.UTC().Truncate(time.Hour)
		if h.Before(from) || !h.Before(to) {
			continue
		}
		res.AzureRecords++
		theirs[key{r.UsageResourceID, r.Dimension, h}] += r.ProcessedQuantity
	}
	for k, b := range ours {
		q, at := theirs[k]
		d := difference{Customer: k.customer, Dimension: k.dimension, Hour: k.hour, OurState: b.State, OurUnits: b.Units, RecordID: b.RecordID, Azure: q}
		switch {
		case b.State != "reported":
			if at {
				d.Kind = "not_reported_by_us"
				res.Differences = append(res.Differences, d)
			}
		case !at:
			d.Kind = "not_at_azure"
			res.Differences = append(res.Differences, d)
		case q != float64(b.Units):
			d.Kind = "quantity"
			res.Differences = append(res.Differences, d)
		}
	}
	for k, q := range theirs {
		if _, ok := ours[k]; !ok {
			res.Differences = append(res.Differences, difference{Kind: "not_reported_by_us", Customer: k.customer, Dimension: k.dimension, Hour: k.hour, Azure: q})
		}
	}
	slices.SortFunc(res.Differences, func(a, b difference) int {
		return cmp.Or(strings.Compare(a.Customer, b.Customer), strings.Compare(a.Dimension, b.Dimension), a.Hour.Compare(b.Hour))
	})
	return res, nil
}

func printReconciliation(w io.Writer, r reconciliation) error {
	fmt.Fprintf(w, "azure, %s to %s: %d customers, %d buckets reported by the ledger, %d usage events at Azure: %d differences\n",
		r.From.Format(time.RFC3339), r.To.Format(time.RFC3339), r.Customers, r.Reported, r.AzureRecords, len(r.Differences))
	if len(r.Differences) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DIFFERENCE\tCUSTOMER\tDIMENSION\tHOUR (UTC)\tLEDGER\tUNITS\tAZURE\tRECORD ID")
	for _, d := range r.Differences {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.Kind, d.Customer, d.Dimension, d.Hour.Format("2006-01-02 15:04"),
			dash(d.OurState), d.OurUnits, strconv.FormatFloat(d.Azure, 'f', -1, 64), dash(d.RecordID))
	}
	return tw.Flush()
}

// progress shows what a long run is doing on one line of stderr: updates
// are shown at most every 200 ms, and only once the run has taken a second,
// so that a short run prints nothing.
type progress struct {
	w          io.Writer
	now        func() time.Time
	start      time.Time
	last       time.Time
	shown      bool
	lastLength int
}

func newProgress(w io.Writer, now func() time.Time) *progress {
	return &progress{w: w, now: now, start: now()}
}

func (p *progress) update(format string, args ...any) {
	t := p.now()
	if t.Sub(p.start) < time.Second || t.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last, p.shown = t, true
	line := fmt.Sprintf(format, args...)
	pad := max(0, p.lastLength-len(line))
	p.lastLength = len(line)
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
}

// done ends the progress line.
func (p *progress) done() {
	if p.shown {
		fmt.Fprintln(p.w)
		p.shown = false
	}
}
