package aws_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger"
)

type lineKey struct {
	customer, dimension string
	hour                time.Time
}

// workload ingests n records of the given customers over the hours 09:00
// to 11:00 and returns the expected bill per line.
func workload(t *testing.T, e *env, customers []string, n int, seed uint64) map[lineKey]int64 {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	dims := []string{"requests", "images"}
	recs := make([]ledger.Record, n)
	want := map[lineKey]int64{}
	for i := range recs {
		r := ledger.Record{Provider: marketplace.AWS, Customer: customers[rng.IntN(len(customers))],
			Dimension: dims[rng.IntN(len(dims))], Quantity: 1 + rng.Int64N(1000), Time: onDay(9+rng.IntN(3), rng.IntN(60)),
			EventID: fmt.Sprintf("ev-%d-%06d", seed, i)}
		recs[i] = r
		want[lineKey{r.Customer, r.Dimension, r.Time.Truncate(time.Hour)}] += r.Quantity
	}
	if _, err := e.ledger.Ingest(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ledger.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	return want
}

// checkBill compares the emulator's bill with want and the ledger's
// stored outcomes with the bill.
func checkBill(t *testing.T, e *env, want map[lineKey]int64, custOf func(string) string) {
	t.Helper()
	bill := e.emu.Bill()
	got := map[lineKey]int64{}
	ids := map[lineKey]string{}
	for _, l := range bill.Lines {
		k := lineKey{l.Customer, l.Dimension, l.Hour}
		got[k] = l.Quantity
		ids[k] = l.MeteringRecordId
	}
	wantByBill := map[lineKey]int64{}
	for k, v := range want {
		wantByBill[lineKey{custOf(k.customer), k.dimension, k.hour}] = v
	}
	if len(got) != len(wantByBill) {
		t.Errorf("bill has %d lines, want %d", len(got), len(wantByBill))
	}
	for k, v := range wantByBill {
		if got[k] != v {
			t.Errorf("bill %v = %d, want %d", k, got[k], v)
		}
	}
	if st := e.emu.Stats(); st.Duplicate != 0 {
		t.Errorf("the reporter caused %d DuplicateRecord answers", st.Duplicate)
	}
	bs, err := e.ledger.Buckets(t.Context(), ledger.BucketFilter{Provider: marketplace.AWS})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if b.State != ledger.StateReported {
			t.Errorf("bucket %s/%s@%s is %s (%s), want reported", b.Customer, b.Dimension, b.Hour, b.State, b.Reason)
			continue
		}
		if id := ids[lineKey{custOf(b.Customer), b.Dimension, b.Hour}]; b.RecordID != id {
			t.Errorf("bucket %s/%s@%s stored record id %q, the bill has %q", b.Customer, b.Dimension, b.Hour, b.RecordID, id)
		}
	}
}

// TestExactlyOnceThroughFaults drives the ledger's reporter through the
// official SDK client against the emulator with every fault on, in both
// buyer identity modes: the bill must equal the ingested usage exactly,
// with no DuplicateRecord ever caused.
func TestExactlyOnceThroughFaults(t *testing.T) {
	faults := emu.Faults{ThrottleTPS: 20, ThrottleBurst: 1, ErrorRate: 0.15, DropRate: 0.15, UnprocessedRate: 0.15, Latency: time.Millisecond, Seed: 3}
	for _, licenseMode := range []bool{false, true} {
		t.Run(fmt.Sprintf("license=%v", licenseMode), func(t *testing.T) {
			// A run of a few dozen calls may by chance miss one kind of
			// fault: then the run proves nothing about it, and another seed
			// runs. Every run's bill must be exact.
			for attempt := range 8 {
				faults.Seed = uint64(3 + attempt)
				if exactlyOnceRun(t, faults, licenseMode) {
					return
				}
			}
			t.Errorf("not every fault happened in 8 runs")
		})
	}
}

