package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
)

// t0 is half past ten: records go into the 10:00 bucket unless told otherwise.
var t0 = time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)

type env struct {
	t     *testing.T
	h     Harness
	db    string
	store Store
	clock *ledgertest.Clock
	l     *ledger.Ledger
	cnt   *ledger.Counters
}

func newEnv(t *testing.T, h Harness, cfg ledger.Config) *env {
	db := h.NewDB(t)
	return openEnv(t, h, db, cfg)
}

func openEnv(t *testing.T, h Harness, db string, cfg ledger.Config) *env {
	e := &env{t: t, h: h, db: db, store: h.Open(t, db), clock: ledgertest.NewClock(t0), cnt: &ledger.Counters{}}
	cfg.Clock = e.clock.Now
	cfg.Metrics = e.cnt
	e.l = ledger.New(e.store, cfg)
	t.Cleanup(func() { e.l.Close() })
	return e
}

func rec(p marketplace.CloudProvider, cust, dim string, q int64, at time.Time, id string) ledger.Record {
	return ledger.Record{Provider: p, Customer: cust, Dimension: dim, Quantity: q, Time: at, EventID: id}
}

func (e *env) ingest(recs ...ledger.Record) ledger.IngestResult {
	e.t.Helper()
	res, err := e.l.Ingest(e.t.Context(), recs)
	if err != nil {
		e.t.Fatalf("Ingest: %v", err)
	}
	return res
}

func (e *env) seal() int {
	e.t.Helper()
	n, err := e.l.Seal(e.t.Context())
	if err != nil {
		e.t.Fatalf("Seal: %v", err)
	}
	return n
}

func (e *env) buckets(f ledger.BucketFilter) []ledger.Bucket {
	e.t.Helper()
	if err := e.l.Fold(e.t.Context()); err != nil {
		e.t.Fatalf("Fold: %v", err)
	}
	bs, err := e.l.Buckets(e.t.Context(), f)
	if err != nil {
		e.t.Fatalf("Buckets: %v", err)
	}
	return bs
}

// view is the comparable part of a bucket.
type view struct {
	Customer, Dimension string
	Hour                string
	Quantity, Late      int64
	State               ledger.State
	Units               int64
}

func views(bs []ledger.Bucket) []view {
	out := make([]view, len(bs))
	for i, b := range bs {
		out[i] = view{b.Customer, b.Dimension, b.Hour.Format("15:04"), b.Quantity, b.Late, b.State, b.Units}
	}
	return out
}

func wantViews(t *testing.T, got []ledger.Bucket, want []view) {
	t.Helper()
	if g := views(got); !slices.Equal(g, want) {
		t.Errorf("buckets:\n got %+v\nwant %+v", g, want)
	}
}

