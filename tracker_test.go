package marketplace

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// fakeMetering is a MeteringService that keeps what it accepted, the bill,
// per pair. fail, if set, decides each call's outcome from the batch: nil
// accepts it all, a *SubmitError accepts all but its Failed records, any
// other error accepts nothing.
type fakeMetering struct {
	fail func(records []UsageRecord) error

	mu       sync.Mutex
	calls    int
	batches  [][]UsageRecord
	accepted map[pairKey]int64
}

func (f *fakeMetering) SubmitUsage(_ context.Context, records []UsageRecord) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.batches = append(f.batches, records)
	var err error
	if f.fail != nil {
		err = f.fail(records)
	}
	skip := make(map[pairKey]bool)
	if se := (*SubmitError)(nil); errors.As(err, &se) {
		for _, r := range se.Failed {
			skip[pairKey{r.CustomerID, r.Dimension}] = true
		}
	} else if err != nil {
		return err // nothing accepted
	}
	if f.accepted == nil {
		f.accepted = make(map[pairKey]int64)
	}
	for _, r := range records {
		if k := (pairKey{r.CustomerID, r.Dimension}); !skip[k] {
			f.accepted[k] += r.Quantity
		}
	}
	return err
}

// bill returns a copy of what was accepted, never nil, so that callers may
// add to it even when nothing was accepted.
func (f *fakeMetering) bill() map[pairKey]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := make(map[pairKey]int64, len(f.accepted))
	maps.Copy(b, f.accepted)
	return b
}

// flat turns an Aggregate result into a map per pair.
func flat(agg map[string]map[string]int64) map[pairKey]int64 {
	out := make(map[pairKey]int64)
	for c, dims := range agg {
		for d, q := range dims {
			out[pairKey{c, d}] = q
		}
	}
	return out
}

// cells returns the number of cells the tracker holds over all lanes.
func (t *UsageTracker) cells() int {
	n := 0
	t.eachCell(func(*usageCell) { n++ })
	return n
}

func TestUsageTrackerRecordAndAggregate(t *testing.T) {
	tr := NewUsageTracker()
	tr.Record("alice", "tokens_1m", 5)
	tr.Record("alice", "tokens_1m", 7)
	tr.Record("alice", "gpu_hours", 1)
	tr.Record("bob", "tokens_1m", 100)

	want := map[string]map[string]int64{
		"alice": {"tokens_1m": 12, "gpu_hours": 1},
		"bob":   {"tokens_1m": 100},
	}
	for i := range 2 { // the second time proves Aggregate did not drain
		got := tr.Aggregate()
		if !maps.EqualFunc(got, want, maps.Equal) {
			t.Fatalf("Aggregate() #%d = %v, want %v", i+1, got, want)
		}
		if p := tr.Pending(); p != 4 {
			t.Fatalf("Pending() #%d = %d, want 4", i+1, p)
		}
	}

	// The snapshot belongs to the caller.
	got := tr.Aggregate()
	got["alice"]["tokens_1m"] = 0
	if q := tr.Aggregate()["alice"]["tokens_1m"]; q != 12 {
		t.Errorf("after changing a snapshot, tracker holds %d, want 12", q)
	}
}

func TestUsageTrackerIgnoresNonPositive(t *testing.T) {
	tests := []struct {
		quantity    int64
		wantPending int
		wantDropped int64
	}{
		{quantity: 3, wantPending: 1, wantDropped: 0},
		{quantity: 0, wantPending: 0, wantDropped: 0},
		{quantity: -1, wantPending: 0, wantDropped: 1},
		{quantity: -1 << 62, wantPending: 0, wantDropped: 1},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.quantity), func(t *testing.T) {
			tr := NewUsageTracker()
			tr.Record("c", "d", tc.quantity)
			if p := tr.Pending(); p != tc.wantPending {
				t.Errorf("Pending() = %d, want %d", p, tc.wantPending)
			}
			if d := tr.Dropped(); d != tc.wantDropped {
				t.Errorf("Dropped() = %d, want %d", d, tc.wantDropped)
			}
			if tc.quantity <= 0 && len(tr.Aggregate()) != 0 {
				t.Errorf("Aggregate() = %v, want empty", tr.Aggregate())
			}
		})
	}
}

