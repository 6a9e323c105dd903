package marketplace

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unique"
	"unsafe"
)

const (
	// trackerShardBits is log2 of the number of independently locked parts
	// of a tracker lane. 64 shards keep concurrent inserts of new pairs (the
	// only writers that lock) from meeting except by chance.
	trackerShardBits = 6
	trackerShards    = 1 << trackerShardBits

	// maxTrackerLanes caps the number of lanes (see UsageTracker), and with
	// it the memory a pair can take when it is recorded from every CPU.
	maxTrackerLanes = 8

	// cacheLine is the unit padded to so that neighbouring shards do not
	// share a cache line (128 rather than 64 bytes: x86 prefetches lines in
	// pairs).
	cacheLine = 128
)

// pairKey identifies what a UsageTracker sums: one customer's use of one
// dimension.
type pairKey struct{ customer, dimension string }

// usageCell holds the pending usage of one pair in one lane. Its key and
// hash never change; sum, count and dead change only atomically. The cell is
// 64 bytes, one size class and one cache line, so two busy pairs never share
// a line.
type usageCell struct {
	key   pairKey
	hash  uint64
	sum   atomic.Int64 // pending quantity
	count atomic.Int64 // number of Record calls behind sum
	// dead is set once the cell has been removed from its table. An add
	// that lands on a dead cell moves the cell's contents to the pair's
	// live cell (see rescue), so no add is ever lost to an evicted cell.
	dead atomic.Bool
}

// cellTable is an open-addressing hash table (linear probing) of cells.
// Readers probe it without any lock; the shard's writer only ever fills an
// empty slot with a fully built cell, or replaces the whole table. A slot,
// once filled, is never emptied, so a probe that meets an empty slot has
// proven the pair absent from this table.
type cellTable struct {
	slots []cellSlot
	mask  uint64
	used  int // filled slots; changed only under the shard's lock
}

// cellSlot holds a cell and its pair's hash, so that a probe passes other
// pairs without reading their cells (a cache miss each). hash is stored
// before c and never changes after.
type cellSlot struct {
	hash atomic.Uint64
	c    atomic.Pointer[usageCell]
}

// newCellTable returns a table with room for at least n cells below its
// maximum load of 3/4.
func newCellTable(n int) *cellTable {
	size := 8
	for size*3/4 < n+1 {
		size *= 2
	}
	return &cellTable{slots: make([]cellSlot, size), mask: uint64(size - 1)}
}

// find returns the cell of the pair, or nil. The table is never full, so
// the probe ends.
func (tb *cellTable) find(h uint64, customerID, dimension string) *usageCell {
	for i := h >> trackerShardBits; ; i++ {
		s := &tb.slots[i&tb.mask]
		c := s.c.Load()
		if c == nil {
			return nil
		}
		if s.hash.Load() == h && c.key.customer == customerID && c.key.dimension == dimension {
			return c
		}
	}
}

// lookup is find for Record's hot path: the same probe, with keys of 8 to
// 16 bytes (most customer ids and dimension names) compared by two 8-byte
// loads each, in line, rather than by a call to the runtime's memequal.
func (tb *cellTable) lookup(h uint64, customerID, dimension string) *usageCell {
	for i := h >> trackerShardBits; ; i++ {
		s := &tb.slots[i&tb.mask]
		c := s.c.Load()
		if c == nil {
			return nil
		}
		if s.hash.Load() != h {
			continue
		}
		k := &c.key
		if len(k.customer) != len(customerID) || len(k.dimension) != len(dimension) {
			continue
		}
		if n := len(customerID); n >= 8 && n <= 16 {
			if load64(k.customer) != load64(customerID) || load64(k.customer[n-8:]) != load64(customerID[n-8:]) {
				continue
			}
		} else if k.customer != customerID {
			continue
		}
		if n := len(dimension); n >= 8 && n <= 16 {
			if load64(k.dimension) != load64(dimension) || load64(k.dimension[n-8:]) != load64(dimension[n-8:]) {
				continue
			}
		} else if k.dimension != dimension {
			continue
		}
		return c
	}
}

// put stores c in the first empty slot of its probe sequence. The caller
// holds the shard's lock and has made sure the table has room.
func (tb *cellTable) put(c *usageCell) {
	for i := c.hash >> trackerShardBits; ; i++ {
		if s := &tb.slots[i&tb.mask]; s.c.Load() == nil {
			s.hash.Store(c.hash)
			s.c.Store(c)
			tb.used++
			return
		}
	}
}

