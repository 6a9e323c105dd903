package marketplace

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// RetryConfig controls how RetryFunc retries a failing operation. The zero
// value is valid and means a single attempt with no waiting, so a config
// built field by field can never loop or sleep by accident.
type RetryConfig struct {
	// MaxAttempts is the total number of attempts, the first included.
	// Zero or less means exactly one attempt.
	MaxAttempts int
	// BaseDelay is the wait after the first failed attempt; it doubles after
	// every further failure (BaseDelay * 2^(attempt-1)), so a struggling
	// service gets progressively more room. Zero means no backoff.
	BaseDelay time.Duration
	// MaxDelay caps the exponential backoff so a long series of attempts
	// does not end up waiting for hours. It caps neither the jitter nor a
	// retry-after hint from the server. Zero means no cap.
	MaxDelay time.Duration
	// MaxJitter bounds a uniformly random delay in [0, MaxJitter) added to
	// every wait, so many clients that failed together do not all retry at
	// the same instant. Zero means no jitter.
	MaxJitter time.Duration
}

// DefaultRetryConfig returns the configuration of the seed API: 3 attempts,
// a 1 s base delay doubling per attempt up to 30 s, and up to 500 ms of
// jitter. It suits calls to a cloud metering or subscription API, whose
// throttling usually clears within seconds.
func DefaultRetryConfig() RetryConfig {
	return RetryConfig{
		MaxAttempts: 3,
		BaseDelay:   time.Second,
		MaxDelay:    30 * time.Second,
		MaxJitter:   500 * time.Millisecond,
	}
}

// RetryFunc calls fn until it succeeds, cfg.MaxAttempts attempts have been
// made, fn returns an error marked with Permanent, or ctx is done.
//
// Between attempts it waits the exponential backoff described by cfg plus a
// random jitter; if the error carries a retry-after hint (see WithRetryAfter),
// it waits at least that long, because retrying earlier than the server asked
// only earns another throttling response.
//
// A permanent error is returned as is, after the attempt that produced it.
// When ctx is done before an attempt or during a wait, RetryFunc returns at
// once with an error that matches both ctx.Err() and the last error of fn.
// When every attempt fails, the error names operation and the number of
// attempts and wraps the last error of fn. fn should itself observe ctx, so
// that an attempt in progress stops too.
func RetryFunc(ctx context.Context, cfg RetryConfig, operation string, fn func() error) error {
	return retry(ctx, cfg, operation, fn, sleepContext, randomJitter)
}

// retry is RetryFunc with its clock and randomness injected, so tests can
// check every computed wait without spending it.
func retry(ctx context.Context, cfg RetryConfig, operation string, fn func() error,
	sleep func(context.Context, time.Duration) error, jitter func(time.Duration) time.Duration) error {
	attempts := max(cfg.MaxAttempts, 1)
	var last error
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return stopped(operation, attempt-1, err, last)
		}
		last = fn()
		if last == nil {
			return nil
		}
		if IsPermanent(last) {
			return last
		}
		if attempt >= attempts {
			return fmt.Errorf("%s: giving up after %d %s: %w", operation, attempt, plural(attempt, "attempt"), last)
		}
		wait := cfg.backoff(attempt)
		if j := jitter(cfg.MaxJitter); j > 0 {
			wait = min(wait, math.MaxInt64-j) + j // saturate, do not wrap
		}
		if hint, ok := RetryAfter(last); ok && hint > wait {
			wait = hint
		}
		if err := sleep(ctx, wait); err != nil {
			return stopped(operation, attempt, err, last)
		}
	}
}

// backoff returns the exponential part of the wait after failed attempt
// number attempt (1-based): BaseDelay * 2^(attempt-1), capped by MaxDelay
// when set, and saturating instead of overflowing.
func (cfg RetryConfig) backoff(attempt int) time.Duration {
	d := max(cfg.BaseDelay, 0)
	for i := 1; i < attempt && d > 0; i++ {
		if d > math.MaxInt64/2 {
			d = math.MaxInt64
			break
		}
		d *= 2
		if cfg.MaxDelay > 0 && d >= cfg.MaxDelay {
			break
		}
	}
	if cfg.MaxDelay > 0 && d > cfg.MaxDelay {
		d = cfg.MaxDelay
	}
	return d
}

// stopped builds the error for a context that ended after made attempts.
func stopped(operation string, made int, ctxErr, last error) error {
	if last == nil {
		return fmt.Errorf("%s: not attempted: %w", operation, ctxErr)
	}
	return fmt.Errorf("%s: stopped after %d %s: %w; last error: %w", operation, made, plural(made, "attempt"), ctxErr, last)
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// randomJitter returns a uniformly random duration in [0, limit), or 0 when
// limit is not positive. It uses the runtime-seeded math/rand/v2 source,
// which is safe for concurrent use.
func randomJitter(limit time.Duration) time.Duration {
	if limit <= 0 {
		return 0
	}
	return rand.N(limit)
}

// sleepContext waits for d or until ctx is done, whichever comes first, and
// returns ctx.Err() in the latter case.
func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ParseRetryAfter reads an HTTP Retry-After header value at time now: a
// number of seconds, or an HTTP date (RFC 9110, in any of its three
// formats). It returns zero for an empty, malformed or past value.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(math.MaxInt64/time.Second))) * time.Second
	}
	for _, layout := range []string{"Mon, 02 Jan 2006 15:04:05 GMT", time.RFC850, time.ANSIC} {
		if t, err := time.Parse(layout, v); err == nil {
			return max(t.Sub(now), 0)
		}
	}
	return 0
}
