package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"

	"github.com/saasmarket/marketplace"
)

// Report is the frozen payload of one sealed bucket, as a Target sends it.
// Every attempt for a bucket carries the same ID, key, Quantity, End and
// Attributes.
type Report struct {
	ID        string // deterministic (UUIDv5): AWS/Azure dedupe key material, GCP operationId
	BucketID  int64
	Provider  marketplace.CloudProvider
	Customer  string
	Dimension string
	Hour      time.Time // start of the hour, UTC
	// End is the end of the usage's time range: the hour's end, or the
	// seal time of a final flush (see Bucket.End). It is never in the
	// future when the Reporter sends the report.
	End      time.Time
	Quantity int64 // whole billing units, above zero
	// Attributes are the payload attributes the Target's Freezer froze
	// (nil for a Target that is no Freezer).
	Attributes map[string]string
	Attempt    int // 1 on the first send
}

// Outcome is what happened to one report.
type Outcome int

const (
	// OutcomeRetry: not applied, or not known to be; send again later.
	OutcomeRetry Outcome = iota
	// OutcomeReported: the cloud holds this report (RecordID is its id).
	// A duplicate of an identical report already held is Reported too.
	OutcomeReported
	// OutcomeRejected: final refusal (customer not subscribed, invalid
	// dimension, ...); Reason says why.
	OutcomeRejected
	// OutcomeConflict: the cloud holds a different quantity for that
	// customer, dimension and hour.
	OutcomeConflict
	// OutcomeExpired: the cloud refused it as past its deadline.
	OutcomeExpired
)

// Result is a Target's answer for one report.
type Result struct {
	Outcome  Outcome
	RecordID string
	Reason   string
	// RetryAfter is the cloud's hint for a retry (zero: use backoff).
	RetryAfter time.Duration
	// MaybeApplied marks a retry whose attempt may have been applied.
	MaybeApplied bool
	// Throttled marks a retry the cloud refused for its rate or quota: the
	// Reporter slows its calls down, as for ErrThrottled.
	Throttled bool
}

// Errors a Target returns for a whole call, wrapped with the cause. Any
// other error from Send is taken to leave open whether the call was applied
// (a timeout, a lost response), and the reports are retried.
var (
	// ErrNotApplied: the call certainly was not applied (refused before
	// processing); the reports are retried.
	ErrNotApplied = errors.New("ledger: call not applied")
	// ErrThrottled: the cloud refused the call for its rate (HTTP 429,
	// ThrottlingException, RESOURCE_EXHAUSTED). It matches ErrNotApplied
	// too. The Reporter halves its call rate, and a retry-after hint on the
	// error (marketplace.WithRetryAfter) pauses all its calls that long.
	ErrThrottled error = throttledError{}
	// ErrPastDeadline: the cloud refused the whole call as too old.
	ErrPastDeadline = errors.New("ledger: usage past the cloud's deadline")
	// ErrBadReport: the cloud refused the whole call, unapplied, because of
	// a report in it that it does not name. The Reporter splits the call in
	// halves and sends each, until the bad report is alone; alone, it is
	// rejected (or expired, if the error also matches ErrPastDeadline).
	ErrBadReport = errors.New("ledger: call refused for one of its reports")
)

type throttledError struct{}

func (throttledError) Error() string        { return "ledger: call throttled" }
func (throttledError) Is(target error) bool { return target == ErrNotApplied }

// Limits are a cloud API's rules for one call, and its rate.
type Limits struct {
	MaxItems int // reports per call; default 25
	MaxBytes int // estimated request size per call (see Sizer); 0: no limit
	// Rate caps calls (Sends) per second; 0: no cap until the cloud
	// throttles. The Reporter halves its rate when throttled and raises it
	// by a tenth after each call that was not, back up to Rate.
	Rate  float64
	Burst int // default 1
	// Deadline is how long after its hour's start the cloud still accepts
	// usage (AWS, Azure: 24 h); zero means none.
	Deadline time.Duration
}

