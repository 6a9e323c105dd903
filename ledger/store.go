package ledger

import (
	"context"
	"time"

	"github.com/saasmarket/marketplace"
)

// This file is the interface a store author implements, apart from the
// ledger's user API (Ledger, Record, Config, Reporter), as database/sql/driver
// is apart from database/sql. A store keeps state; the ledger keeps the
// rules. A store author needs this file and the helpers it names:
// AppendBatch (grouping records into deltas, dropping repeated event ids),
// EncodeDeltas and Aggregator (the append log's format), PlanFold and
// PlanSeal (late usage, units, settlement). Package storetest is the
// conformance suite every Store must pass; package sqlite is a complete
// example.
//
// A row the store cannot read must not halt everyone else's usage: a log
// entry that Aggregator.AddEntry refuses (a checksum that does not match, an
// unknown cloud, bytes that do not decode; nothing of it is added) is moved
// to the store's quarantine (marketplace.QuarantineStore) with the error as
// its reason, in the same transaction that deletes it from the log, and the
// fold goes on with the other entries. Nothing of a quarantined entry is
// billed until an operator restores it, mended, into the log
// (RestoreQuarantined checks it with CheckEntry), where the next fold takes
// it exactly once. storetest checks this by damaging rows on disk
// (Harness.Damage).

// Store is the durable state of the ledger, implemented once per database.
// Users do not call it; the Ledger and the Reporter do.
//
// Every method is atomic: it commits all of its change or none of it, and a
// commit is durable (fsync'd) when the method returns. A method returns an
// error wrapping marketplace.ErrOutcomeUnknown when it cannot tell whether
// its commit landed (the connection broke during COMMIT); any other error
// means nothing was changed. Methods honour ctx: the ledger cancels it on
// Close, and a store that hangs past that delays only its own goroutine.
type Store interface {
	// Append stores one group commit, in one transaction: it inserts the
	// batch's EventIDs that are not stored yet, keeping them at least until
	// b.EventExpiry, and returns fresh, with fresh[i] true when
	// b.EventIDs[i] was inserted by this commit (len(fresh) ==
	// len(b.EventIDs)). In the same transaction it appends b.Entry(fresh)
	// to the append log, unless that is nil; Fold moves the log into
	// buckets. The ledger derives from fresh which records were duplicates.
	Append(ctx context.Context, b *AppendBatch) (fresh []bool, err error)

	// Fold moves everything in the append log into buckets, applying
	// PlanFold, and returns what it added. An entry AddEntry refuses is
	// quarantined in the same commit (see the top of this file), not an
	// error.
	Fold(ctx context.Context) ([]BucketDelta, error)

	// Seal folds, then seals open buckets as PlanSeal plans for req, in one
	// commit, and returns what it folded and the buckets it sealed or skipped.
	Seal(ctx context.Context, req SealRequest) (SealResult, error)

	// Claim leases up to req.Limit sealed buckets of req.Provider that are
	// due (NextAttempt <= req.Now) and not leased by anyone else (or whose
	// lease expired), oldest hour first. Two callers never hold a lease on
	// the same bucket at once. A bucket whose last lease ran out without a
	// Complete is returned, and stored, with MaybeApplied set: its holder
	// may have sent it before it died.
	Claim(ctx context.Context, req ClaimRequest) ([]Bucket, error)

	// Complete stores the outcomes of a claim. An outcome whose lease is no
	// longer held by owner is ignored (another reporter took the bucket
	// over and will send the same payload). An outcome with CarryQuantity
	// appends that quantity for the bucket's series at CarryHour.
	Complete(ctx context.Context, owner string, outcomes []Completion) error

	// Freeze stores the frozen payload attributes of claimed buckets (see
	// Freezer), in one commit. It writes only to buckets that owner still
	// holds leased and that hold no attributes yet: attributes, once
	// stored, never change. It returns, for every bucket of frozen that
	// owner still holds, the attributes the bucket holds afterwards (those
	// stored before, if it had some); a bucket whose lease moved on is left
	// out, and its new holder sends it.
	Freeze(ctx context.Context, owner string, frozen []Frozen) ([]Frozen, error)

	// Buckets lists buckets matching f, ordered by key.
	Buckets(ctx context.Context, f BucketFilter) ([]Bucket, error)

	// SumBuckets returns, per provider, dimension, hour and state of the
	// buckets f selects, their number and their summed Quantity, ordered
	// by provider, dimension, hour and state; f.NewestFirst and f.Limit do
	// not apply. A chart of a cloud's last hours needs only these sums:
	// the store adds them up (GROUP BY), so the answer grows with
	// dimensions × hours × states, not with customers as Buckets' does.
	SumBuckets(ctx context.Context, f BucketFilter) ([]BucketSum, error)

	// Backlog returns, per cloud, the number of sealed buckets waiting to be
	// reported and the hour of the oldest.
	Backlog(ctx context.Context) ([]Backlog, error)

	// PurgeEvents forgets event ids that expired before t.
	PurgeEvents(ctx context.Context, t time.Time) (int64, error)

	// PurgeBuckets deletes buckets that reached a final state before t
	// (reported, rejected, conflict, skipped, carried, expired). Open and
	// sealed buckets are never deleted, and sealing does not need old
	// buckets: each series keeps its own state.
	PurgeBuckets(ctx context.Context, t time.Time) (int64, error)

	// Close releases the store.
	Close() error
}

