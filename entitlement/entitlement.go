// Package entitlement answers "may this customer use this feature?" on the
// seller's hot path, from memory, in nanoseconds.
//
// A Cache holds decisions per (provider, customer, feature), loaded on a
// miss by a LoadFunc that each cloud integration provides (from its stored
// subscriptions and entitlements). Lifecycle events call Invalidate. The
// cache is versioned: a load that began before an Invalidate of its
// customer returns its answer to its own caller but never writes it back,
// so a revoked entitlement cannot reappear from a check that was in flight.
// Concurrent misses of one key share one load. It is bounded in entries,
// and every decision expires after a TTL, so a missed invalidation heals by
// itself.
package entitlement

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
	"unique"
	"unsafe"

	"github.com/saasmarket/marketplace"
)

// Key names one check.
type Key struct {
	Provider marketplace.CloudProvider
	Customer string
	Feature  string
}

// Decision is the answer for one key.
type Decision struct {
	// Err is nil when entitled; otherwise it wraps
	// marketplace.ErrNoActiveSubscription or marketplace.ErrEntitlementDenied.
	Err error
	// Until, when set, is when the answer stops being true (a contract's
	// expiry); the cache never serves it later.
	Until time.Time
}

// LoadFunc decides a key from the system of record. An error means it could
// not decide (the store is down): that is returned to the caller and not cached.
type LoadFunc func(ctx context.Context, k Key) (Decision, error)

// Config tunes a Cache; zero values take the defaults.
type Config struct {
	TTL         time.Duration // how long a grant is served; default 1 minute
	NegativeTTL time.Duration // how long a refusal is served; default 10 seconds
	MaxEntries  int           // bound on cached keys; default 100,000
	// Clock, when set, is read on every check (tests). By default a hit
	// reads a clock advanced every 10 ms instead of the system clock, so a
	// decision may be served up to 10 ms past its expiry.
	Clock func() time.Time
}

const (
	shardBits  = 6
	shardCount = 1 << shardBits
	// cacheLine is what shards are padded to (x86 prefetches line pairs).
	cacheLine = 128
)

// Cache is an entitlement cache. It is safe for concurrent use.
//
// A shard, picked by the customer's hash so that a customer's decisions
// share it, holds an open-addressing table of decisions that a hit reads
// without a lock: one hash, one probe, an atomic clock read, and no write.
// Changes take the shard's lock, which also guards an index of the
// decisions by customer, so Invalidate touches the customer's decisions
// only.
type Cache struct {
	load     LoadFunc
	cfg      Config
	perShard int
	seed     maphash.Seed
	clock    *coarseClock
	wallBase time.Time // Config.Clock's reading at New
	shards   [shardCount]paddedShard
}

type shard struct {
	table atomic.Pointer[table]

	mu        sync.Mutex
	customers map[customerKey]*customer
	entries   int // live decisions in table
}

type paddedShard struct {
	shard
	_ [cacheLine - unsafe.Sizeof(shard{})%cacheLine]byte
}

type customerKey struct {
	p  marketplace.CloudProvider
	id string
}

// customer is the shard's record of one customer, under the shard's lock.
type customer struct {
	key customerKey // the shard's own copy of the strings
	// gen grows with every Invalidate of the customer. A load stores its
	// answer only if its customer record is still the shard's and gen did
	// not move while it ran.
	gen      uint64
	decided  []*decision      // live decisions in the table
	inflight map[string]*call // loads in progress, by feature
}

// decision is one cached answer. Only dead changes once it is in a table:
// it is set when the decision is invalidated or evicted.
type decision struct {
	hash  uint64
	key   Key
	err   error
	until int64 // on the cache's clock (see Cache.now)
	dead  atomic.Bool
}

// table is an open-addressing hash table (linear probing) of decisions,
// read without a lock. Under the shard's lock a writer fills an empty slot,
// replaces a slot's decision with a newer one for the same key, or
// publishes a new table; a slot is never emptied, so a probe that meets an
// empty slot has proven the key absent.
type table struct {
	slots []slot
	mask  uint64
	used  int // filled slots; under the shard's lock
}

