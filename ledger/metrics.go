package ledger

import (
	"sync"
	"time"

	"github.com/saasmarket/marketplace"
)

// Metrics receives the ledger's and reporter's counts. Implementations must
// be safe for concurrent use and cheap: they are called on the commit path.
// The daemon adapts it to Prometheus; tests use Counters.
type Metrics interface {
	Recorded(p marketplace.CloudProvider, n int64) // records counted
	Duplicates(n int64)                            // records skipped by event id
	Late(p marketplace.CloudProvider, quantity int64)
	Sealed(p marketplace.CloudProvider, n int64)
	Reported(p marketplace.CloudProvider, n int64)
	Rejected(p marketplace.CloudProvider, n int64)
	Conflict(p marketplace.CloudProvider, n int64)
	Retried(p marketplace.CloudProvider, n int64)
	// Missed counts buckets past their deadline (carried or expired): an alert.
	Missed(p marketplace.CloudProvider, n int64)
	// OldestUnreported is the age of the oldest sealed bucket not yet reported.
	OldestUnreported(p marketplace.CloudProvider, age time.Duration)
}

// NopMetrics discards everything.
type NopMetrics struct{}

func (NopMetrics) Recorded(marketplace.CloudProvider, int64)                 {}
func (NopMetrics) Duplicates(int64)                                          {}
func (NopMetrics) Late(marketplace.CloudProvider, int64)                     {}
func (NopMetrics) Sealed(marketplace.CloudProvider, int64)                   {}
func (NopMetrics) Reported(marketplace.CloudProvider, int64)                 {}
func (NopMetrics) Rejected(marketplace.CloudProvider, int64)                 {}
func (NopMetrics) Conflict(marketplace.CloudProvider, int64)                 {}
func (NopMetrics) Retried(marketplace.CloudProvider, int64)                  {}
func (NopMetrics) Missed(marketplace.CloudProvider, int64)                   {}
func (NopMetrics) OldestUnreported(marketplace.CloudProvider, time.Duration) {}

// Counters is a Metrics that keeps totals in memory, for tests, the demo
// and simple dashboards.
type Counters struct {
	mu     sync.Mutex
	counts map[string]int64
	oldest map[marketplace.CloudProvider]time.Duration
}

func (c *Counters) add(name string, p marketplace.CloudProvider, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = make(map[string]int64)
	}
	c.counts[name+"/"+string(p)] += n
	c.counts[name] += n
}

// Get returns a total: Get("reported") for all clouds, Get("reported/aws") for one.
func (c *Counters) Get(name string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[name]
}

// Oldest returns the last reported age of the oldest unreported bucket of p.
func (c *Counters) Oldest(p marketplace.CloudProvider) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.oldest[p]
}

func (c *Counters) Recorded(p marketplace.CloudProvider, n int64) { c.add("recorded", p, n) }
func (c *Counters) Duplicates(n int64)                            { c.add("duplicates", "", n) }
func (c *Counters) Late(p marketplace.CloudProvider, q int64)     { c.add("late", p, q) }
func (c *Counters) Sealed(p marketplace.CloudProvider, n int64)   { c.add("sealed", p, n) }
func (c *Counters) Reported(p marketplace.CloudProvider, n int64) { c.add("reported", p, n) }
func (c *Counters) Rejected(p marketplace.CloudProvider, n int64) { c.add("rejected", p, n) }
func (c *Counters) Conflict(p marketplace.CloudProvider, n int64) { c.add("conflict", p, n) }
func (c *Counters) Retried(p marketplace.CloudProvider, n int64)  { c.add("retried", p, n) }
func (c *Counters) Missed(p marketplace.CloudProvider, n int64)   { c.add("missed", p, n) }

func (c *Counters) OldestUnreported(p marketplace.CloudProvider, age time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.oldest == nil {
		c.oldest = make(map[marketplace.CloudProvider]time.Duration)
	}
	c.oldest[p] = age
}