// OverrideLimits returns defaults with every field that overrides sets
// (non-zero) taken from overrides: how a Target's config overrides its
// cloud's limits.
func OverrideLimits(defaults, overrides Limits) Limits {
	set := func(d *int, o int) {
		if o != 0 {
			*d = o
		}
	}
	set(&defaults.MaxItems, overrides.MaxItems)
	set(&defaults.MaxBytes, overrides.MaxBytes)
	set(&defaults.Burst, overrides.Burst)
	if overrides.Rate != 0 {
		defaults.Rate = overrides.Rate
	}
	if overrides.Deadline != 0 {
		defaults.Deadline = overrides.Deadline
	}
	return defaults
}

// Early returns the result of a report whose time range has not ended at
// now, and whether r is one. The Reporter never sends one (it claims no
// bucket before its range ends); Targets check it too, so that no caller
// of Send can claim usage for time that has not passed.
func Early(r Report, now time.Time) (Result, bool) {
	if !r.End.After(now) {
		return Result{}, false
	}
	return Result{Outcome: OutcomeRetry, RetryAfter: r.End.Sub(now),
		Reason: fmt.Sprintf("its time range ends %s, after now (%s)", r.End.Format(time.RFC3339), now.UTC().Format(time.RFC3339))}, true
}

// Target sends reports to one cloud's metering API. Send answers one Result
// per report, in order; or an error for the whole call (see ErrNotApplied,
// ErrThrottled, ErrPastDeadline, ErrBadReport; a marketplace.Permanent
// error rejects every report; marketplace.RetryAfter hints are honoured).
// The Reporter paces Sends (see Limits.Rate): a Target makes one call to
// its cloud per Send, or a fixed few (a check before a report), and keeps
// no rate limit of its own.
type Target interface {
	Provider() marketplace.CloudProvider
	Limits() Limits
	Send(ctx context.Context, reports []Report) ([]Result, error)
}

// Grouper is implemented by a Target whose calls must not mix some reports
// (AWS: one product or license per call). Reports of different groups never
// share a call. An error marked marketplace.Permanent rejects the report;
// any other delays it.
type Grouper interface {
	GroupOf(ctx context.Context, r Report) (string, error)
}

// Freezer is implemented by a Target whose payload needs more than a
// bucket's key and quantity: state that lives elsewhere and may change
// (the plan of an Azure subscription) or configuration (an AWS product
// code, a Google metric name). The Reporter calls Freeze for a claimed
// bucket that has no attributes, before its first send, stores them with
// the bucket, and passes the stored ones in Report.Attributes on every
// attempt, so every attempt sends exactly the same payload. An error
// marked marketplace.Permanent rejects the report; any other delays it.
type Freezer interface {
	Freeze(ctx context.Context, r Report) (map[string]string, error)
}

// Sizer is implemented by a Target that can estimate a report's share of a
// request, in bytes, to keep calls under Limits.MaxBytes.
type Sizer interface {
	Size(r Report) int
}

// ReporterConfig tunes a Reporter. Zero values take the defaults shown.
type ReporterConfig struct {
	Lease       time.Duration // how long a claim is held; default 5 min, at least 2 × SendTimeout
	ClaimLimit  int           // buckets per round; default 500
	SendTimeout time.Duration // per call; default 30 s
	BackoffBase time.Duration // first retry delay; default 2 s
	BackoffMax  time.Duration // default 10 min
	// DeadlineMargin: a bucket this close to its cloud's deadline is not
	// sent but handled by DeadlinePolicy. Default 5 min.
	DeadlineMargin time.Duration
	DeadlinePolicy DeadlinePolicy
	Poll           time.Duration // idle wait between rounds; default 5 s
	// MinRate is the slowest pace, in calls per second, that throttling
	// brings the reporter down to; default 0.5 (one call every 2 s).
	MinRate float64
	// Replicas is how many reporters of this cloud, in as many processes,
	// share the seller's quota: a cloud's rate belongs to the seller's
	// account, not to a process, so each reporter paces at Limits.Rate /
	// Replicas. Default 1.
	Replicas int
	Logger   *slog.Logger // default: the ledger's
}

