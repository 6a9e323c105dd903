package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
	"github.com/saasmarket/marketplace/sqlite"
)

// rtTarget is a scripted Target: it records every call and answers with
// its answer function.
type rtTarget struct {
	limits ledger.Limits
	answer func(rs []ledger.Report) ([]ledger.Result, error)
	group  func(r ledger.Report) (string, error)
	size   int

	mu    sync.Mutex
	calls [][]ledger.Report
	times []time.Time
}

func (t *rtTarget) Provider() marketplace.CloudProvider { return marketplace.AWS }
func (t *rtTarget) Limits() ledger.Limits               { return t.limits }
func (t *rtTarget) Send(_ context.Context, rs []ledger.Report) ([]ledger.Result, error) {
	t.mu.Lock()
	t.calls = append(t.calls, slices.Clone(rs))
	t.times = append(t.times, time.Now())
	t.mu.Unlock()
	if t.answer == nil {
		return reportAll(rs), nil
	}
	return t.answer(rs)
}

func reportAll(rs []ledger.Report) []ledger.Result {
	out := make([]ledger.Result, len(rs))
	for i, r := range rs {
		out[i] = ledger.Result{Outcome: ledger.OutcomeReported, RecordID: "rec-" + r.ID}
	}
	return out
}

// rtGroupTarget adds Grouper and Sizer.
type rtGroupTarget struct{ *rtTarget }

func (t rtGroupTarget) GroupOf(_ context.Context, r ledger.Report) (string, error) { return t.group(r) }
func (t rtGroupTarget) Size(ledger.Report) int                                     { return t.size }

var rtNow = time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)

type rtEnv struct {
	l     *ledger.Ledger
	store *sqlite.Store
	cnt   *ledger.Counters
	clock *ledgertest.Clock
}

func (e *rtEnv) advance(d time.Duration) { e.clock.Advance(d) }

func rtOpen(t *testing.T, cfg ledger.Config) *rtEnv {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	e := &rtEnv{store: st, cnt: &ledger.Counters{}, clock: ledgertest.NewClock(rtNow)}
	cfg.Clock, cfg.Metrics = e.clock.Now, e.cnt
	cfg.Logger = slog.New(slog.DiscardHandler)
	e.l = ledger.New(st, cfg)
	t.Cleanup(func() {
		e.l.Close()
		st.Close()
	})
	return e
}

