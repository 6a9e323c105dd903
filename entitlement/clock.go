package entitlement

import (
	"sync/atomic"
	"time"
)

const (
	// clockTick is how often the coarse clock is advanced, and so how long
	// past its expiry a decision may still be served.
	clockTick = 10 * time.Millisecond
	// clockIdleTicks is how many ticks without a check stop the clock's
	// goroutine; the next check starts it again.
	clockIdleTicks = 100
)

// coarseClock is the time a hit compares expiries with: nanoseconds since
// base, advanced every clockTick by a goroutine that stops by itself after
// a second without checks. Reading the system clock costs 60–115 ns on the
// VMs this runs on (no vDSO clock), more than all the rest of a hit; an
// atomic load costs nothing.
//
// The goroutine refers to the coarseClock only, never to the Cache, so a
// Cache that is dropped is collected, and its clock stops within a second.
type coarseClock struct {
	base    time.Time    // with a monotonic reading
	now     atomic.Int64 // nanoseconds since base, as of the last tick
	running atomic.Bool  // a goroutine advances now
	used    atomic.Bool  // read since the last tick
}

func newCoarseClock() *coarseClock { return &coarseClock{base: time.Now()} }

// read returns the time since base, at most clockTick old.
func (c *coarseClock) read() int64 {
	if c.running.Load() {
		if !c.used.Load() { // a store only once per tick: no cache-line ping-pong
			c.used.Store(true)
		}
		return c.now.Load()
	}
	return c.start()
}

// exact reads the system clock, as misses do.
func (c *coarseClock) exact() int64 { return int64(time.Since(c.base)) }

// start publishes the exact time, then starts the goroutine unless another
// caller just did.
func (c *coarseClock) start() int64 {
	n := c.exact()
	c.now.Store(n) // before running is set: a reader that sees running sees this
	c.used.Store(true)
	if c.running.CompareAndSwap(false, true) {
		go c.tick()
	}
	return n
}

// tick advances now until the clock has not been read for clockIdleTicks.
func (c *coarseClock) tick() {
	t := time.NewTicker(clockTick)
	defer t.Stop()
	idle := 0
	for range t.C {
		c.now.Store(c.exact())
		if c.used.Swap(false) {
			idle = 0
			continue
		}
		if idle++; idle >= clockIdleTicks {
			c.running.Store(false)
			return
		}
	}
}