// full reports whether one more cell would exceed the maximum load.
func (tb *cellTable) full() bool { return (tb.used+1)*4 > len(tb.slots)*3 }

// trackerShard is one part of a lane. Record reads table with one atomic
// load and touches nothing else of the shard; mu serialises the writers:
// inserting a pair, growing the table, evicting idle pairs.
type trackerShard struct {
	table atomic.Pointer[cellTable]
	mu    sync.Mutex
}

// paddedShard keeps each shard on a cache line of its own.
type paddedShard struct {
	trackerShard
	_ [cacheLine - unsafe.Sizeof(trackerShard{})%cacheLine]byte
}

// trackerLane is a complete table of pairs, split in shards by hash.
type trackerLane struct {
	owner  *UsageTracker
	shards [trackerShards]paddedShard
}

func newTrackerLane(owner *UsageTracker) *trackerLane {
	ln := &trackerLane{owner: owner}
	for i := range ln.shards {
		ln.shards[i].table.Store(newCellTable(0))
	}
	return ln
}

// UsageTracker aggregates usage in memory between flushes to a
// MeteringService. It keeps running sums per (customer, dimension) pair, so
// its memory grows with the number of distinct pairs, never with the number
// of records, and recording usage for a pair it already holds takes no lock
// and does not allocate.
//
// A counter that every CPU increments would move from one CPU's cache to the
// other's on nearly every record, which costs more than all the rest of
// Record. The tracker therefore keeps lanes (complete tables of pairs), one
// per CPU up to 8, and each CPU adds to its own lane's counters; Flush,
// Pending and Aggregate sum the lanes. A pair recorded from every CPU takes
// one 64-byte cell in each lane, and one copy of its key. On linux/amd64
// Record asks the processor which CPU it runs on (RDPID, a few ns); elsewhere
// it takes a lane from a sync.Pool, whose per-P cache gives each P the same
// lane call after call, at about 4 ns more per record. Either way the lane
// is a hint for locality only: the counters are atomic, so two goroutines
// that pick the same lane still add exactly.
//
// Usage is held in memory only: what has not been flushed is lost if the
// process dies. Flush never loses usage and never sends the same usage twice
// as long as the MeteringService reports its outcome correctly (see Flush):
// a batch whose outcome is unknown (ErrOutcomeUnknown) is resubmitted
// unchanged under its idempotency key, which ledger.Meter counts once. A
// service that cannot say so, such as a cloud whose response was lost, leaves
// the tracker two choices, send again or drop; Flush sends again. For
// exactly-once reporting flush into package ledger, which persists usage in
// hourly buckets and resends identical payloads that the clouds deduplicate.
//
// Sums are int64 and must not overflow between two flushes.
//
// A UsageTracker must be created with NewUsageTracker. It is safe for
// concurrent use.
type UsageTracker struct {
	// k0 and k1 are the secret keys of the pair hash (see hash), random
	// per tracker so that no one can choose customer ids that collide.
	k0, k1 uint64
	lanes  []*trackerLane
	// byCPU is set when Record picks its lane by CPU id (cpuLanes);
	// otherwise it takes one from lanePool, whose per-P cache gives a P the
	// same lane back call after call.
	byCPU    bool
	laneMask uint32 // len(lanes)-1, a power of two less one where byCPU
	lanePool sync.Pool
	nextLane atomic.Uint32
	dropped  atomic.Int64
	doubt    inDoubtSet // batches whose outcome is unknown; Flush alone uses it
}

// NewUsageTracker returns an empty tracker.
func NewUsageTracker() *UsageTracker {
	return newUsageTracker(cpuLanes())
}

// newUsageTracker returns an empty tracker whose Record picks lanes by CPU
// id if byCPU, or else from a sync.Pool.
func newUsageTracker(byCPU bool) *UsageTracker {
	// With one P, records never run at the same time: one lane. Lanes
	// picked by CPU id are one per CPU, as the Ps may run on any of them,
	// rounded up to a power of two so that a mask, not a division (about
	// 3% of a record's CPU in perf), maps a CPU id to its lane.
	n := min(max(runtime.GOMAXPROCS(0), 1), maxTrackerLanes)
	if byCPU && n > 1 {
		n = min(1<<bits.Len(uint(max(runtime.NumCPU(), n)-1)), maxTrackerLanes)
	}
	// math/rand/v2's global source is seeded from the operating system.
	t := &UsageTracker{k0: rand.Uint64(), k1: rand.Uint64() | 1, lanes: make([]*trackerLane, n), byCPU: byCPU, laneMask: uint32(n - 1)}
	for i := range t.lanes {
		t.lanes[i] = newTrackerLane(t)
	}
	// New hands out existing lanes round robin: a P whose cached lane was
	// dropped by a garbage collection gets one back without allocating.
	t.lanePool.New = func() any {
		return t.lanes[int(t.nextLane.Add(1)-1)%len(t.lanes)]
	}
	return t
}

