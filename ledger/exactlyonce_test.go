package ledger_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
)

// The tests in this file prove the ledger's central promise: usage is
// billed exactly once, through retried ingest, concurrent callers, lost
// responses, throttling, process crashes and late data. Each compares the
// bill a FakeCloud holds (which deduplicates as AWS does) with the usage
// that went in.

// workload returns n distinct records with event ids, spread over the
// three clouds, customers, two dimensions and the hours 09:00 to 11:00.
func workload(rng *rand.Rand, n, customers int) []ledger.Record {
	providers := marketplace.Providers()
	dims := []string{"requests", "images"}
	recs := make([]ledger.Record, n)
	for i := range recs {
		recs[i] = ledger.Record{
			Provider:  providers[rng.IntN(len(providers))],
			Customer:  fmt.Sprintf("cust-%02d", rng.IntN(customers)),
			Dimension: dims[rng.IntN(len(dims))],
			Quantity:  rng.Int64N(1000),
			Time:      onDay(9+rng.IntN(3), rng.IntN(60)),
			EventID:   fmt.Sprintf("ev-%06d", i),
		}
	}
	return recs
}

// nonZero drops the lines of want that bill nothing (skipped buckets).
func nonZero(want map[lineKey]int64) map[lineKey]int64 {
	for k, v := range want {
		if v == 0 {
			delete(want, k)
		}
	}
	return want
}

func cloudsFor(tl *testLedger, seed uint64, f ledgertest.Faults) []*ledgertest.FakeCloud {
	var clouds []*ledgertest.FakeCloud
	for i, p := range marketplace.Providers() {
		clouds = append(clouds, tl.newCloud(p, seed+uint64(i), f))
	}
	return clouds
}

