// Package ledgertest holds test doubles for the usage ledger: FakeCloud, a
// metering API that deduplicates exactly like AWS BatchMeterUsage and keeps
// the bill it would send, with fault injection; an HTTP server and client
// for it, so that another process can report into it; and Clock, a clock
// that tests move by hand.
package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// Reasons FakeCloud gives, named after the AWS errors they imitate.
const (
	ReasonDuplicate       = "DuplicateRecord"       // another quantity is already held for the hour
	ReasonNotSubscribed   = "CustomerNotSubscribed" // see Unsubscribe
	ReasonInvalidQuantity = "InvalidQuantity"       // a report of zero or fewer units
	ReasonPastDeadline    = "TimestampOutOfBounds"  // older than Limits.Deadline (needs Config.Clock)
	ReasonUnprocessed     = "UnprocessedRecord"     // Faults.Unprocessed
	ReasonThrottled       = "ThrottlingException"   // Faults.NotApplied
	ReasonWrongProvider   = "InvalidProductCode"    // a report for another cloud
	ReasonTooManyItems    = "ValidationException: too many records"
)

// ErrResponseLost is returned by FakeCloud.Send when a fault applied the
// call and then lost its answer. It does not wrap ledger.ErrNotApplied: the
// caller cannot know whether the call was applied.
var ErrResponseLost = errors.New("ledgertest: response lost after the call was applied")

// Faults are the failures a FakeCloud injects. Probabilities are per call
// and drawn from the cloud's seeded source, so a run is reproducible when
// its calls arrive in the same order.
type Faults struct {
	// DropResponse is the probability that a call is applied and its
	// answer then lost: Send returns ErrResponseLost; over HTTP the server
	// closes the connection without answering (or answers 500 when
	// DropWith500 is set).
	DropResponse float64
	// DropWith500 makes the HTTP server answer a dropped call with a 500
	// instead of closing the connection.
	DropWith500 bool
	// NotApplied is the probability that a call is refused before it is
	// applied (throttled): the error wraps ledger.ErrNotApplied and carries
	// RetryAfter as a marketplace.WithRetryAfter hint; over HTTP, a 429.
	NotApplied float64
	// RetryAfter is the hint sent with a NotApplied refusal.
	RetryAfter time.Duration
	// Unprocessed is the probability that one report of an applied call is
	// left unprocessed (AWS UnprocessedRecords): not applied, to be retried.
	Unprocessed float64
	// Latency delays every call before it is applied.
	Latency time.Duration
}

// Config sets up a FakeCloud. The zero value is an AWS cloud with seed 0,
// no faults and no deadline check.
type Config struct {
	// Provider is the cloud this one pretends to be; default AWS.
	Provider marketplace.CloudProvider
	// Seed seeds the source of every random choice.
	Seed uint64
	// Limits are returned by Limits; MaxItems defaults to 25 and is
	// enforced: a larger call is refused as a whole.
	Limits ledger.Limits
	// Clock, when set together with Limits.Deadline, makes the cloud refuse
	// reports whose hour started Limits.Deadline or longer ago.
	Clock func() time.Time
	// Faults to inject from the start; see SetFaults.
	Faults Faults
}

// FakeCloud is a metering API in memory. Per customer, dimension and hour
// the first accepted record wins: the same record again (same quantity) is
// answered with the same record id, as AWS BatchMeterUsage does; another
// quantity for that hour is a conflict ("DuplicateRecord") and is not
// billed. It implements ledger.Target and http.Handler, and is safe for
// concurrent use.
type FakeCloud struct {
	provider marketplace.CloudProvider
	limits   ledger.Limits
	clock    func() time.Time
	mux      *http.ServeMux

	mu        sync.Mutex
	rng       *rand.Rand
	faults    Faults
	customers map[string]ledger.Result // fixed per-item outcomes
	lines     map[lineKey]*Line
	stats     Stats
}

type lineKey struct {
	customer, dimension string
	hour                int64 // unix seconds
}

// Line is one accepted record of the bill.
type Line struct {
	Customer  string    `json:"customer"`
	Dimension string    `json:"dimension"`
	Hour      time.Time `json:"hour"`
	Quantity  int64     `json:"quantity"`
	RecordID  string    `json:"record_id"`
	ReportID  string    `json:"report_id"` // the report id of the first acceptance
	Sends     int       `json:"sends"`     // times this record arrived: 1 + idempotent resends
}