// SealResult is what one Seal did.
type SealResult struct {
	Folded []BucketDelta // what the fold before sealing added
	Sealed []Bucket      // buckets now sealed or skipped
}

// ClaimRequest asks for report work.
type ClaimRequest struct {
	Provider marketplace.CloudProvider
	Owner    string    // the claimant; Complete must name it
	Now      time.Time // due and lease times are compared with it
	Lease    time.Duration
	Limit    int
}

// Completion is the stored outcome of one claimed bucket.
type Completion struct {
	BucketID int64
	// State is the bucket's new state: StateSealed for a retry (or a
	// release of a bucket not sent), or a final state.
	State State
	// Attempted says this claim tried the bucket (sent it, or failed to
	// prepare it); only then does its attempt count, and its backoff, grow.
	Attempted    bool
	RecordID     string
	Reason       string
	NextAttempt  time.Time // for a retry
	MaybeApplied bool      // for a retry: the attempt may have reached the cloud
	// CarryQuantity, when above zero, is raw usage to append again for the
	// bucket's series at CarryHour (the deadline policy).
	CarryQuantity int64
	CarryHour     time.Time
	Now           time.Time
}

// Frozen is the frozen payload attributes of one bucket.
type Frozen struct {
	BucketID   int64
	Attributes map[string]string
}

// BucketFilter selects buckets; zero fields match all.
type BucketFilter struct {
	Provider marketplace.CloudProvider
	Customer string
	States   []State
	// From and Before bound the buckets' hours: From <= Hour < Before
	// (zero = unbounded). Both stores index (provider, hour) and
	// (provider, state, hour), so a bounded read costs what it returns
	// rather than the whole retention.
	From, Before time.Time
	// MinAttempts keeps buckets sent at least that many times.
	MinAttempts int
	// NewestFirst orders by hour, newest first (then by id, newest first);
	// otherwise the order is provider, customer, dimension, hour.
	NewestFirst bool
	Limit       int
}

// BucketSum is one group of SumBuckets: the buckets of all customers that
// share a provider, dimension, hour and state.
type BucketSum struct {
	Provider  marketplace.CloudProvider
	Dimension string
	Hour      time.Time
	State     State
	Buckets   int64 // how many buckets
	Quantity  int64 // the sum of their Quantity (raw usage)
}

// Backlog is the unreported work of one cloud.
type Backlog struct {
	Provider   marketplace.CloudProvider
	Sealed     int64
	OldestHour time.Time
}