func runLedger(t *testing.T, h Harness) {
	t.Run("BucketsPerHour", func(t *testing.T) {
		e := newEnv(t, h, ledger.Config{})
		e.ingest(
			rec("aws", "c1", "req", 5, t0, ""),
			rec("aws", "c1", "req", 7, t0.Add(-20*time.Minute), ""), // same hour
			rec("aws", "c1", "req", 3, t0.Add(-time.Hour), ""),
			rec("aws", "c2", "req", 1, t0, ""),
			rec("azure", "c1", "req", 2, t0, ""),
		)
		wantViews(t, e.buckets(ledger.BucketFilter{Provider: "aws"}), []view{
			{"c1", "req", "09:00", 3, 0, ledger.StateOpen, 0},
			{"c1", "req", "10:00", 12, 0, ledger.StateOpen, 0},
			{"c2", "req", "10:00", 1, 0, ledger.StateOpen, 0},
		})
		if got := len(e.buckets(ledger.BucketFilter{})); got != 4 {
			t.Errorf("buckets in all = %d, want 4", got)
		}
	})

	t.Run("IdempotentIngest", func(t *testing.T) {
		e := newEnv(t, h, ledger.Config{})
		res := e.ingest(rec("aws", "c1", "req", 5, t0, "e1"), rec("aws", "c1", "req", 5, t0, "e1"), rec("aws", "c1", "req", 1, t0, ""))
		if res.Accepted != 2 || res.Duplicates != 1 || !slices.Equal(res.Duplicate, []bool{false, true, false}) {
			t.Errorf("first batch: %+v", res)
		}
		res = e.ingest(rec("aws", "c1", "req", 5, t0, "e1"), rec("aws", "c1", "req", 4, t0, "e2"))
		if res.Accepted != 1 || res.Duplicates != 1 || !res.Duplicate[0] {
			t.Errorf("retry batch: %+v", res)
		}
		wantViews(t, e.buckets(ledger.BucketFilter{}), []view{{"c1", "req", "10:00", 10, 0, ledger.StateOpen, 0}})
		// The window: the id is remembered until purged after its expiry.
		e.clock.Set(t0.Add(47 * time.Hour))
		if _, err := e.store.PurgeEvents(t.Context(), e.clock.Now()); err != nil {
			t.Fatal(err)
		}
		e.clock.Set(t0) // record time must stay valid
		if res := e.ingest(rec("aws", "c1", "req", 5, t0, "e1")); res.Duplicates != 1 {
			t.Errorf("event id forgotten within 48 h: %+v", res)
		}
	})

	t.Run("ConcurrentIngest", func(t *testing.T) {
		e := newEnv(t, h, ledger.Config{})
		const workers, batches, per = 16, 40, 25
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 1))
				for b := range batches {
					recs := make([]ledger.Record, per)
					for i := range recs {
						n := (w*batches+b)*per + i
						recs[i] = rec("gcp", fmt.Sprintf("c%d", n%7), "req", 1, t0, fmt.Sprintf("ev-%d", n))
					}
					if _, err := e.l.Ingest(t.Context(), recs); err != nil {
						t.Error(err)
						return
					}
					// Retry a random earlier batch of this worker: all duplicates.
					if b > 0 && rng.IntN(2) == 0 {
						old := rng.IntN(b)
						retry := make([]ledger.Record, per)
						for i := range retry {
							n := (w*batches+old)*per + i
							retry[i] = rec("gcp", fmt.Sprintf("c%d", n%7), "req", 1, t0, fmt.Sprintf("ev-%d", n))
						}
						res, err := e.l.Ingest(t.Context(), retry)
						if err != nil || res.Accepted != 0 {
							t.Errorf("retried batch: %+v, %v", res, err)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		var total int64
		for _, b := range e.buckets(ledger.BucketFilter{}) {
			total += b.Quantity
		}
		if want := int64(workers * batches * per); total != want {
			t.Errorf("total = %d, want %d", total, want)
		}
	})

	t.Run("SealAfterGrace", func(t *testing.T) {
		e := newEnv(t, h, ledger.Config{Grace: 5 * time.Minute})
		e.ingest(rec("aws", "c1", "req", 1, t0, ""), rec("aws", "c1", "req", 2, t0.Add(-time.Hour), ""))
		tests := []struct {
			now    time.Time
			sealed int
		}{
			{t0, 1},                       // 09:00 ended 10:00, grace passed
			{t0.Add(34 * time.Minute), 0}, // 11:04: 10:00 still in grace
			{t0.Add(35*time.Minute + time.Second), 1}, // 11:05:01
			{t0.Add(3 * time.Hour), 0},                // nothing left
		}
		for _, tc := range tests {
			e.clock.Set(tc.now)
			if n := e.seal(); n != tc.sealed {
				t.Errorf("at %s sealed %d, want %d", tc.now.Format("15:04:05"), n, tc.sealed)
			}
		}
		for _, b := range e.buckets(ledger.BucketFilter{}) {
			if b.State != ledger.StateSealed || b.Units != b.Quantity || b.ReportID != ledger.ReportID(b.BucketKey) {
				t.Errorf("bucket %s: state %s units %d report id %q", b.BucketKey, b.State, b.Units, b.ReportID)
			}
		}
	})

	t.Run("LateUsage", func(t *testing.T) {
		e := newEnv(t, h, ledger.Config{})
		e.ingest(rec("aws", "c1", "req", 10, t0.Add(-2*time.Hour), ""), rec("aws", "c1", "req", 1, t0.Add(-time.Hour), ""))
		e.seal() // seals 08:00 and 09:00
		// Late records for 08:00 go to the earliest open hour: 10:00.
		e.ingest(rec("aws", "c1", "req", 4, t0.Add(-2*time.Hour), ""), rec("aws", "c1", "req", 2, t0, ""))
		// Another series is not affected.
		e.ingest(rec("aws", "c2", "req", 3, t0.Add(-2*time.Hour), ""))
		wantViews(t, e.buckets(ledger.BucketFilter{}), []view{
			{"c1", "req", "08:00", 10, 0, ledger.StateSealed, 10},
			{"c1", "req", "09:00", 1, 0, ledger.StateSealed, 1},
			{"c1", "req", "10:00", 6, 4, ledger.StateOpen, 0},
			{"c2", "req", "08:00", 3, 0, ledger.StateOpen, 0},
		})
		if got := e.cnt.Get("late"); got != 4 {
			t.Errorf("late = %d, want 4", got)
		}
		// Late usage that a seal folds is counted too.
		e.ingest(rec("aws", "c1", "req", 1, t0.Add(-2*time.Hour), ""))
		e.seal()
		if got := e.cnt.Get("late"); got != 5 {
			t.Errorf("late after a folding seal = %d, want 5", got)
		}
	})

	t.Run("UnitRemainders", func(t *testing.T) {
		e := newEnv(t, h, ledger.Config{Units: map[string]int64{"tokens": 1_000_000, "azure/tokens": 1000}})
		base := t0.Add(-5 * time.Hour) // 05:30
		for i, q := range []int64{700_000, 700_000, 700_000, 2_100_000} {
			e.ingest(rec("aws", "c1", "tokens", q, base.Add(time.Duration(i)*time.Hour), ""))
		}
		e.ingest(rec("azure", "c1", "tokens", 2500, base, ""))
		e.seal()
		// 0.7 → 0 (carry .7), 1.4 → 1 (.4), 1.1 → 1 (.1), 2.2 → 2 (.2)
		wantViews(t, e.buckets(ledger.BucketFilter{Provider: "aws"}), []view{
			{"c1", "tokens", "05:00", 700_000, 0, ledger.StateSkipped, 0},
			{"c1", "tokens", "06:00", 700_000, 0, ledger.StateSealed, 1},
			{"c1", "tokens", "07:00", 700_000, 0, ledger.StateSealed, 1},
			{"c1", "tokens", "08:00", 2_100_000, 0, ledger.StateSealed, 2},
		})
		wantViews(t, e.buckets(ledger.BucketFilter{Provider: "azure"}), []view{
			{"c1", "tokens", "05:00", 2500, 0, ledger.StateSealed, 2},
		})
	})

	t.Run("FinalSettlement", func(t *testing.T) {
		for _, tc := range []struct {
			policy    ledger.SettlePolicy
			lastUnits int64
		}{{ledger.SettleDrop, 1}, {ledger.SettleRoundUp, 2}} {
			e := newEnv(t, h, ledger.Config{Units: map[string]int64{"tokens": 1000}, Settle: tc.policy})
			e.ingest(rec("aws", "c1", "tokens", 1500, t0.Add(-time.Hour), ""), rec("aws", "c1", "tokens", 100, t0, ""),
				rec("aws", "c2", "tokens", 1500, t0, ""))
			if _, err := e.l.SealCustomer(t.Context(), "aws", "c1"); err != nil {
				t.Fatal(err)
			}
			// c1: 09:00 1 unit (.5 carried), 10:00 .6 → 0 + settlement; c2 untouched.
			want := []view{
				{"c1", "tokens", "09:00", 1500, 0, ledger.StateSealed, 1},
				{"c1", "tokens", "10:00", 100, 0, ledger.StateSealed, tc.lastUnits - 1},
				{"c2", "tokens", "10:00", 1500, 0, ledger.StateOpen, 0},
			}
			if tc.policy == ledger.SettleDrop {
				want[1].State = ledger.StateSkipped
			}
			wantViews(t, e.buckets(ledger.BucketFilter{}), want)
			// Usage after the final flush goes to the next hour.
			e.ingest(rec("aws", "c1", "tokens", 5000, t0, ""))
			if bs := e.buckets(ledger.BucketFilter{Customer: "c1", States: []ledger.State{ledger.StateOpen}}); len(bs) != 1 || bs[0].Hour != ledger.HourOf(t0).Add(time.Hour) {
				t.Errorf("policy %d: usage after final flush: %+v", tc.policy, views(bs))
			}
		}
	})

	t.Run("ClaimAndComplete", func(t *testing.T) {
		e := newEnv(t, h, ledger.Config{})
		for i := range 5 {
			e.ingest(rec("aws", fmt.Sprintf("c%d", i), "req", int64(i+1), t0.Add(-time.Hour), ""))
		}
		e.ingest(rec("azure", "c1", "req", 1, t0.Add(-time.Hour), ""))
		e.seal()
		ctx := t.Context()
		now := e.clock.Now()
		a, err := e.store.Claim(ctx, ledger.ClaimRequest{Provider: "aws", Owner: "A", Now: now, Lease: time.Minute, Limit: 3})
		if err != nil || len(a) != 3 {
			t.Fatalf("claim A: %d buckets, %v", len(a), err)
		}
		b, err := e.store.Claim(ctx, ledger.ClaimRequest{Provider: "aws", Owner: "B", Now: now, Lease: time.Minute, Limit: 10})
		if err != nil || len(b) != 2 {
			t.Fatalf("claim B: %d buckets, %v", len(b), err)
		}
		for _, x := range b {
			if slices.ContainsFunc(a, func(y ledger.Bucket) bool { return y.ID == x.ID }) {
				t.Errorf("bucket %d claimed twice", x.ID)
			}
		}
		// A reports one, retries one, rejects one; B's outcome for A's bucket is ignored.
		must(t, e.store.Complete(ctx, "B", []ledger.Completion{{BucketID: a[0].ID, State: ledger.StateRejected, Now: now}}))
		must(t, e.store.Complete(ctx, "A", []ledger.Completion{
			{BucketID: a[0].ID, State: ledger.StateReported, RecordID: "r0", Now: now},
			{BucketID: a[1].ID, State: ledger.StateSealed, NextAttempt: now.Add(time.Minute), MaybeApplied: true, Reason: "timeout", Attempted: true, Now: now},
			{BucketID: a[2].ID, State: ledger.StateRejected, Reason: "CustomerNotSubscribed", Now: now},
		}))
		got := map[int64]ledger.Bucket{}
		for _, x := range e.buckets(ledger.BucketFilter{Provider: "aws"}) {
			got[x.ID] = x
		}
		if x := got[a[0].ID]; x.State != ledger.StateReported || x.RecordID != "r0" || x.DoneAt.IsZero() {
			t.Errorf("reported bucket: %+v", x)
		}
		if x := got[a[1].ID]; x.State != ledger.StateSealed || !x.MaybeApplied || x.Attempts != 1 || !x.NextAttempt.Equal(now.Add(time.Minute)) {
			t.Errorf("retried bucket: %+v", x)
		}
		if x := got[a[2].ID]; x.State != ledger.StateRejected || x.Reason != "CustomerNotSubscribed" {
			t.Errorf("rejected bucket: %+v", x)
		}
		// The retry is not due yet; B's lease still holds its two.
		if c, _ := e.store.Claim(ctx, ledger.ClaimRequest{Provider: "aws", Owner: "C", Now: now, Lease: time.Minute, Limit: 10}); len(c) != 0 {
			t.Errorf("claimed %d buckets that are leased or not due", len(c))
		}
		// After the lease and the backoff, C gets B's two and the retry; B's late answer is ignored.
		later := now.Add(2 * time.Minute)
		c, err := e.store.Claim(ctx, ledger.ClaimRequest{Provider: "aws", Owner: "C", Now: later, Lease: time.Minute, Limit: 10})
		if err != nil || len(c) != 3 {
			t.Fatalf("claim C after lease expiry: %d, %v", len(c), err)
		}
		for _, x := range c {
			// B's lease ran out without a Complete: B may have sent them.
			if wasB := x.ID == b[0].ID || x.ID == b[1].ID; wasB != x.MaybeApplied && x.ID != a[1].ID {
				t.Errorf("bucket %d taken over from an expired lease: maybeApplied = %v, want %v", x.ID, x.MaybeApplied, wasB)
			}
		}
		must(t, e.store.Complete(ctx, "B", []ledger.Completion{{BucketID: b[0].ID, State: ledger.StateConflict, Now: later}}))
		if x := e.buckets(ledger.BucketFilter{Provider: "aws", States: []ledger.State{ledger.StateConflict}}); len(x) != 0 {
			t.Errorf("an expired lease's outcome was stored: %+v", views(x))
		}
		bl, err := e.store.Backlog(ctx)
		if err != nil || len(bl) != 2 || bl[0].Provider != "aws" || bl[0].Sealed != 3 || bl[1].Sealed != 1 {
			t.Errorf("backlog: %+v, %v", bl, err)
		}
	})

	t.Run("ReleaseUnsent", func(t *testing.T) {
		e := newEnv(t, h, ledger.Config{})
		e.ingest(rec("aws", "c1", "req", 1, t0.Add(-time.Hour), ""))
		e.seal()
		ctx, now := t.Context(), e.clock.Now()
		a, err := e.store.Claim(ctx, ledger.ClaimRequest{Provider: "aws", Owner: "A", Now: now, Lease: time.Minute, Limit: 1})
		if err != nil || len(a) != 1 {
			t.Fatalf("claim: %v", err)
		}
		// Released unsent: due again at once, no attempt counted, not possibly applied.
		must(t, e.store.Complete(ctx, "A", []ledger.Completion{{BucketID: a[0].ID, State: ledger.StateSealed, NextAttempt: a[0].NextAttempt, Now: now}}))
		b, err := e.store.Claim(ctx, ledger.ClaimRequest{Provider: "aws", Owner: "B", Now: now, Lease: time.Minute, Limit: 1})
		if err != nil || len(b) != 1 || b[0].Attempts != 0 || b[0].MaybeApplied {
			t.Errorf("after release: %+v, %v", b, err)
		}
	})

	t.Run("FreezeAttributes", func(t *testing.T) {
		e := newEnv(t, h, ledger.Config{})
		e.ingest(rec("azure", "c1", "req", 1, t0.Add(-time.Hour), ""), rec("azure", "c2", "req", 1, t0.Add(-time.Hour), ""))
		e.seal()
		ctx, now := t.Context(), e.clock.Now()
		a, err := e.store.Claim(ctx, ledger.ClaimRequest{Provider: "azure", Owner: "A", Now: now, Lease: time.Minute, Limit: 10})
		if err != nil || len(a) != 2 || a[0].Attributes != nil {
			t.Fatalf("claim: %+v, %v", a, err)
		}
		basic := map[string]string{"planId": "basic", "note": "ünïcode \"quoted\""}
		// Only the lease holder freezes.
		got, err := e.store.Freeze(ctx, "B", []ledger.Frozen{{BucketID: a[0].ID, Attributes: basic}})
		if err != nil || len(got) != 0 {
			t.Fatalf("freeze by a non-holder: %+v, %v", got, err)
		}
		got, err = e.store.Freeze(ctx, "A", []ledger.Frozen{{BucketID: a[0].ID, Attributes: basic}, {BucketID: a[1].ID}})
		if err != nil || len(got) != 2 || fmt.Sprint(got[0].Attributes) != fmt.Sprint(basic) || got[0].BucketID != a[0].ID || len(got[1].Attributes) != 0 {
			t.Fatalf("freeze: %+v, %v", got, err)
		}
		// Frozen attributes never change: a second freeze returns the first.
		got, err = e.store.Freeze(ctx, "A", []ledger.Frozen{{BucketID: a[0].ID, Attributes: map[string]string{"planId": "pro"}}})
		if err != nil || len(got) != 1 || got[0].Attributes["planId"] != "basic" {
			t.Fatalf("second freeze: %+v, %v", got, err)
		}
		// They survive a release and come with the next claim and with Buckets.
		must(t, e.store.Complete(ctx, "A", []ledger.Completion{
			{BucketID: a[0].ID, State: ledger.StateSealed, NextAttempt: now, Attempted: true, MaybeApplied: true, Now: now},
			{BucketID: a[1].ID, State: ledger.StateSealed, NextAttempt: now, Now: now},
		}))
		b, err := e.store.Claim(ctx, ledger.ClaimRequest{Provider: "azure", Owner: "C", Now: now, Lease: time.Minute, Limit: 10})
		if err != nil || len(b) != 2 {
			t.Fatalf("claim again: %+v, %v", b, err)
		}
		for _, x := range b {
			want := ""
			if x.ID == a[0].ID {
				want = fmt.Sprint(basic)
			}
			if got := fmt.Sprint(x.Attributes); len(x.Attributes) > 0 && got != want || len(x.Attributes) == 0 && want != "" {
				t.Errorf("claimed %s with attributes %v, want %s", x.Customer, x.Attributes, want)
			}
		}
		for _, x := range e.buckets(ledger.BucketFilter{Customer: "c1"}) {
			if x.Attributes["planId"] != "basic" {
				t.Errorf("Buckets lost the attributes: %+v", x)
			}
		}
	})

	t.Run("PurgeBuckets", func(t *testing.T) {
		e := newEnv(t, h, ledger.Config{Retention: 24 * time.Hour})
		for _, c := range []string{"done", "waiting"} {
			e.ingest(rec("aws", c, "req", 1, t0.Add(-time.Hour), ""))
		}
		e.ingest(rec("aws", "open", "req", 1, t0, ""))
		e.seal()
		ctx, now := t.Context(), e.clock.Now()
		bs, err := e.store.Claim(ctx, ledger.ClaimRequest{Provider: "aws", Owner: "A", Now: now, Lease: time.Minute, Limit: 10})
		if err != nil || len(bs) != 2 {
			t.Fatalf("claim: %d, %v", len(bs), err)
		}
		for _, b := range bs {
			if b.Customer == "done" {
				must(t, e.store.Complete(ctx, "A", []ledger.Completion{{BucketID: b.ID, State: ledger.StateReported, RecordID: "r", Attempted: true, Now: now}}))
			}
		}
		// Within retention nothing goes; after it only the final bucket does.
		e.clock.Set(now.Add(23 * time.Hour))
		must(t, e.l.Purge(ctx))
		if got := len(e.buckets(ledger.BucketFilter{})); got != 3 {
			t.Errorf("%d buckets after a purge within retention, want 3", got)
		}
		e.clock.Set(now.Add(25 * time.Hour))
		must(t, e.l.Purge(ctx))
		var left []string
		for _, b := range e.buckets(ledger.BucketFilter{}) {
			left = append(left, b.Customer+":"+string(b.State))
		}
		if !slices.Equal(left, []string{"open:open", "waiting:sealed"}) {
			t.Errorf("after purge: %v, want the open and the sealed bucket only", left)
		}
		// The series state survives: late usage for the purged hour still
		// goes to the earliest open hour, not into a new bucket of its own.
		e.clock.Set(now)
		e.ingest(rec("aws", "done", "req", 4, t0.Add(-time.Hour), ""))
		if bs := e.buckets(ledger.BucketFilter{Customer: "done"}); len(bs) != 1 || bs[0].Late != 4 || bs[0].Hour != ledger.HourOf(t0) {
			t.Errorf("late usage after a purge: %v", bs)
		}
	})

	t.Run("CarryOnComplete", func(t *testing.T) {
		e := newEnv(t, h, ledger.Config{})
		e.ingest(rec("aws", "c1", "req", 9, t0.Add(-time.Hour), ""))
		e.seal()
		now := e.clock.Now()
		a, err := e.store.Claim(t.Context(), ledger.ClaimRequest{Provider: "aws", Owner: "A", Now: now, Lease: time.Minute, Limit: 1})
		if err != nil || len(a) != 1 {
			t.Fatalf("claim: %v", err)
		}
		must(t, e.store.Complete(t.Context(), "A", []ledger.Completion{{BucketID: a[0].ID, State: ledger.StateCarried, CarryQuantity: 9, CarryHour: ledger.HourOf(now), Now: now}}))
		wantViews(t, e.buckets(ledger.BucketFilter{}), []view{
			{"c1", "req", "09:00", 9, 0, ledger.StateCarried, 9},
			{"c1", "req", "10:00", 9, 0, ledger.StateOpen, 0},
		})
	})

	t.Run("TwoReportersOneDatabase", func(t *testing.T) {
		e := newEnv(t, h, ledger.Config{})
		const customers = 300
		for i := range customers {
			e.ingest(rec("aws", fmt.Sprintf("c%03d", i), "req", 1, t0.Add(-time.Hour), ""))
		}
		e.seal()
		other := e.h.Open(t, e.db)
		defer other.Close()
		stores := []ledger.Store{e.store, other}
		var mu sync.Mutex
		seen := map[int64]string{}
		var wg sync.WaitGroup
		for i, st := range stores {
			for w := range 4 {
				wg.Go(func() {
					owner := fmt.Sprintf("r%d-%d", i, w)
					for {
						bs, err := st.Claim(t.Context(), ledger.ClaimRequest{Provider: "aws", Owner: owner, Now: e.clock.Now(), Lease: time.Hour, Limit: 7})
						if err != nil {
							t.Error(err)
							return
						}
						if len(bs) == 0 {
							return
						}
						mu.Lock()
						for _, b := range bs {
							if prev, ok := seen[b.ID]; ok {
								t.Errorf("bucket %d claimed by %s and %s", b.ID, prev, owner)
							}
							seen[b.ID] = owner
						}
						mu.Unlock()
					}
				})
			}
		}
		wg.Wait()
		if len(seen) != customers {
			t.Errorf("claimed %d buckets, want %d", len(seen), customers)
		}
	})

	t.Run("ReopenAfterAbruptStop", func(t *testing.T) {
		db := h.NewDB(t)
		e := openEnv(t, h, db, ledger.Config{})
		e.ingest(rec("aws", "c1", "req", 5, t0.Add(-time.Hour), "e1"))
		e.seal()
		e.ingest(rec("aws", "c1", "req", 2, t0, "e2")) // in the log, not folded
		// Abandon the handle without closing it: what was acknowledged must be in the database.
		e2 := openEnv(t, h, db, ledger.Config{})
		if res := e2.ingest(rec("aws", "c1", "req", 2, t0, "e2")); res.Duplicates != 1 {
			t.Errorf("event id lost across reopen: %+v", res)
		}
		wantViews(t, e2.buckets(ledger.BucketFilter{}), []view{
			{"c1", "req", "09:00", 5, 0, ledger.StateSealed, 5},
			{"c1", "req", "10:00", 2, 0, ledger.StateOpen, 0},
		})
	})

	t.Run("ValidationStoresNothing", func(t *testing.T) {
		e := newEnv(t, h, ledger.Config{})
		good := rec("aws", "c1", "req", 1, t0, "")
		e.ingest(good)
		for _, tc := range []struct {
			field string
			r     ledger.Record
		}{
			{"quantity", rec("aws", "c1", "req", -1, t0, "")},
			{"customer", rec("aws", "", "req", 1, t0, "")},
			{"dimension", rec("aws", "c1", "", 1, t0, "")},
			{"provider", rec("ibm", "c1", "req", 1, t0, "")},
			{"time", rec("aws", "c1", "req", 1, t0.Add(time.Hour), "")},
			{"time", rec("aws", "c1", "req", 1, t0.Add(-30*time.Hour), "")},
		} {
			_, err := e.l.Ingest(context.Background(), []ledger.Record{good, tc.r})
			var ve *ledger.ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.field || ve.Index != 1 {
				t.Errorf("%s: got %v, want a ValidationError for field %s of record 1", tc.field, err, tc.field)
			}
		}
		wantViews(t, e.buckets(ledger.BucketFilter{}), []view{{"c1", "req", "10:00", 1, 0, ledger.StateOpen, 0}})
	})

	t.Run("Append", func(t *testing.T) { runAppend(t, h) })
	t.Run("BucketFilter", func(t *testing.T) { runBucketFilter(t, h) })
	t.Run("SumBuckets", func(t *testing.T) { runSumBuckets(t, h) })
}

// runAppend calls Store.Append directly, as the ledger does, so a store
// author sees which part of the contract fails: fresh answers per event id
// in the batch's order, in-batch repeats, an entry only of the records that
// count, nothing appended when none does, event expiry, and a cancelled
// context storing nothing.
func runAppend(t *testing.T, h Harness) {
	e := newEnv(t, h, ledger.Config{})
	ctx := t.Context()
	keep := t0.Add(100 * time.Hour) // expiry of every id but "x"
	appendBatch := func(ctx context.Context, exp time.Time, wantIDs []string, wantFresh []bool, recs ...ledger.Record) {
		t.Helper()
		b := ledger.NewAppendBatch(recs, exp)
		if !slices.Equal(b.EventIDs, wantIDs) {
			t.Fatalf("EventIDs = %q, want %q", b.EventIDs, wantIDs)
		}
		fresh, err := e.store.Append(ctx, b)
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if !slices.Equal(fresh, wantFresh) && !(len(fresh) == 0 && len(wantFresh) == 0) {
			t.Fatalf("Append returned fresh %v for event ids %q, want %v", fresh, b.EventIDs, wantFresh)
		}
	}
	at := func(q int64, cust string, hour time.Time, id string) ledger.Record {
		return rec("aws", cust, "req", q, hour, id)
	}

	// No event ids: everything counts, summed per bucket.
	appendBatch(ctx, keep, nil, nil, at(1, "c1", t0, ""), at(2, "c1", t0, ""), at(4, "c2", t0.Add(-time.Hour), ""))
	wantViews(t, e.buckets(ledger.BucketFilter{}), []view{
		{"c1", "req", "10:00", 3, 0, ledger.StateOpen, 0},
		{"c2", "req", "09:00", 4, 0, ledger.StateOpen, 0},
	})
	// Ids, sorted; a repeat within the batch counts once (the first).
	appendBatch(ctx, keep, []string{"a", "b"}, []bool{true, true},
		at(10, "c1", t0, "b"), at(20, "c1", t0, "a"), at(1000, "c1", t0, "a"), at(5, "c2", t0, ""))
	wantViews(t, e.buckets(ledger.BucketFilter{}), []view{
		{"c1", "req", "10:00", 33, 0, ledger.StateOpen, 0},
		{"c2", "req", "09:00", 4, 0, ledger.StateOpen, 0},
		{"c2", "req", "10:00", 5, 0, ledger.StateOpen, 0},
	})
	// A stored id is not fresh; a new one is.
	appendBatch(ctx, keep, []string{"a", "d"}, []bool{false, true}, at(1000, "c1", t0, "a"), at(100, "c1", t0, "d"), at(1000, "c1", t0, "d"))
	// Nothing counts: nothing is appended.
	appendBatch(ctx, keep, []string{"a", "b", "d"}, []bool{false, false, false}, at(1000, "c1", t0, "d"), at(1000, "c1", t0, "a"), at(1000, "c1", t0, "b"))
	wantViews(t, e.buckets(ledger.BucketFilter{Customer: "c1"}), []view{{"c1", "req", "10:00", 133, 0, ledger.StateOpen, 0}})

	// A cancelled context stores nothing, neither the usage nor the id.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.store.Append(cancelled, ledger.NewAppendBatch([]ledger.Record{at(1000, "c1", t0, "e")}, keep)); err == nil {
		t.Error("Append under a cancelled context succeeded")
	}
	appendBatch(ctx, keep, []string{"e"}, []bool{true}, at(1, "c1", t0, "e"))

	// Event ids are kept until their expiry, and forgotten once purged after it.
	short := t0.Add(time.Hour)
	appendBatch(ctx, short, []string{"x"}, []bool{true}, at(1, "c1", t0, "x"))
	if n, err := e.store.PurgeEvents(ctx, short.Add(-time.Minute)); err != nil || n != 0 {
		t.Errorf("PurgeEvents before the expiry: %d, %v; want 0", n, err)
	}
	appendBatch(ctx, keep, []string{"x"}, []bool{false}, at(1, "c1", t0, "x"))
	if n, err := e.store.PurgeEvents(ctx, short.Add(time.Minute)); err != nil || n != 1 {
		t.Errorf("PurgeEvents after the expiry: %d, %v; want 1 (only x expired)", n, err)
	}
	appendBatch(ctx, keep, []string{"x"}, []bool{true}, at(1, "c1", t0, "x"))
	wantViews(t, e.buckets(ledger.BucketFilter{Customer: "c1"}), []view{{"c1", "req", "10:00", 136, 0, ledger.StateOpen, 0}})
}