// rtSealed records one unit for each customer in the previous hour and seals it.
func (e *rtEnv) rtSealed(t *testing.T, customers ...string) {
	t.Helper()
	var recs []ledger.Record
	for _, c := range customers {
		recs = append(recs, ledger.Record{Provider: marketplace.AWS, Customer: c, Dimension: "req", Quantity: 1, Time: rtNow.Add(-time.Hour)})
	}
	if _, err := e.l.Ingest(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func (e *rtEnv) states(t *testing.T) map[string]ledger.Bucket {
	t.Helper()
	if err := e.l.Fold(t.Context()); err != nil {
		t.Fatal(err)
	}
	bs, err := e.l.Buckets(t.Context(), ledger.BucketFilter{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]ledger.Bucket{}
	for _, b := range bs {
		out[b.Customer+"@"+b.Hour.Format("15")] = b
	}
	return out
}

func TestReporterGroupsCalls(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	var customers []string
	for i := range 11 {
		customers = append(customers, fmt.Sprintf("%s-%02d", []string{"prodA", "prodB"}[i%2], i))
	}
	e.rtSealed(t, customers...)
	tg := rtGroupTarget{&rtTarget{limits: ledger.Limits{MaxItems: 4, MaxBytes: 300}, size: 100,
		group: func(r ledger.Report) (string, error) { return strings.Split(r.Customer, "-")[0], nil }}}
	st, err := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{}).RunOnce(t.Context())
	if err != nil || st.Reported != 11 {
		t.Fatalf("round: %+v, %v", st, err)
	}
	for _, call := range tg.calls {
		if len(call) > 3 { // MaxBytes 300 / 100 bytes each is tighter than MaxItems 4
			t.Errorf("call of %d reports exceeds the size limit", len(call))
		}
		group := strings.Split(call[0].Customer, "-")[0]
		for _, r := range call {
			if !strings.HasPrefix(r.Customer, group) {
				t.Errorf("call mixes groups: %s and %s", group, r.Customer)
			}
			if r.Attempt != 1 || r.Quantity != 1 || r.Hour != ledger.HourOf(rtNow.Add(-time.Hour)) {
				t.Errorf("report: %+v", r)
			}
		}
	}
	if len(tg.calls) != 4 { // prodA: 6 → 3+3, prodB: 5 → 3+2
		t.Errorf("%d calls, want 4", len(tg.calls))
	}
	for _, b := range e.states(t) {
		if b.State != ledger.StateReported || b.RecordID != "rec-"+b.ReportID {
			t.Errorf("bucket %s: %s %q", b.Customer, b.State, b.RecordID)
		}
	}
	if e.cnt.Get("reported/aws") != 11 {
		t.Errorf("reported counter = %d", e.cnt.Get("reported/aws"))
	}
}

func TestReporterWholeCallErrors(t *testing.T) {
	cause := errors.New("boom")
	tests := []struct {
		name         string
		err          error
		state        ledger.State
		maybeApplied bool
		minWait      time.Duration
	}{
		{"ambiguous", cause, ledger.StateSealed, true, time.Second},
		{"not applied with retry-after", marketplace.WithRetryAfter(fmt.Errorf("throttled: %w", ledger.ErrNotApplied), time.Hour), ledger.StateSealed, false, time.Hour},
		{"permanent", marketplace.Permanent(cause), ledger.StateRejected, false, 0},
		{"past deadline", fmt.Errorf("%w: TimestampOutOfBounds", ledger.ErrPastDeadline), ledger.StateCarried, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := rtOpen(t, ledger.Config{})
			e.rtSealed(t, "c1")
			tg := &rtTarget{answer: func([]ledger.Report) ([]ledger.Result, error) { return nil, tc.err }}
			if _, err := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{BackoffBase: time.Second}).RunOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			b := e.states(t)["c1@09"]
			if b.State != tc.state || b.MaybeApplied != tc.maybeApplied || b.Reason == "" {
				t.Errorf("bucket: state %s maybeApplied %v reason %q; want %s %v", b.State, b.MaybeApplied, b.Reason, tc.state, tc.maybeApplied)
			}
			if tc.state == ledger.StateSealed && b.NextAttempt.Before(rtNow.Add(tc.minWait)) {
				t.Errorf("next attempt %s is sooner than %v", b.NextAttempt, tc.minWait)
			}
			if tc.state == ledger.StateCarried {
				if cur := e.states(t)["c1@10"]; cur.Quantity != 1 || cur.State != ledger.StateOpen {
					t.Errorf("carried usage not in the current hour: %+v", cur)
				}
			}
		})
	}
}

func TestReporterPerItemOutcomes(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	e.rtSealed(t, "ok", "gone", "other", "retry")
	tg := &rtTarget{answer: func(rs []ledger.Report) ([]ledger.Result, error) {
		out := make([]ledger.Result, len(rs))
		for i, r := range rs {
			switch r.Customer {
			case "ok":
				out[i] = ledger.Result{Outcome: ledger.OutcomeReported, RecordID: "r1"}
			case "gone":
				out[i] = ledger.Result{Outcome: ledger.OutcomeRejected, Reason: "CustomerNotSubscribed"}
			case "other":
				out[i] = ledger.Result{Outcome: ledger.OutcomeConflict, Reason: "DuplicateRecord"}
			default:
				out[i] = ledger.Result{Outcome: ledger.OutcomeRetry, Reason: "unprocessed"}
			}
		}
		return out, nil
	}}
	r := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{})
	st, err := r.RunOnce(t.Context())
	if err != nil || st.Reported != 1 || st.Rejected != 1 || st.Conflict != 1 || st.Retried != 1 {
		t.Fatalf("round: %+v, %v", st, err)
	}
	got := e.states(t)
	for cust, want := range map[string]ledger.State{"ok": ledger.StateReported, "gone": ledger.StateRejected, "other": ledger.StateConflict, "retry": ledger.StateSealed} {
		if b := got[cust+"@09"]; b.State != want {
			t.Errorf("%s: %s, want %s", cust, b.State, want)
		}
	}
	if got["gone@09"].Reason != "CustomerNotSubscribed" {
		t.Errorf("rejection reason lost: %q", got["gone@09"].Reason)
	}
	// The retry is due only after its backoff; then it is sent with the same id.
	if st, _ := r.RunOnce(t.Context()); st.Claimed != 0 {
		t.Errorf("retried before its backoff: %+v", st)
	}
	e.advance(time.Minute)
	tg.answer = nil
	if st, _ := r.RunOnce(t.Context()); st.Reported != 1 {
		t.Errorf("retry round: %+v", st)
	}
	if first, last := tg.calls[0], tg.calls[len(tg.calls)-1]; last[0].Attempt != 2 || !slices.ContainsFunc(first, func(x ledger.Report) bool { return x.ID == last[0].ID }) {
		t.Errorf("retry is not the same report: first %+v, retry %+v", first, last)
	}
	if e.cnt.Get("rejected") != 1 || e.cnt.Get("conflict") != 1 || e.cnt.Get("retried") != 1 {
		t.Errorf("counters: rejected %d conflict %d retried %d", e.cnt.Get("rejected"), e.cnt.Get("conflict"), e.cnt.Get("retried"))
	}
}