// Record adds quantity to the pending usage of customerID in dimension.
//
// Quantities are non-negative by definition of metered usage. As Record has
// no error to return, a negative quantity is dropped and counted in Dropped,
// where monitoring can see it; a zero quantity records nothing. Record is
// safe for concurrent use. For a pair the tracker already holds it takes no
// lock and does not allocate; a pair is held from its first record until a
// Flush finds it idle for a whole flush interval.
func (t *UsageTracker) Record(customerID, dimension string, quantity int64) {
	if quantity <= 0 {
		if quantity < 0 {
			t.dropped.Add(1)
		}
		return
	}
	h := t.hash(customerID, dimension)
	ln := t.lanes[0]
	pooled := false
	if len(t.lanes) > 1 {
		if t.byCPU {
			ln = t.lanes[cpuID()&t.laneMask]
		} else {
			ln, pooled = t.lanePool.Get().(*trackerLane), true
		}
	}
	// lane.add, written out: every call saved is about a nanosecond of a
	// record that costs a few tens.
	s := &ln.shards[h&(trackerShards-1)].trackerShard
	if c := s.table.Load().lookup(h, customerID, dimension); c != nil {
		// usageCell.add, written out.
		c.sum.Add(quantity)
		c.count.Add(1)
		if c.dead.Load() {
			c.rescue(ln)
		}
	} else {
		s.insert(t, h, customerID, dimension, quantity, 1)
	}
	if pooled {
		t.lanePool.Put(ln)
	}
}

// Dropped returns how many Record calls were ignored because their quantity
// was negative. A non-zero value means a caller has a bug.
func (t *UsageTracker) Dropped() int64 { return t.dropped.Load() }

// hash returns the pair's hash: its low bits pick the shard, the others the
// slot in the shard's table.
//
// The customer id, which comes from outside and is what makes pairs many, is
// hashed in full under the tracker's secret keys. The dimension is one of the
// few names a seller declares, so it is folded in from its length and its
// first and last eight bytes, at a fraction of the cost of hashing it too:
// dimensions alike in all three only share a probe sequence, as find
// compares whole keys.
func (t *UsageTracker) hash(customerID, dimension string) uint64 {
	return pairHash(t.k0, t.k1, customerID, dimension)
}

// pairHash is the pair hash under the keys k0 and k1: the dimension folded
// into k0 (see hash), then wyhash, the hash the Go runtime uses for strings
// on machines without AES instructions, of the customer id. It replaces
// maphash.String, which reaches the runtime's AES hash through three calls
// that are not inlined: this is one call, and for the 8 to 16 bytes of a
// typical customer id and dimension it is four loads and two 64-bit
// multiplies.
func pairHash(k0, k1 uint64, s, dimension string) uint64 {
	// The dimension's length and first and last eight bytes, which cover
	// names of up to 16 bytes; names shorter than 8 bytes fold to distinct
	// values.
	seed := k0
	if d, m := dimension, len(dimension); m >= 8 {
		seed ^= load64(d) ^ bits.RotateLeft64(load64(d[m-8:]), 31) ^ uint64(m)*0xbf58476d1ce4e5b9
	} else {
		w := uint64(m) << 56
		for i := range m {
			w |= uint64(d[i]) << (8 * i)
		}
		seed ^= w
	}
	n := len(s)
	var a, b uint64
	switch {
	case n == 0:
		return wymix(seed, k1)
	case n < 4:
		a = uint64(s[0]) | uint64(s[n>>1])<<8 | uint64(s[n-1])<<16
	case n < 8:
		a = uint64(load32(s))
		b = uint64(load32(s[n-4:]))
	case n <= 16:
		a = load64(s)
		b = load64(s[n-8:])
	default:
		for r := s; len(r) > 16; r = r[16:] {
			seed = wymix(load64(r)^k1, load64(r[8:])^seed)
		}
		// The last 16 bytes, which may overlap those already mixed in.
		a = load64(s[n-16:])
		b = load64(s[n-8:])
	}
	return wymix(0xa0761d6478bd642f^uint64(n), wymix(a^k1, b^seed))
}

