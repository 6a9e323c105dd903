package entitlement

import (
	"sync"
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
// a second without checks, and for good when the clock's owner (the
// Cache, Cache.Close) closes it. Reading the system clock costs 60–115 ns on the
// VMs this runs on (no vDSO clock), more than all the rest of a hit; an
// atomic load costs nothing.
//
// The goroutine refers to the coarseClock only, never to the Cache, so a
// Cache that is dropped unclosed is still collected, and its clock stops
// within a second.
type coarseClock struct {
	base    time.Time    // with a monotonic reading
	now     atomic.Int64 // nanoseconds since base, as of the last tick
	running atomic.Bool  // a goroutine advances now
	used    atomic.Bool  // read since the last tick

	mu      sync.Mutex     // guards closed and the Add of ticking
	closed  bool           // no goroutine starts any more
	stop    chan struct{}  // closed by close: the goroutine returns
	ticking sync.WaitGroup // the goroutine, while it runs
}

func newCoarseClock() *coarseClock { return &coarseClock{base: time.Now(), stop: make(chan struct{})} }

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
// caller just did or the clock is closed. A closed clock is exact: every
// read comes here, as nothing advances now any more.
func (c *coarseClock) start() int64 {
	n := c.exact()
	c.now.Store(n) // before running is set: a reader that sees running sees this
	c.used.Store(true)
	if c.running.CompareAndSwap(false, true) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed {
			c.running.Store(false)
			return n
		}
		c.ticking.Add(1)
		go func() {
			defer c.ticking.Done()
			c.tick()
		}()
	}
	return n
}

// tick advances now until the clock has not been read for clockIdleTicks,
// or until it is closed.
func (c *coarseClock) tick() {
	defer c.running.Store(false)
	t := time.NewTicker(clockTick)
	defer t.Stop()
	idle := 0
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.now.Store(c.exact())
		if c.used.Swap(false) {
			idle = 0
			continue
		}
		if idle++; idle >= clockIdleTicks {
			return
		}
	}
}

// close stops the goroutine, if it runs, and waits until it has returned;
// no other starts. Reads go on, exact.
func (c *coarseClock) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.stop)
	}
	c.mu.Unlock()
	c.ticking.Wait()
}
