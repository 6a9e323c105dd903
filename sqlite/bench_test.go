package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/saasmarket/marketplace/sqlite"
	"github.com/saasmarket/marketplace/storetest"
)

// The ledger benchmarks are storetest's (storetest/bench.go), the same as
// PostgreSQL's; SQLite supplies a fresh database file. Every commit is
// fsync'd (WAL, synchronous=FULL) before Ingest returns.
var bench = storetest.BenchHarness{
	Open: func(b *testing.B, _ string) storetest.BenchStore {
		b.Helper()
		st, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "bench.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return storetest.BenchStore{Store: st}
	},
}

// BenchmarkLedgerIngest: 64 writers, batches of 100 records, 10,000
// buckets; one op is one record (storetest.BenchIngest).
func BenchmarkLedgerIngest(b *testing.B) { storetest.BenchIngest(b, bench) }

// BenchmarkLedgerRecordLatency: one caller, one fsync'd commit per record.
func BenchmarkLedgerRecordLatency(b *testing.B) { storetest.BenchRecordLatency(b, bench) }

// BenchmarkLedgerFold folds one million logged records into buckets.
func BenchmarkLedgerFold(b *testing.B) { storetest.BenchFold(b, bench) }
