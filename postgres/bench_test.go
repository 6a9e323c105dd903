package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/internal/benchcpu"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/postgres"
)

// The benchmarks have the shape of sqlite/bench_test.go's, so that the two
// stores' figures compare (BENCHMARKS.md). Each makes a fresh database on
// the server pgtest finds; the figures are those of that server's settings.

func openBenchLedger(b *testing.B, tune func(*postgres.Store)) (*ledger.Ledger, string) {
	b.Helper()
	db := pg.NewDB(b)
	st := open(b, db)
	if tune != nil {
		tune(st)
	}
	l := ledger.New(st, ledger.Config{})
	b.Cleanup(func() { l.Close() })
	return l, db
}

// cpuMeter measures the CPU time this process (internal/benchcpu) and the
// database's backends for one database spend, so that a figure taken on a
// busy machine can be read as a cost per record. The backends are read
// from /proc: only a server on this machine is measured (its WAL writer
// and checkpointer are not counted).
type cpuMeter struct {
	db      string
	self    time.Duration
	backend time.Duration
}

func startCPU(b *testing.B, db string) *cpuMeter {
	return &cpuMeter{db: db, self: benchcpu.Now(), backend: backendCPU(b, db)}
}

// report adds cpu-ns/op (this process) and db-cpu-ns/op (the backends).
func (m *cpuMeter) report(b *testing.B) {
	benchcpu.Report(b, m.self)
	if db := backendCPU(b, m.db); db >= 0 && m.backend >= 0 && b.N > 0 {
		b.ReportMetric(float64(db-m.backend)/float64(b.N), "db-cpu-ns/op")
	}
}

// backendCPU sums the CPU time of the server processes connected to db
// (the ones that served it and left are not counted: the pool keeps its
// connections), or -1 when /proc does not show them.
func backendCPU(b *testing.B, db string) time.Duration {
	conn, err := pgx.Connect(b.Context(), db)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(b.Context(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	if err != nil {
		b.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		b.Fatal(err)
	}
	var ticks int64
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return -1
		}
		// Fields after the command's closing parenthesis: utime and
		// stime are the 12th and 13th.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		for _, s := range f[11:13] {
			n, _ := strconv.ParseInt(s, 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// benchKeys are 10,000 distinct buckets: 2,500 customers × 4 dimensions, one hour.
func benchKeys() [][2]string {
	keys := make([][2]string, 0, 10_000)
	for c := range 2500 {
		for _, d := range []string{"tokens_in", "tokens_out", "requests", "gpu_seconds"} {
			keys = append(keys, [2]string{fmt.Sprintf("customer-%04d", c), d})
		}
	}
	return keys
}

// BenchmarkLedgerIngest is durable ingest (each commit flushed to the WAL
// before Ingest returns) from 64 concurrent writers, each submitting
// batches of 100 records over 10,000 buckets. One op is one record.
func BenchmarkLedgerIngest(b *testing.B) {
	for _, tc := range []struct {
		name          string
		withIDs, fold bool
		tune          func(*postgres.Store)
	}{
		{name: "NoEventIDs"},
		{name: "UniqueEventIDs", withIDs: true},
		{name: "UniqueEventIDsOnConflict", withIDs: true, tune: postgres.UseUpsertForEvents},
		{name: "UniqueEventIDsViaCopy", withIDs: true, tune: postgres.UseCopyForEvents},
		{name: "NoEventIDsFoldingEverySecond", fold: true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			l, db := openBenchLedger(b, tc.tune)
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
			cpu := startCPU(b, db)
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
			cpu.report(b)
		})
	}
}

// BenchmarkLedgerRecordLatency is one durable record at a time, no
// concurrency: the latency a lone caller sees (one committed transaction each).
func BenchmarkLedgerRecordLatency(b *testing.B) {
	l, _ := openBenchLedger(b, nil)
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

// BenchmarkLedgerFold folds one million logged records (156 commits of
// 6,400 records over 10,000 buckets) into buckets: one batched upsert.
func BenchmarkLedgerFold(b *testing.B) {
	keys := benchKeys()
	now := time.Now()
	for b.Loop() {
		b.StopTimer()
		l, _ := openBenchLedger(b, nil)
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