// Stats count what a FakeCloud was asked and did.
type Stats struct {
	Calls       int `json:"calls"`       // calls received
	Accepted    int `json:"accepted"`    // records billed (first acceptance)
	Duplicates  int `json:"duplicates"`  // identical records sent again (answered as reported)
	Conflicts   int `json:"conflicts"`   // records with another quantity for a billed hour
	Rejected    int `json:"rejected"`    // refused reports (not subscribed, invalid)
	Expired     int `json:"expired"`     // reports past the deadline
	Unprocessed int `json:"unprocessed"` // reports left unprocessed by a fault
	Dropped     int `json:"dropped"`     // calls applied whose answer was lost
	Throttled   int `json:"throttled"`   // calls refused before being applied
}

// Bill is a snapshot of what a FakeCloud would charge.
type Bill struct {
	Provider marketplace.CloudProvider `json:"provider"`
	Lines    []Line                    `json:"lines"` // by customer, dimension, hour
	Stats    Stats                     `json:"stats"`
}

// Sum returns the billed quantity of the lines matching customer and
// dimension; an empty string matches all.
func (b Bill) Sum(customer, dimension string) int64 {
	var n int64
	for _, l := range b.Lines {
		if (customer == "" || l.Customer == customer) && (dimension == "" || l.Dimension == dimension) {
			n += l.Quantity
		}
	}
	return n
}

// Line returns the line of one customer, dimension and hour.
func (b Bill) Line(customer, dimension string, hour time.Time) (Line, bool) {
	for _, l := range b.Lines {
		if l.Customer == customer && l.Dimension == dimension && l.Hour.Equal(hour) {
			return l, true
		}
	}
	return Line{}, false
}

// Totals returns the billed quantity per customer and dimension, keyed
// "customer/dimension".
func (b Bill) Totals() map[string]int64 {
	m := make(map[string]int64)
	for _, l := range b.Lines {
		m[l.Customer+"/"+l.Dimension] += l.Quantity
	}
	return m
}

// NewFakeCloud returns an empty cloud.
func NewFakeCloud(cfg Config) *FakeCloud {
	if cfg.Provider == "" {
		cfg.Provider = marketplace.AWS
	}
	if cfg.Limits.MaxItems <= 0 {
		cfg.Limits.MaxItems = 25
	}
	f := &FakeCloud{
		provider:  cfg.Provider,
		limits:    cfg.Limits,
		clock:     cfg.Clock,
		rng:       rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		faults:    cfg.Faults,
		customers: make(map[string]ledger.Result),
		lines:     make(map[lineKey]*Line),
	}
	f.mux = http.NewServeMux()
	f.mux.HandleFunc("POST /report", f.serveReport)
	f.mux.HandleFunc("GET /bill", f.serveBill)
	return f
}

// Provider implements ledger.Target.
func (f *FakeCloud) Provider() marketplace.CloudProvider { return f.provider }

// Limits implements ledger.Target.
func (f *FakeCloud) Limits() ledger.Limits { return f.limits }

// SetFaults replaces the faults injected from now on.
func (f *FakeCloud) SetFaults(fl Faults) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = fl
}

// SetCustomerOutcome makes every report of customer get res instead of
// being billed (an OutcomeRetry result is not applied). Use Unsubscribe for
// the common case; ClearCustomer undoes it.
func (f *FakeCloud) SetCustomerOutcome(customer string, res ledger.Result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.customers[customer] = res
}

// Unsubscribe makes the reports of customer rejected as "CustomerNotSubscribed".
func (f *FakeCloud) Unsubscribe(customer string) {
	f.SetCustomerOutcome(customer, ledger.Result{Outcome: ledger.OutcomeRejected, Reason: ReasonNotSubscribed})
}

// ClearCustomer removes an outcome set for customer.
func (f *FakeCloud) ClearCustomer(customer string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.customers, customer)
}

// Bill returns a snapshot of the bill.
func (f *FakeCloud) Bill() Bill {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := Bill{Provider: f.provider, Stats: f.stats, Lines: make([]Line, 0, len(f.lines))}
	for _, l := range f.lines {
		b.Lines = append(b.Lines, *l)
	}
	slices.SortFunc(b.Lines, func(x, y Line) int {
		if c := strings.Compare(x.Customer, y.Customer); c != 0 {
			return c
		}
		if c := strings.Compare(x.Dimension, y.Dimension); c != 0 {
			return c
		}
		return x.Hour.Compare(y.Hour)
	})
	return b
}

