package ledger

import (
	"fmt"
	"slices"
	"time"
)

// AppendBatch is one group commit as Store.Append receives it. The ledger
// has already applied its rules: it lists the batch's distinct event ids,
// and it builds the log entry of the records that count once the store has
// said which ids are new. A store only stores the ids and the entry, in one
// transaction:
//
//	fresh := insert b.EventIDs that are not stored yet (expiring at b.EventExpiry)
//	if entry := b.Entry(fresh); entry != nil {
//		append entry to the log
//	}
//	commit; return fresh
//
// An AppendBatch and the bytes of its Entry are valid only until Append
// returns; a store must not keep them.
type AppendBatch struct {
	// EventIDs are the distinct non-empty event ids of the batch (and the
	// idempotency keys of IngestOnce batches, each stored as one id), sorted,
	// so that stores with several writers lock them in one order and cannot
	// deadlock. Empty when no record has one: a store may then skip the
	// event table altogether.
	EventIDs []string
	// EventExpiry is how long new event ids must be kept at least: until
	// then PurgeEvents(t) with t before it must not remove them.
	EventExpiry time.Time

	recs  []Record
	slot  []int32 // per record: its id's index in EventIDs, or -1 (empty without ids)
	first []int32 // per id: the index of the first record that carries it
	ids   map[string]int32

	// Entry's working memory, reused across commits so that a commit of
	// thousands of records does not feed the garbage collector.
	idx    map[BucketKey]int
	deltas []Delta
	buf    []byte
}

// reset makes b the batch of recs. The ledger's committer owns one batch
// and reuses it.
func (b *AppendBatch) reset(recs []Record, eventExpiry time.Time) {
	if b.ids == nil {
		b.ids = make(map[string]int32)
		b.idx = make(map[BucketKey]int)
	}
	clear(b.ids)
	b.recs, b.EventExpiry = recs, eventExpiry
	b.EventIDs, b.slot, b.first = b.EventIDs[:0], b.slot[:0], b.first[:0]
	for i := range recs {
		if id := recs[i].dedupeID(); id != "" {
			if _, ok := b.ids[id]; !ok {
				b.ids[id] = int32(i) // for now, the first record with it
				b.EventIDs = append(b.EventIDs, id)
			}
		}
	}
	if len(b.EventIDs) == 0 {
		return
	}
	slices.Sort(b.EventIDs)
	for j, id := range b.EventIDs {
		b.first = append(b.first, b.ids[id])
		b.ids[id] = int32(j)
	}
	for i := range recs {
		j := int32(-1)
		if id := recs[i].dedupeID(); id != "" {
			j = b.ids[id]
		}
		b.slot = append(b.slot, j)
	}
}

// release drops the batch's references to the records' strings.
func (b *AppendBatch) release() {
	clear(b.ids)
	clear(b.idx)
	clear(b.deltas)
	clear(b.EventIDs)
	b.recs, b.deltas = nil, b.deltas[:0]
}

// counts reports whether record i counts given fresh: it has no event id,
// or it is the first record of the batch with an id that was new. Later
// records with the same id in one batch are duplicates of the first. A
// batch key (IngestOnce) covers all the records of the call that brought
// it first: a concurrent retry in the same commit does not count.
func (b *AppendBatch) counts(i int, fresh []bool) bool {
	if len(b.EventIDs) == 0 {
		return true
	}
	j := b.slot[i]
	if j < 0 {
		return true
	}
	if !fresh[j] {
		return false
	}
	f := int(b.first[j])
	if b.recs[i].EventID == "" && b.recs[i].batch != "" {
		return b.recs[i].call == b.recs[f].call
	}
	return f == i
}

// Entry returns the append-log entry (see EncodeDeltas) of the records that
// count, summed per bucket, given fresh: fresh[i] says whether EventIDs[i]
// was new to the store in this commit. It returns nil when no record counts:
// then nothing is appended. The bytes stay valid until the next call of
// Entry; a store that retries its transaction may call it again.
func (b *AppendBatch) Entry(fresh []bool) []byte {
	if len(fresh) != len(b.EventIDs) {
		panic(fmt.Sprintf("ledger: AppendBatch.Entry: fresh has %d entries for %d event ids", len(fresh), len(b.EventIDs)))
	}
	clear(b.idx)
	clear(b.deltas)
	b.deltas = b.deltas[:0]
	for i := range b.recs {
		if !b.counts(i, fresh) {
			continue
		}
		r := &b.recs[i]
		k := BucketKey{SeriesKey: SeriesKey{Provider: r.Provider, Customer: r.Customer, Dimension: r.Dimension}, Hour: HourOf(r.Time)}
		if j, ok := b.idx[k]; ok {
			b.deltas[j].Quantity += r.Quantity
			continue
		}
		b.idx[k] = len(b.deltas)
		b.deltas = append(b.deltas, Delta{BucketKey: k, Quantity: r.Quantity})
	}
	if len(b.deltas) == 0 {
		return nil
	}
	b.buf = EncodeDeltas(b.buf[:0], b.deltas)
	return b.buf
}

// Records returns the batch's records as validated, in order. A store
// needs only EventIDs and Entry; Records serves one that keeps raw records,
// such as a test double.
func (b *AppendBatch) Records() []Record { return b.recs }

// duplicates returns, per record, whether it did not count given fresh.
func (b *AppendBatch) duplicates(fresh []bool) []bool {
	dup := make([]bool, len(b.recs))
	for i := range dup {
		dup[i] = !b.counts(i, fresh)
	}
	return dup
}

// NewAppendBatch returns the batch of recs as the ledger would pass it to
// Append, for store tests and benchmarks that call a Store directly.
func NewAppendBatch(recs []Record, eventExpiry time.Time) *AppendBatch {
	b := new(AppendBatch)
	b.reset(recs, eventExpiry)
	return b
}
