package entitlement

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/internal/benchcpu"
)

// checker is what the benchmarks measure: Cache, or legacyCache (the design
// it replaced) for comparison in the same run.
type checker interface {
	Check(ctx context.Context, k Key) error
	Invalidate(p marketplace.CloudProvider, customer string)
}

var designs = []struct {
	name string
	new  func(testing.TB, LoadFunc, Config) checker // closed when the benchmark ends
}{
	{"lockfree", func(tb testing.TB, l LoadFunc, c Config) checker {
		ca := New(l, c)
		tb.Cleanup(ca.Close)
		return ca
	}},
	{"legacy", func(_ testing.TB, l LoadFunc, c Config) checker { return newLegacy(l, c) }},
}

// grantAll is a LoadFunc that grants everything, as a store would answer
// for subscribed customers.
func grantAll(context.Context, Key) (Decision, error) { return Decision{}, nil }

func benchKeys(n int) []Key {
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = Key{Provider: marketplace.AWS, Customer: fmt.Sprint("customer-", i), Feature: "gold"}
	}
	return keys
}

// BenchmarkCheckHit: b.RunParallel on every P, 10,000 cached keys, every
// check a hit; each goroutine walks the keys from its own starting point.
func BenchmarkCheckHit(b *testing.B) {
	for _, d := range designs {
		b.Run("design="+d.name, func(b *testing.B) {
			keys := benchKeys(10_000)
			c := d.new(b, grantAll, Config{TTL: time.Hour})
			ctx := b.Context()
			for _, k := range keys {
				c.Check(ctx, k)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := benchcpu.Now()
			var start int
			b.RunParallel(func(pb *testing.PB) {
				start += 7919 // racy on purpose: any spread will do
				i := start % len(keys)
				for pb.Next() {
					if err := c.Check(ctx, keys[i]); err != nil {
						b.Error(err)
						return
					}
					if i++; i == len(keys) {
						i = 0
					}
				}
			})
			b.StopTimer()
			benchcpu.Report(b, cpu)
		})
	}
}

// BenchmarkInvalidate: lifecycle events in a cache holding `entries`
// decisions, one per customer. One op invalidates a batch of 100 customers
// and then checks each of them again (a miss, loaded again), so the cache
// stays full. ns/invalidate times the Invalidate calls alone: it should not
// grow with entries, as Invalidate costs the customer's decisions only.
func BenchmarkInvalidate(b *testing.B) {
	const batch = 100
	for _, d := range designs {
		for _, entries := range []int{1_000, 100_000} {
			b.Run(fmt.Sprintf("design=%s/entries=%d", d.name, entries), func(b *testing.B) {
				keys := benchKeys(entries)
				c := d.new(b, grantAll, Config{TTL: time.Hour, MaxEntries: 2 * entries})
				ctx := b.Context()
				for _, k := range keys {
					c.Check(ctx, k)
				}
				b.ReportAllocs()
				var spent time.Duration
				i := 0
				for b.Loop() {
					start := time.Now()
					for _, k := range keys[i : i+batch] {
						c.Invalidate(k.Provider, k.Customer)
					}
					spent += time.Since(start)
					for _, k := range keys[i : i+batch] {
						c.Check(ctx, k)
					}
					if i += batch; i == len(keys) {
						i = 0
					}
				}
				b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N*batch), "ns/invalidate")
			})
		}
	}
}