// slot holds a decision and its key's hash, so that a probe passes other
// keys without reading their decisions (a cache miss each). hash is set
// before d, when the slot is filled, and never changes after.
type slot struct {
	hash atomic.Uint64
	d    atomic.Pointer[decision]
}

// newTable returns a table for n decisions at a load of at most 3/4. The
// hashes in the slots keep the probes past other keys cheap.
func newTable(n int) *table {
	size := 16
	for size*3/4 < n+1 {
		size *= 2
	}
	return &table{slots: make([]slot, size), mask: uint64(size - 1)}
}

// find returns the slot that holds k, or the empty slot where k belongs.
func (tb *table) find(h uint64, k *Key) *slot {
	for i := h >> shardBits; ; i++ {
		s := &tb.slots[i&tb.mask]
		d := s.d.Load()
		if d == nil || (s.hash.Load() == h && d.key == *k) {
			return s
		}
	}
}

// set stores d in s, which find returned for d's key. The caller holds the
// shard's lock.
func (tb *table) set(s *slot, d *decision) {
	if s.d.Load() == nil {
		s.hash.Store(d.hash)
		tb.used++
	}
	s.d.Store(d)
}

// call is a load in progress; the checks of its key that miss while it runs
// wait for it instead of loading again.
type call struct {
	done    chan struct{}
	err     error
	retry   bool // the loading check's context ended: the others load themselves
	waiters int  // checks waiting besides the loader (tests)
}

// New returns a cache that loads misses with load.
func New(load LoadFunc, cfg Config) *Cache {
	if cfg.TTL <= 0 {
		cfg.TTL = time.Minute
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = 10 * time.Second
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 100_000
	}
	c := &Cache{load: load, cfg: cfg, perShard: max(1, cfg.MaxEntries/shardCount),
		seed: maphash.MakeSeed(), clock: newCoarseClock()}
	if cfg.Clock != nil {
		c.wallBase = cfg.Clock()
	}
	for i := range c.shards {
		c.shards[i].table.Store(newTable(0))
		c.shards[i].customers = make(map[customerKey]*customer)
	}
	return c
}

// Close stops the goroutine that advances the cache's coarse clock and
// waits until it has returned; whoever made the cache calls it when done
// with it. A closed cache still answers, reading the system clock on every
// check. Close may be called more than once.
func (c *Cache) Close() { c.clock.close() }

// hash hashes k: the customer alone picks the shard (the low bits), so
// that a customer's decisions share one; the feature moves the slot.
func (c *Cache) hash(p marketplace.CloudProvider, customer, feature string) uint64 {
	h := maphash.String(c.seed, customer)
	// Providers and features are short: fold them in cheaply, above the
	// shard bits.
	f := uint64(14695981039346656037)
	for i := 0; i < len(p); i++ {
		f = (f ^ uint64(p[i])) * 1099511628211
	}
	f ^= 0xff
	for i := 0; i < len(feature); i++ {
		f = (f ^ uint64(feature[i])) * 1099511628211
	}
	return h ^ f<<shardBits
}

func (c *Cache) shard(h uint64) *shard { return &c.shards[h&(shardCount-1)].shard }

// now is the time on the cache's clock in nanoseconds: coarse (see
// coarseClock) unless Config.Clock is set.
func (c *Cache) now() int64 {
	if c.cfg.Clock != nil {
		return int64(c.cfg.Clock().Sub(c.wallBase))
	}
	return c.clock.read()
}

// exactNow is now read exactly, for misses.
func (c *Cache) exactNow() int64 {
	if c.cfg.Clock != nil {
		return int64(c.cfg.Clock().Sub(c.wallBase))
	}
	return c.clock.exact()
}

// Check returns nil if the customer is entitled to the feature; an error
// wrapping marketplace.ErrNoActiveSubscription or ErrEntitlementDenied if
// not; or the load's error if it could not be decided.
func (c *Cache) Check(ctx context.Context, k Key) error {
	h := c.hash(k.Provider, k.Customer, k.Feature)
	s := c.shard(h)
	if d := s.table.Load().find(h, &k).d.Load(); d != nil && !d.dead.Load() && c.now() < d.until {
		return d.err
	}
	return c.miss(ctx, s, h, k)
}