func TestUsageTrackerFlush(t *testing.T) {
	tr := NewUsageTracker()
	for range 10 {
		tr.Record("alice", "tokens_1m", 3)
	}
	tr.Record("bob", "requests", 1)
	svc := &fakeMetering{}

	before := time.Now()
	n, err := tr.Flush(t.Context(), svc)
	after := time.Now()
	if err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if n != 11 {
		t.Errorf("Flush accepted %d records, want 11", n)
	}
	if svc.calls != 1 {
		t.Fatalf("SubmitUsage called %d times, want 1", svc.calls)
	}
	batch := svc.batches[0]
	if len(batch) != 2 {
		t.Fatalf("submitted %d records, want one per pair (2): %v", len(batch), batch)
	}
	for _, r := range batch {
		if r.Timestamp.Before(before) || r.Timestamp.After(after) {
			t.Errorf("record %v stamped outside the flush [%v, %v]", r, before, after)
		}
	}
	want := map[pairKey]int64{{"alice", "tokens_1m"}: 30, {"bob", "requests"}: 1}
	if got := svc.bill(); !maps.Equal(got, want) {
		t.Errorf("billed %v, want %v", got, want)
	}
	if p := tr.Pending(); p != 0 {
		t.Errorf("Pending() after Flush = %d, want 0", p)
	}
	if agg := tr.Aggregate(); len(agg) != 0 {
		t.Errorf("Aggregate() after Flush = %v, want empty", agg)
	}

	// Nothing pending: no call, zero pairs submitted.
	n, err = tr.Flush(t.Context(), svc)
	if n != 0 || err != nil {
		t.Errorf("empty Flush = %d, %v; want 0, nil", n, err)
	}
	if svc.calls != 1 {
		t.Errorf("empty Flush called SubmitUsage (%d calls)", svc.calls)
	}
}

func TestUsageTrackerFlushTotalFailurePutsEverythingBack(t *testing.T) {
	errDown := errors.New("service unavailable")
	tests := []struct {
		name string
		err  error
	}{
		{"plain error", errDown},
		{"wrapped error", fmt.Errorf("aws: %w", errDown)},
		{"retry-after", WithRetryAfter(errDown, time.Second)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewUsageTracker()
			tr.Record("alice", "tokens_1m", 4)
			tr.Record("alice", "tokens_1m", 6)
			tr.Record("bob", "gpu_hours", 2)
			before := tr.Aggregate()

			failing := &fakeMetering{fail: func([]UsageRecord) error { return tc.err }}
			n, err := tr.Flush(t.Context(), failing)
			if !errors.Is(err, errDown) {
				t.Fatalf("Flush err = %v, want it to wrap the service's error", err)
			}
			if n != 0 {
				t.Errorf("Flush accepted %d, want 0", n)
			}
			if got := tr.Aggregate(); !maps.EqualFunc(got, before, maps.Equal) {
				t.Errorf("after a failed Flush, Aggregate() = %v, want %v", got, before)
			}
			if p := tr.Pending(); p != 3 {
				t.Errorf("after a failed Flush, Pending() = %d, want 3", p)
			}

			// The next flush sends the same usage, once.
			ok := &fakeMetering{}
			if n, err := tr.Flush(t.Context(), ok); n != 3 || err != nil {
				t.Fatalf("second Flush = %d, %v; want 3, nil", n, err)
			}
			want := map[pairKey]int64{{"alice", "tokens_1m"}: 10, {"bob", "gpu_hours"}: 2}
			if got := ok.bill(); !maps.Equal(got, want) {
				t.Errorf("second Flush billed %v, want %v", got, want)
			}
		})
	}
}

func TestUsageTrackerFlushPartialFailure(t *testing.T) {
	errThrottled := errors.New("throttled")
	tr := NewUsageTracker()
	for range 3 {
		tr.Record("alice", "tokens_1m", 10) // rejected below
	}
	tr.Record("bob", "tokens_1m", 5)
	tr.Record("bob", "gpu_hours", 1)
	tr.Record("carol", "requests", 9) // rejected below

	rejectedCustomers := map[string]bool{"alice": true, "carol": true}
	svc := &fakeMetering{fail: func(records []UsageRecord) error {
		var rejected []UsageRecord
		for _, r := range records {
			if rejectedCustomers[r.CustomerID] {
				rejected = append(rejected, r)
			}
		}
		if rejected == nil {
			return nil
		}
		return &SubmitError{Failed: rejected, Err: errThrottled}
	}}
	n, err := tr.Flush(t.Context(), svc)

	var se *SubmitError
	if !errors.As(err, &se) || !errors.Is(err, errThrottled) || !errors.Is(err, ErrMeteringFailed) {
		t.Fatalf("Flush err = %v, want the SubmitError wrapped", err)
	}
	if n != 2 {
		t.Errorf("Flush accepted %d records, want 2 (bob's)", n)
	}
	wantBill := map[pairKey]int64{{"bob", "tokens_1m"}: 5, {"bob", "gpu_hours"}: 1}
	if got := svc.bill(); !maps.Equal(got, wantBill) {
		t.Errorf("billed %v, want %v", got, wantBill)
	}
	wantPending := map[pairKey]int64{{"alice", "tokens_1m"}: 30, {"carol", "requests"}: 9}
	if got := flat(tr.Aggregate()); !maps.Equal(got, wantPending) {
		t.Errorf("pending after partial failure = %v, want exactly the rejected %v", got, wantPending)
	}
	if p := tr.Pending(); p != 4 {
		t.Errorf("Pending() = %d, want 4 (alice's 3, carol's 1)", p)
	}

	// The next flush sends exactly what was rejected, and nothing twice.
	rejectedCustomers = nil
	if n, err := tr.Flush(t.Context(), svc); n != 4 || err != nil {
		t.Fatalf("second Flush = %d, %v; want 4, nil", n, err)
	}
	if last := svc.batches[len(svc.batches)-1]; len(last) != 2 {
		t.Errorf("second Flush sent %v, want only the 2 rejected pairs", last)
	}
	wantBill[pairKey{"alice", "tokens_1m"}] = 30
	wantBill[pairKey{"carol", "requests"}] = 9
	if got := svc.bill(); !maps.Equal(got, wantBill) {
		t.Errorf("final bill %v, want %v", got, wantBill)
	}
}

