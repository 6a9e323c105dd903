// Package ledger is the durable hourly usage ledger and the engine that
// reports it to the clouds exactly once.
//
// Usage records are summed per (provider, customer, dimension, hour) into
// buckets; storage grows with buckets, never with records. Ingest is durable
// before it is acknowledged, and concurrent callers share one commit (group
// commit). A record with an event id is counted once however often it is
// retried, within EventWindow. A bucket seals once its hour has ended plus a
// grace period, or on demand; sealing freezes its quantity in whole billing
// units and its deterministic report id, so every attempt sends the same
// payload and each cloud's own dedupe makes a resend harmless. Usage that
// arrives for a sealed hour goes to the earliest open hour of its series and
// is counted as late; nothing is dropped.
//
// The Reporter claims sealed buckets and hands them to a Target, one per
// cloud, which sends them and says per report what happened.
//
// A Ledger owns its lifetime: its commits run under a context that Close
// cancels, and Close returns within a bound even when the store hangs,
// saying what it could not commit (CloseError). A caller that stops waiting
// for a commit learns whether its records were stored, or that the outcome
// is unknown (marketplace.ErrOutcomeUnknown) and a resubmission with the
// same event ids is safe.
//
// Store authors implement Store (store.go), which is apart from the user
// API: the ledger applies the rules (grouping records into hourly deltas,
// dropping repeated event ids, PlanFold, PlanSeal) and a store keeps the
// state. Package storetest is the conformance suite every Store passes.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/saasmarket/marketplace"
)

// Record is one piece of usage.
type Record struct {
	Provider  marketplace.CloudProvider
	Customer  string
	Dimension string
	// Quantity is a non-negative amount in the dimension's raw unit.
	Quantity int64
	// Time is when the usage happened; the zero time means now.
	Time time.Time
	// EventID, when set, makes the record idempotent: a retry with the same
	// id is counted once within the ledger's EventWindow. Ids are global
	// across clouds and customers; use a UUID or prefix them.
	EventID string

	// batch is the idempotency key of the IngestOnce call that brought the
	// record (when it has no EventID of its own), and call numbers the
	// calls of one group commit: a batch counts once, as a whole.
	batch string
	call  int32
}

// batchPrefix keeps batch keys apart from event ids in the store's one
// table of ids (validate refuses event ids that start with it).
const batchPrefix = "\x1fbatch:"

// dedupeID is the id a record is deduplicated by, or "".
func (r *Record) dedupeID() string {
	switch {
	case r.EventID != "":
		return r.EventID
	case r.batch != "":
		return batchPrefix + r.batch
	}
	return ""
}

// Durability selects when Ingest returns.
type Durability int

const (
	// Durable: Ingest returns once its records are committed to disk.
	Durable Durability = iota
	// Buffered: Ingest returns once its records are validated and queued;
	// they are committed every FlushInterval, or sooner once MaxBatch are
	// queued. A crash loses what is queued: the usage of the last
	// FlushInterval (plus one commit in flight) while the store is healthy,
	// and during a store outage everything queued since it began, up to
	// MaxBuffered records; Ingest then waits for room (see MaxBuffered).
	// Close commits what is queued or returns a *CloseError counting what it
	// could not. Duplicates by event id are detected at commit, not
	// reported to the caller. A commit whose outcome is unknown is retried,
	// so records without event ids may then count twice. For callers that
	// prefer throughput to the last seconds of usage.
	Buffered
)