// Reporter reports one cloud's sealed buckets through a Target. Several
// reporters (in one process or many sharing a store) may run for the same
// cloud: claims keep them apart. Each paces its own calls, adapting to the
// cloud's throttling (see Limits.Rate).
type Reporter struct {
	l      *Ledger
	target Target
	limits Limits
	cfg    ReporterConfig
	pace   *pacer
}

// NewReporter returns a reporter of l's buckets to target.
func NewReporter(l *Ledger, target Target, cfg ReporterConfig) *Reporter {
	if cfg.Lease <= 0 {
		cfg.Lease = 5 * time.Minute
	}
	if cfg.ClaimLimit <= 0 {
		cfg.ClaimLimit = 500
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 30 * time.Second
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 2 * time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 10 * time.Minute
	}
	if cfg.DeadlineMargin <= 0 {
		cfg.DeadlineMargin = 5 * time.Minute
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Second
	}
	if cfg.MinRate <= 0 {
		cfg.MinRate = 0.5
	}
	cfg.Lease = max(cfg.Lease, 2*cfg.SendTimeout)
	if cfg.Logger == nil {
		cfg.Logger = l.cfg.Logger
	}
	lim := target.Limits()
	if lim.MaxItems <= 0 {
		lim.MaxItems = 25
	}
	if lim.Burst <= 0 {
		lim.Burst = 1
	}
	if cfg.Replicas > 1 {
		lim.Rate /= float64(cfg.Replicas)
	}
	return &Reporter{l: l, target: target, limits: lim, cfg: cfg, pace: newPacer(lim.Rate, lim.Burst, cfg.MinRate)}
}

// Rate is the reporter's current call rate per second: Limits.Rate (+Inf
// when unset) until the cloud throttles, lower while it recovers.
func (r *Reporter) Rate() float64 { return r.pace.rate() }

// RoundStats counts what one round did.
type RoundStats struct {
	Claimed, Calls, Reported, Rejected, Conflict, Retried, Carried, Expired int
	// Throttled counts calls the cloud throttled.
	Throttled int
}

// Run reports until ctx is done: rounds back to back while there is work,
// a Poll apart when there is none. Errors are logged and retried.
func (r *Reporter) Run(ctx context.Context) error {
	for {
		st, err := r.RunOnce(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			r.cfg.Logger.Error("report round failed", "provider", r.target.Provider(), "err", err)
		}
		if err == nil && st.Claimed >= r.cfg.ClaimLimit && st.Throttled == 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.cfg.Poll):
		}
	}
}