// TestUsageTrackerFlushOddSubmitError checks a SubmitError that lists a pair
// twice, or a pair that was not sent: each sent pair is put back at most
// once, with what was sent, and nothing is invented.
func TestUsageTrackerFlushOddSubmitError(t *testing.T) {
	tr := NewUsageTracker()
	tr.Record("alice", "d", 7)
	tr.Record("bob", "d", 1)
	svc := &fakeMetering{fail: func([]UsageRecord) error {
		return &SubmitError{Err: errors.New("partial"), Failed: []UsageRecord{
			{CustomerID: "alice", Dimension: "d", Quantity: 7},
			{CustomerID: "alice", Dimension: "d", Quantity: 7},
			{CustomerID: "mallory", Dimension: "d", Quantity: 1000},
		}}
	}}
	n, err := tr.Flush(t.Context(), svc)
	if err == nil || n != 1 {
		t.Fatalf("Flush = %d, %v; want 1 and an error", n, err)
	}
	want := map[pairKey]int64{{"alice", "d"}: 7}
	if got := flat(tr.Aggregate()); !maps.Equal(got, want) {
		t.Errorf("pending = %v, want %v", got, want)
	}
	if p := tr.Pending(); p != 1 {
		t.Errorf("Pending() = %d, want 1", p)
	}
}

func TestUsageTrackerFlushPanicPutsEverythingBack(t *testing.T) {
	tr := NewUsageTracker()
	tr.Record("alice", "d", 7)
	svc := &fakeMetering{fail: func([]UsageRecord) error { panic("boom") }}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("Flush swallowed the service's panic")
			}
		}()
		_, _ = tr.Flush(t.Context(), svc)
	}()
	if got := flat(tr.Aggregate()); got[pairKey{"alice", "d"}] != 7 || tr.Pending() != 1 {
		t.Errorf("after a panicking service, pending = %v (%d records), want alice's 7 (1)", got, tr.Pending())
	}
}

func TestUsageTrackerFlushCancelledContext(t *testing.T) {
	tr := NewUsageTracker()
	tr.Record("alice", "d", 7)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	svc := &fakeMetering{}
	n, err := tr.Flush(ctx, svc)
	if !errors.Is(err, context.Canceled) || n != 0 {
		t.Errorf("Flush = %d, %v; want 0, context.Canceled", n, err)
	}
	if svc.calls != 0 {
		t.Errorf("SubmitUsage called %d times on a cancelled context", svc.calls)
	}
	if tr.Pending() != 1 {
		t.Errorf("Pending() = %d, want 1", tr.Pending())
	}
}