func TestReporterWrongResultCountRetries(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	e.rtSealed(t, "a", "b")
	tg := &rtTarget{answer: func(rs []ledger.Report) ([]ledger.Result, error) { return reportAll(rs[:1]), nil }}
	if _, err := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{}).RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, b := range e.states(t) {
		if b.State != ledger.StateSealed || !b.MaybeApplied {
			t.Errorf("%s: %s maybeApplied=%v; a malformed answer must be retried as ambiguous", b.Customer, b.State, b.MaybeApplied)
		}
	}
}

func TestReporterGroupErrors(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	e.rtSealed(t, "unknown", "later", "fine")
	tg := rtGroupTarget{&rtTarget{group: func(r ledger.Report) (string, error) {
		switch r.Customer {
		case "unknown":
			return "", marketplace.Permanent(errors.New("no subscription for customer"))
		case "later":
			return "", errors.New("subscription store unavailable")
		}
		return "g", nil
	}}}
	if _, err := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{}).RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := e.states(t)
	if got["unknown@09"].State != ledger.StateRejected || got["later@09"].State != ledger.StateSealed || got["fine@09"].State != ledger.StateReported {
		t.Errorf("states: unknown %s, later %s, fine %s", got["unknown@09"].State, got["later@09"].State, got["fine@09"].State)
	}
}

func TestReporterRateLimit(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	var customers []string
	for i := range 6 {
		customers = append(customers, fmt.Sprint("c", i))
	}
	e.rtSealed(t, customers...)
	tg := &rtTarget{limits: ledger.Limits{MaxItems: 1, Rate: 20, Burst: 1}}
	if _, err := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{}).RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(tg.times) != 6 {
		t.Fatalf("%d calls, want 6", len(tg.times))
	}
	// 6 calls at 20/s with a burst of 1 take at least 5 × 50 ms.
	if d := tg.times[5].Sub(tg.times[0]); d < 240*time.Millisecond {
		t.Errorf("6 calls took %v; the rate limit allows no less than 250ms", d)
	}
}

func TestReporterSkipsFutureHours(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	// A final seal after a late record seals the next hour early: it must
	// not be sent before that hour begins.
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.l.Record(ctx, ledger.Record{Provider: marketplace.AWS, Customer: "c", Dimension: "req", Quantity: 1, Time: rtNow}))
	_, err := e.l.SealCustomer(ctx, marketplace.AWS, "c")
	must(err)
	must(e.l.Record(ctx, ledger.Record{Provider: marketplace.AWS, Customer: "c", Dimension: "req", Quantity: 2, Time: rtNow}))
	_, err = e.l.SealCustomer(ctx, marketplace.AWS, "c")
	must(err)
	tg := &rtTarget{}
	r := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{})
	if st, _ := r.RunOnce(ctx); st.Reported != 1 {
		t.Errorf("first round: %+v, want only the current hour", st)
	}
	e.advance(time.Hour)
	if st, _ := r.RunOnce(ctx); st.Reported != 1 {
		t.Errorf("next hour: %+v", st)
	}
}