// runBucketFilter checks every field of BucketFilter and the order of Buckets.
func runBucketFilter(t *testing.T, h Harness) {
	e := newEnv(t, h, ledger.Config{})
	h10 := ledger.HourOf(t0)
	e.ingest(
		rec("gcp", "c2", "b", 1, t0, ""),
		rec("aws", "c2", "a", 2, t0, ""),
		rec("aws", "c1", "b", 3, t0.Add(-time.Hour), ""),
		rec("aws", "c1", "b", 4, t0, ""),
		rec("aws", "c1", "a", 5, t0, ""),
		rec("aws", "c3", "a", 6, t0.Add(-2*time.Hour), ""),
	)
	e.seal() // c1/b 09:00, c3/a 08:00
	// c3/a 08:00 was sent once and waits for a retry.
	ctx, now := t.Context(), e.clock.Now()
	claimed, err := e.store.Claim(ctx, ledger.ClaimRequest{Provider: "aws", Owner: "A", Now: now, Lease: time.Minute, Limit: 10})
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claim: %d buckets, %v", len(claimed), err)
	}
	var done []ledger.Completion
	for _, b := range claimed {
		c := ledger.Completion{BucketID: b.ID, State: ledger.StateSealed, Now: now}
		if b.Customer == "c3" {
			c.Attempted, c.NextAttempt, c.Reason = true, now.Add(time.Minute), "throttled"
		}
		done = append(done, c)
	}
	must(t, e.store.Complete(ctx, "A", done))
	all := e.buckets(ledger.BucketFilter{})
	var keys []string
	for _, b := range all {
		keys = append(keys, fmt.Sprintf("%s/%s/%s/%s", b.Provider, b.Customer, b.Dimension, b.Hour.Format("15")))
	}
	if want := []string{"aws/c1/a/10", "aws/c1/b/09", "aws/c1/b/10", "aws/c2/a/10", "aws/c3/a/08", "gcp/c2/b/10"}; !slices.Equal(keys, want) {
		t.Errorf("Buckets order: %q, want %q", keys, want)
	}
	for _, tc := range []struct {
		f    ledger.BucketFilter
		want int
	}{
		{ledger.BucketFilter{Provider: "aws"}, 5},
		{ledger.BucketFilter{Customer: "c2"}, 2},
		{ledger.BucketFilter{Provider: "aws", Customer: "c2"}, 1},
		{ledger.BucketFilter{States: []ledger.State{ledger.StateSealed}}, 2},
		{ledger.BucketFilter{States: []ledger.State{ledger.StateSealed, ledger.StateOpen}}, 6},
		{ledger.BucketFilter{Limit: 2}, 2},
		// The hour range: From <= Hour < Before, on the bucket's hour.
		{ledger.BucketFilter{From: h10}, 4},
		{ledger.BucketFilter{Before: h10}, 2},
		{ledger.BucketFilter{From: h10.Add(-time.Hour), Before: h10}, 1},
		{ledger.BucketFilter{Provider: "aws", From: h10.Add(-2 * time.Hour), Before: h10.Add(-time.Hour)}, 1},
		{ledger.BucketFilter{Provider: "gcp", Before: h10}, 0},
		{ledger.BucketFilter{From: h10, Before: h10}, 0},
		{ledger.BucketFilter{From: h10.Add(time.Minute)}, 0},
		{ledger.BucketFilter{Provider: "aws", From: h10.Add(-2 * time.Hour), Before: h10.Add(time.Hour), States: []ledger.State{ledger.StateOpen}}, 3},
		{ledger.BucketFilter{MinAttempts: 1}, 1},
		{ledger.BucketFilter{Provider: "aws", States: []ledger.State{ledger.StateSealed}, MinAttempts: 1}, 1},
		{ledger.BucketFilter{Provider: "gcp", MinAttempts: 1}, 0},
		{ledger.BucketFilter{MinAttempts: 2}, 0},
		{ledger.BucketFilter{NewestFirst: true, Limit: 3}, 3},
	} {
		got := e.buckets(tc.f)
		if len(got) != tc.want {
			t.Errorf("Buckets(%+v): %d buckets, want %d", tc.f, len(got), tc.want)
		}
	}
	if got := e.buckets(ledger.BucketFilter{Limit: 2}); len(got) == 2 && (got[0].ID != all[0].ID || got[1].ID != all[1].ID) {
		t.Errorf("Buckets with Limit 2 is not the first two in order")
	}
	if got := e.buckets(ledger.BucketFilter{MinAttempts: 1}); len(got) == 1 && (got[0].Customer != "c3" || got[0].Attempts != 1) {
		t.Errorf("Buckets with MinAttempts 1: %+v, want c3's retried bucket", got[0])
	}
	// NewestFirst: by hour, newest first, then by id, newest first; a
	// Limit keeps the newest.
	newest := e.buckets(ledger.BucketFilter{Provider: "aws", NewestFirst: true})
	if len(newest) != 5 {
		t.Fatalf("Buckets NewestFirst: %d buckets, want 5", len(newest))
	}
	for i := 1; i < len(newest); i++ {
		a, b := newest[i-1], newest[i]
		if a.Hour.Before(b.Hour) || (a.Hour.Equal(b.Hour) && a.ID < b.ID) {
			t.Errorf("Buckets NewestFirst: %s #%d before %s #%d", a.Hour.Format("15"), a.ID, b.Hour.Format("15"), b.ID)
		}
	}
	sealed := e.buckets(ledger.BucketFilter{Provider: "aws", States: []ledger.State{ledger.StateSealed}, NewestFirst: true, Limit: 1})
	if len(sealed) != 1 || sealed[0].Customer != "c1" || !sealed[0].Hour.Equal(h10.Add(-time.Hour)) {
		t.Errorf("newest sealed bucket: %+v, want c1's at 09:00", views(sealed))
	}
}