// TestUsageTrackerConcurrentRecordAndFlush records from many goroutines
// while another flushes to a service that succeeds, fails outright or fails
// in part at random. At every point, what the service accepted plus what is
// pending must equal what was recorded, per pair, exactly: nothing lost,
// nothing sent twice.
func TestUsageTrackerConcurrentRecordAndFlush(t *testing.T) {
	const writers, perWriter, customers = 8, 20_000, 50
	dims := []string{"tokens_1m", "gpu_hours", "requests"}
	errFlaky := errors.New("flaky")

	tr := NewUsageTracker()
	svc := &fakeMetering{}
	rng := rand.New(rand.NewPCG(1, 2)) // used by the flusher goroutine only
	svc.fail = func(records []UsageRecord) error {
		switch rng.IntN(3) {
		case 0:
			return nil
		case 1:
			return errFlaky
		default:
			var rejected []UsageRecord
			for _, r := range records {
				if rng.IntN(2) == 0 {
					rejected = append(rejected, r)
				}
			}
			return &SubmitError{Failed: rejected, Err: errFlaky}
		}
	}

	recorded := make([]map[pairKey]int64, writers)
	var wg sync.WaitGroup
	for w := range writers {
		recorded[w] = make(map[pairKey]int64)
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 99))
			for i := range perWriter {
				// Some pairs are recorded rarely, so they go idle and are
				// evicted while others still record to them.
				c := fmt.Sprintf("cust-%d", r.IntN(customers))
				if i%100 != 0 {
					c = fmt.Sprintf("cust-%d", r.IntN(customers/5))
				}
				k := pairKey{c, dims[r.IntN(len(dims))]}
				q := r.Int64N(1000) + 1
				tr.Record(k.customer, k.dimension, q)
				recorded[w][k] += q
			}
		})
	}

	var accepted atomic.Int64 // records accepted, as Flush reports them
	stop := make(chan struct{})
	flusherDone := make(chan struct{})
	go func() {
		defer close(flusherDone)
		for {
			n, _ := tr.Flush(t.Context(), svc)
			accepted.Add(int64(n))
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-flusherDone

	want := make(map[pairKey]int64)
	for _, m := range recorded {
		for k, q := range m {
			want[k] += q
		}
	}
	check := func(when string) {
		t.Helper()
		got := svc.bill()
		for k, q := range flat(tr.Aggregate()) {
			got[k] += q
		}
		if !maps.Equal(got, want) {
			var diffs []string
			for k := range want {
				if got[k] != want[k] {
					diffs = append(diffs, fmt.Sprintf("%v: accepted+pending %d, recorded %d", k, got[k], want[k]))
				}
			}
			t.Fatalf("%s: %d pairs differ, e.g. %v", when, len(diffs), diffs[:min(3, len(diffs))])
		}
		if n := accepted.Load() + int64(tr.Pending()); n != writers*perWriter {
			t.Fatalf("%s: accepted %d + pending %d records = %d, want %d", when, accepted.Load(), tr.Pending(), n, writers*perWriter)
		}
	}
	check("after concurrent flushes")

	svc.fail = nil
	n, err := tr.Flush(t.Context(), svc)
	if err != nil {
		t.Fatalf("final Flush: %v", err)
	}
	accepted.Add(int64(n))
	check("after the final flush")
	if p := tr.Pending(); p != 0 {
		t.Errorf("Pending() after the final flush = %d, want 0", p)
	}
	if svc.calls < 3 {
		t.Logf("only %d flushes overlapped the writers; the test was weak this time", svc.calls)
	}
}

// TestUsageTrackerManyGoroutines records the same few pairs from many
// goroutines; the sums and counts must come out exact.
func TestUsageTrackerManyGoroutines(t *testing.T) {
	const goroutines, each = 64, 2_000
	tr := NewUsageTracker()
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				tr.Record(fmt.Sprint("c", (g+i)%4), "d", 2)
			}
		})
	}
	wg.Wait()
	if p := tr.Pending(); p != goroutines*each {
		t.Errorf("Pending() = %d, want %d", p, goroutines*each)
	}
	var total int64
	for _, q := range flat(tr.Aggregate()) {
		total += q
	}
	if total != 2*goroutines*each {
		t.Errorf("total pending quantity = %d, want %d", total, 2*goroutines*each)
	}
	if c := tr.cells(); c > 4*len(tr.lanes) {
		t.Errorf("tracker holds %d cells for 4 pairs over %d lanes", c, len(tr.lanes))
	}
}

// TestUsageTrackerMemoryFollowsPairs checks that many records of few pairs
// take a cell per pair, not per record.
func TestUsageTrackerMemoryFollowsPairs(t *testing.T) {
	tr := NewUsageTracker()
	for i := range 100_000 {
		tr.Record(fmt.Sprint("c", i%10), "d", 1)
	}
	if c := tr.cells(); c < 10 || c > 10*len(tr.lanes) {
		t.Errorf("100,000 records of 10 pairs: %d cells, want between 10 and %d", c, 10*len(tr.lanes))
	}
}

func TestUsageTrackerEvictsIdlePairs(t *testing.T) {
	tr := NewUsageTracker()
	svc := &fakeMetering{}
	tr.Record("alice", "d", 1)
	tr.Record("bob", "d", 1)
	if _, err := tr.Flush(t.Context(), svc); err != nil {
		t.Fatal(err)
	}
	if c := tr.cells(); c < 2 {
		t.Fatalf("cells after the first flush = %d, want the 2 pairs kept for the next interval", c)
	}
	tr.Record("bob", "d", 1) // bob stays active
	if _, err := tr.Flush(t.Context(), svc); err != nil {
		t.Fatal(err)
	}
	if c := tr.cells(); c < 1 || c > len(tr.lanes) {
		t.Errorf("cells after alice idled a whole interval = %d, want only bob's", c)
	}
	// An evicted pair is recorded and flushed like a new one.
	tr.Record("alice", "d", 5)
	if got := tr.Aggregate()["alice"]["d"]; got != 5 {
		t.Errorf("alice after eviction = %d, want 5", got)
	}
	if _, err := tr.Flush(t.Context(), svc); err != nil {
		t.Fatal(err)
	}
	if got := svc.bill()[pairKey{"alice", "d"}]; got != 6 {
		t.Errorf("alice billed %d in total, want 6", got)
	}
}