// wymix folds the 128-bit product of a and b to 64 bits.
func wymix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// load32 returns the first four bytes of s, little endian; the compiler
// makes it one load.
func load32(s string) uint32 {
	_ = s[3]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

// load64 returns the first eight bytes of s, little endian; the compiler
// makes it one load.
func load64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// putBack adds usage taken out by Flush back to the tracker.
func (t *UsageTracker) putBack(d drained) {
	t.lanes[0].add(t.hash(d.key.customer, d.key.dimension), d.key.customer, d.key.dimension, d.sum, d.count)
}

// add adds sum and count to the pair in this lane, wherever its live cell
// is, creating the cell if needed.
func (ln *trackerLane) add(h uint64, customerID, dimension string, sum, count int64) {
	s := &ln.shards[h&(trackerShards-1)].trackerShard
	if c := s.table.Load().find(h, customerID, dimension); c != nil {
		c.add(ln, sum, count)
		return
	}
	s.insert(ln.owner, h, customerID, dimension, sum, count)
}

// add adds to the cell, then, if the cell has been evicted meanwhile,
// rescues its contents. Atomics are sequentially consistent in Go, so either
// the evicting Flush's swap comes after these adds and takes them, or the
// dead flag is visible here and the rescue takes them: never neither.
func (c *usageCell) add(ln *trackerLane, sum, count int64) {
	c.sum.Add(sum)
	c.count.Add(count)
	if c.dead.Load() {
		c.rescue(ln)
	}
}

// rescue moves whatever a dead cell holds to the pair's live cell in ln.
// Several goroutines may rescue the same cell; the swaps give each unit of
// usage to exactly one of them.
func (c *usageCell) rescue(ln *trackerLane) {
	n := c.count.Swap(0)
	q := c.sum.Swap(0)
	if n != 0 || q != 0 {
		ln.add(c.hash, c.key.customer, c.key.dimension, q, n)
	}
}

// insert adds sum and count to the pair under the shard's lock, creating its
// cell if no other goroutine has done so meanwhile.
func (s *trackerShard) insert(t *UsageTracker, h uint64, customerID, dimension string, sum, count int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.table.Load()
	c := tb.find(h, customerID, dimension)
	if c == nil {
		c = &usageCell{key: t.ownKey(h, customerID, dimension), hash: h}
		if tb.full() {
			tb = s.rebuild(tb, tb.used+1, nil)
		}
		tb.put(c)
	}
	// c is in the current table and cannot be evicted while we hold the
	// lock, so the add needs no rescue check.
	c.sum.Add(sum)
	c.count.Add(count)
}

// ownKey returns the pair's key with strings the tracker owns: those of
// another lane's cell for the pair if there is one, so that a pair recorded
// from several Ps keeps one copy of its key, or else interned copies of the
// caller's strings, which may point into a large buffer (a request body)
// that the tracker must not keep alive. Interning keeps one copy of a
// customer id for all its dimensions, and of each dimension name for all
// customers: less memory for Record to read through when it compares keys.
func (t *UsageTracker) ownKey(h uint64, customerID, dimension string) pairKey {
	for _, ln := range t.lanes {
		if c := ln.shards[h&(trackerShards-1)].table.Load().find(h, customerID, dimension); c != nil {
			return c.key
		}
	}
	return pairKey{unique.Make(customerID).Value(), unique.Make(dimension).Value()}
}

// rebuild publishes a new table holding the cells of tb except those in
// drop, sized for at least n cells. The caller holds the lock.
func (s *trackerShard) rebuild(tb *cellTable, n int, drop map[*usageCell]bool) *cellTable {
	nt := newCellTable(n)
	for i := range tb.slots {
		if c := tb.slots[i].c.Load(); c != nil && !drop[c] {
			nt.put(c)
		}
	}
	s.table.Store(nt)
	return nt
}

// evict removes from the shard's table the cells of idle that are still
// idle, then marks them dead and rescues any add that reached them in the
// meantime (see usageCell.add).
func (s *trackerShard) evict(ln *trackerLane, idle []*usageCell) {
	drop := make(map[*usageCell]bool, len(idle))
	s.mu.Lock()
	for _, c := range idle {
		if c.count.Load() == 0 && c.sum.Load() == 0 {
			drop[c] = true
		}
	}
	if len(drop) > 0 {
		tb := s.table.Load()
		s.rebuild(tb, tb.used-len(drop), drop)
	}
	s.mu.Unlock()
	// Outside the lock: a rescue may need to insert the pair again.
	for c := range drop {
		c.dead.Store(true)
		c.rescue(ln)
	}
}

// Pending returns the number of Record calls whose usage has not yet been
// accepted by a Flush. It visits every pair, so it is meant for metrics and
// tests rather than a hot path. While Flush runs concurrently, a record may
// be counted as pending for a moment after its quantity was drained; it is
// never counted as flushed before.
func (t *UsageTracker) Pending() int {
	var n int64
	t.eachCell(func(c *usageCell) { n += c.count.Load() })
	return int(n)
}

// Aggregate returns the pending usage, customer → dimension → quantity,
// without draining it. Pairs with nothing pending are left out. The result
// is a snapshot the caller owns.
func (t *UsageTracker) Aggregate() map[string]map[string]int64 {
	out := make(map[string]map[string]int64)
	t.eachCell(func(c *usageCell) {
		q := c.sum.Load()
		if q == 0 {
			return
		}
		dims := out[c.key.customer]
		if dims == nil {
			dims = make(map[string]int64)
			out[c.key.customer] = dims
		}
		dims[c.key.dimension] += q
	})
	return out
}

// eachCell calls f for every cell of every lane's current tables. It takes
// no lock: cells inserted meanwhile may or may not be visited.
func (t *UsageTracker) eachCell(f func(*usageCell)) {
	for _, ln := range t.lanes {
		for i := range ln.shards {
			tb := ln.shards[i].table.Load()
			for j := range tb.slots {
				if c := tb.slots[j].c.Load(); c != nil {
					f(c)
				}
			}
		}
	}
}

// drained is the usage of one pair taken out by a Flush.
type drained struct {
	key        pairKey
	sum, count int64
}

// Flush submits all pending usage to svc in one SubmitUsage call, one
// UsageRecord per pair with a non-zero quantity, stamped with the time of
// the flush, and returns the number of Record calls whose usage svc
// accepted. With nothing pending it does not call svc.
//
// Each cell is drained atomically, so Record calls running concurrently
// with Flush are never lost: their usage goes either into this flush or
// stays pending for the next. If svc returns a *SubmitError (see
// errors.As), the pairs it lists as failed are put back, with the quantity
// that was sent for them, and every other record counts as accepted; any
// other error, or a panic in svc, puts everything back. Either way the error
// is returned, and what was put back is sent by the next Flush. Flush never
// retries by itself; wrap it in RetryFunc for that.
//
// Every batch is submitted under its own idempotency key (see
// WithIdempotencyKey). An error wrapping ErrOutcomeUnknown means the batch
// may have been applied: it is not put back, which could bill it twice, but
// kept aside in doubt (see InDoubt), and the next Flush first resubmits it
// unchanged under the same key, before it drains new usage. A service that
// honours the key, as ledger.Meter does, then counts it exactly once. Flush
// returns that error too, matched with errors.Is(err, ErrOutcomeUnknown).
//
// Flush also forgets pairs that had nothing pending since the previous
// Flush, so the tracker's memory follows the pairs in recent use rather than
// every pair ever seen. Concurrent Flush calls are safe; each submits what it
// drained.
func (t *UsageTracker) Flush(ctx context.Context, svc MeteringService) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("marketplace: flush usage: %w", err)
	}
	resolved, err := t.resubmitInDoubt(ctx, svc)
	if err != nil {
		return resolved, err
	}
	batch, total := t.drain()
	now := time.Now()
	records := make([]UsageRecord, 0, len(batch))
	for _, d := range batch {
		if d.sum != 0 {
			records = append(records, UsageRecord{CustomerID: d.key.customer, Dimension: d.key.dimension, Quantity: d.sum, Timestamp: now})
		}
	}
	if len(records) == 0 {
		// At most counts were drained, whose quantities went out with an
		// earlier flush (see Pending).
		return resolved + int(total), nil
	}

	putBackAll := true
	defer func() {
		if putBackAll {
			for _, d := range batch {
				t.putBack(d)
			}
		}
	}()
	key := crand.Text()
	err = svc.SubmitUsage(WithIdempotencyKey(ctx, key), records)
	if err == nil {
		putBackAll = false
		return resolved + int(total), nil
	}
	var se *SubmitError
	if errors.As(err, &se) {
		putBackAll = false
		pairs, count := t.putBackFailed(batch, se.Failed)
		return resolved + int(total-count), fmt.Errorf("marketplace: flush usage: %d of %d records put back: %w", pairs, len(records), err)
	}
	if errors.Is(err, ErrOutcomeUnknown) {
		putBackAll = false
		t.doubt.keep(inDoubtBatch{key: key, records: records, count: total})
		return resolved, fmt.Errorf("marketplace: flush usage: %d records kept in doubt, to resubmit under key %s: %w", len(records), key, err)
	}
	return resolved, fmt.Errorf("marketplace: flush usage: all %d records put back: %w", len(records), err)
}

