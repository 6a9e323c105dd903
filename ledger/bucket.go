package ledger

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/saasmarket/marketplace"
)

// State is where a bucket is in its life.
type State string

// Bucket states. A bucket moves open → sealed → one of the final states; a
// retry leaves it sealed with a later next-attempt time.
const (
	StateOpen     State = "open"     // still collecting usage
	StateSealed   State = "sealed"   // frozen; waiting to be reported (or retried)
	StateReported State = "reported" // the cloud accepted it (RecordID holds its id)
	StateRejected State = "rejected" // final refusal (Reason says why); never silent
	StateConflict State = "conflict" // the cloud holds another quantity for that hour
	StateSkipped  State = "skipped"  // sealed with zero whole units: nothing to send
	StateCarried  State = "carried"  // missed its deadline unsent; moved to a later hour
	StateExpired  State = "expired"  // missed its deadline after a send whose fate is unknown
)

// Final reports whether no further work will be done on a bucket in state s.
func (s State) Final() bool {
	switch s {
	case StateOpen, StateSealed:
		return false
	}
	return true
}

// SeriesKey names the usage of one customer on one dimension at one cloud.
type SeriesKey struct {
	Provider  marketplace.CloudProvider
	Customer  string
	Dimension string
}

// BucketKey names one hour of a series.
type BucketKey struct {
	SeriesKey
	Hour time.Time // start of the hour, UTC
}

func (k BucketKey) String() string {
	return fmt.Sprintf("%s/%s/%s@%s", k.Provider, k.Customer, k.Dimension, k.Hour.UTC().Format(time.RFC3339))
}

// Bucket is usage summed per provider, customer, dimension and hour, and
// the state of its report.
type Bucket struct {
	ID int64
	BucketKey
	// Quantity is the raw usage recorded into this hour (including late
	// usage redirected here), in the dimension's raw unit.
	Quantity int64
	// Late is the part of Quantity that arrived after its own hour was sealed.
	Late  int64
	State State
	// Units is the frozen quantity to report, in whole billing units; set at seal.
	Units int64
	// ReportID is the deterministic id of the report (UUIDv5 of the key);
	// every attempt sends it unchanged.
	ReportID string
	// Attributes are what the cloud's payload needs beyond the key (an
	// Azure plan id, an AWS product code, a Google metric name), frozen by
	// the Target's Freezer before the first attempt and never changed, so
	// that every attempt sends exactly the same payload. Nil until then, or
	// for a Target that needs none.
	Attributes  map[string]string
	Attempts    int
	NextAttempt time.Time
	// MaybeApplied is set once an attempt failed in a way that leaves open
	// whether the cloud applied it (a timeout, a lost response).
	MaybeApplied bool
	RecordID     string // the cloud's id for the accepted record
	Reason       string // why it was rejected, conflicted, carried or expired
	SealedAt     time.Time
	DoneAt       time.Time // when it reached a final state
}

// String shows the key, state and quantities (without it, the embedded
// BucketKey's String would hide the rest).
func (b Bucket) String() string {
	return fmt.Sprintf("%s %s quantity=%d late=%d units=%d attempts=%d", b.BucketKey, b.State, b.Quantity, b.Late, b.Units, b.Attempts)
}

// Series is the sealing state of one series.
type Series struct {
	// SealedUntil is the end of the last sealed hour: every hour before it
	// is sealed, every bucket at or after it is open.
	SealedUntil time.Time
	// Carry is the remainder, in raw units, that did not make a whole
	// billing unit; it is added to the next sealed hour.
	Carry int64
}

// reportNamespace scopes report ids to this project (UUIDv5 namespace).
var reportNamespace = uuid.MustParse("7d1f6b52-2f3a-5a0e-9c41-6d61726b6574")

// ReportID is the deterministic id of a bucket's report: the same key gives
// the same id in every process, so a retry after a crash is the same report.
func ReportID(k BucketKey) string {
	name := string(k.Provider) + "\x00" + k.Customer + "\x00" + k.Dimension + "\x00" + k.Hour.UTC().Format(time.RFC3339)
	return uuid.NewSHA1(reportNamespace, []byte(name)).String()
}

// End is the end of the time range the bucket's usage covers: the end of
// its hour, or its seal time when it was sealed before its hour ended (a
// final flush), so that no report claims a time range that had not ended.
// A bucket sealed before its hour began (late usage a final flush moved
// ahead) covers no time: its End is its Hour. Derived from stored fields
// only, it is the same on every attempt.
func (b Bucket) End() time.Time {
	end := b.Hour.Add(time.Hour)
	if b.SealedAt.IsZero() || !b.SealedAt.Before(end) {
		return end.UTC()
	}
	return later(b.Hour, b.SealedAt).UTC()
}

// HourOf returns the start of t's hour in UTC.
func HourOf(t time.Time) time.Time { return t.UTC().Truncate(time.Hour) }

// Divide splits a raw total into whole billing units and the remainder that
// carries to the next hour. maxUnits > 0 caps the units (a cloud's largest
// quantity per record); the excess stays in the remainder.
func Divide(total, unit, maxUnits int64) (units, rem int64) {
	if unit <= 0 {
		unit = 1
	}
	units = total / unit
	if maxUnits > 0 && units > maxUnits {
		units = maxUnits
	}
	return units, total - units*unit
}

// SettlePolicy says what happens to a remainder smaller than one billing
// unit when a subscription ends (the final flush).
type SettlePolicy int

const (
	// SettleDrop forgives the remainder: the buyer is never billed for a
	// unit they did not use in full. This is the default.
	SettleDrop SettlePolicy = iota
	// SettleRoundUp bills one more unit for any remainder above zero.
	SettleRoundUp
)

// DeadlinePolicy says what happens to a sealed bucket that can no longer be
// reported in time (AWS and Azure refuse usage 24 hours after its hour).
type DeadlinePolicy int

const (
	// DeadlineCarry moves the bucket's quantity into the current hour, if
	// no attempt may have reached the cloud; otherwise it marks the bucket
	// expired for reconciliation, since carrying could bill twice. Default.
	DeadlineCarry DeadlinePolicy = iota
	// DeadlineExpire marks the bucket expired, never moving its quantity.
	DeadlineExpire
)
