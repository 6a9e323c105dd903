package ledgertest

import (
	"sync/atomic"
	"time"
)

// Clock is a clock that moves only when told to, for ledger.Config.Clock.
// It is safe for concurrent use.
type Clock struct {
	ns atomic.Int64 // unix nanoseconds
}

// NewClock returns a clock showing t.
func NewClock(t time.Time) *Clock {
	c := &Clock{}
	c.Set(t)
	return c
}

// Now returns the clock's time, in UTC.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// Advance moves the clock d forward and returns the new time.
func (c *Clock) Advance(d time.Duration) time.Time { return time.Unix(0, c.ns.Add(int64(d))).UTC() }
