package marketplace

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace/internal/benchcpu"
)

// benchPairs returns n distinct (customer, dimension) pairs: n/4 customers
// with four dimensions each, the shape of real metering.
func benchPairs(n int) []pairKey {
	dims := [...]string{"tokens_1m", "gpu_hours", "requests", "storage_gb"}
	pairs := make([]pairKey, n)
	for i := range pairs {
		pairs[i] = pairKey{customer: fmt.Sprintf("customer-%07d", i/len(dims)), dimension: dims[i%len(dims)]}
	}
	return pairs
}

// sliceTracker is the design UsageTracker replaces: every record appended to
// one slice under one mutex, so memory grows with records and every
// goroutine meets on the same lock.
type sliceTracker struct {
	mu      sync.Mutex
	records []UsageRecord
}

func (s *sliceTracker) Record(customerID, dimension string, quantity int64) {
	s.mu.Lock()
	s.records = append(s.records, UsageRecord{CustomerID: customerID, Dimension: dimension, Quantity: quantity, Timestamp: time.Now()})
	s.mu.Unlock()
}

// mutexMapTracker is the plain alternative UsageTracker must beat: one map
// of running sums under one mutex.
type mutexMapTracker struct {
	mu   sync.Mutex
	sums map[pairKey]int64
}

func newMutexMapTracker() *mutexMapTracker {
	return &mutexMapTracker{sums: make(map[pairKey]int64)}
}

func (m *mutexMapTracker) Record(customerID, dimension string, quantity int64) {
	m.mu.Lock()
	m.sums[pairKey{customerID, dimension}] += quantity
	m.mu.Unlock()
}

// benchRecord runs record from b.RunParallel goroutines over 10,000 distinct
// pairs, every pair known before the timer starts (the steady state). In the
// pattern "spread" each goroutine walks the pairs from its own starting
// point, as independent request handlers would; in "lockstep" every
// goroutine walks them from the first in the same order, so all of them
// record the same pair at about the same time (a burst of one workload's
// requests); in "hot" every goroutine records the first pair only (one
// customer's traffic).
func benchRecord(b *testing.B, pattern string, record func(customerID, dimension string, quantity int64)) {
	pairs := benchPairs(10_000)
	lockstep := pattern == "lockstep"
	if pattern == "hot" {
		pairs = pairs[:1]
	}
	for _, p := range pairs {
		record(p.customer, p.dimension, 1)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	cpu := benchcpu.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)*7919) % len(pairs)
		if lockstep {
			i = 0
		}
		for pb.Next() {
			p := &pairs[i]
			record(p.customer, p.dimension, 3)
			if i++; i == len(pairs) {
				i = 0
			}
		}
	})
	b.StopTimer()
	benchcpu.Report(b, cpu)
	if ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N); ns > 0 {
		b.ReportMetric(1e9/ns, "records/s")
	}
}

// BenchmarkRecord compares UsageTracker with a plain map under one mutex
// and with the slice design it replaced, in three access patterns.
func BenchmarkRecord(b *testing.B) {
	designs := []struct {
		name   string
		record func() func(customerID, dimension string, quantity int64)
	}{
		{"UsageTracker", func() func(string, string, int64) { return NewUsageTracker().Record }},
		{"MutexMap", func() func(string, string, int64) { return newMutexMapTracker().Record }},
		{"Slice", func() func(string, string, int64) { return new(sliceTracker).Record }},
	}
	for _, pattern := range []string{"spread", "lockstep", "hot"} {
		for _, d := range designs {
			b.Run("pattern="+pattern+"/design="+d.name, func(b *testing.B) {
				benchRecord(b, pattern, d.record())
			})
		}
	}
}

// BenchmarkUsageTrackerMemory records 10 million records over 100,000
// distinct pairs and reports the heap in use afterwards: heap-MB is the
// whole live heap (the tracker plus the benchmark's own pair strings),
// tracker-MB the tracker's share.
func BenchmarkUsageTrackerMemory(b *testing.B) {
	const records, distinct = 10_000_000, 100_000
	pairs := benchPairs(distinct)
	base := heapInUse()
	var tr *UsageTracker
	for b.Loop() {
		tr = NewUsageTracker()
		for i := range records {
			p := &pairs[i%distinct]
			tr.Record(p.customer, p.dimension, 1)
		}
	}
	b.StopTimer()
	heap := heapInUse()
	if got := tr.Pending(); got != records {
		b.Fatalf("Pending() = %d, want %d", got, records)
	}
	runtime.KeepAlive(pairs)
	b.ReportMetric(float64(heap)/(1<<20), "heap-MB")
	b.ReportMetric(float64(int64(heap)-int64(base))/(1<<20), "tracker-MB")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/records, "ns/record")
}

// heapInUse returns the bytes of heap in use after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