// Config tunes a Ledger. The zero value is usable; see the field docs for defaults.
type Config struct {
	// Grace after an hour ends before its buckets seal, for stragglers.
	// Default 5 minutes.
	Grace time.Duration
	// EventWindow is how long event ids are remembered. Default 72 hours;
	// values under 48 hours are raised to 48.
	EventWindow time.Duration
	// MaxAge is how old a record's time may be. Default 23 hours (the clouds
	// refuse usage 24 hours after its hour).
	MaxAge time.Duration
	// MaxFuture is how far ahead of the clock a record's time may be.
	// Default 5 minutes.
	MaxFuture time.Duration
	// Units maps a dimension to its billing unit in raw units, e.g.
	// {"tokens_1m": 1_000_000}. A key "provider/dimension" overrides the
	// plain dimension for one cloud. Unlisted dimensions bill per raw unit.
	Units map[string]int64
	// MaxUnits caps the units of one report per cloud; the excess carries
	// to the next hour. Default: AWS 2147483647 (its Quantity is an int32).
	MaxUnits map[marketplace.CloudProvider]int64
	// Retention is how long buckets are kept after they reach a final
	// state (reported, rejected, ...), for reconciliation with the clouds'
	// own reports. Default 400 days.
	Retention time.Duration
	// Settle is the policy for remainders when a subscription ends.
	Settle SettlePolicy
	// Durability of Ingest; default Durable.
	Durability Durability
	// FlushInterval for Buffered durability. Default 1 second.
	FlushInterval time.Duration
	// MaxBatch caps the records of one group commit (a single Durable
	// Ingest is committed whole however large). Default 20,000.
	MaxBatch int
	// MaxBuffered caps the records Buffered mode holds uncommitted, which
	// grow during a store outage. An Ingest that would exceed it waits for
	// room until its context ends, then fails with an error wrapping
	// ErrBufferFull; a batch larger than MaxBuffered is taken when nothing
	// else is queued. Default 8 × MaxBatch.
	MaxBuffered int
	// CloseTimeout bounds Close: how long it waits for the last commits
	// before it cancels the commit in flight and returns a *CloseError
	// saying what was not committed. Default 10 seconds.
	CloseTimeout time.Duration
	// VerdictWait is how long a Durable Ingest whose context ends while its
	// records are being committed keeps waiting for that commit's verdict
	// before it returns an error wrapping marketplace.ErrOutcomeUnknown.
	// Default 2 seconds.
	VerdictWait time.Duration
	// Clock returns the current time; default time.Now. Tests move it.
	Clock func() time.Time
	// Metrics receives the ledger's counters; default none.
	Metrics Metrics
	// Logger; default slog.Default().
	Logger *slog.Logger
}

const maxQuantity = 1 << 53 // per record; sums stay far from overflow

// endOfTime is later than any bucket's hour.
var endOfTime = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