func TestBufferedDurability(t *testing.T) {
	e := rtOpen(t, ledger.Config{Durability: ledger.Buffered, FlushInterval: time.Hour})
	ctx := t.Context()
	res, err := e.l.Ingest(ctx, []ledger.Record{{Provider: marketplace.GCP, Customer: "c", Dimension: "d", Quantity: 3, EventID: "x"}})
	if err != nil || res.Accepted != 1 {
		t.Fatalf("ingest: %+v, %v", res, err)
	}
	if err := e.l.Fold(ctx); err != nil {
		t.Fatal(err)
	}
	if bs, _ := e.l.Buckets(ctx, ledger.BucketFilter{}); len(bs) != 0 {
		t.Errorf("buffered usage committed before its interval: %d buckets", len(bs))
	}
	if err := e.l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.l.Fold(ctx); err != nil {
		t.Fatal(err)
	}
	if bs, _ := e.l.Buckets(ctx, ledger.BucketFilter{}); len(bs) != 1 || bs[0].Quantity != 3 {
		t.Errorf("after Flush: %+v", bs)
	}
	// Close commits what is queued.
	if _, err := e.l.Ingest(ctx, []ledger.Record{{Provider: marketplace.GCP, Customer: "c", Dimension: "d", Quantity: 4}}); err != nil {
		t.Fatal(err)
	}
	e.l.Close()
	if _, err := e.l.Ingest(ctx, []ledger.Record{{Provider: marketplace.GCP, Customer: "c", Dimension: "d", Quantity: 1}}); !errors.Is(err, ledger.ErrClosed) {
		t.Errorf("ingest after close: %v", err)
	}
	l2 := ledger.New(e.store, ledger.Config{Clock: e.clock.Now})
	defer l2.Close()
	if err := l2.Fold(ctx); err != nil {
		t.Fatal(err)
	}
	if bs, _ := l2.Buckets(ctx, ledger.BucketFilter{}); len(bs) != 1 || bs[0].Quantity != 7 {
		t.Errorf("after Close: %+v", bs)
	}
}

func TestReporterReleasesWhatTheLeaseCannotCover(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	e.rtSealed(t, "a", "b", "c")
	tg := &rtTarget{limits: ledger.Limits{MaxItems: 1}}
	tg.answer = func(rs []ledger.Report) ([]ledger.Result, error) {
		e.advance(time.Minute) // a slow call
		return reportAll(rs), nil
	}
	// The release is logged at debug level: a round that sends nothing
	// reads the same as an idle one otherwise.
	var logs strings.Builder
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{Lease: 2 * time.Minute, SendTimeout: 50 * time.Second, Logger: logger})
	st, err := r.RunOnce(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Lease 2 min, send timeout 50 s: after the second slow call no third fits.
	if st.Reported != 2 || len(tg.calls) != 2 {
		t.Fatalf("round: %+v after %d calls, want 2 reported", st, len(tg.calls))
	}
	if want := `msg="report round released buckets unsent" provider=aws buckets=1 why="a call would outlive the lease"`; !strings.Contains(logs.String(), want) {
		t.Errorf("log %q, want a line with %s", logs.String(), want)
	}
	for _, b := range e.states(t) {
		if b.State == ledger.StateSealed && (b.MaybeApplied || b.Attempts != 0) {
			t.Errorf("released bucket %s: maybeApplied %v attempts %d", b.Customer, b.MaybeApplied, b.Attempts)
		}
	}
	if st, _ := r.RunOnce(t.Context()); st.Reported != 1 {
		t.Errorf("next round: %+v", st)
	}
}

// freezeTarget freezes a "plan" attribute read from a mutable setting.
type freezeTarget struct {
	*rtTarget
	mu     sync.Mutex
	plan   string
	frozen int
	fail   error
}

func (t *freezeTarget) Freeze(_ context.Context, r ledger.Report) (map[string]string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fail != nil {
		return nil, t.fail
	}
	t.frozen++
	return map[string]string{"plan": t.plan}, nil
}

func (t *freezeTarget) setPlan(p string) {
	t.mu.Lock()
	t.plan = p
	t.mu.Unlock()
}

// TestReporterFreezesAttributes: attributes are frozen once, before the
// first send, and every attempt carries them even after the setting they
// came from changed.
func TestReporterFreezesAttributes(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	e.rtSealed(t, "c1", "c2")
	lost := true
	tg := &freezeTarget{plan: "basic", rtTarget: &rtTarget{}}
	tg.answer = func(rs []ledger.Report) ([]ledger.Result, error) {
		if lost {
			return nil, errors.New("response lost") // maybe applied
		}
		return reportAll(rs), nil
	}
	r := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{})
	if _, err := r.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, b := range e.states(t) {
		if b.Attributes["plan"] != "basic" || b.State != ledger.StateSealed {
			t.Fatalf("after the first attempt: %v %v", b, b.Attributes)
		}
	}
	tg.setPlan("pro")
	lost = false
	e.advance(time.Hour)
	if st, err := r.RunOnce(t.Context()); err != nil || st.Reported != 2 {
		t.Fatalf("retry: %+v, %v", st, err)
	}
	if len(tg.calls) != 2 {
		t.Fatalf("%d calls", len(tg.calls))
	}
	for i, call := range tg.calls {
		for _, rep := range call {
			if rep.Attributes["plan"] != "basic" || rep.Attempt != i+1 {
				t.Errorf("call %d sent %+v, want plan basic", i, rep)
			}
		}
	}
	if tg.frozen != 2 {
		t.Errorf("Freeze called %d times for 2 buckets", tg.frozen)
	}
}

func TestReporterFreezeErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		state ledger.State
	}{
		{"permanent", marketplace.Permanent(errors.New("no stored subscription")), ledger.StateRejected},
		{"transient", errors.New("store down"), ledger.StateSealed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := rtOpen(t, ledger.Config{})
			e.rtSealed(t, "c1")
			tg := &freezeTarget{rtTarget: &rtTarget{}, fail: tc.err}
			if _, err := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{}).RunOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			b := e.states(t)["c1@09"]
			if b.State != tc.state || b.MaybeApplied || len(tg.calls) != 0 || !strings.Contains(b.Reason, tc.err.Error()) {
				t.Errorf("bucket %v (%s) after %d calls, want %s, not maybe applied, nothing sent", b, b.Reason, len(tg.calls), tc.state)
			}
		})
	}
}

// TestReporterAdaptsToThrottling: a throttled call halves the rate, and a
// Retry-After stops the round: the other buckets are released unsent until
// it has passed; calls that are not throttled raise the rate again.
func TestReporterAdaptsToThrottling(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	e.rtSealed(t, "a", "b", "c", "d")
	throttle := true
	tg := &rtTarget{limits: ledger.Limits{MaxItems: 1, Rate: 100}}
	tg.answer = func(rs []ledger.Report) ([]ledger.Result, error) {
		if throttle {
			return nil, marketplace.WithRetryAfter(fmt.Errorf("%w: 429", ledger.ErrThrottled), 30*time.Second)
		}
		return reportAll(rs), nil
	}
	r := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{})
	st, err := r.RunOnce(t.Context())
	if err != nil || st.Calls != 1 || st.Throttled != 1 {
		t.Fatalf("throttled round: %+v, %v; want one call, then a pause", st, err)
	}
	if got := r.Rate(); got != 50 {
		t.Errorf("rate after throttling = %v, want 50", got)
	}
	for _, b := range e.states(t) {
		if b.State != ledger.StateSealed || b.MaybeApplied || b.NextAttempt.Before(rtNow.Add(30*time.Second)) {
			t.Errorf("%v: next attempt %v, maybe applied %v; want sealed, not before the Retry-After", b, b.NextAttempt, b.MaybeApplied)
		}
	}
	e.advance(10 * time.Second)
	if st, _ := r.RunOnce(t.Context()); st.Claimed != 0 {
		t.Errorf("claimed during the Retry-After: %+v", st)
	}
	throttle = false
	e.advance(time.Minute)
	if st, err := r.RunOnce(t.Context()); err != nil || st.Reported != 4 {
		t.Fatalf("after the Retry-After: %+v, %v", st, err)
	}
	if got := r.Rate(); got <= 50 || got > 100 {
		t.Errorf("rate after 4 good calls = %v, want recovering from 50 towards 100", got)
	}
}

// TestReporterThrottledUncapped: without Limits.Rate the reporter calls as
// fast as it can until throttled, then paces itself.
func TestReporterThrottledUncapped(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	e.rtSealed(t, "a", "b", "c", "d", "e", "f")
	n := 0
	tg := &rtTarget{limits: ledger.Limits{MaxItems: 1}}
	tg.answer = func(rs []ledger.Report) ([]ledger.Result, error) {
		n++
		if n == 3 {
			return []ledger.Result{{Outcome: ledger.OutcomeRetry, Throttled: true, Reason: "RESOURCE_EXHAUSTED"}}, nil
		}
		return reportAll(rs), nil
	}
	r := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{})
	if !math.IsInf(r.Rate(), 1) {
		t.Fatalf("initial rate %v", r.Rate())
	}
	st, err := r.RunOnce(t.Context())
	if err != nil || st.Reported != 5 || st.Throttled != 1 {
		t.Fatalf("round: %+v, %v", st, err)
	}
	if math.IsInf(r.Rate(), 1) {
		t.Error("still uncapped after a throttled answer")
	}
	// After the throttled call, calls are spaced again.
	if d := tg.times[5].Sub(tg.times[3]); d <= 0 {
		t.Errorf("calls after throttling %v apart", d)
	}
}