// TestExactlyOnceConcurrentIngest ingests every record one to three times,
// from 16 goroutines at once, sometimes twice in one batch and sometimes
// from two goroutines at the same moment; the bill must hold each record
// exactly once.
func TestExactlyOnceConcurrentIngest(t *testing.T) {
	tl := newLedger(t, ledger.Config{})
	rng := rand.New(rand.NewPCG(1, 2))
	recs := workload(rng, 2400, 10)

	// Deal the copies out to the workers. A unit is ingested in one batch.
	const workers = 16
	units := make([][][]ledger.Record, workers)
	sends := 0
	for _, r := range recs {
		copies := 1 + rng.IntN(3)
		sends += copies
		if copies > 1 && rng.IntN(3) == 0 {
			g := rng.IntN(workers)
			units[g] = append(units[g], slices.Repeat([]ledger.Record{r}, copies))
			continue
		}
		for range copies {
			g := rng.IntN(workers)
			units[g] = append(units[g], []ledger.Record{r})
		}
	}
	batches := make([][][]ledger.Record, workers)
	for g := range units {
		rng.Shuffle(len(units[g]), func(i, j int) { units[g][i], units[g][j] = units[g][j], units[g][i] })
		var b []ledger.Record
		size := 1 + rng.IntN(40)
		for _, u := range units[g] {
			b = append(b, u...)
			if len(b) >= size {
				batches[g] = append(batches[g], b)
				b, size = nil, 1+rng.IntN(40)
			}
		}
		if len(b) > 0 {
			batches[g] = append(batches[g], b)
		}
	}

	var accepted, dups atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for _, b := range batches[g] {
				res, err := tl.Ingest(t.Context(), b)
				if err != nil {
					errs[g] = err
					return
				}
				accepted.Add(int64(res.Accepted))
				dups.Add(int64(res.Duplicates))
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, want := accepted.Load(), int64(len(recs)); got != want {
		t.Errorf("accepted %d records, want %d distinct", got, want)
	}
	if got, want := dups.Load(), int64(sends-len(recs)); got != want {
		t.Errorf("%d duplicates, want %d", got, want)
	}
	if got := tl.metrics.Get("recorded"); got != int64(len(recs)) {
		t.Errorf("metric recorded = %d, want %d", got, len(recs))
	}

	if _, err := tl.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	clouds := cloudsFor(tl, 10, ledgertest.Faults{})
	var reporters []*ledger.Reporter
	for _, c := range clouds {
		reporters = append(reporters, ledger.NewReporter(tl.Ledger, c, fastReporting))
	}
	tl.reportAll(t, reporters...)

	want := nonZero(expectRaw(recs))
	compareBills(t, billOf(t, clouds...), want)
	// The same, per customer and dimension and in total, as a buyer sees it.
	for _, c := range clouds {
		perSeries := make(map[string]int64)
		var total int64
		for _, r := range recs {
			if r.Provider == c.Provider() {
				perSeries[r.Customer+"/"+r.Dimension] += r.Quantity
				total += r.Quantity
			}
		}
		b := c.Bill()
		for k, v := range b.Totals() {
			if perSeries[k] != v {
				t.Errorf("%s %s: billed %d, want %d", c.Provider(), k, v, perSeries[k])
			}
		}
		if got := b.Sum("", ""); got != total {
			t.Errorf("%s: billed %d in all, want %d", c.Provider(), got, total)
		}
	}
	bs := tl.buckets(t)
	checkAllFinal(t, bs)
	checkRecordIDs(t, bs, clouds...)
}

// TestExactlyOnceFaults reports through clouds that apply ~30% of calls and
// then lose the answer, refuse ~20% before applying them, and leave a few
// reports unprocessed, with two reporters per cloud competing for work.
// Nothing may be billed twice or lost.
func TestExactlyOnceFaults(t *testing.T) {
	tl := newLedger(t, ledger.Config{})
	recs := workload(rand.New(rand.NewPCG(3, 4)), 1500, 12)
	for i := 0; i < len(recs); i += 50 {
		if _, err := tl.Ingest(t.Context(), recs[i:min(i+50, len(recs))]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tl.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	clouds := cloudsFor(tl, 20, ledgertest.Faults{DropResponse: 0.3, NotApplied: 0.2, RetryAfter: 90 * time.Second, Unprocessed: 0.05})
	cfg := fastReporting
	cfg.ClaimLimit = 30
	var reporters []*ledger.Reporter
	for _, c := range clouds {
		reporters = append(reporters, ledger.NewReporter(tl.Ledger, c, cfg), ledger.NewReporter(tl.Ledger, c, cfg))
	}
	tl.reportAll(t, reporters...)

	compareBills(t, billOf(t, clouds...), nonZero(expectRaw(recs)))
	bs := tl.buckets(t)
	checkAllFinal(t, bs)
	checkRecordIDs(t, bs, clouds...)
	var st ledgertest.Stats
	for _, c := range clouds {
		s := c.Bill().Stats
		st.Dropped += s.Dropped
		st.Throttled += s.Throttled
		st.Duplicates += s.Duplicates
		st.Unprocessed += s.Unprocessed
	}
	// The faults must really have happened, or this test proves nothing.
	if st.Dropped == 0 || st.Throttled == 0 || st.Duplicates == 0 || st.Unprocessed == 0 {
		t.Errorf("faults not exercised: %+v", st)
	}
	reported := 0
	for _, b := range bs {
		if b.State == ledger.StateReported {
			reported++
		}
	}
	if got := tl.metrics.Get("reported"); got != int64(reported) {
		t.Errorf("metric reported = %d, want %d", got, reported)
	}
	if tl.metrics.Get("retried") == 0 {
		t.Error("metric retried = 0")
	}
	t.Logf("%d buckets; clouds: %+v", len(bs), st)
}

// TestLateUsage sends usage for hours already sealed, one of them already
// reported: it goes to the earliest open hour, counts as late, and is
// billed once.
func TestLateUsage(t *testing.T) {
	tl := newLedger(t, ledger.Config{})
	ctx := t.Context()
	rec := func(h, m int, q int64, id string) ledger.Record {
		return ledger.Record{Provider: marketplace.AWS, Customer: "c1", Dimension: "requests", Quantity: q, Time: onDay(h, m), EventID: id}
	}
	if _, err := tl.Ingest(ctx, []ledger.Record{rec(10, 10, 10, "a"), rec(11, 10, 20, "b")}); err != nil {
		t.Fatal(err)
	}
	if n, err := tl.Seal(ctx); err != nil || n != 2 {
		t.Fatalf("Seal = %d, %v; want 2 buckets", n, err)
	}
	cloud := tl.newCloud(marketplace.AWS, 1, ledgertest.Faults{})
	// Report only the oldest bucket (10:00); 11:00 stays sealed.
	cfg := fastReporting
	cfg.ClaimLimit = 1
	rep := ledger.NewReporter(tl.Ledger, cloud, cfg)
	if st, err := rep.RunOnce(ctx); err != nil || st.Reported != 1 {
		t.Fatalf("RunOnce = %+v, %v; want one report", st, err)
	}

	late := []ledger.Record{
		rec(10, 30, 5, "late-1"), // its hour is reported
		rec(11, 40, 7, "late-2"), // its hour is sealed, not yet reported
		rec(11, 40, 7, "late-2"), // a retry: a duplicate, not late usage
	}
	res, err := tl.Ingest(ctx, late)
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 2 || res.Duplicates != 1 {
		t.Errorf("Ingest = %+v, want 2 accepted and 1 duplicate", res)
	}
	if err := tl.Fold(ctx); err != nil {
		t.Fatal(err)
	}
	if got := tl.metrics.Get("late"); got != 12 {
		t.Errorf("late = %d, want 12", got)
	}
	if got := tl.metrics.Get("late/aws"); got != 12 {
		t.Errorf("late/aws = %d, want 12", got)
	}
	byHour := map[int]ledger.Bucket{}
	for _, b := range tl.buckets(t) {
		byHour[b.Hour.Hour()] = b
	}
	if b := byHour[12]; b.State != ledger.StateOpen || b.Quantity != 12 || b.Late != 12 {
		t.Errorf("bucket 12:00 = %s quantity %d late %d; want open, 12, 12", b.State, b.Quantity, b.Late)
	}
	if byHour[10].Quantity != 10 || byHour[11].Quantity != 20 {
		t.Errorf("sealed buckets changed: 10:00 holds %d, 11:00 holds %d", byHour[10].Quantity, byHour[11].Quantity)
	}

	tl.clock.Set(onDay(13, 6))
	if n, err := tl.Seal(ctx); err != nil || n != 1 {
		t.Fatalf("Seal = %d, %v; want the 12:00 bucket", n, err)
	}
	tl.reportAll(t, ledger.NewReporter(tl.Ledger, cloud, fastReporting))
	k := func(h int) lineKey { return lineKey{marketplace.AWS, "c1", "requests", onDay(h, 0)} }
	compareBills(t, billOf(t, cloud), map[lineKey]int64{k(10): 10, k(11): 20, k(12): 12})
	checkAllFinal(t, tl.buckets(t))
}

// TestRemainders bills tokens per million: 700k tokens an hour make 0, 1
// and 1 units in three hours (the remainder carries; nothing is rounded up
// per hour), and the final flush settles the last 100k by policy.
func TestRemainders(t *testing.T) {
	tests := []struct {
		name      string
		settle    ledger.SettlePolicy
		sealFirst bool          // seal the hours before the final flush
		hours     []int         // each gets 700k tokens
		want      map[int]int64 // units billed per hour
	}{
		{"drop after seal", ledger.SettleDrop, true, []int{9, 10, 11}, map[int]int64{10: 1, 11: 1}},
		{"round up after seal", ledger.SettleRoundUp, true, []int{9, 10, 11}, map[int]int64{10: 1, 11: 1, 12: 1}},
		{"drop in final flush", ledger.SettleDrop, false, []int{10, 11, 12}, map[int]int64{11: 1, 12: 1}},
		{"round up in final flush", ledger.SettleRoundUp, false, []int{10, 11, 12}, map[int]int64{11: 1, 12: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newLedger(t, ledger.Config{Units: map[string]int64{"tokens_1m": 1_000_000}, Settle: tt.settle})
			ctx := t.Context()
			for i, h := range tt.hours {
				// Two records an hour, so that sums, not records, are divided.
				for j, q := range []int64{300_000, 400_000} {
					r := ledger.Record{Provider: marketplace.AWS, Customer: "c1", Dimension: "tokens_1m", Quantity: q,
						Time: onDay(h, 10+j), EventID: fmt.Sprintf("e%d-%d", i, j)}
					if err := tl.Record(ctx, r); err != nil {
						t.Fatal(err)
					}
				}
			}
			if tt.sealFirst {
				if _, err := tl.Seal(ctx); err != nil {
					t.Fatal(err)
				}
				var units []int64
				var states []ledger.State
				for _, b := range tl.buckets(t) {
					units = append(units, b.Units)
					states = append(states, b.State)
				}
				if !slices.Equal(units, []int64{0, 1, 1}) {
					t.Errorf("units after Seal = %v, want [0 1 1]", units)
				}
				if !slices.Equal(states, []ledger.State{ledger.StateSkipped, ledger.StateSealed, ledger.StateSealed}) {
					t.Errorf("states after Seal = %v", states)
				}
			}
			if _, err := tl.SealCustomer(ctx, marketplace.AWS, "c1"); err != nil {
				t.Fatal(err)
			}
			cloud := tl.newCloud(marketplace.AWS, 1, ledgertest.Faults{})
			tl.reportAll(t, ledger.NewReporter(tl.Ledger, cloud, fastReporting))

			want := make(map[lineKey]int64)
			for h, u := range tt.want {
				want[lineKey{marketplace.AWS, "c1", "tokens_1m", onDay(h, 0)}] = u
			}
			compareBills(t, billOf(t, cloud), want)
			bs := tl.buckets(t)
			checkAllFinal(t, bs)
			if first := bs[0]; first.Hour.Hour() != tt.hours[0] || first.State != ledger.StateSkipped || first.Units != 0 {
				t.Errorf("first hour: %s %s with %d units; want skipped with 0", first.BucketKey, first.State, first.Units)
			}
		})
	}
}