// miss loads k, or waits for the load of k in progress.
func (c *Cache) miss(ctx context.Context, s *shard, h uint64, k Key) error {
	ck := customerKey{k.Provider, k.Customer}
	for {
		s.mu.Lock()
		// Another check may have stored the decision meanwhile.
		if d := s.table.Load().find(h, &k).d.Load(); d != nil && !d.dead.Load() && c.exactNow() < d.until {
			s.mu.Unlock()
			return d.err
		}
		cu := s.customers[ck]
		if cu == nil {
			// The key's strings may point into a request: keep copies.
			cu = &customer{key: customerKey{marketplace.CloudProvider(intern(string(k.Provider))), intern(k.Customer)}}
			s.customers[cu.key] = cu
		}
		if cl := cu.inflight[k.Feature]; cl != nil {
			cl.waiters++
			s.mu.Unlock()
			select {
			case <-cl.done:
			case <-ctx.Done():
				return fmt.Errorf("entitlement: check %s/%s/%s: %w", k.Provider, k.Customer, k.Feature, ctx.Err())
			}
			if cl.retry {
				continue
			}
			return cl.err
		}
		cl := &call{done: make(chan struct{})}
		if cu.inflight == nil {
			cu.inflight = make(map[string]*call)
		}
		cu.inflight[k.Feature] = cl
		gen := cu.gen
		s.mu.Unlock()
		return c.loadInto(ctx, s, cu, gen, cl, h, k)
	}
}

// loadInto runs the load of k for the check that registered cl, stores the
// decision unless the customer was invalidated meanwhile, and releases the
// checks waiting on cl.
func (c *Cache) loadInto(ctx context.Context, s *shard, cu *customer, gen uint64, cl *call, h uint64, k Key) error {
	var d *decision
	defer func() {
		s.mu.Lock()
		if d != nil && s.customers[cu.key] == cu && cu.gen == gen { // no Invalidate of the customer began since we looked
			c.store(s, cu, d)
		}
		if cu.inflight[k.Feature] == cl { // Invalidate may have dropped it
			delete(cu.inflight, k.Feature)
		}
		s.forgetIfEmpty(cu)
		s.mu.Unlock()
		close(cl.done)
	}()
	// A panicking load leaves this error for the waiters.
	cl.err = fmt.Errorf("entitlement: check %s/%s/%s: the load did not return", k.Provider, k.Customer, k.Feature)
	dec, err := c.load(ctx, k)
	if err != nil {
		cl.err = fmt.Errorf("entitlement: check %s/%s/%s: %w", k.Provider, k.Customer, k.Feature, err)
		cl.retry = ctx.Err() != nil
		return cl.err
	}
	cl.err = dec.Err
	ttl := c.cfg.TTL
	if dec.Err != nil {
		ttl = c.cfg.NegativeTTL
	}
	now := c.exactNow()
	until := now + int64(ttl)
	if !dec.Until.IsZero() {
		var left time.Duration
		if c.cfg.Clock != nil {
			left = dec.Until.Sub(c.cfg.Clock())
		} else {
			left = time.Until(dec.Until)
		}
		until = min(until, now+int64(left))
	}
	d = &decision{hash: h, err: dec.Err, until: until,
		key: Key{Provider: cu.key.p, Customer: cu.key.id, Feature: intern(k.Feature)}}
	return dec.Err
}

// store puts d in the table and the customer's index, in place of an older
// decision for its key, evicting if the shard is over its share of
// MaxEntries. The caller holds s.mu.
func (c *Cache) store(s *shard, cu *customer, d *decision) {
	tb := s.table.Load()
	sl := tb.find(d.hash, &d.key)
	old := sl.d.Load()
	if old == nil && (tb.used+1)*4 > len(tb.slots)*3 {
		tb = s.rebuild(tb)
		sl = tb.find(d.hash, &d.key)
		old = sl.d.Load()
	}
	tb.set(sl, d)
	if old != nil && !old.dead.Load() {
		old.dead.Store(true)
		cu.remove(old)
		s.entries--
	}
	cu.decided = append(cu.decided, d)
	s.entries++
	for s.entries > c.perShard {
		s.evictOne()
	}
}