// TestReporterBisectsBadReport: a call refused because of one unnamed
// report is split until that report is alone; it alone is rejected.
func TestReporterBisectsBadReport(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	var customers []string
	for i := range 7 {
		customers = append(customers, fmt.Sprint("c", i))
	}
	e.rtSealed(t, customers...)
	tg := &rtTarget{}
	tg.answer = func(rs []ledger.Report) ([]ledger.Result, error) {
		for _, r := range rs {
			if r.Customer == "c4" {
				return nil, fmt.Errorf("%w: InvalidCustomerIdentifier", ledger.ErrBadReport)
			}
		}
		return reportAll(rs), nil
	}
	st, err := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{}).RunOnce(t.Context())
	if err != nil || st.Reported != 6 || st.Rejected != 1 {
		t.Fatalf("round: %+v, %v", st, err)
	}
	for _, b := range e.states(t) {
		want := ledger.StateReported
		if b.Customer == "c4" {
			want = ledger.StateRejected
		}
		if b.State != want || b.Attempts != 1 {
			t.Errorf("%v, want %s after one attempt", b, want)
		}
	}
	// 7 → 3+4 → 4 → 2+2 → 2 → 1+1: 1 + 2 + 2 + 2 calls.
	if len(tg.calls) != 7 {
		t.Errorf("%d calls, want 7", len(tg.calls))
	}
}

// TestReportEndIsNeverAhead: the report of a final flush ends at the seal
// time, never at the end of an hour that has not ended; a sealed past
// hour ends with its hour.
func TestReportEndIsNeverAhead(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	ctx := t.Context()
	if _, err := e.l.Ingest(ctx, []ledger.Record{
		{Provider: marketplace.AWS, Customer: "c", Dimension: "req", Quantity: 1, Time: rtNow.Add(-time.Hour)},
		{Provider: marketplace.AWS, Customer: "c", Dimension: "req", Quantity: 2, Time: rtNow},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.SealCustomer(ctx, marketplace.AWS, "c"); err != nil {
		t.Fatal(err)
	}
	tg := &rtTarget{}
	e.advance(time.Minute)
	if st, err := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{}).RunOnce(ctx); err != nil || st.Reported != 2 {
		t.Fatalf("round: %+v, %v", st, err)
	}
	want := map[time.Time]time.Time{ledger.HourOf(rtNow.Add(-time.Hour)): ledger.HourOf(rtNow), ledger.HourOf(rtNow): rtNow}
	for _, r := range tg.calls[0] {
		if !r.End.Equal(want[r.Hour]) {
			t.Errorf("report of %s ends %s, want %s", r.Hour, r.End, want[r.Hour])
		}
	}
}

func TestOverrideLimits(t *testing.T) {
	def := ledger.Limits{MaxItems: 25, MaxBytes: 1000, Rate: 10, Burst: 1, Deadline: 24 * time.Hour}
	for _, tc := range []struct {
		over, want ledger.Limits
	}{
		{ledger.Limits{}, def},
		{ledger.Limits{Rate: 1000}, ledger.Limits{MaxItems: 25, MaxBytes: 1000, Rate: 1000, Burst: 1, Deadline: 24 * time.Hour}},
		{ledger.Limits{MaxItems: 1, MaxBytes: 5, Burst: 3, Deadline: time.Hour}, ledger.Limits{MaxItems: 1, MaxBytes: 5, Rate: 10, Burst: 3, Deadline: time.Hour}},
	} {
		if got := ledger.OverrideLimits(def, tc.over); got != tc.want {
			t.Errorf("OverrideLimits(%+v) = %+v, want %+v", tc.over, got, tc.want)
		}
	}
}

func TestEarly(t *testing.T) {
	hour := ledger.HourOf(rtNow)
	for _, tc := range []struct {
		end   time.Time
		early bool
	}{
		{time.Time{}, false},
		{hour, false},
		{rtNow, false},
		{rtNow.Add(time.Second), true},
		{hour.Add(time.Hour), true},
	} {
		res, early := ledger.Early(ledger.Report{Hour: hour, End: tc.end}, rtNow)
		if early != tc.early || early && (res.Outcome != ledger.OutcomeRetry || res.MaybeApplied || res.RetryAfter != tc.end.Sub(rtNow)) {
			t.Errorf("Early(end %s) = %+v, %v; want early %v", tc.end, res, early, tc.early)
		}
	}
}
