package marketplace

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

var errFlaky = errors.New("flaky")

// failing returns fn that fails every call with err and counts the calls.
func failing(err error) (fn func() error, calls *int) {
	calls = new(int)
	return func() error { *calls++; return err }, calls
}

// recordingSleep returns a sleep function for retry that records the waits
// it is asked for instead of spending them.
func recordingSleep() (sleep func(context.Context, time.Duration) error, waits *[]time.Duration) {
	waits = new([]time.Duration)
	return func(ctx context.Context, d time.Duration) error {
		*waits = append(*waits, d)
		return ctx.Err()
	}, waits
}

func noJitter(time.Duration) time.Duration { return 0 }

func TestDefaultRetryConfig(t *testing.T) {
	got := DefaultRetryConfig()
	want := RetryConfig{MaxAttempts: 3, BaseDelay: time.Second, MaxDelay: 30 * time.Second, MaxJitter: 500 * time.Millisecond}
	if got != want {
		t.Errorf("DefaultRetryConfig() = %+v, want %+v", got, want)
	}
}

func TestRetryFuncAttempts(t *testing.T) {
	tests := []struct {
		maxAttempts int
		want        int
	}{
		{-1, 1},
		{0, 1},
		{1, 1},
		{3, 3},
		{7, 7},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint("max=", tc.maxAttempts), func(t *testing.T) {
			fn, calls := failing(errFlaky)
			err := RetryFunc(t.Context(), RetryConfig{MaxAttempts: tc.maxAttempts}, "meter usage", fn)
			if *calls != tc.want {
				t.Errorf("fn called %d times, want %d", *calls, tc.want)
			}
			if !errors.Is(err, errFlaky) {
				t.Errorf("err = %v, want it to wrap the last error", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "meter usage") || !strings.Contains(msg, fmt.Sprintf("after %d attempt", tc.want)) {
				t.Errorf("error %q does not name the operation and %d attempts", msg, tc.want)
			}
		})
	}
}

func TestRetryFuncSucceedsAfterFailures(t *testing.T) {
	calls := 0
	err := RetryFunc(t.Context(), RetryConfig{MaxAttempts: 5}, "op", func() error {
		calls++
		if calls < 3 {
			return errFlaky
		}
		return nil
	})
	if err != nil {
		t.Fatalf("RetryFunc = %v, want nil", err)
	}
	if calls != 3 {
		t.Errorf("fn called %d times, want 3", calls)
	}
}

func TestRetryFuncPermanentStopsAtOnce(t *testing.T) {
	perm := Permanent(errors.New("invalid dimension"))
	tests := []struct {
		name string
		err  error
	}{
		{"permanent", perm},
		{"wrapped permanent", fmt.Errorf("aws: %w", perm)},
		{"permanent with retry-after", WithRetryAfter(perm, time.Hour)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sleep, waits := recordingSleep()
			fn, calls := failing(tc.err)
			// A base delay of an hour: any retry would be obvious.
			cfg := RetryConfig{MaxAttempts: 5, BaseDelay: time.Hour}
			err := retry(t.Context(), cfg, "op", fn, sleep, noJitter)
			if *calls != 1 {
				t.Errorf("fn called %d times, want 1", *calls)
			}
			if len(*waits) != 0 {
				t.Errorf("waited %v, want no wait", *waits)
			}
			if err != tc.err {
				t.Errorf("err = %v, want the permanent error returned as is", err)
			}
		})
	}

	// The same through the real clock: it must return well before the hour.
	start := time.Now()
	fn, calls := failing(perm)
	err := RetryFunc(t.Context(), RetryConfig{MaxAttempts: 5, BaseDelay: time.Hour}, "op", fn)
	if err != perm || *calls != 1 {
		t.Errorf("RetryFunc = %v after %d calls, want the permanent error after 1", err, *calls)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("RetryFunc took %v on a permanent error", d)
	}
}