func (c Config) withDefaults() Config {
	if c.Grace <= 0 {
		c.Grace = 5 * time.Minute
	}
	if c.EventWindow <= 0 {
		c.EventWindow = 72 * time.Hour
	}
	c.EventWindow = max(c.EventWindow, 48*time.Hour)
	if c.MaxAge <= 0 {
		c.MaxAge = 23 * time.Hour
	}
	if c.Retention <= 0 {
		c.Retention = 400 * 24 * time.Hour
	}
	if c.MaxFuture <= 0 {
		c.MaxFuture = 5 * time.Minute
	}
	if c.MaxUnits == nil {
		c.MaxUnits = map[marketplace.CloudProvider]int64{marketplace.AWS: 1<<31 - 1}
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = time.Second
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 20_000
	}
	if c.MaxBuffered <= 0 {
		c.MaxBuffered = 8 * c.MaxBatch
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 10 * time.Second
	}
	if c.VerdictWait <= 0 {
		c.VerdictWait = 2 * time.Second
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Metrics == nil {
		c.Metrics = NopMetrics{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// ErrInvalidRecord is wrapped by every validation error.
var ErrInvalidRecord = errors.New("ledger: invalid usage record")

// ErrClosed is returned by a Ledger after Close.
var ErrClosed = errors.New("ledger: closed")

// ErrBufferFull is wrapped by the error of a Buffered Ingest whose context
// ended while it waited for room (see Config.MaxBuffered): none of its
// records were queued.
var ErrBufferFull = errors.New("ledger: buffer full (the store is not keeping up or is down)")

// closeGrace is how long Close, once it has cancelled the commit in flight,
// waits for the store to return. A store that honours its context returns
// within it, and its verdict is then known.
const closeGrace = time.Second

// CloseError is returned by Close when it could not commit everything:
// the store hung or failed for longer than Config.CloseTimeout.
type CloseError struct {
	// Lost counts records that were accepted (Buffered mode) or queued
	// (Durable mode, whose callers got ErrClosed) and are not stored.
	Lost int
	// InDoubt counts records of the commit that was in flight when Close
	// gave up and that the store had not answered: they may or may not be
	// stored.
	InDoubt int
	// Err is why: the last commit error, or context.DeadlineExceeded.
	Err error
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("ledger: close: %d records not committed, %d in doubt: %v", e.Lost, e.InDoubt, e.Err)
}

// Unwrap returns Err, and marketplace.ErrOutcomeUnknown when some records
// are in doubt.
func (e *CloseError) Unwrap() []error {
	if e.InDoubt > 0 {
		return []error{e.Err, marketplace.ErrOutcomeUnknown}
	}
	return []error{e.Err}
}

// ValidationError says which record of a batch broke which rule. When
// Ingest returns one, none of the batch was stored.
type ValidationError struct {
	Index int    // position in the batch
	Field string // "provider", "customer", "dimension", "quantity", "time", "event_id"
	Rule  string // what the value must be
	Value string // the offending value, quoted and shortened
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("ledger: record %d: %s %s: %s", e.Index, e.Field, e.Value, e.Rule)
}

func (e *ValidationError) Unwrap() error { return ErrInvalidRecord }

// MaxIDLen is the most bytes a customer, dimension, event id or
// idempotency key may have (each valid UTF-8). The ledger enforces it;
// callers refer to it rather than keep a copy.
const MaxIDLen = 256

// validate checks record i of a batch as Ingest does at time now, and
// sets a zero Time to now.
func (c Config) validate(i int, r *Record, now time.Time) error {
	bad := func(field, value, rule string) error {
		if len(value) > 64 {
			value = value[:64] + "…"
		}
		return &ValidationError{Index: i, Field: field, Value: fmt.Sprintf("%q", value), Rule: rule}
	}
	switch {
	case !r.Provider.Valid():
		return bad("provider", string(r.Provider), `must be one of "aws", "azure", "gcp"`)
	case r.Customer == "":
		return bad("customer", "", "must not be empty")
	case len(r.Customer) > MaxIDLen || !utf8.ValidString(r.Customer):
		return bad("customer", r.Customer, "must be valid UTF-8 of at most 256 bytes")
	case r.Dimension == "":
		return bad("dimension", "", "must not be empty")
	case len(r.Dimension) > MaxIDLen || !utf8.ValidString(r.Dimension):
		return bad("dimension", r.Dimension, "must be valid UTF-8 of at most 256 bytes")
	case r.Quantity < 0:
		return bad("quantity", fmt.Sprint(r.Quantity), "must not be negative")
	case r.Quantity > maxQuantity:
		return bad("quantity", fmt.Sprint(r.Quantity), "must be at most 2^53")
	case len(r.EventID) > MaxIDLen || !utf8.ValidString(r.EventID) || strings.HasPrefix(r.EventID, "\x1f"):
		return bad("event_id", r.EventID, "must be valid UTF-8 of at most 256 bytes, not starting with the control character US (0x1f)")
	}
	if r.Time.IsZero() {
		r.Time = now
	}
	switch {
	case r.Time.After(now.Add(c.MaxFuture)):
		return bad("time", r.Time.UTC().Format(time.RFC3339), fmt.Sprintf("must not be more than %v ahead of the ledger's clock (%s)", c.MaxFuture, now.UTC().Format(time.RFC3339)))
	case r.Time.Before(now.Add(-c.MaxAge)):
		return bad("time", r.Time.UTC().Format(time.RFC3339), fmt.Sprintf("must not be more than %v old", c.MaxAge))
	}
	return nil
}

// Ledger is the durable usage ledger. It is safe for concurrent use.
//
// The ledger owns its committer: one goroutine that New starts and Close
// stops, and whose commits run under a context that Close cancels.
type Ledger struct {
	store Store
	cfg   Config

	ctx     context.Context // commits run under it; Close cancels it
	cancel  context.CancelFunc
	wake    chan struct{} // capacity 1: there is work for the committer
	closing chan struct{} // closed by Close: commit what is queued, then stop
	gaveUp  chan struct{} // closed when Close stops waiting for the committer
	done    chan struct{} // closed when the committer has stopped
	once    sync.Once
	err     error // Close's result

	mu        sync.Mutex
	closed    bool // no new work is accepted
	abandoned bool // Close gave up: the committer starts no further commit
	inflight  int  // records of the commit under way
	// Durable mode: requests waiting for the committer, oldest first.
	reqs []*ingestReq
	// Buffered mode: accepted records not yet committed are buf[head:],
	// oldest first. The committer commits them in chunks of at most
	// MaxBatch straight from buf, without copying, and a chunk that failed
	// is retried in place: an outage costs no re-copying.
	buf      []Record
	head     int
	accepted int64         // records ever accepted
	stored   int64         // records committed: buf[head] is record number stored
	room     chan struct{} // closed and replaced whenever records leave buf
	flushes  []*flushReq
	lastErr  error // of the last failed buffered commit
}

// reqState is where a Durable ingest request is; it changes under Ledger.mu.
type reqState int

const (
	reqQueued    reqState = iota // waiting for the committer
	reqWithdrawn                 // its caller's context ended first: never committed
	reqDropped                   // Close gave up first: never committed
	reqInFlight                  // in the commit under way
	reqDone                      // committed (dup set) or failed (err set)
)

type ingestReq struct {
	recs  []Record
	state reqState
	dup   []bool
	err   error
	done  chan struct{} // closed on reqDone or reqDropped
}

// flushReq is a Flush waiting for the records accepted before it.
type flushReq struct {
	upTo int64 // done once stored reaches it
	err  error
	done chan struct{}
}

// New opens a ledger on store and starts its committer, which Close stops.
// The ledger does not own the store: close it after the ledger.
func New(store Store, cfg Config) *Ledger {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Ledger{
		store:   store,
		cfg:     cfg.withDefaults(),
		ctx:     ctx,
		cancel:  cancel,
		wake:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		gaveUp:  make(chan struct{}),
		done:    make(chan struct{}),
		room:    make(chan struct{}),
	}
	if l.cfg.Durability == Buffered {
		go l.bufferedLoop()
	} else {
		go l.durableLoop()
	}
	return l
}

// Store returns the ledger's store.
func (l *Ledger) Store() Store { return l.store }

// Config returns the ledger's configuration with defaults applied.
func (l *Ledger) Config() Config { return l.cfg }

// IngestResult says what happened to an accepted batch.
type IngestResult struct {
	Accepted   int // records counted
	Duplicates int // records whose event id was already counted
	// Duplicate[i] is true for record i if it was a duplicate (Durable only).
	Duplicate []bool
}

// Ingest validates recs and, if all are valid, stores them. In Durable mode
// it returns once they are on disk. Its errors say what happened:
//
//   - a *ValidationError, ErrClosed, or the caller's context error (the
//     context ended before the commit began): nothing of the batch was
//     stored;
//   - an error wrapping marketplace.ErrOutcomeUnknown: the context ended
//     while the batch was being committed and the commit gave no verdict
//     within Config.VerdictWait (or the store could not tell): the batch may
//     or may not be stored, and retrying it with the same event ids counts
//     it once;
//   - any other error: the store refused the commit; nothing was stored.
//
// When the context ends during the commit and the verdict comes within
// VerdictWait, Ingest returns that verdict.
func (l *Ledger) Ingest(ctx context.Context, recs []Record) (IngestResult, error) {
	return l.ingest(ctx, "", recs)
}

// IngestOnce is Ingest for a batch sent under an idempotency key: the
// records without an EventID of their own count once, as a whole, within
// EventWindow, however often the batch is retried under key (a retry must
// carry the same records: a different batch under a key already counted is
// taken for its retry and not counted). It stores one id for the batch
// instead of one per record, so it costs about what a batch without ids
// costs. Records with an EventID are deduplicated by it, as in Ingest.
// In Buffered mode, which may split a batch across commits, each record
// is given the event id key:i instead.
func (l *Ledger) IngestOnce(ctx context.Context, key string, recs []Record) (IngestResult, error) {
	if key == "" || len(key) > MaxIDLen || !utf8.ValidString(key) {
		return IngestResult{}, fmt.Errorf("%w: idempotency key %q: must be 1 to %d bytes of UTF-8", ErrInvalidRecord, key, MaxIDLen)
	}
	return l.ingest(ctx, key, recs)
}

func (l *Ledger) ingest(ctx context.Context, key string, recs []Record) (IngestResult, error) {
	if len(recs) == 0 {
		return IngestResult{}, nil
	}
	now := l.cfg.Clock()
	own := make([]Record, len(recs))
	copy(own, recs)
	for i := range own {
		if err := l.cfg.validate(i, &own[i], now); err != nil {
			return IngestResult{}, err
		}
		if key != "" && own[i].EventID == "" {
			if l.cfg.Durability == Buffered {
				own[i].EventID = fmt.Sprintf("%s:%d", key, i)
			} else {
				own[i].batch = key
			}
		}
	}
	if l.cfg.Durability == Buffered {
		return l.buffer(ctx, own)
	}
	req := &ingestReq{recs: own, done: make(chan struct{})}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return IngestResult{}, ErrClosed
	}
	l.reqs = append(l.reqs, req)
	l.mu.Unlock()
	l.signal()

	select {
	case <-req.done:
		return req.result()
	case <-l.gaveUp:
	case <-ctx.Done():
	}
	l.mu.Lock()
	switch req.state {
	case reqQueued:
		req.state = reqWithdrawn // the committer skips it
		l.mu.Unlock()
		return IngestResult{}, fmt.Errorf("ledger: not committed: %w", ctx.Err())
	case reqDone, reqDropped:
		l.mu.Unlock()
		return req.result()
	}
	l.mu.Unlock()
	// The commit is under way: its verdict usually follows within
	// milliseconds, and knowing it spares the caller a resubmission.
	wait := time.NewTimer(l.cfg.VerdictWait)
	defer wait.Stop()
	select {
	case <-req.done:
		return req.result()
	case <-wait.C:
	case <-l.gaveUp:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if req.state == reqDone {
		return req.result()
	}
	why := ctx.Err()
	if why == nil {
		why = ErrClosed
	}
	return IngestResult{}, fmt.Errorf("ledger: stopped waiting for the commit of %d records: %w: %w", len(req.recs), marketplace.ErrOutcomeUnknown, why)
}

// result is the outcome of a request in state reqDone or reqDropped.
func (r *ingestReq) result() (IngestResult, error) {
	if r.state == reqDropped {
		return IngestResult{}, ErrClosed
	}
	if r.err != nil {
		return IngestResult{}, r.err
	}
	res := IngestResult{Duplicate: r.dup}
	for _, d := range r.dup {
		if d {
			res.Duplicates++
		}
	}
	res.Accepted = len(r.recs) - res.Duplicates
	return res, nil
}

// buffer queues validated records in Buffered mode, waiting for room.
func (l *Ledger) buffer(ctx context.Context, recs []Record) (IngestResult, error) {
	l.mu.Lock()
	for {
		if l.closed {
			l.mu.Unlock()
			return IngestResult{}, ErrClosed
		}
		queued := len(l.buf) - l.head
		if queued == 0 || queued+len(recs) <= l.cfg.MaxBuffered {
			break
		}
		room := l.room
		l.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return IngestResult{}, fmt.Errorf("%w: %d records queued: %w", ErrBufferFull, queued, ctx.Err())
		}
		l.mu.Lock()
	}
	l.buf = append(l.buf, recs...)
	l.accepted += int64(len(recs))
	full := len(l.buf)-l.head >= l.cfg.MaxBatch
	l.mu.Unlock()
	if full {
		l.signal()
	}
	return IngestResult{Accepted: len(recs)}, nil
}

// Record stores one record; see Ingest.
func (l *Ledger) Record(ctx context.Context, r Record) error {
	_, err := l.Ingest(ctx, []Record{r})
	return err
}

// signal wakes the committer.
func (l *Ledger) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// commit appends recs in one store commit under the ledger's context and
// returns which were duplicates.
func (l *Ledger) commit(b *AppendBatch, recs []Record) ([]bool, error) {
	b.reset(recs, l.cfg.Clock().Add(l.cfg.EventWindow))
	defer b.release()
	fresh, err := l.store.Append(l.ctx, b)
	if err != nil {
		return nil, fmt.Errorf("ledger: commit %d records: %w", len(recs), err)
	}
	if len(fresh) != len(b.EventIDs) {
		return nil, fmt.Errorf("ledger: commit %d records: store returned %d answers for %d event ids (a store bug; the records may be stored): %w",
			len(recs), len(fresh), len(b.EventIDs), marketplace.ErrOutcomeUnknown)
	}
	dup := b.duplicates(fresh)
	l.countRecorded(recs, dup)
	return dup, nil
}

// durableLoop is the committer of Durable mode: it gathers every request
// that is waiting into one commit, so concurrent callers share one fsync.
func (l *Ledger) durableLoop() {
	defer close(l.done)
	var (
		batch AppendBatch
		recs  []Record
	)
	for {
		select {
		case <-l.wake:
		case <-l.closing:
		}
		for {
			reqs := l.takeRequests()
			if len(reqs) == 0 {
				break
			}
			recs = recs[:0]
			for ri, r := range reqs {
				start := len(recs)
				recs = append(recs, r.recs...)
				for k := start; k < len(recs); k++ {
					recs[k].call = int32(ri)
				}
			}
			dup, err := l.commit(&batch, recs)
			clear(recs) // drop references to the records' strings
			l.mu.Lock()
			off := 0
			for _, r := range reqs {
				if err == nil {
					r.dup = dup[off : off+len(r.recs) : off+len(r.recs)]
				}
				r.err = err
				r.state = reqDone
				close(r.done)
				off += len(r.recs)
			}
			l.inflight = 0
			l.mu.Unlock()
		}
		select {
		case <-l.closing:
			l.mu.Lock()
			idle := len(l.reqs) == 0 || l.abandoned
			l.mu.Unlock()
			if idle {
				return
			}
		default:
		}
	}
}

// takeRequests takes the waiting requests for one commit: at least one,
// and more while the commit stays within MaxBatch records.
func (l *Ledger) takeRequests() []*ingestReq {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.abandoned {
		return nil
	}
	var take []*ingestReq
	n, i := 0, 0
	for ; i < len(l.reqs); i++ {
		r := l.reqs[i]
		if r.state != reqQueued {
			continue // withdrawn by its caller
		}
		if len(take) > 0 && n+len(r.recs) > l.cfg.MaxBatch {
			break
		}
		r.state = reqInFlight
		take = append(take, r)
		n += len(r.recs)
	}
	rest := copy(l.reqs, l.reqs[i:])
	clear(l.reqs[rest:])
	l.reqs = l.reqs[:rest]
	l.inflight = n
	return take
}

// bufferedLoop is the committer of Buffered mode. It commits what is queued
// every FlushInterval, as soon as MaxBatch records are queued, when a Flush
// waits, and at Close. After a failed commit it waits for the next tick
// (or a Flush, or Close) before it tries again.
func (l *Ledger) bufferedLoop() {
	defer close(l.done)
	tick := time.NewTicker(l.cfg.FlushInterval)
	defer tick.Stop()
	var (
		batch  AppendBatch
		failed bool
	)
	for {
		closing := false
		select {
		case <-tick.C:
			failed = false
		case <-l.wake:
		case <-l.closing:
			closing = true
		}
		if failed && !closing && !l.flushWaiting() {
			continue // a queue that fills during an outage does not hammer the store
		}
		failed = l.commitBuffered(&batch) != nil
		if !closing {
			continue
		}
		// Closing: commit everything, retrying failures until Close gives
		// up and cancels l.ctx.
		pause := min(l.cfg.FlushInterval, 100*time.Millisecond)
		for failed {
			select {
			case <-l.ctx.Done():
				return
			case <-time.After(pause):
			}
			failed = l.commitBuffered(&batch) != nil
		}
		return
	}
}

// flushWaiting reports whether a Flush waits.
func (l *Ledger) flushWaiting() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.flushes) > 0
}

// commitBuffered commits what is queued, chunk by chunk, and returns the
// error of the first chunk that failed (which stays queued).
func (l *Ledger) commitBuffered(b *AppendBatch) error {
	for {
		l.mu.Lock()
		n := min(len(l.buf)-l.head, l.cfg.MaxBatch)
		if l.abandoned || n == 0 {
			l.resolveFlushes(nil)
			l.mu.Unlock()
			return nil
		}
		chunk := l.buf[l.head : l.head+n]
		l.inflight = n
		l.mu.Unlock()

		_, err := l.commit(b, chunk)

		l.mu.Lock()
		l.inflight = 0
		if err != nil {
			l.lastErr = err
			l.resolveFlushes(err)
			queued := len(l.buf) - l.head
			l.mu.Unlock()
			l.cfg.Logger.Error("buffered commit failed; the records stay queued", "records", n, "queued", queued, "err", err)
			return err
		}
		clear(chunk) // drop references to the records' strings
		l.head += n
		l.stored += int64(n)
		if l.head == len(l.buf) {
			l.buf, l.head = l.buf[:0], 0
		} else if l.head >= len(l.buf)/2 {
			// Move the rest to the front: each record moves at most once
			// per halving, so the copying stays linear.
			rest := copy(l.buf, l.buf[l.head:])
			clear(l.buf[rest:])
			l.buf, l.head = l.buf[:rest], 0
		}
		close(l.room)
		l.room = make(chan struct{})
		l.resolveFlushes(nil)
		l.mu.Unlock()
	}
}

// resolveFlushes ends the Flush calls that err answers: with err, all of
// them; with nil, those whose records are stored. l.mu is held.
func (l *Ledger) resolveFlushes(err error) {
	keep := l.flushes[:0]
	for _, f := range l.flushes {
		if err == nil && f.upTo > l.stored && !l.abandoned && len(l.buf) > l.head {
			keep = append(keep, f)
			continue
		}
		f.err = err
		close(f.done)
	}
	clear(l.flushes[len(keep):])
	l.flushes = keep
}

// Flush commits what Buffered mode has queued, and returns once it is on
// disk, or with the error of the commit that failed. In Durable mode there
// is nothing to wait for.
func (l *Ledger) Flush(ctx context.Context) error {
	if l.cfg.Durability != Buffered {
		return nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if l.stored >= l.accepted {
		l.mu.Unlock()
		return nil
	}
	f := &flushReq{upTo: l.accepted, done: make(chan struct{})}
	l.flushes = append(l.flushes, f)
	l.mu.Unlock()
	l.signal()
	select {
	case <-f.done:
		return f.err
	case <-l.gaveUp:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close commits what is queued and stops the committer; Ingest fails with
// ErrClosed afterwards. It returns within Config.CloseTimeout plus one
// second. If the store hangs or fails for longer than CloseTimeout, Close
// cancels the commit in flight (a store that honours its context then
// returns at once), gives the store one more second to answer, and returns
// a *CloseError counting the records that were not committed (Lost) and
// those whose commit never answered (InDoubt). A store that ignores its
// context keeps the committer until it returns, which then commits nothing
// more.
func (l *Ledger) Close() error {
	l.once.Do(func() { l.err = l.close() })
	return l.err
}

func (l *Ledger) close() error {
	defer l.cancel()
	l.mu.Lock()
	l.closed = true
	close(l.room) // wake Ingest calls waiting for room: they get ErrClosed
	l.room = make(chan struct{})
	l.mu.Unlock()
	close(l.closing)

	bound := time.NewTimer(l.cfg.CloseTimeout)
	defer bound.Stop()
	select {
	case <-l.done:
		return l.closeError(context.DeadlineExceeded)
	case <-bound.C:
	}
	l.mu.Lock()
	l.abandoned = true
	l.mu.Unlock()
	l.cancel()
	grace := time.NewTimer(closeGrace)
	defer grace.Stop()
	select {
	case <-l.done:
	case <-grace.C:
	}
	defer close(l.gaveUp)
	return l.closeError(context.DeadlineExceeded)
}

// closeError counts what Close leaves uncommitted and fails the requests
// still queued.
func (l *Ledger) closeError(why error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastErr != nil {
		why = l.lastErr
	}
	e := &CloseError{Lost: len(l.buf) - l.head, InDoubt: l.inflight, Err: why}
	for _, r := range l.reqs {
		if r.state == reqQueued {
			r.state = reqDropped
			close(r.done)
			e.Lost += len(r.recs)
		}
	}
	l.reqs = nil
	l.resolveFlushes(ErrClosed)
	if e.Lost == 0 && e.InDoubt == 0 {
		return nil
	}
	l.cfg.Logger.Error("ledger closed with records not committed", "lost", e.Lost, "in_doubt", e.InDoubt)
	return e
}

func (l *Ledger) countRecorded(recs []Record, dup []bool) {
	var recorded byProvider
	var dups int64
	for i := range recs {
		if dup[i] {
			dups++
			continue
		}
		recorded.add(recs[i].Provider, 1)
	}
	recorded.each(l.cfg.Metrics.Recorded)
	if dups > 0 {
		l.cfg.Metrics.Duplicates(dups)
	}
}

// byProvider counts per cloud in an array, cheap enough for the commit path.
type byProvider [3]int64

func (c *byProvider) add(p marketplace.CloudProvider, n int64) {
	switch p {
	case marketplace.AWS:
		c[0] += n
	case marketplace.Azure:
		c[1] += n
	case marketplace.GCP:
		c[2] += n
	}
}

// each calls f for every cloud with a count, in marketplace.Providers order.
func (c *byProvider) each(f func(marketplace.CloudProvider, int64)) {
	for i, p := range marketplace.Providers() {
		if c[i] > 0 {
			f(p, c[i])
		}
	}
}

// unit returns the billing unit of a series.
func (l *Ledger) unit(k SeriesKey) int64 {
	if u, ok := l.cfg.Units[string(k.Provider)+"/"+k.Dimension]; ok && u > 0 {
		return u
	}
	if u, ok := l.cfg.Units[k.Dimension]; ok && u > 0 {
		return u
	}
	return 1
}

func (l *Ledger) maxUnits(p marketplace.CloudProvider) int64 { return l.cfg.MaxUnits[p] }

// Fold moves committed usage from the append log into buckets. Seal folds
// too; call Fold to see fresh bucket quantities sooner.
func (l *Ledger) Fold(ctx context.Context) error {
	added, err := l.store.Fold(ctx)
	if err != nil {
		return fmt.Errorf("ledger: fold: %w", err)
	}
	l.countLate(added)
	return nil
}

func (l *Ledger) countLate(added []BucketDelta) {
	var late byProvider
	for _, d := range added {
		late.add(d.Provider, d.Late)
	}
	late.each(l.cfg.Metrics.Late)
}

// Seal seals every open bucket whose hour ended more than Grace ago and
// returns how many it sealed.
func (l *Ledger) Seal(ctx context.Context) (int, error) {
	now := l.cfg.Clock()
	return l.seal(ctx, SealRequest{Before: HourOf(now.Add(-l.cfg.Grace)), Now: now})
}

// SealCustomer seals all of a buyer's usage now, including the current
// hour, and settles remainders by the Settle policy: the final flush when a
// subscription ends. Usage that arrives later goes to the next hour.
func (l *Ledger) SealCustomer(ctx context.Context, p marketplace.CloudProvider, customer string) (int, error) {
	if err := l.Flush(ctx); err != nil {
		return 0, err
	}
	now := l.cfg.Clock()
	// Every open hour of the buyer: after an earlier final flush, late usage
	// may already wait in the next hour. Such a bucket is reported once its
	// hour has begun (the clouds refuse future timestamps).
	return l.seal(ctx, SealRequest{
		Before: endOfTime, Provider: p, Customer: customer,
		Final: true, Settle: l.cfg.Settle, Now: now,
	})
}

func (l *Ledger) seal(ctx context.Context, req SealRequest) (int, error) {
	req.Unit = l.unit
	req.MaxUnits = l.maxUnits
	res, err := l.store.Seal(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("ledger: seal: %w", err)
	}
	l.countLate(res.Folded)
	var sealed byProvider
	for _, b := range res.Sealed {
		sealed.add(b.Provider, 1)
	}
	sealed.each(l.cfg.Metrics.Sealed)
	return len(res.Sealed), nil
}

// Buckets lists buckets; see Store.Buckets.
func (l *Ledger) Buckets(ctx context.Context, f BucketFilter) ([]Bucket, error) {
	return l.store.Buckets(ctx, f)
}

// Purge forgets expired event ids and deletes buckets that have been final
// for longer than Retention. Maintain calls it every PurgeEvery.
func (l *Ledger) Purge(ctx context.Context) error {
	now := l.cfg.Clock()
	if _, err := l.store.PurgeEvents(ctx, now); err != nil {
		return fmt.Errorf("ledger: purge event ids: %w", err)
	}
	if _, err := l.store.PurgeBuckets(ctx, now.Add(-l.cfg.Retention)); err != nil {
		return fmt.Errorf("ledger: purge buckets: %w", err)
	}
	return nil
}

// MaintainConfig sets how often Maintain works.
type MaintainConfig struct {
	FoldEvery  time.Duration // default 1 s
	SealEvery  time.Duration // default 15 s
	PurgeEvery time.Duration // default 1 h
}

// Maintain folds, seals and purges (see Purge) on a schedule until
// ctx is done. Errors are logged and retried at the next tick: a store that
// is briefly unavailable delays sealing but loses nothing.
func (l *Ledger) Maintain(ctx context.Context, mc MaintainConfig) error {
	if mc.FoldEvery <= 0 {
		mc.FoldEvery = time.Second
	}
	if mc.SealEvery <= 0 {
		mc.SealEvery = 15 * time.Second
	}
	if mc.PurgeEvery <= 0 {
		mc.PurgeEvery = time.Hour
	}
	fold := time.NewTicker(mc.FoldEvery)
	defer fold.Stop()
	seal := time.NewTicker(mc.SealEvery)
	defer seal.Stop()
	purge := time.NewTicker(mc.PurgeEvery)
	defer purge.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-fold.C:
			if err := l.Fold(ctx); err != nil && ctx.Err() == nil {
				l.cfg.Logger.Error("ledger fold failed", "err", err)
			}
		case <-seal.C:
			if _, err := l.Seal(ctx); err != nil && ctx.Err() == nil {
				l.cfg.Logger.Error("ledger seal failed", "err", err)
			}
		case <-purge.C:
			if err := l.Purge(ctx); err != nil && ctx.Err() == nil {
				l.cfg.Logger.Error("ledger purge failed", "err", err)
			}
		}
	}
}
