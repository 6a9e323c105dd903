package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/saasmarket/marketplace/internal/benchcpu"
	"github.com/saasmarket/marketplace/postgres"
	"github.com/saasmarket/marketplace/storetest"
)

// The ledger benchmarks are storetest's (storetest/bench.go), the same as
// SQLite's, so that the two stores' figures compare (BENCHMARKS.md).
// PostgreSQL supplies a fresh database on the server pgtest finds (the
// figures are those of that server's settings), its other ways of writing
// event ids, and the CPU its backends spend.
var bench = storetest.BenchHarness{
	Open: func(b *testing.B, variant string) storetest.BenchStore {
		b.Helper()
		db := pg.NewDB(b)
		st := open(b, db)
		switch variant {
		case "":
		case "OnConflict":
			postgres.UseUpsertForEvents(st)
		case "ViaCopy":
			postgres.UseCopyForEvents(st)
		default:
			b.Fatalf("no event variant %q", variant)
		}
		return storetest.BenchStore{Store: st, StartMeter: func() func() {
			m := startCPU(b, db)
			return func() { m.report(b) }
		}}
	},
	EventVariants: []string{"OnConflict", "ViaCopy"},
}

// BenchmarkLedgerIngest: 64 writers, batches of 100 records, 10,000
// buckets; one op is one record (storetest.BenchIngest). Each commit is
// flushed to the WAL before Ingest returns.
func BenchmarkLedgerIngest(b *testing.B) { storetest.BenchIngest(b, bench) }

// BenchmarkLedgerRecordLatency: one caller, one committed transaction per
// record.
func BenchmarkLedgerRecordLatency(b *testing.B) { storetest.BenchRecordLatency(b, bench) }

// BenchmarkLedgerFold folds one million logged records into buckets: one
// batched upsert.
func BenchmarkLedgerFold(b *testing.B) { storetest.BenchFold(b, bench) }

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