// exactlyOnceRun is one run of TestExactlyOnceThroughFaults; it reports
// whether every kind of fault happened in it.
func exactlyOnceRun(t *testing.T, faults emu.Faults, licenseMode bool) bool {
	e := newEnv(t, emu.Config{Faults: faults})
	var customers []string
	custOf := func(c string) string { return c }
	cfg := aws.ReporterConfig{Client: e.meter, Limits: ledger.Limits{Rate: 1000}, Logger: discard, LicenseMode: licenseMode, ProductCode: "prod-1"}
	for i := range 20 {
		if licenseMode {
			b := e.emu.AddBuyer(emu.Buyer{ProductCode: "prod-1", LicenseArn: "new"})
			customers = append(customers, aws.LicenseCustomer(b.CustomerAWSAccountId, b.LicenseArn))
			continue
		}
		b := e.emu.AddBuyer(emu.Buyer{ProductCode: "prod-1", CustomerIdentifier: fmt.Sprintf("cust-%d", i)})
		customers = append(customers, b.CustomerIdentifier)
	}
	if licenseMode {
		custOf = func(c string) string { a, _, _ := aws.ParseLicenseCustomer(c); return a }
	}
	want := workload(t, e, customers, 3000, 1)
	rep := ledger.NewReporter(e.ledger, mustReporter(t, cfg), fastReporting)
	e.reportAll(t, rep)
	checkBill(t, e, want, custOf)
	st := e.emu.Stats()
	t.Logf("emulator: %+v", st)
	return st.Throttled > 0 && st.Errors > 0 && st.Dropped > 0 && st.Unprocessed > 0 && st.Idempotent > 0
}

func mustReporter(t testing.TB, cfg aws.ReporterConfig) *aws.Reporter {
	t.Helper()
	r, err := aws.NewReporter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestReporterBacksOffWhenThrottled: the emulator throttles above 20 calls
// per second and the reporter is allowed 1000; the ledger's Reporter halves
// its rate on each ThrottlingException, so most calls go through, and the
// bill is exact.
func TestReporterBacksOffWhenThrottled(t *testing.T) {
	e := newEnv(t, emu.Config{Faults: emu.Faults{ThrottleTPS: 20, ThrottleBurst: 1}})
	var customers []string
	for i := range 60 {
		customers = append(customers, e.emu.AddBuyer(emu.Buyer{ProductCode: "p", CustomerIdentifier: fmt.Sprintf("c%02d", i)}).CustomerIdentifier)
	}
	want := workload(t, e, customers, 60, 5)
	target := mustReporter(t, aws.ReporterConfig{Client: e.meter, ProductCode: "p", Limits: ledger.Limits{MaxItems: 1, Rate: 1000}, Logger: discard})
	rep := ledger.NewReporter(e.ledger, target, fastReporting)
	e.reportAll(t, rep)
	checkBill(t, e, want, func(c string) string { return c })
	st := e.emu.Stats()
	t.Logf("emulator: %+v; reporter rate now %.1f/s", st, rep.Rate())
	if st.Throttled == 0 {
		t.Fatal("the emulator never throttled: the test proves nothing")
	}
	if 3*st.Throttled > st.Calls {
		t.Errorf("%d of %d calls throttled: the reporter did not back off", st.Throttled, st.Calls)
	}
	if rep.Rate() > 100 {
		t.Errorf("reporter rate %.1f/s after throttling at 20/s", rep.Rate())
	}
}

func TestNewReporterRefusesBadConfig(t *testing.T) {
	m := aws.NewMetering(nil)
	for _, tc := range []struct {
		cfg  aws.ReporterConfig
		want string
	}{
		{aws.ReporterConfig{ProductCode: "p"}, "Client is required"},
		{aws.ReporterConfig{Client: m}, "ProductCode is required unless LicenseMode is set"},
	} {
		if _, err := aws.NewReporter(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, aws.ErrInvalidInput) {
			t.Errorf("NewReporter(%+v) = %v, want an ErrInvalidInput saying %q", tc.cfg, err, tc.want)
		}
	}
	r, err := aws.NewReporter(aws.ReporterConfig{Client: m, LicenseMode: true})
	if err != nil || r.Limits() != aws.DefaultLimits {
		t.Errorf("license mode: %v, limits %+v", err, r.Limits())
	}
}