func TestRetryWaits(t *testing.T) {
	const ms = time.Millisecond
	maxJitter := func(limit time.Duration) time.Duration { return max(limit-1, 0) }
	tests := []struct {
		name   string
		cfg    RetryConfig
		jitter func(time.Duration) time.Duration
		err    error
		want   []time.Duration
	}{
		{
			name:   "zero config waits nothing",
			cfg:    RetryConfig{MaxAttempts: 3},
			jitter: randomJitter,
			err:    errFlaky,
			want:   []time.Duration{0, 0},
		},
		{
			name:   "exponential",
			cfg:    RetryConfig{MaxAttempts: 5, BaseDelay: 100 * ms},
			jitter: noJitter,
			err:    errFlaky,
			want:   []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms},
		},
		{
			name:   "capped by MaxDelay",
			cfg:    RetryConfig{MaxAttempts: 5, BaseDelay: 100 * ms, MaxDelay: 300 * ms},
			jitter: noJitter,
			err:    errFlaky,
			want:   []time.Duration{100 * ms, 200 * ms, 300 * ms, 300 * ms},
		},
		{
			name:   "jitter added after the cap",
			cfg:    RetryConfig{MaxAttempts: 3, BaseDelay: 100 * ms, MaxDelay: 100 * ms, MaxJitter: 50 * ms},
			jitter: maxJitter,
			err:    errFlaky,
			want:   []time.Duration{150*ms - 1, 150*ms - 1},
		},
		{
			name:   "retry-after longer than backoff wins",
			cfg:    RetryConfig{MaxAttempts: 3, BaseDelay: 100 * ms},
			jitter: noJitter,
			err:    WithRetryAfter(errFlaky, 5*time.Second),
			want:   []time.Duration{5 * time.Second, 5 * time.Second},
		},
		{
			name:   "backoff longer than retry-after wins",
			cfg:    RetryConfig{MaxAttempts: 4, BaseDelay: 100 * ms},
			jitter: noJitter,
			err:    fmt.Errorf("wrapped: %w", WithRetryAfter(errFlaky, 150*ms)),
			want:   []time.Duration{150 * ms, 200 * ms, 400 * ms},
		},
		{
			name:   "negative values are treated as zero",
			cfg:    RetryConfig{MaxAttempts: 2, BaseDelay: -time.Second, MaxDelay: -time.Second, MaxJitter: -time.Second},
			jitter: randomJitter,
			err:    errFlaky,
			want:   []time.Duration{0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sleep, waits := recordingSleep()
			fn, calls := failing(tc.err)
			err := retry(t.Context(), tc.cfg, "op", fn, sleep, tc.jitter)
			if !errors.Is(err, errFlaky) {
				t.Errorf("err = %v, want it to wrap errFlaky", err)
			}
			if want := len(tc.want) + 1; *calls != want {
				t.Errorf("fn called %d times, want %d", *calls, want)
			}
			if !slices.Equal(*waits, tc.want) {
				t.Errorf("waits = %v, want %v", *waits, tc.want)
			}
		})
	}
}

func TestRetryBackoffSaturates(t *testing.T) {
	cfg := RetryConfig{BaseDelay: time.Hour}
	prev := time.Duration(0)
	for attempt := 1; attempt < 200; attempt++ {
		d := cfg.backoff(attempt)
		if d < prev {
			t.Fatalf("backoff(%d) = %v, less than backoff(%d) = %v: overflow", attempt, d, attempt-1, prev)
		}
		prev = d
	}
	if prev != math.MaxInt64 {
		t.Errorf("backoff(199) = %v, want saturation at MaxInt64", prev)
	}

	// Jitter on top of a saturated backoff must not wrap negative either.
	sleep, waits := recordingSleep()
	fn, _ := failing(errFlaky)
	cfg = RetryConfig{MaxAttempts: 80, BaseDelay: time.Hour, MaxJitter: time.Second}
	_ = retry(t.Context(), cfg, "op", fn, sleep, func(time.Duration) time.Duration { return time.Second - 1 })
	for i, w := range *waits {
		if w <= 0 {
			t.Fatalf("wait %d = %v, want positive", i, w)
		}
	}
}