// runSumBuckets checks SumBuckets: sums across customers per dimension,
// hour and state, the hour range [From, Before), and the filter's other
// fields.
func runSumBuckets(t *testing.T, h Harness) {
	e := newEnv(t, h, ledger.Config{})
	h10 := ledger.HourOf(t0)
	e.ingest(
		rec("aws", "c1", "a", 1, t0, ""),
		rec("aws", "c2", "a", 2, t0, ""),
		rec("aws", "c3", "a", 4, t0, ""),
		rec("aws", "c1", "b", 8, t0, ""),
		rec("aws", "c1", "a", 16, t0.Add(-time.Hour), ""),
		rec("aws", "c2", "a", 32, t0.Add(-time.Hour), ""),
		rec("aws", "c1", "a", 64, t0.Add(-2*time.Hour), ""),
		rec("gcp", "c1", "a", 128, t0, ""), // another cloud, same key
	)
	e.seal() // 09:00 and 08:00: sealed
	// Of the three sealed buckets of 09:00 and 08:00, c1's at 09:00 is
	// reported and c2's rejected; c1's at 08:00 stays sealed.
	ctx, now := t.Context(), e.clock.Now()
	claimed, err := e.store.Claim(ctx, ledger.ClaimRequest{Provider: "aws", Owner: "A", Now: now, Lease: time.Minute, Limit: 10})
	if err != nil || len(claimed) != 3 {
		t.Fatalf("claim: %d buckets, %v", len(claimed), err)
	}
	var done []ledger.Completion
	for _, b := range claimed {
		c := ledger.Completion{BucketID: b.ID, State: ledger.StateSealed, Now: now}
		switch {
		case b.Hour.Equal(h10.Add(-time.Hour)) && b.Customer == "c1":
			c.State, c.Attempted, c.RecordID = ledger.StateReported, true, "r-1"
		case b.Hour.Equal(h10.Add(-time.Hour)) && b.Customer == "c2":
			c.State, c.Attempted, c.Reason = ledger.StateRejected, true, "no"
		}
		done = append(done, c)
	}
	must(t, e.store.Complete(ctx, "A", done))
	must(t, e.l.Fold(ctx))

	type sum struct {
		Provider       marketplace.CloudProvider
		Dim, Hour      string
		State          ledger.State
		Buckets, Quant int64
	}
	all := []sum{
		{"aws", "a", "08", ledger.StateSealed, 1, 64},
		{"aws", "a", "09", ledger.StateRejected, 1, 32},
		{"aws", "a", "09", ledger.StateReported, 1, 16},
		{"aws", "a", "10", ledger.StateOpen, 3, 7},
		{"aws", "b", "10", ledger.StateOpen, 1, 8},
	}
	for _, tc := range []struct {
		name string
		f    ledger.BucketFilter
		want []sum
	}{
		{"one cloud", ledger.BucketFilter{Provider: "aws"}, all},
		{"all clouds", ledger.BucketFilter{}, append(slices.Clone(all), sum{"gcp", "a", "10", ledger.StateOpen, 1, 128})},
		{"from", ledger.BucketFilter{Provider: "aws", From: h10.Add(-time.Hour)}, all[1:]},
		{"before", ledger.BucketFilter{Provider: "aws", Before: h10.Add(-time.Hour)}, all[:1]},
		{"from and before", ledger.BucketFilter{Provider: "aws", From: h10.Add(-time.Hour), Before: h10}, all[1:3]},
		{"empty range", ledger.BucketFilter{Provider: "aws", From: h10, Before: h10}, nil},
		{"from within an hour", ledger.BucketFilter{Provider: "aws", From: h10.Add(time.Minute)}, nil},
		{"states", ledger.BucketFilter{Provider: "aws", States: []ledger.State{ledger.StateReported, ledger.StateSealed}}, []sum{all[0], all[2]}},
		{"customer", ledger.BucketFilter{Provider: "aws", Customer: "c2"}, []sum{{"aws", "a", "09", ledger.StateRejected, 1, 32}, {"aws", "a", "10", ledger.StateOpen, 1, 2}}},
		{"limit and order do not apply", ledger.BucketFilter{Provider: "aws", NewestFirst: true, Limit: 1}, all},
		{"no buckets", ledger.BucketFilter{Provider: "azure"}, nil},
	} {
		got, err := e.store.SumBuckets(ctx, tc.f)
		if err != nil {
			t.Fatalf("%s: SumBuckets: %v", tc.name, err)
		}
		var gs []sum
		for _, g := range got {
			if g.Hour.Location() != time.UTC || g.Hour.Minute() != 0 {
				t.Errorf("%s: hour %v, want a whole hour in UTC", tc.name, g.Hour)
			}
			gs = append(gs, sum{g.Provider, g.Dimension, g.Hour.Format("15"), g.State, g.Buckets, g.Quantity})
		}
		if !slices.Equal(gs, tc.want) {
			t.Errorf("%s: SumBuckets(%+v):\n got %+v\nwant %+v", tc.name, tc.f, gs, tc.want)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