// TestUsageTrackerAddToEvictedCell plays the race the dead flag exists for:
// a Record found a cell, then Flush evicted it, then the Record added to
// it. The usage must end up pending in a live cell.
func TestUsageTrackerAddToEvictedCell(t *testing.T) {
	tr := NewUsageTracker()
	ln := tr.lanes[0]
	h := tr.hash("alice", "d")
	ln.add(h, "alice", "d", 1, 1)
	if _, err := tr.Flush(t.Context(), &fakeMetering{}); err != nil {
		t.Fatal(err)
	}
	s := &ln.shards[h&(trackerShards-1)].trackerShard
	c := s.table.Load().find(h, "alice", "d") // the racing Record's lookup
	if c == nil {
		t.Fatal("cell evicted too early")
	}
	s.evict(ln, []*usageCell{c}) // the Flush
	if s.table.Load().find(h, "alice", "d") != nil || !c.dead.Load() {
		t.Fatal("evict did not remove the cell and mark it dead")
	}
	c.add(ln, 5, 1) // the racing Record's add

	if got := tr.Aggregate()["alice"]["d"]; got != 5 {
		t.Errorf("pending after an add to an evicted cell = %d, want 5", got)
	}
	if p := tr.Pending(); p != 1 {
		t.Errorf("Pending() = %d, want 1", p)
	}
	if c.sum.Load() != 0 || c.count.Load() != 0 {
		t.Errorf("the dead cell still holds %d (%d records)", c.sum.Load(), c.count.Load())
	}
	if live := s.table.Load().find(h, "alice", "d"); live == nil || live == c {
		t.Error("the usage was not moved to a new live cell")
	}
}

func TestUsageTrackerRecordDoesNotAllocate(t *testing.T) {
	tr := NewUsageTracker()
	customer, dimension := "customer-0000042", "tokens_1m"
	tr.Record(customer, dimension, 1) // the first record of a pair allocates its cell
	// Make sure every lane holds the pair, whichever P the test runs on.
	for _, ln := range tr.lanes {
		ln.add(tr.hash(customer, dimension), customer, dimension, 1, 1)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		tr.Record(customer, dimension, 3)
	})
	if allocs != 0 {
		t.Errorf("Record of a known pair: %v allocations, want 0", allocs)
	}
}

func TestUsageTrackerKeyIsCloned(t *testing.T) {
	tr := NewUsageTracker()
	buf := []byte("alice-request-body")
	customer := string(buf[:5]) // a fresh string; stands for a substring of a large body
	tr.Record(customer, "d", 1)
	h := tr.hash("alice", "d")
	for _, ln := range tr.lanes {
		if c := ln.shards[h&(trackerShards-1)].table.Load().find(h, "alice", "d"); c != nil {
			if unsafe.StringData(c.key.customer) == unsafe.StringData(customer) {
				t.Error("the tracker kept the caller's string instead of a copy")
			}
			return
		}
	}
	t.Fatal("pair not found")
}

// TestUsageTrackerManyPairs grows the tables well past their initial size,
// then shrinks them by eviction, checking every sum on the way.
func TestUsageTrackerManyPairs(t *testing.T) {
	const pairs = 20_000
	tr := NewUsageTracker()
	want := make(map[pairKey]int64, pairs)
	for round := range 2 {
		for i := range pairs {
			k := pairKey{fmt.Sprint("customer-", i/4), fmt.Sprint("dim-", i%4)}
			q := int64(i%7 + round + 1)
			tr.Record(k.customer, k.dimension, q)
			want[k] += q
		}
	}
	if got := flat(tr.Aggregate()); !maps.Equal(got, want) {
		t.Fatalf("Aggregate() differs from what was recorded (%d pairs vs %d)", len(got), len(want))
	}
	if p := tr.Pending(); p != 2*pairs {
		t.Fatalf("Pending() = %d, want %d", p, 2*pairs)
	}

	svc := &fakeMetering{}
	if n, err := tr.Flush(t.Context(), svc); n != 2*pairs || err != nil {
		t.Fatalf("Flush = %d, %v; want %d, nil", n, err, 2*pairs)
	}
	if got := svc.bill(); !maps.Equal(got, want) {
		t.Fatalf("bill differs from what was recorded (%d pairs vs %d)", len(got), len(want))
	}

	// Keep one pair in ten active; the others go idle and are evicted.
	for i := 0; i < pairs; i += 10 {
		tr.Record(fmt.Sprint("customer-", i/4), fmt.Sprint("dim-", i%4), 1)
	}
	if _, err := tr.Flush(t.Context(), svc); err != nil {
		t.Fatal(err)
	}
	if c := tr.cells(); c > pairs/10*len(tr.lanes) {
		t.Errorf("after eviction the tracker holds %d cells, want at most %d", c, pairs/10*len(tr.lanes))
	}
	var total int64
	for _, q := range svc.bill() {
		total += q
	}
	var wantTotal int64
	for _, q := range want {
		wantTotal += q
	}
	if total != wantTotal+pairs/10 {
		t.Errorf("billed %d in total, want %d", total, wantTotal+pairs/10)
	}
}