func TestRandomJitterRange(t *testing.T) {
	if j := randomJitter(0); j != 0 {
		t.Errorf("randomJitter(0) = %v, want 0", j)
	}
	if j := randomJitter(-time.Second); j != 0 {
		t.Errorf("randomJitter(-1s) = %v, want 0", j)
	}
	const limit = 10 * time.Millisecond
	seen := map[time.Duration]bool{}
	for range 1000 {
		j := randomJitter(limit)
		if j < 0 || j >= limit {
			t.Fatalf("randomJitter(%v) = %v, outside [0, %v)", limit, j, limit)
		}
		seen[j] = true
	}
	if len(seen) < 100 {
		t.Errorf("1000 draws gave only %d distinct values: not random", len(seen))
	}
}

func TestRetryFuncContextCancelledDuringWait(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	time.AfterFunc(30*time.Millisecond, cancel)

	fn, calls := failing(errFlaky)
	start := time.Now()
	// Would wait 10 s before the second attempt if not cancelled.
	err := RetryFunc(ctx, RetryConfig{MaxAttempts: 3, BaseDelay: 10 * time.Second}, "report usage", fn)
	elapsed := time.Since(start)

	if elapsed > 2*time.Second {
		t.Errorf("RetryFunc returned after %v, want promptly after the cancel", elapsed)
	}
	if *calls != 1 {
		t.Errorf("fn called %d times, want 1", *calls)
	}
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errFlaky) {
		t.Errorf("err = %v, want it to match both context.Canceled and the last error", err)
	}
	if !strings.Contains(err.Error(), "report usage") {
		t.Errorf("error %q does not name the operation", err)
	}
}

func TestRetryFuncContextDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	fn, _ := failing(WithRetryAfter(errFlaky, time.Hour))
	start := time.Now()
	err := RetryFunc(ctx, RetryConfig{MaxAttempts: 3}, "op", fn)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("RetryFunc returned after %v with a 30ms deadline", d)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errFlaky) {
		t.Errorf("err = %v, want it to match DeadlineExceeded and the last error", err)
	}
}

func TestRetryFuncContextCancelledBefore(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	fn, calls := failing(errFlaky)
	err := RetryFunc(ctx, DefaultRetryConfig(), "op", fn)
	if *calls != 0 {
		t.Errorf("fn called %d times on a cancelled context, want 0", *calls)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestRetryFuncHonoursRetryAfter(t *testing.T) {
	const hint = 50 * time.Millisecond
	var times []time.Time
	err := RetryFunc(t.Context(), RetryConfig{MaxAttempts: 2, BaseDelay: time.Millisecond}, "op", func() error {
		times = append(times, time.Now())
		if len(times) == 1 {
			return WithRetryAfter(errFlaky, hint)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("RetryFunc = %v, want nil", err)
	}
	if len(times) != 2 {
		t.Fatalf("fn called %d times, want 2", len(times))
	}
	gap := times[1].Sub(times[0])
	if gap < hint {
		t.Errorf("second attempt came %v after the first, before the %v retry-after hint", gap, hint)
	}
	if gap > 5*time.Second {
		t.Errorf("second attempt came %v after the first, far beyond the %v hint", gap, hint)
	}
}

func TestRetryFuncBacksOffInRealTime(t *testing.T) {
	const base = 20 * time.Millisecond
	fn, calls := failing(errFlaky)
	start := time.Now()
	_ = RetryFunc(t.Context(), RetryConfig{MaxAttempts: 3, BaseDelay: base}, "op", fn)
	elapsed := time.Since(start)
	if *calls != 3 {
		t.Errorf("fn called %d times, want 3", *calls)
	}
	// Waits of 20 ms then 40 ms.
	if elapsed < 3*base {
		t.Errorf("3 attempts took %v, want at least %v of backoff", elapsed, 3*base)
	}
	if elapsed > 5*time.Second {
		t.Errorf("3 attempts took %v, far beyond the %v of backoff", elapsed, 3*base)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"120", 2 * time.Minute},
		{" 3 ", 3 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"99999999999999999999", 0},
		{"9223372036854775807", time.Duration(math.MaxInt64/time.Second) * time.Second},
		{"Tue, 10 Mar 2026 12:01:30 GMT", 90 * time.Second},
		{"Tuesday, 10-Mar-26 12:00:10 GMT", 10 * time.Second},
		{"Tue Mar 10 12:00:05 2026", 5 * time.Second},
		{"Tue, 10 Mar 2026 11:59:00 GMT", 0},
	} {
		if got := ParseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
