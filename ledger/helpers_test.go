package ledger_test

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
	"github.com/saasmarket/marketplace/sqlite"
)

// testNow is the fake clock's start in most tests: hours 09:00 to 11:00 are
// over and seal at once; the current hour is 12:00.
var testNow = time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)

// onDay returns the time h:m on testNow's day.
func onDay(h, m int) time.Time {
	return time.Date(2026, 3, 10, h, m, 0, 0, time.UTC)
}

var discardLogger = slog.New(slog.DiscardHandler)

// testLedger is a ledger on a SQLite store in a temporary folder, with a
// fake clock and counters.
type testLedger struct {
	*ledger.Ledger
	clock   *ledgertest.Clock
	metrics *ledger.Counters
	path    string
}

// newLedger opens a ledger; cfg.Clock, Metrics and Logger are set by it.
// Both are closed when the test ends.
func newLedger(t testing.TB, cfg ledger.Config) *testLedger {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	store, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	})
	tl := &testLedger{clock: ledgertest.NewClock(testNow), metrics: &ledger.Counters{}, path: path}
	cfg.Clock = tl.clock.Now
	cfg.Metrics = tl.metrics
	cfg.Logger = discardLogger
	tl.Ledger = ledger.New(store, cfg)
	t.Cleanup(func() { tl.Close() })
	return tl
}

// newCloud returns a FakeCloud for p whose deadline check follows the
// ledger's clock.
func (tl *testLedger) newCloud(p marketplace.CloudProvider, seed uint64, f ledgertest.Faults) *ledgertest.FakeCloud {
	return ledgertest.NewFakeCloud(ledgertest.Config{Provider: p, Seed: seed, Faults: f, Clock: tl.clock.Now,
		Limits: ledger.Limits{Deadline: 24 * time.Hour}})
}

// fastReporting is a reporter configuration whose waits are short against
// the steps reportAll moves the clock by.
var fastReporting = ledger.ReporterConfig{
	Lease:       time.Minute,
	BackoffBase: time.Second,
	BackoffMax:  10 * time.Second,
	Logger:      discardLogger,
}

// reportAll reports until no sealed bucket is left: each round runs every
// reporter once (reporters of one cloud concurrently), then moves the
// clock past any backoff or lease.
func (tl *testLedger) reportAll(t testing.TB, reporters ...*ledger.Reporter) {
	t.Helper()
	ctx := t.Context()
	for round := 0; ; round++ {
		if round == 1000 {
			t.Fatal("reporting did not finish in 1000 rounds")
		}
		var wg sync.WaitGroup
		errs := make([]error, len(reporters))
		for i, r := range reporters {
			wg.Go(func() { _, errs[i] = r.RunOnce(ctx) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		sealed, err := tl.Buckets(ctx, ledger.BucketFilter{States: []ledger.State{ledger.StateSealed}})
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) == 0 {
			return
		}
		tl.clock.Advance(time.Minute)
	}
}

// buckets lists every bucket.
func (tl *testLedger) buckets(t testing.TB) []ledger.Bucket {
	t.Helper()
	bs, err := tl.Buckets(t.Context(), ledger.BucketFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// lineKey names a bill line across clouds.
type lineKey struct {
	provider            marketplace.CloudProvider
	customer, dimension string
	hour                time.Time
}

func (k lineKey) String() string {
	return fmt.Sprintf("%s/%s/%s@%s", k.provider, k.customer, k.dimension, k.hour.Format("15:04"))
}

// billOf flattens the bills of clouds into quantity per line, and fails the
// test on any conflict.
func billOf(t testing.TB, clouds ...*ledgertest.FakeCloud) map[lineKey]int64 {
	t.Helper()
	got := make(map[lineKey]int64)
	for _, c := range clouds {
		b := c.Bill()
		if b.Stats.Conflicts != 0 {
			t.Errorf("%s: %d conflicts", b.Provider, b.Stats.Conflicts)
		}
		for _, l := range b.Lines {
			got[lineKey{b.Provider, l.Customer, l.Dimension, l.Hour}] = l.Quantity
		}
	}
	return got
}

// compareBills fails the test where got and want differ.
func compareBills(t testing.TB, got, want map[lineKey]int64) {
	t.Helper()
	var gotSum, wantSum int64
	for k, w := range want {
		wantSum += w
		if g := got[k]; g != w {
			t.Errorf("%s: billed %d, want %d", k, g, w)
		}
	}
	for k, g := range got {
		gotSum += g
		if _, ok := want[k]; !ok {
			t.Errorf("%s: billed %d, want nothing", k, g)
		}
	}
	if gotSum != wantSum {
		t.Errorf("billed %d in all, want %d", gotSum, wantSum)
	}
}

// expectRaw is the bill that records of unit 1 must produce.
func expectRaw(recs []ledger.Record) map[lineKey]int64 {
	want := make(map[lineKey]int64)
	for _, r := range recs {
		want[lineKey{r.Provider, r.Customer, r.Dimension, ledger.HourOf(r.Time)}] += r.Quantity
	}
	return want
}

// checkAllFinal fails the test unless every bucket is reported (or skipped).
func checkAllFinal(t testing.TB, bs []ledger.Bucket) {
	t.Helper()
	for _, b := range bs {
		if b.State != ledger.StateReported && b.State != ledger.StateSkipped {
			t.Errorf("bucket %s is %s (%s)", b.BucketKey, b.State, b.Reason)
		}
		if b.State == ledger.StateReported && b.RecordID == "" {
			t.Errorf("bucket %s is reported without a record id", b.BucketKey)
		}
	}
}

// checkRecordIDs fails the test unless every reported bucket carries the
// record id and units of the line the cloud bills for it.
func checkRecordIDs(t testing.TB, bs []ledger.Bucket, clouds ...*ledgertest.FakeCloud) {
	t.Helper()
	bills := make(map[marketplace.CloudProvider]ledgertest.Bill)
	for _, c := range clouds {
		bills[c.Provider()] = c.Bill()
	}
	for _, b := range bs {
		if b.State != ledger.StateReported {
			continue
		}
		l, ok := bills[b.Provider].Line(b.Customer, b.Dimension, b.Hour)
		if !ok || l.RecordID != b.RecordID || l.Quantity != b.Units {
			t.Errorf("bucket %s: reported %d units as %q; the cloud holds %+v (found: %v)", b.BucketKey, b.Units, b.RecordID, l, ok)
		}
	}
}