// TestUsageTrackerLayout pins the sizes the cache-line reasoning relies on.
func TestUsageTrackerLayout(t *testing.T) {
	if s := unsafe.Sizeof(usageCell{}); s != 64 {
		t.Errorf("usageCell is %d bytes, want 64 (one size class, one cache line)", s)
	}
	if s := unsafe.Sizeof(paddedShard{}); s%cacheLine != 0 {
		t.Errorf("paddedShard is %d bytes, not a multiple of %d", s, cacheLine)
	}
}

// TestUsageTrackerDimensionsAlike records dimensions that the pair hash
// cannot tell apart (same length, same first and last eight bytes) and
// checks that each keeps its own sum: the tables compare whole keys.
func TestUsageTrackerDimensionsAlike(t *testing.T) {
	dims := []string{"requests_tier_a_eu_west", "requests_tier_b_eu_west", "requests_tier_c_eu_west"}
	tr := NewUsageTracker()
	if h0, h1 := tr.hash("alice", dims[0]), tr.hash("alice", dims[1]); h0 != h1 {
		t.Fatalf("hashes differ (%x, %x): the test no longer exercises a shared probe sequence", h0, h1)
	}
	want := make(map[pairKey]int64)
	for i := range 300 {
		for _, customer := range []string{"alice", "bob"} {
			d := dims[i%len(dims)]
			tr.Record(customer, d, int64(i+1))
			want[pairKey{customer, d}] += int64(i + 1)
		}
	}
	if got := flat(tr.Aggregate()); !maps.Equal(got, want) {
		t.Fatalf("Aggregate() = %v, want %v", got, want)
	}
	if c := tr.cells(); c < len(want) || c > len(want)*len(tr.lanes) {
		t.Errorf("tracker holds %d cells for %d pairs over %d lanes", c, len(want), len(tr.lanes))
	}
	svc := &fakeMetering{}
	if _, err := tr.Flush(t.Context(), svc); err != nil {
		t.Fatal(err)
	}
	if got := svc.bill(); !maps.Equal(got, want) {
		t.Errorf("bill = %v, want %v", got, want)
	}
}

// TestUsageTrackerDimensionFold checks which dimensions the pair hash
// folds alike: only names alike in length and first and last eight bytes.
func TestUsageTrackerDimensionFold(t *testing.T) {
	const k0, k1 = 0x9e3779b97f4a7c15, 0xbf58476d1ce4e5b9
	tests := []struct {
		a, b string
		same bool
	}{
		{"", "", true},
		{"a", "b", false},
		{"tokens_1m", "tokens_1M", false},
		{"gpu", "gpu\x00", false}, // a length apart
		{"requests", "requests", true},
		{"storage_gb_eu", "storage_gb_us", false},
		{"requests_tier_a_eu_west", "requests_tier_b_eu_west", true}, // differ only in the middle
	}
	for _, tt := range tests {
		if got := pairHash(k0, k1, "alice", tt.a) == pairHash(k0, k1, "alice", tt.b); got != tt.same {
			t.Errorf("pairHash of alice with %q and with %q: equal is %v, want %v", tt.a, tt.b, got, tt.same)
		}
	}
}

