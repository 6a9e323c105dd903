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
package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
}

// Durability selects when Ingest returns.
type Durability int

const (
	// Durable: Ingest returns once its records are committed to disk.
	Durable Durability = iota
	// Buffered: Ingest returns once its records are validated and queued;
	// they are committed every FlushInterval. A crash loses at most the
	// usage of the last FlushInterval (plus one commit in flight), and
	// duplicates by event id are detected at commit, not reported to the
	// caller. For callers that prefer throughput to the last seconds of usage.
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
	// MaxBatch caps the records of one group commit. Default 20,000.
	MaxBatch int
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

const maxIDLen = 256

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
	case len(r.Customer) > maxIDLen || !utf8.ValidString(r.Customer):
		return bad("customer", r.Customer, "must be valid UTF-8 of at most 256 bytes")
	case r.Dimension == "":
		return bad("dimension", "", "must not be empty")
	case len(r.Dimension) > maxIDLen || !utf8.ValidString(r.Dimension):
		return bad("dimension", r.Dimension, "must be valid UTF-8 of at most 256 bytes")
	case r.Quantity < 0:
		return bad("quantity", fmt.Sprint(r.Quantity), "must not be negative")
	case r.Quantity > maxQuantity:
		return bad("quantity", fmt.Sprint(r.Quantity), "must be at most 2^53")
	case len(r.EventID) > maxIDLen || !utf8.ValidString(r.EventID):
		return bad("event_id", r.EventID, "must be valid UTF-8 of at most 256 bytes")
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
type Ledger struct {
	store Store
	cfg   Config

	reqs    chan *ingestReq
	closing chan struct{}
	done    chan struct{}
	once    sync.Once
	mu      sync.RWMutex // held for reading while a request is queued; Close takes it for writing
	closed  bool
}

type ingestReq struct {
	recs []Record
	dup  []bool
	err  error
	done chan struct{} // nil in Buffered mode
}

// New opens a ledger on store and starts its committer, which Close stops.
// The ledger does not own the store: close it after the ledger.
func New(store Store, cfg Config) *Ledger {
	l := &Ledger{
		store:   store,
		cfg:     cfg.withDefaults(),
		reqs:    make(chan *ingestReq, 1024),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go l.commitLoop()
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
// it returns once they are on disk; an error other than a
// *ValidationError means the batch may or may not have been stored, and
// retrying it with event ids is safe. A *ValidationError means nothing of
// the batch was stored.
func (l *Ledger) Ingest(ctx context.Context, recs []Record) (IngestResult, error) {
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
	}
	req := &ingestReq{recs: own}
	if l.cfg.Durability == Durable {
		req.done = make(chan struct{})
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return IngestResult{}, ErrClosed
	}
	select {
	case l.reqs <- req:
		l.mu.RUnlock()
	case <-ctx.Done():
		l.mu.RUnlock()
		return IngestResult{}, ctx.Err()
	}
	if req.done == nil {
		return IngestResult{Accepted: len(own)}, nil
	}
	select {
	case <-req.done:
	case <-ctx.Done():
		// The commit goes on; the caller may retry with event ids.
		return IngestResult{}, fmt.Errorf("ledger: waiting for commit: %w", ctx.Err())
	}
	if req.err != nil {
		return IngestResult{}, req.err
	}
	res := IngestResult{Duplicate: req.dup}
	for _, d := range req.dup {
		if d {
			res.Duplicates++
		}
	}
	res.Accepted = len(own) - res.Duplicates
	return res, nil
}

// Record stores one record; see Ingest.
func (l *Ledger) Record(ctx context.Context, r Record) error {
	_, err := l.Ingest(ctx, []Record{r})
	return err
}

// commitLoop owns the store's append path: it gathers every request that
// is waiting into one commit, so concurrent callers share one fsync.
func (l *Ledger) commitLoop() {
	defer close(l.done)
	var (
		batch []*ingestReq
		recs  []Record
		timer *time.Timer
		tick  <-chan time.Time
	)
	if l.cfg.Durability == Buffered {
		timer = time.NewTimer(l.cfg.FlushInterval)
		defer timer.Stop()
		tick = timer.C
	}
	flush := func() {
		if len(batch) == 0 {
			return
		}
		recs = recs[:0]
		for _, r := range batch {
			recs = append(recs, r.recs...)
		}
		now := l.cfg.Clock()
		dup, err := l.store.Append(context.Background(), recs, now.Add(l.cfg.EventWindow))
		if err != nil {
			err = fmt.Errorf("ledger: commit %d records: %w", len(recs), err)
			if l.cfg.Durability == Buffered {
				// Keep the batch and try again at the next tick: nothing is dropped.
				l.cfg.Logger.Error("buffered commit failed; will retry", "records", len(recs), "err", err)
				return
			}
		} else {
			l.countRecorded(recs, dup)
		}
		off := 0
		for _, r := range batch {
			if err == nil {
				r.dup = dup[off : off+len(r.recs)]
			}
			r.err = err
			off += len(r.recs)
			if r.done != nil {
				close(r.done)
			}
		}
		batch = batch[:0]
	}
	pending := 0
	for {
		select {
		case r := <-l.reqs:
			batch = append(batch, r)
			pending += len(r.recs)
			// Buffered mode commits on its tick, when the queue is large, or
			// when a caller waits (Flush).
			if l.cfg.Durability == Buffered && r.done == nil && pending < l.cfg.MaxBatch*8 {
				continue
			}
			// Gather what else is waiting, then commit.
		gather:
			for pending < l.cfg.MaxBatch {
				select {
				case r := <-l.reqs:
					batch = append(batch, r)
					pending += len(r.recs)
				default:
					break gather
				}
			}
			flush()
			pending = sumRecs(batch)
		case <-tick:
			flush()
			pending = sumRecs(batch)
			timer.Reset(l.cfg.FlushInterval)
		case <-l.closing:
			for {
				select {
				case r := <-l.reqs:
					batch = append(batch, r)
					continue
				default:
				}
				break
			}
			flush()
			for _, r := range batch { // a failed buffered flush at close
				r.err = ErrClosed
				if r.done != nil {
					close(r.done)
				}
			}
			return
		}
	}
}

func sumRecs(b []*ingestReq) int {
	n := 0
	for _, r := range b {
		n += len(r.recs)
	}
	return n
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

// Close commits what is queued and stops the committer. Ingest fails with
// ErrClosed afterwards.
func (l *Ledger) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		close(l.closing)
	})
	<-l.done
	return nil
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

// Flush commits what Buffered mode has queued, and returns once it is on
// disk. In Durable mode there is nothing to wait for.
func (l *Ledger) Flush(ctx context.Context) error {
	if l.cfg.Durability != Buffered {
		return nil
	}
	req := &ingestReq{done: make(chan struct{})}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	select {
	case l.reqs <- req:
		l.mu.RUnlock()
	case <-ctx.Done():
		l.mu.RUnlock()
		return ctx.Err()
	}
	select {
	case <-req.done:
		return req.err
	case <-ctx.Done():
		return ctx.Err()
	}
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