// InDoubt returns the number of Record calls whose usage was submitted by a
// Flush that ended with an unknown outcome (ErrOutcomeUnknown) and that the
// next Flush resubmits. Pending does not count them.
func (t *UsageTracker) InDoubt() int {
	t.doubt.mu.Lock()
	defer t.doubt.mu.Unlock()
	var n int64
	for _, b := range t.doubt.batches {
		n += b.count
	}
	return int(n)
}

// resubmitInDoubt resubmits every batch in doubt, oldest first, each under
// its own key, and returns the Record calls behind those now accepted. It
// stops at the first error: that batch and the rest stay in doubt, never put
// back, since any of them may already be applied.
func (t *UsageTracker) resubmitInDoubt(ctx context.Context, svc MeteringService) (int, error) {
	pending := t.doubt.take()
	if len(pending) == 0 {
		return 0, nil
	}
	var accepted int64
	defer func() { t.doubt.keep(pending...) }() // what is left, also on a panic in svc
	for len(pending) > 0 {
		b := pending[0]
		if err := svc.SubmitUsage(WithIdempotencyKey(ctx, b.key), b.records); err != nil {
			return int(accepted), fmt.Errorf("marketplace: flush usage: resubmitting %d records in doubt under key %s: %w", len(b.records), b.key, err)
		}
		accepted += b.count
		pending = pending[1:]
	}
	return int(accepted), nil
}