// RunOnce claims one round of due buckets, sends them and stores the
// outcomes. A crash anywhere in it is safe: an unfinished claim expires and
// the same payloads are sent again, which the cloud deduplicates. While a
// cloud's Retry-After runs, RunOnce claims nothing.
func (r *Reporter) RunOnce(ctx context.Context) (RoundStats, error) {
	var st RoundStats
	p := r.target.Provider()
	now := r.l.cfg.Clock()
	if r.pace.paused(now) {
		return st, nil
	}
	owner := uuid.NewString()
	claimed, err := r.l.store.Claim(ctx, ClaimRequest{Provider: p, Owner: owner, Now: now, Lease: r.cfg.Lease, Limit: r.cfg.ClaimLimit})
	if err != nil {
		return st, fmt.Errorf("ledger: claim %s buckets: %w", p, err)
	}
	st.Claimed = len(claimed)
	defer r.observeBacklog(ctx)
	if len(claimed) == 0 {
		return st, nil
	}

	var done []Completion
	var send []Bucket
	for _, b := range claimed {
		if r.limits.Deadline > 0 && !now.Before(b.Hour.Add(r.limits.Deadline-r.cfg.DeadlineMargin)) {
			done = append(done, r.missed(b, now, "deadline reached before it could be sent"))
			continue
		}
		send = append(send, b)
	}
	send, early, err := r.freeze(ctx, owner, send, now)
	if err != nil {
		return st, err
	}
	done = append(done, early...)
	calls, early := r.group(ctx, send, now)
	done = append(done, early...)
	// Store what is already decided before sending, so a slow send cannot
	// outlive the lease on it.
	if err := r.complete(ctx, owner, done, &st); err != nil {
		return st, err
	}
	// Stop sending while a whole call still fits in the lease: buckets left
	// over are released unsent, rather than left to a lease that runs out
	// (which marks them as possibly applied). The same while the cloud's
	// Retry-After runs: they wait for its end.
	stopAt := now.Add(r.cfg.Lease - r.cfg.SendTimeout)
	for len(calls) > 0 {
		if err := r.pace.wait(ctx); err != nil {
			return st, err // the claim expires; nothing more was sent
		}
		if t := r.l.cfg.Clock(); t.After(stopAt) || r.pace.paused(t) {
			rest := r.release(calls, now)
			why := "a call would outlive the lease"
			if r.pace.paused(t) {
				why = "the cloud asked to wait until " + r.pace.resume().UTC().Format(time.RFC3339)
			}
			r.cfg.Logger.Debug("report round released buckets unsent", "provider", p, "buckets", len(rest), "why", why)
			return st, r.complete(ctx, owner, rest, &st)
		}
		call := calls[0]
		calls = calls[1:]
		reports := make([]Report, len(call))
		for i, b := range call {
			reports[i] = toReport(b)
		}
		sctx, cancel := context.WithTimeout(ctx, r.cfg.SendTimeout)
		results, err := r.target.Send(sctx, reports)
		cancel()
		st.Calls++
		now := r.l.cfg.Clock()
		if r.pace.observe(now, err, results) {
			st.Throttled++
		}
		if errors.Is(err, ErrBadReport) && len(call) > 1 {
			// Find the bad report: each half is a call of its own.
			h := len(call) / 2
			calls = append([][]Bucket{call[:h], call[h:]}, calls...)
			continue
		}
		outs := make([]Completion, len(call))
		for i, b := range call {
			var res Result
			switch {
			case err != nil:
				res = ResultOf(err)
			case len(results) != len(call):
				res = Result{Outcome: OutcomeRetry, MaybeApplied: true, Reason: fmt.Sprintf("target answered %d results for %d reports", len(results), len(call))}
			default:
				res = results[i]
			}
			outs[i] = r.outcome(b, res, now)
			outs[i].Attempted = true
		}
		if err := r.complete(ctx, owner, outs, &st); err != nil {
			return st, err
		}
	}
	return st, nil
}

// release hands buckets back unsent: not attempted, due again after any
// Retry-After of the cloud.
func (r *Reporter) release(calls [][]Bucket, now time.Time) []Completion {
	var rest []Completion
	resume := r.pace.resume()
	for _, c := range calls {
		for _, b := range c {
			rest = append(rest, Completion{BucketID: b.ID, State: StateSealed, NextAttempt: later(b.NextAttempt, resume), MaybeApplied: b.MaybeApplied, Now: now})
		}
	}
	return rest
}

// freeze has the Target's Freezer freeze the attributes of buckets that
// have none, stores them, and returns the buckets to send with the stored
// attributes. A bucket whose lease moved on is dropped: its new holder
// sends it.
func (r *Reporter) freeze(ctx context.Context, owner string, bs []Bucket, now time.Time) (send []Bucket, done []Completion, err error) {
	fz, ok := r.target.(Freezer)
	if !ok {
		return bs, nil, nil
	}
	var frozen []Frozen
	failed := map[int64]error{}
	for _, b := range bs {
		if len(b.Attributes) > 0 {
			continue
		}
		attrs, err := fz.Freeze(ctx, toReport(b))
		if err != nil {
			failed[b.ID] = err
			continue
		}
		frozen = append(frozen, Frozen{BucketID: b.ID, Attributes: attrs})
	}
	stored := map[int64]map[string]string{}
	if len(frozen) > 0 {
		held, err := r.l.store.Freeze(ctx, owner, frozen)
		if err != nil {
			return nil, nil, fmt.Errorf("ledger: store frozen attributes of %d buckets: %w", len(frozen), err)
		}
		for _, f := range held {
			stored[f.BucketID] = f.Attributes
		}
	}
	for _, b := range bs {
		if err, ok := failed[b.ID]; ok {
			done = append(done, r.unsent(b, err, now))
			continue
		}
		if len(b.Attributes) == 0 {
			attrs, ok := stored[b.ID]
			if !ok {
				continue // the lease moved on
			}
			b.Attributes = attrs
		}
		send = append(send, b)
	}
	return send, done, nil
}

