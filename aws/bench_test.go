package aws_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger"
)

// sealBuckets makes n sealed buckets (customers × 2 dimensions × 3 hours)
// of buyers known to the emulator.
func sealBuckets(b *testing.B, e *env, n int) {
	b.Helper()
	customers := (n + 5) / 6
	var recs []ledger.Record
	for i := range customers {
		c := e.emu.AddBuyer(emu.Buyer{ProductCode: "p", CustomerIdentifier: fmt.Sprintf("c%06d", i)}).Key()
		for _, d := range []string{"requests", "images"} {
			for h := 9; h <= 11; h++ {
				recs = append(recs, ledger.Record{Provider: marketplace.AWS, Customer: c, Dimension: d, Quantity: int64(1 + i%97), Time: onDay(h, 1)})
			}
		}
	}
	recs = recs[:n]
	if _, err := e.ledger.Ingest(b.Context(), recs); err != nil {
		b.Fatal(err)
	}
	if _, err := e.ledger.Seal(b.Context()); err != nil {
		b.Fatal(err)
	}
}

func drain(b *testing.B, e *env, rep *ledger.Reporter) {
	b.Helper()
	for {
		st, err := rep.RunOnce(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if st.Claimed == 0 {
			return
		}
		if st.Retried > 0 {
			e.clock.Advance(time.Minute)
		}
	}
}

// BenchmarkReporterUnthrottled: sealed buckets reported per second through
// the official SDK client (SigV4 signed and verified) to the emulator,
// with the client's rate limit lifted.
func BenchmarkReporterUnthrottled(b *testing.B) {
	e := newEnv(b, emu.Config{})
	sealBuckets(b, e, b.N)
	rep := ledger.NewReporter(e.ledger, mustReporter(b, aws.ReporterConfig{Client: e.meter, ProductCode: "p", Limits: ledger.Limits{Rate: 1e9}, Logger: discard}), fastReporting)
	b.ResetTimer()
	start := time.Now()
	drain(b, e, rep)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "buckets/s")
	b.StopTimer()
	if got := len(e.emu.Bill().Lines); got != b.N {
		b.Fatalf("billed %d lines, want %d", got, b.N)
	}
}

// BenchmarkReporterThrottled10TPS: the emulator throttles at AWS's 10
// calls per second and the reporter runs with its default rate; the
// achieved records per second are compared with the ceiling of 10 × 25.
// Run with -benchtime=1x: each iteration reports 2,000 buckets.
func BenchmarkReporterThrottled10TPS(b *testing.B) {
	const n = 2000
	for range b.N {
		b.StopTimer()
		e := newEnv(b, emu.Config{Faults: emu.Faults{ThrottleTPS: 10}})
		sealBuckets(b, e, n)
		rep := ledger.NewReporter(e.ledger, mustReporter(b, aws.ReporterConfig{Client: e.meter, ProductCode: "p", Logger: discard}), fastReporting)
		b.StartTimer()
		start := time.Now()
		drain(b, e, rep)
		secs := time.Since(start).Seconds()
		b.StopTimer()
		st := e.emu.Stats()
		if got := len(e.emu.Bill().Lines); got != n {
			b.Fatalf("billed %d lines, want %d", got, n)
		}
		b.ReportMetric(n/secs, "records/s")
		b.ReportMetric(100*n/secs/250, "%of250")
		b.ReportMetric(float64(st.Throttled), "throttled")
	}
}