// inDoubtBatch is a submitted batch whose outcome is unknown, kept to be
// resubmitted unchanged under the same key.
type inDoubtBatch struct {
	key     string
	records []UsageRecord
	count   int64 // Record calls behind the records
}

// inDoubtSet holds the batches in doubt. A Flush takes them all out while
// it resubmits, so two concurrent flushes never both count one.
type inDoubtSet struct {
	mu      sync.Mutex
	batches []inDoubtBatch
}

func (s *inDoubtSet) take() []inDoubtBatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.batches
	s.batches = nil
	return b
}

func (s *inDoubtSet) keep(b ...inDoubtBatch) {
	if len(b) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, b...)
}

// drain takes the pending usage out of every cell, summed per pair across
// lanes, and evicts the cells that were already idle. It returns what it
// took and the total count taken.
func (t *UsageTracker) drain() (batch []drained, total int64) {
	index := make(map[pairKey]int)
	var idle []*usageCell
	for _, ln := range t.lanes {
		for i := range ln.shards {
			s := &ln.shards[i].trackerShard
			idle = idle[:0]
			tb := s.table.Load()
			for j := range tb.slots {
				c := tb.slots[j].c.Load()
				if c == nil {
					continue
				}
				if c.count.Load() == 0 && c.sum.Load() == 0 {
					idle = append(idle, c)
					continue
				}
				// Count first: Record adds the sum before the count, so
				// every record counted here has its quantity in the sum
				// swapped next.
				n := c.count.Swap(0)
				q := c.sum.Swap(0)
				if n == 0 && q == 0 {
					continue
				}
				total += n
				if k, ok := index[c.key]; ok {
					batch[k].sum += q
					batch[k].count += n
					continue
				}
				index[c.key] = len(batch)
				batch = append(batch, drained{key: c.key, sum: q, count: n})
			}
			if len(idle) > 0 {
				s.evict(ln, idle)
			}
		}
	}
	return batch, total
}

// putBackFailed puts back the drained usage of the pairs listed in failed
// and returns the number of pairs and of Record calls put back. A pair is
// put back once, with what was sent for it, however often failed lists it;
// a listed pair that was not sent is ignored, as there is nothing of it to
// put back.
func (t *UsageTracker) putBackFailed(batch []drained, failed []UsageRecord) (pairs int, count int64) {
	index := make(map[pairKey]int, len(batch))
	for i, d := range batch {
		if d.sum != 0 {
			index[d.key] = i
		}
	}
	for _, r := range failed {
		k := pairKey{r.CustomerID, r.Dimension}
		i, ok := index[k]
		if !ok {
			continue
		}
		delete(index, k)
		t.putBack(batch[i])
		pairs++
		count += batch[i].count
	}
	return pairs, count
}
