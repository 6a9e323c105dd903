package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// The ledger benchmarks every store runs, one body for all, so that the
// stores' figures compare (BENCHMARKS.md). A store package keeps the
// benchmark names and supplies only how to open a fresh store:
//
//	func BenchmarkLedgerIngest(b *testing.B) { storetest.BenchIngest(b, bench) }

// BenchHarness tells the benchmarks how to open a store.
type BenchHarness struct {
	// Open returns a store on a fresh, empty database and registers its
	// closing with b.Cleanup. variant is "" for the store as it ships, or
	// one of EventVariants.
	Open func(b *testing.B, variant string) BenchStore
	// EventVariants are other ways the store has to write event ids
	// (PostgreSQL: "OnConflict", "ViaCopy"): BenchIngest runs
	// UniqueEventIDs<variant> with each.
	EventVariants []string
}

// BenchStore is a store opened for one benchmark run.
type BenchStore struct {
	Store ledger.Store
	// StartMeter, when set, starts measuring what the run costs besides
	// its time (PostgreSQL: the backends' CPU); the function it returns
	// reports that (b.ReportMetric) once the timer has stopped.
	StartMeter func() (report func())
}

func openBenchLedger(b *testing.B, h BenchHarness, variant string) (*ledger.Ledger, BenchStore) {
	b.Helper()
	st := h.Open(b, variant)
	l := ledger.New(st.Store, ledger.Config{})
	b.Cleanup(func() { l.Close() }) // before the store's own cleanup: registered after it
	return l, st
}

// benchKeys are 10,000 distinct buckets: 2,500 customers × 4 dimensions,
// one hour.
func benchKeys() [][2]string {
	keys := make([][2]string, 0, 10_000)
	for c := range 2500 {
		for _, d := range []string{"tokens_in", "tokens_out", "requests", "gpu_seconds"} {
			keys = append(keys, [2]string{fmt.Sprintf("customer-%04d", c), d})
		}
	}
	return keys
}

// BenchIngest is durable ingest (each commit durable before Ingest
// returns) from 64 concurrent writers, each submitting batches of 100
// records over 10,000 buckets. One op is one record. Its cases:
// NoEventIDs; UniqueEventIDs (every record has one), then the same with
// each of the store's EventVariants; NoEventIDsFoldingEverySecond
// (Ledger.Maintain folds the log into buckets every second meanwhile: the
// sustained rate).
func BenchIngest(b *testing.B, h BenchHarness) {
	type ingestCase struct {
		name          string
		withIDs, fold bool
		variant       string
	}
	cases := []ingestCase{{name: "NoEventIDs"}, {name: "UniqueEventIDs", withIDs: true}}
	for _, v := range h.EventVariants {
		cases = append(cases, ingestCase{name: "UniqueEventIDs" + v, withIDs: true, variant: v})
	}
	cases = append(cases, ingestCase{name: "NoEventIDsFoldingEverySecond", fold: true})
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			l, st := openBenchLedger(b, h, tc.variant)
			if tc.fold {
				// Sustained ingest: the maintenance loop folds the log into
				// buckets concurrently.
				ctx, cancel := context.WithCancel(b.Context())
				done := make(chan struct{})
				go func() {
					defer close(done)
					l.Maintain(ctx, ledger.MaintainConfig{FoldEvery: time.Second, SealEvery: time.Hour})
				}()
				defer func() { cancel(); <-done }()
			}
			keys := benchKeys()
			now := time.Now()
			var next atomic.Int64 // record sequence: keys and event ids
			const writers, batch = 64, 100
			batches := (b.N + batch - 1) / batch
			var issued atomic.Int64
			report := func() {}
			if st.StartMeter != nil {
				report = st.StartMeter()
			}
			b.ResetTimer()
			var wg sync.WaitGroup
			for range writers {
				wg.Go(func() {
					recs := make([]ledger.Record, batch)
					for issued.Add(1) <= int64(batches) {
						start := next.Add(batch) - batch
						for i := range recs {
							n := start + int64(i)
							k := keys[n%int64(len(keys))]
							recs[i] = ledger.Record{Provider: marketplace.AWS, Customer: k[0], Dimension: k[1], Quantity: 1, Time: now}
							if tc.withIDs {
								recs[i].EventID = fmt.Sprintf("evt-%d", n)
							}
						}
						if _, err := l.Ingest(b.Context(), recs); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(batches*batch)/b.Elapsed().Seconds(), "records/s")
			report()
		})
	}
}

// BenchRecordLatency is one durable record at a time, no concurrency: the
// latency a lone caller sees (one durable commit each).
func BenchRecordLatency(b *testing.B, h BenchHarness) {
	l, _ := openBenchLedger(b, h, "")
	now := time.Now()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		err := l.Record(b.Context(), ledger.Record{Provider: marketplace.AWS, Customer: "c", Dimension: "d", Quantity: 1, Time: now, EventID: fmt.Sprint(i)})
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchFold folds one million logged records (156 commits of 6,400
// records over 10,000 buckets) into buckets; the fold is timed alone.
func BenchFold(b *testing.B, h BenchHarness) {
	keys := benchKeys()
	now := time.Now()
	for b.Loop() {
		b.StopTimer()
		l, _ := openBenchLedger(b, h, "")
		recs := make([]ledger.Record, 6400)
		for n := 0; n < 1_000_000; n += len(recs) {
			for i := range recs {
				k := keys[(n+i)%len(keys)]
				recs[i] = ledger.Record{Provider: marketplace.AWS, Customer: k[0], Dimension: k[1], Quantity: 1, Time: now}
			}
			if _, err := l.Ingest(b.Context(), recs); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if err := l.Fold(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}