func toReport(b Bucket) Report {
	return Report{ID: b.ReportID, BucketID: b.ID, Provider: b.Provider, Customer: b.Customer,
		Dimension: b.Dimension, Hour: b.Hour.UTC(), End: b.End(), Quantity: b.Units,
		Attributes: b.Attributes, Attempt: b.Attempts + 1}
}

// ResultOf is the result a whole-call error from a Target means for each
// report of the call (see the errors of Target). Targets that make more
// than one call per Send use it for the calls whose failure decides only
// some reports.
func ResultOf(err error) Result {
	res := Result{Outcome: OutcomeRetry, Reason: err.Error(), MaybeApplied: !errors.Is(err, ErrNotApplied),
		Throttled: errors.Is(err, ErrThrottled)}
	if d, ok := marketplace.RetryAfter(err); ok {
		res.RetryAfter = d
	}
	switch {
	case errors.Is(err, ErrPastDeadline):
		res.Outcome, res.MaybeApplied = OutcomeExpired, false
	case errors.Is(err, ErrBadReport), marketplace.IsPermanent(err):
		res.Outcome, res.MaybeApplied = OutcomeRejected, false
	}
	return res
}

// group splits buckets into calls: one group per call, at most MaxItems
// reports and MaxBytes each.
func (r *Reporter) group(ctx context.Context, bs []Bucket, now time.Time) (calls [][]Bucket, done []Completion) {
	grouper, _ := r.target.(Grouper)
	sizer, _ := r.target.(Sizer)
	type open struct {
		call  []Bucket
		bytes int
	}
	byGroup := map[string]*open{}
	var order []string
	for _, b := range bs {
		g := ""
		if grouper != nil {
			var err error
			g, err = grouper.GroupOf(ctx, toReport(b))
			if err != nil {
				done = append(done, r.unsent(b, err, now))
				continue
			}
		}
		size := 0
		if sizer != nil {
			size = sizer.Size(toReport(b))
		}
		o := byGroup[g]
		if o == nil {
			o = &open{}
			byGroup[g] = o
			order = append(order, g)
		}
		if len(o.call) > 0 && (len(o.call) >= r.limits.MaxItems || (r.limits.MaxBytes > 0 && o.bytes+size > r.limits.MaxBytes)) {
			calls = append(calls, o.call)
			*o = open{}
		}
		o.call = append(o.call, b)
		o.bytes += size
	}
	for _, g := range order {
		if o := byGroup[g]; len(o.call) > 0 {
			calls = append(calls, o.call)
		}
	}
	return calls, done
}

// unsent is the completion of a bucket that could not be prepared for
// sending (err): an attempt that cannot have been applied.
func (r *Reporter) unsent(b Bucket, err error, now time.Time) Completion {
	res := ResultOf(err)
	res.MaybeApplied = false // nothing was sent
	c := r.outcome(b, res, now)
	c.Attempted = true
	return c
}

