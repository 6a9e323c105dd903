package ledger

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// pacer spaces one reporter's calls to its cloud, for every Target alike:
// at most Limits.Rate calls per second; halved when the cloud throttles
// (down to ReporterConfig.MinRate); raised by a tenth after each call that
// was not throttled, back up to Limits.Rate (without one, without bound).
// A throttled call's retry-after hint pauses every call until it passed.
//
// The spacing runs on real time (it only decides how fast to call); the
// pause runs on the ledger's clock, since it decides which buckets are due.
type pacer struct {
	mu      sync.Mutex
	lim     *rate.Limiter
	ceiling rate.Limit // Limits.Rate, or Inf
	floor   rate.Limit // ReporterConfig.MinRate
	burst   int
	// prev and last are the real starts of the last two calls, to
	// estimate the rate of an uncapped reporter when it is first throttled.
	prev, last time.Time
	until      time.Time // ledger time before which no call is made
}

func newPacer(r float64, burst int, floor float64) *pacer {
	p := &pacer{ceiling: rate.Inf, floor: rate.Limit(floor), burst: max(burst, 1)}
	if r > 0 {
		p.ceiling = rate.Limit(r)
	}
	p.lim = rate.NewLimiter(p.ceiling, p.burst)
	return p
}

// wait blocks until the next call may start.
func (p *pacer) wait(ctx context.Context) error {
	if err := p.lim.Wait(ctx); err != nil {
		return err
	}
	p.mu.Lock()
	p.prev, p.last = p.last, time.Now()
	p.mu.Unlock()
	return nil
}

// paused reports whether a Retry-After still runs at ledger time now.
func (p *pacer) paused(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return now.Before(p.until)
}

// resume is the ledger time at which calls may go on (zero if not paused).
func (p *pacer) resume() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.until
}

func (p *pacer) rate() float64 {
	l := p.lim.Limit()
	if l == rate.Inf {
		return math.Inf(1)
	}
	return float64(l)
}

// observe adapts the pace to a call's answer at ledger time now, and
// reports whether the call was throttled.
func (p *pacer) observe(now time.Time, err error, results []Result) bool {
	throttled := errors.Is(err, ErrThrottled)
	var after time.Duration
	if throttled {
		after = ResultOf(err).RetryAfter
	}
	if err == nil {
		for _, res := range results {
			if res.Throttled {
				throttled = true
				after = max(after, res.RetryAfter)
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.lim.Limit()
	if !throttled {
		if cur != p.ceiling {
			p.lim.SetLimit(min(cur*1.1, p.ceiling))
		}
		return false
	}
	if cur == rate.Inf {
		// Uncapped: start from the rate the last call came at.
		cur = 2 * p.floor
		if gap := p.last.Sub(p.prev); !p.prev.IsZero() && gap > 0 {
			cur = max(rate.Limit(float64(time.Second)/float64(gap)), cur)
		}
		p.lim.SetBurst(p.burst)
	}
	p.lim.SetLimit(max(cur/2, min(p.floor, p.ceiling)))
	if after > 0 {
		p.until = later(p.until, now.Add(after))
	}
	return true
}