// TestUsageTrackerGrowsWhileRecording grows the tables while other
// goroutines keep recording to pairs already held and a Flush drains and
// evicts: no record may be lost or counted twice.
func TestUsageTrackerGrowsWhileRecording(t *testing.T) {
	const writers, perWriter = 4, 20_000
	hot := []pairKey{{"alice", "tokens_1m"}, {"bob", "tokens_1m"}, {"carol", "gpu_hours"}, {"dave", "requests"}}
	tr := NewUsageTracker()
	svc := &fakeMetering{}
	var accepted atomic.Int64
	stop := make(chan struct{})
	flusherDone := make(chan struct{})
	go func() {
		defer close(flusherDone)
		for {
			n, err := tr.Flush(t.Context(), svc)
			if err != nil {
				t.Errorf("Flush: %v", err)
			}
			accepted.Add(int64(n))
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	recorded := make([]map[pairKey]int64, writers)
	var wg sync.WaitGroup
	for w := range writers {
		recorded[w] = make(map[pairKey]int64)
		wg.Go(func() {
			for i := range perWriter {
				k := hot[i%len(hot)]
				if i%2 == 0 { // a new pair: the tables keep growing
					k = pairKey{fmt.Sprintf("new-%d-%d", w, i), "requests"}
				}
				q := int64(i%5 + 1)
				tr.Record(k.customer, k.dimension, q)
				recorded[w][k] += q
			}
		})
	}
	wg.Wait()
	close(stop)
	<-flusherDone
	n, err := tr.Flush(t.Context(), svc)
	if err != nil {
		t.Fatalf("final Flush: %v", err)
	}
	accepted.Add(int64(n))

	want := make(map[pairKey]int64)
	for _, m := range recorded {
		for k, q := range m {
			want[k] += q
		}
	}
	if got := svc.bill(); !maps.Equal(got, want) {
		var diffs []string
		for k := range want {
			if got[k] != want[k] {
				diffs = append(diffs, fmt.Sprintf("%v: billed %d, recorded %d", k, got[k], want[k]))
			}
		}
		t.Fatalf("%d of %d pairs billed wrong, e.g. %v", len(diffs), len(want), diffs[:min(3, len(diffs))])
	}
	if a := accepted.Load(); a != writers*perWriter {
		t.Errorf("Flush accepted %d records, want %d", a, writers*perWriter)
	}
	if p := tr.Pending(); p != 0 {
		t.Errorf("Pending() = %d, want 0", p)
	}
}

// TestUsageTrackerLookupComparesWholeKeys puts in one table cells whose keys
// all share one hash and differ in a single byte, for keys of every length
// up to 40 bytes and each byte position, in the customer id or in the
// dimension: lookup, which compares keys of 8 to 16 bytes by two loads
// each, must find every cell and only its own.
func TestUsageTrackerLookupComparesWholeKeys(t *testing.T) {
	const h = 0x5eed << trackerShardBits
	base := "0123456789abcdefghijklmnopqrstuvwxyzABCDE"
	for n := range len(base) - 1 {
		// Keys of length n that differ from base[:n] in one byte, and the
		// keys one byte shorter and longer; in one table, all on one hash.
		keys := []pairKey{{base[:n], "d"}, {"c", base[:n]}, {base[:n+1], "d"}, {"c", base[:n+1]}}
		if n > 0 {
			keys = append(keys, pairKey{base[:n-1], "d"}, pairKey{"c", base[:n-1]})
		}
		for i := range n {
			b := []byte(base[:n])
			b[i] ^= 0x20
			keys = append(keys, pairKey{string(b), "d"}, pairKey{"c", string(b)})
		}
		tb := newCellTable(len(keys))
		cells := make(map[pairKey]*usageCell, len(keys))
		for _, k := range keys {
			c := &usageCell{key: k, hash: h}
			tb.put(c)
			cells[k] = c
		}
		for k, want := range cells {
			// Copies, so that no comparison can succeed on equal pointers.
			customer, dimension := string([]byte(k.customer)), string([]byte(k.dimension))
			if got := tb.lookup(h, customer, dimension); got != want {
				t.Errorf("lookup(%q, %q) found the cell of %v", customer, dimension, got.key)
			}
			if got := tb.find(h, customer, dimension); got != want {
				t.Errorf("find(%q, %q) found the cell of %v", customer, dimension, got.key)
			}
		}
		if c := tb.lookup(h, "not-held-customer", "d"); c != nil {
			t.Errorf("lookup of a pair not held found %v", c.key)
		}
	}
}

// TestUsageTrackerHashEveryByte checks that the pair hash depends on every byte
// of the customer id and on its length, for lengths up to 64 (each of the
// hash's load patterns), and on the tracker's keys.
func TestUsageTrackerHashEveryByte(t *testing.T) {
	// Keys unrelated to each other, as random ones would be.
	const k0, k1 = 0x9e3779b97f4a7c15, 0xbf58476d1ce4e5b9
	base := make([]byte, 64)
	for i := range base {
		base[i] = byte('a' + i%26)
	}
	seen := make(map[uint64]string)
	for n := range len(base) + 1 {
		s := string(base[:n])
		variants := []string{s}
		for i := range n {
			b := []byte(s)
			b[i] ^= 1
			variants = append(variants, string(b))
		}
		for _, v := range variants {
			h := pairHash(k0, k1, v, "tokens_1m")
			if prev, ok := seen[h]; ok {
				t.Fatalf("pairHash(%q) == pairHash(%q)", v, prev)
			}
			seen[h] = v
		}
	}
	if pairHash(k0, k1, "customer-0000042", "d") == pairHash(k0+1, k1, "customer-0000042", "d") {
		t.Error("pairHash ignores k0")
	}
	if pairHash(k0, k1, "customer-0000042", "d") == pairHash(k0, k1+2, "customer-0000042", "d") {
		t.Error("pairHash ignores k1")
	}
}

// TestUsageTrackerHammerRecordWhileFlushing records from many goroutines
// at once, every one walking the same pairs in the same order (so that
// they meet on each pair at about the same time, in every lane), while two
// goroutines flush over and over, some pairs are recorded rarely enough to
// be evicted and recorded again, and some records create pairs. The bill
// plus what is pending must equal what was recorded, per pair and in
// total, and the records Flush reports accepted must equal the calls. It
// runs with lanes picked by CPU id (where the CPU can) and from a sync.Pool.
func TestUsageTrackerHammerRecordWhileFlushing(t *testing.T) {
	for _, byCPU := range []bool{true, false} {
		t.Run(fmt.Sprintf("byCPU=%v", byCPU), func(t *testing.T) {
			if byCPU && !cpuLanes() {
				t.Skip("this CPU has no RDPID")
			}
			hammerRecordWhileFlushing(t, newUsageTracker(byCPU))
		})
	}
}

func hammerRecordWhileFlushing(t *testing.T, tr *UsageTracker) {
	writers := 4 * max(runtime.GOMAXPROCS(0), 2)
	const perWriter = 30_000
	pairs := benchPairs(64)
	svc := &fakeMetering{}

	var accepted atomic.Int64
	stop := make(chan struct{})
	var flushers sync.WaitGroup
	for range 2 {
		flushers.Go(func() {
			for {
				n, err := tr.Flush(t.Context(), svc)
				if err != nil {
					t.Errorf("Flush: %v", err)
				}
				accepted.Add(int64(n))
				select {
				case <-stop:
					return
				default:
				}
			}
		})
	}

	recorded := make([]map[pairKey]int64, writers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		recorded[w] = make(map[pairKey]int64)
		wg.Go(func() {
			<-start
			for i := range perWriter {
				k := pairs[i%len(pairs)]
				switch {
				case i%997 == 0: // a rare pair: idle between most flushes
					k = pairKey{fmt.Sprintf("rare-%d", i%5), "requests"}
				case i%1009 == 0: // a new pair
					k = pairKey{fmt.Sprintf("new-%d-%d", w, i), "gpu_hours"}
				}
				q := int64(i%7 + 1)
				tr.Record(k.customer, k.dimension, q)
				recorded[w][k] += q
			}
		})
	}
	close(start)
	wg.Wait()
	close(stop)
	flushers.Wait()

	want := make(map[pairKey]int64)
	var wantTotal int64
	for _, m := range recorded {
		for k, q := range m {
			want[k] += q
			wantTotal += q
		}
	}
	got := svc.bill()
	for k, q := range flat(tr.Aggregate()) {
		got[k] += q
	}
	var gotTotal int64
	for _, q := range got {
		gotTotal += q
	}
	if gotTotal != wantTotal {
		t.Errorf("billed + pending = %d in total, recorded %d", gotTotal, wantTotal)
	}
	if !maps.Equal(got, want) {
		var diffs []string
		for k := range want {
			if got[k] != want[k] {
				diffs = append(diffs, fmt.Sprintf("%v: billed+pending %d, recorded %d", k, got[k], want[k]))
			}
		}
		t.Fatalf("%d of %d pairs differ, e.g. %v", len(diffs), len(want), diffs[:min(3, len(diffs))])
	}
	if n := accepted.Load() + int64(tr.Pending()); n != int64(writers*perWriter) {
		t.Errorf("accepted %d + pending %d records, want %d", accepted.Load(), tr.Pending(), writers*perWriter)
	}
	if svc.calls < 10 {
		t.Logf("only %d flushes overlapped the writers; the test was weak this time", svc.calls)
	}
}

// TestUsageTrackerLaneCount checks the lanes Record picks from: one per P
// (up to 8) from the pool; by CPU id, a power of two covering the CPUs up
// to 8, so that cpuID()&laneMask is a lane.
func TestUsageTrackerLaneCount(t *testing.T) {
	if maxTrackerLanes&(maxTrackerLanes-1) != 0 {
		t.Fatalf("maxTrackerLanes = %d, not a power of two", maxTrackerLanes)
	}
	procs := runtime.GOMAXPROCS(0)
	for _, byCPU := range []bool{false, true} {
		tr := newUsageTracker(byCPU)
		n := len(tr.lanes)
		switch {
		case procs == 1 && n != 1:
			t.Errorf("byCPU=%v, GOMAXPROCS 1: %d lanes, want 1", byCPU, n)
		case !byCPU && n != min(procs, maxTrackerLanes):
			t.Errorf("from the pool: %d lanes, want %d", n, min(procs, maxTrackerLanes))
		case byCPU && procs > 1:
			if n&(n-1) != 0 || tr.laneMask != uint32(n-1) {
				t.Errorf("by CPU: %d lanes with mask %#x, want a power of two and its mask", n, tr.laneMask)
			}
			if n < min(runtime.NumCPU(), maxTrackerLanes) {
				t.Errorf("by CPU: %d lanes for %d CPUs", n, runtime.NumCPU())
			}
		}
	}
}