// outcome turns a target's result into the bucket's stored completion.
func (r *Reporter) outcome(b Bucket, res Result, now time.Time) Completion {
	c := Completion{BucketID: b.ID, RecordID: res.RecordID, Reason: res.Reason, Now: now}
	switch res.Outcome {
	case OutcomeReported:
		c.State = StateReported
	case OutcomeRejected:
		c.State = StateRejected
	case OutcomeConflict:
		c.State = StateConflict
	case OutcomeExpired:
		return r.missed(b, now, "the cloud refused it as past its deadline: "+res.Reason)
	default:
		c.State = StateSealed
		c.MaybeApplied = b.MaybeApplied || res.MaybeApplied
		c.NextAttempt = now.Add(r.backoff(b.Attempts+1, res.RetryAfter))
	}
	return c
}

// missed applies the deadline policy to a bucket that can no longer be
// reported in its own hour.
func (r *Reporter) missed(b Bucket, now time.Time, why string) Completion {
	c := Completion{BucketID: b.ID, Now: now, State: StateExpired, Reason: why}
	switch {
	case r.cfg.DeadlinePolicy == DeadlineExpire:
		c.Reason += "; policy: expire"
	case b.MaybeApplied:
		c.Reason += "; an earlier attempt may have been applied, so it is not carried (reconcile with the cloud)"
	default:
		c.State = StateCarried
		c.CarryQuantity = b.Units * r.l.unit(b.SeriesKey)
		c.CarryHour = HourOf(now)
		c.Reason += "; carried into " + c.CarryHour.Format(time.RFC3339)
	}
	return c
}

func (r *Reporter) backoff(attempt int, hint time.Duration) time.Duration {
	d := r.cfg.BackoffBase
	for i := 1; i < attempt && d < r.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, r.cfg.BackoffMax)
	d += time.Duration(rand.Int64N(int64(d/4) + 1)) // spread retries of many buckets
	return max(d, hint)
}

func (r *Reporter) complete(ctx context.Context, owner string, outs []Completion, st *RoundStats) error {
	if len(outs) == 0 {
		return nil
	}
	if err := r.l.store.Complete(ctx, owner, outs); err != nil {
		return fmt.Errorf("ledger: store %d outcomes: %w", len(outs), err)
	}
	p := r.target.Provider()
	var rep, rej, con, ret, miss int64
	for _, c := range outs {
		switch c.State {
		case StateReported:
			rep++
		case StateRejected:
			rej++
			r.cfg.Logger.Warn("usage report rejected", "provider", p, "bucket", c.BucketID, "reason", c.Reason)
		case StateConflict:
			con++
			r.cfg.Logger.Warn("usage report conflicts with the cloud's record", "provider", p, "bucket", c.BucketID, "reason", c.Reason)
		case StateSealed:
			if c.Attempted {
				ret++
				r.cfg.Logger.Debug("usage report to be retried", "provider", p, "bucket", c.BucketID, "reason", c.Reason,
					"next_attempt", c.NextAttempt, "maybe_applied", c.MaybeApplied)
			}
		case StateCarried, StateExpired:
			miss++
			r.cfg.Logger.Warn("usage bucket missed its deadline", "provider", p, "bucket", c.BucketID, "state", c.State, "reason", c.Reason)
			if c.State == StateCarried {
				st.Carried++
			} else {
				st.Expired++
			}
		}
	}
	st.Reported += int(rep)
	st.Rejected += int(rej)
	st.Conflict += int(con)
	st.Retried += int(ret)
	m := r.l.cfg.Metrics
	for _, x := range []struct {
		n int64
		f func(marketplace.CloudProvider, int64)
	}{{rep, m.Reported}, {rej, m.Rejected}, {con, m.Conflict}, {ret, m.Retried}, {miss, m.Missed}} {
		if x.n > 0 {
			x.f(p, x.n)
		}
	}
	return nil
}

func (r *Reporter) observeBacklog(ctx context.Context) {
	bl, err := r.l.store.Backlog(ctx)
	if err != nil {
		return
	}
	p := r.target.Provider()
	now := r.l.cfg.Clock()
	age := time.Duration(0)
	for _, b := range bl {
		if b.Provider == p && b.Sealed > 0 {
			age = now.Sub(b.OldestHour.Add(time.Hour))
		}
	}
	r.l.cfg.Metrics.OldestUnreported(p, max(age, 0))
}