// rebuild publishes a table of the live decisions of tb, with room to
// grow. The caller holds s.mu.
func (s *shard) rebuild(tb *table) *table {
	nt := newTable(2*s.entries + 8)
	for i := range tb.slots {
		if d := tb.slots[i].d.Load(); d != nil && !d.dead.Load() {
			nt.set(nt.find(d.hash, &d.key), d)
		}
	}
	s.table.Store(nt)
	return nt
}

// evictOne drops the decisions of a customer picked at random (map order).
// The caller holds s.mu.
func (s *shard) evictOne() {
	for _, cu := range s.customers {
		if len(cu.decided) == 0 {
			continue
		}
		s.drop(cu)
		s.forgetIfEmpty(cu)
		return
	}
}

// drop marks the customer's decisions dead. The caller holds s.mu.
func (s *shard) drop(cu *customer) {
	for _, d := range cu.decided {
		d.dead.Store(true)
	}
	s.entries -= len(cu.decided)
	clear(cu.decided)
	cu.decided = cu.decided[:0]
}

// forgetIfEmpty removes a customer record that holds nothing. A load that
// began under it then stores nothing. The caller holds s.mu.
func (s *shard) forgetIfEmpty(cu *customer) {
	if len(cu.decided) == 0 && len(cu.inflight) == 0 && s.customers[cu.key] == cu {
		delete(s.customers, cu.key)
	}
}

// remove takes d out of the customer's index.
func (cu *customer) remove(d *decision) {
	for i, x := range cu.decided {
		if x == d {
			last := len(cu.decided) - 1
			cu.decided[i] = cu.decided[last]
			cu.decided[last] = nil
			cu.decided = cu.decided[:last]
			return
		}
	}
}

// Invalidate forgets every decision about a customer. Loads in flight for
// it still answer their callers, but are not cached, and checks that begin
// afterwards do not wait for them. It costs the customer's decisions, not
// the cache's.
func (c *Cache) Invalidate(p marketplace.CloudProvider, customer string) {
	s := c.shard(c.hash(p, customer, ""))
	ck := customerKey{p, customer}
	s.mu.Lock()
	defer s.mu.Unlock()
	cu := s.customers[ck]
	if cu == nil {
		return // nothing cached, nothing loading
	}
	cu.gen++
	clear(cu.inflight)
	s.drop(cu)
	s.forgetIfEmpty(cu)
}

// InvalidateKey forgets one decision. Loads in flight for the key's
// customer still answer their callers, but are not cached.
func (c *Cache) InvalidateKey(k Key) {
	h := c.hash(k.Provider, k.Customer, k.Feature)
	s := c.shard(h)
	ck := customerKey{k.Provider, k.Customer}
	s.mu.Lock()
	defer s.mu.Unlock()
	cu := s.customers[ck]
	if cu == nil {
		return
	}
	cu.gen++
	clear(cu.inflight)
	if d := s.table.Load().find(h, &k).d.Load(); d != nil && !d.dead.Load() {
		d.dead.Store(true)
		cu.remove(d)
		s.entries--
	}
	s.forgetIfEmpty(cu)
}

// Len returns the number of cached decisions.
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i].shard
		s.mu.Lock()
		n += s.entries
		s.mu.Unlock()
	}
	return n
}

// intern returns the canonical copy of s (package unique copies it, so the
// cache never keeps a request's buffer alive). Providers and features are a
// handful of names: one copy of each, compared by hits that stay in cache,
// instead of a copy per decision scattered over the heap.
func intern(s string) string { return unique.Make(s).Value() }

// Denied and Inactive build the refusals a LoadFunc returns.
func Denied(k Key) Decision {
	return Decision{Err: fmt.Errorf("%s customer %s, feature %s: %w", k.Provider, k.Customer, k.Feature, marketplace.ErrEntitlementDenied)}
}

// Inactive is the refusal for a customer with no active subscription.
func Inactive(k Key) Decision {
	return Decision{Err: fmt.Errorf("%s customer %s: %w", k.Provider, k.Customer, marketplace.ErrNoActiveSubscription)}
}