// Send implements ledger.Target.
func (f *FakeCloud) Send(ctx context.Context, reports []ledger.Report) ([]ledger.Result, error) {
	results, fault, err := f.call(ctx, reports)
	switch {
	case err != nil:
		return nil, err
	case fault == faultDrop:
		return nil, ErrResponseLost
	}
	return results, nil
}

type fault int

const (
	faultNone fault = iota
	faultDrop       // applied; the answer is to be lost
)

// call runs one metering call: it waits Latency, draws the call's fault,
// and applies the reports unless refused.
func (f *FakeCloud) call(ctx context.Context, reports []ledger.Report) ([]ledger.Result, fault, error) {
	f.mu.Lock()
	latency := f.faults.Latency
	f.mu.Unlock()
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, faultNone, fmt.Errorf("ledgertest: %w: %w", ledger.ErrNotApplied, ctx.Err())
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Calls++
	if len(reports) > f.limits.MaxItems {
		return nil, faultNone, marketplace.Permanent(fmt.Errorf("ledgertest: %s (%d > %d): %w", ReasonTooManyItems, len(reports), f.limits.MaxItems, ledger.ErrNotApplied))
	}
	roll := f.rng.Float64()
	if roll < f.faults.NotApplied {
		f.stats.Throttled++
		return nil, faultNone, marketplace.WithRetryAfter(fmt.Errorf("ledgertest: %s: %w", ReasonThrottled, ledger.ErrNotApplied), f.faults.RetryAfter)
	}
	results := make([]ledger.Result, len(reports))
	for i, r := range reports {
		results[i] = f.apply(r)
	}
	if roll < f.faults.NotApplied+f.faults.DropResponse {
		f.stats.Dropped++
		return results, faultDrop, nil
	}
	return results, faultNone, nil
}

// apply decides one report; f.mu is held.
func (f *FakeCloud) apply(r ledger.Report) ledger.Result {
	if res, ok := f.customers[r.Customer]; ok {
		switch res.Outcome {
		case ledger.OutcomeRejected:
			f.stats.Rejected++
		case ledger.OutcomeExpired:
			f.stats.Expired++
		case ledger.OutcomeRetry:
			f.stats.Unprocessed++
		}
		return res
	}
	switch {
	case r.Provider != f.provider:
		f.stats.Rejected++
		return ledger.Result{Outcome: ledger.OutcomeRejected, Reason: fmt.Sprintf("%s: report for %q sent to %q", ReasonWrongProvider, r.Provider, f.provider)}
	case r.Quantity <= 0:
		f.stats.Rejected++
		return ledger.Result{Outcome: ledger.OutcomeRejected, Reason: fmt.Sprintf("%s: %d", ReasonInvalidQuantity, r.Quantity)}
	case f.clock != nil && f.limits.Deadline > 0 && !f.clock().Before(r.Hour.Add(f.limits.Deadline)):
		f.stats.Expired++
		return ledger.Result{Outcome: ledger.OutcomeExpired, Reason: ReasonPastDeadline}
	case f.faults.Unprocessed > 0 && f.rng.Float64() < f.faults.Unprocessed:
		f.stats.Unprocessed++
		return ledger.Result{Outcome: ledger.OutcomeRetry, Reason: ReasonUnprocessed}
	}
	k := lineKey{customer: r.Customer, dimension: r.Dimension, hour: r.Hour.Unix()}
	if l, ok := f.lines[k]; ok {
		if l.Quantity != r.Quantity {
			f.stats.Conflicts++
			return ledger.Result{Outcome: ledger.OutcomeConflict, RecordID: l.RecordID,
				Reason: fmt.Sprintf("%s: %d held for the hour, %d sent", ReasonDuplicate, l.Quantity, r.Quantity)}
		}
		l.Sends++
		f.stats.Duplicates++
		return ledger.Result{Outcome: ledger.OutcomeReported, RecordID: l.RecordID}
	}
	l := &Line{Customer: r.Customer, Dimension: r.Dimension, Hour: r.Hour.UTC(), Quantity: r.Quantity,
		RecordID: fmt.Sprintf("mr-%016x", f.rng.Uint64()), ReportID: r.ID, Sends: 1}
	f.lines[k] = l
	f.stats.Accepted++
	return ledger.Result{Outcome: ledger.OutcomeReported, RecordID: l.RecordID}
}

var _ ledger.Target = (*FakeCloud)(nil)
