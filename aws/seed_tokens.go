package aws

// The seed API's token billing: see the package doc. New code records
// tokens in the ledger (Ledger.Record, or ledger.Meter as a
// marketplace.MeteringService) with Units{"tokens_1m": 1_000_000}, and
// Reporter sends them.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/saasmarket/marketplace"
)

// DimensionTokens is the dimension TokenBillingTracker bills: millions of
// tokens.
const DimensionTokens = "tokens_1m"

const tokensPerUnit = 1_000_000

// inDoubtLimit is how long an in-doubt record is resent: AWS refuses
// usage 24 hours old, and the clocks may differ.
const inDoubtLimit = 23 * time.Hour

// TokenUsageRecord is a customer's tokens that are not billed yet.
type TokenUsageRecord struct {
	CustomerIdentifier string
	InputTokens        int64
	OutputTokens       int64
	TotalTokens        int64
	// Timestamp is when the customer's usage was last recorded.
	Timestamp time.Time
}

// TokenBillingTracker counts an AI API's tokens per customer in memory and
// bills them to AWS Marketplace in whole millions (DimensionTokens) with
// BatchMeterUsage through the MeteringAPI it was given.
//
// Each Flush sends one record per customer with the whole millions it has
// and keeps the remainder for a later flush; it never rounds up. AWS takes
// one record per customer, dimension and hour, so a customer billed in
// this hour is billed again from the next hour on: flush about once an
// hour (more often only delays nothing and sends nothing new).
//
// Failures lose nothing and bill nothing twice:
//   - Usage that AWS certainly did not apply (a refused call, a record
//     answered DuplicateRecord, a context that ended before the call went
//     out) goes back to the customer's count and is billed with later usage.
//   - A record whose outcome is unknown (no answer, a timeout, the context
//     ended after the request went out; the error wraps
//     marketplace.ErrOutcomeUnknown) is kept exactly as it was, same
//     quantity and timestamp, and resent unchanged by the next flushes
//     until AWS answers: AWS answers an identical record with the same
//     outcome, so it is billed once. So is a record in UnprocessedRecords,
//     since a MeteringAPI that retries (MeteringClient) may have applied it
//     in an attempt whose answer was lost. Meanwhile the customer's new
//     usage waits (InDoubt lists such records). After 23 hours AWS would
//     refuse it, so the tracker gives it up and says so in Flush's error:
//     that usage may be unbilled, never billed twice.
//   - A customer AWS answers CustomerNotSubscribed for is dropped (AWS
//     will not bill it), and Flush's error says so.
//
// What it cannot promise, and the ledger can: the counts live in this
// process's memory, so a crash or restart loses the usage not billed yet
// (and forgets records in doubt: under-billing, never over-billing); and
// exactly-once holds only within one tracker, not across restarts or
// several processes billing the same customers (their records for the
// same hour collide as DuplicateRecord). For durable, exactly-once billing
// across crashes, record tokens in a ledger configured with
// Units: map[string]int64{"tokens_1m": 1_000_000} (Ledger.Record, or
// ledger.Meter as a marketplace.MeteringService) and report with Reporter:
// the ledger bills the same whole millions per hour and carries the
// remainder.
type TokenBillingTracker struct {
	productCode string
	metering    MeteringAPI
	// Clock stamps records and tells the hour; default time.Now. Set it
	// before first use.
	Clock func() time.Time

	flushMu sync.Mutex // one Flush at a time

	mu       sync.Mutex
	accounts map[string]*tokenAccount
}

// tokenAccount is one customer's state.
type tokenAccount struct {
	input, output int64     // recorded and not billed
	last          time.Time // when usage was last recorded
	// billedHour is the hour of the customer's last record that AWS took
	// (or holds another quantity for); no second record goes there.
	billedHour time.Time
	// sending is the customer's record in flight or in doubt.
	sending *tokenSend
}

// tokenSend is one record sent and the tokens it bills.
type tokenSend struct {
	customer      string
	rec           UsageRecord
	input, output int64
	// inDoubt: an earlier send of rec has an unknown outcome, so rec may
	// only be resent unchanged.
	inDoubt bool
}

// NewTokenBillingTracker returns a tracker billing productCode through
// metering. Customers of license-based products (no CustomerIdentifier)
// are recorded as LicenseCustomer(account id, license ARN) and billed by
// account and license, without the product code.
func NewTokenBillingTracker(productCode string, metering MeteringAPI) *TokenBillingTracker {
	return &TokenBillingTracker{productCode: productCode, metering: metering, accounts: map[string]*tokenAccount{}}
}

func (t *TokenBillingTracker) now() time.Time {
	if t.Clock != nil {
		return t.Clock().UTC()
	}
	return time.Now().UTC()
}

// RecordUsage adds one request's tokens for customerIdentifier. Negative
// counts are ignored.
func (t *TokenBillingTracker) RecordUsage(customerIdentifier string, inputTokens, outputTokens int64) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.accounts[customerIdentifier]
	if a == nil {
		a = &tokenAccount{}
		t.accounts[customerIdentifier] = a
	}
	a.input += max(inputTokens, 0)
	a.output += max(outputTokens, 0)
	a.last = now
}

// Snapshot returns the tokens not billed yet, one record per customer
// ordered by customer, without resetting anything. The millions of a
// record in flight or in doubt are not included (see InDoubt); billed
// millions are taken from input tokens first.
func (t *TokenBillingTracker) Snapshot() []TokenUsageRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]TokenUsageRecord, 0, len(t.accounts))
	for c, a := range t.accounts {
		if a.input+a.output > 0 {
			out = append(out, TokenUsageRecord{CustomerIdentifier: c, InputTokens: a.input, OutputTokens: a.output,
				TotalTokens: a.input + a.output, Timestamp: a.last})
		}
	}
	slices.SortFunc(out, func(a, b TokenUsageRecord) int { return strings.Compare(a.CustomerIdentifier, b.CustomerIdentifier) })
	return out
}

// InDoubt returns the records whose send has an unknown outcome or that
// AWS left unprocessed; the next Flush resends them unchanged.
func (t *TokenBillingTracker) InDoubt() []UsageRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []UsageRecord
	for _, a := range t.accounts {
		if a.sending != nil && a.sending.inDoubt {
			out = append(out, a.sending.rec)
		}
	}
	slices.SortFunc(out, func(a, b UsageRecord) int { return strings.Compare(recordCustomer(a), recordCustomer(b)) })
	return out
}

// Flush sends the customers' whole millions of tokens to AWS Marketplace
// with BatchMeterUsage (at most 25 records a call) and resends the records
// in doubt. Its output holds AWS's answers to every call that was
// answered, with their MeteringRecordIDs, even when err is not nil; err
// joins what went wrong, and wraps marketplace.ErrOutcomeUnknown when some
// record's outcome is unknown. See TokenBillingTracker for what happens to
// usage whose send failed.
func (t *TokenBillingTracker) Flush(ctx context.Context) (*BatchMeterUsageOutput, error) {
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	sends, errs := t.take(t.now())
	// A call carries the product code for CustomerIdentifiers, and none
	// for license records.
	slices.SortFunc(sends, func(a, b *tokenSend) int {
		return cmp.Or(strings.Compare(a.rec.CustomerIdentifier, b.rec.CustomerIdentifier), strings.Compare(a.customer, b.customer))
	})
	out := &BatchMeterUsageOutput{}
	for len(sends) > 0 {
		n := 0
		for n < len(sends) && n < 25 && (sends[n].rec.LicenseArn != "") == (sends[0].rec.LicenseArn != "") {
			n++
		}
		errs = append(errs, t.send(ctx, sends[:n], out)...)
		sends = sends[n:]
	}
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("aws: flush tokens: %w", err)
	}
	return out, nil
}

// take picks the records to send at now: every record in doubt, and a
// new record for each customer with a whole million and no record in
// now's hour yet.
func (t *TokenBillingTracker) take(now time.Time) (sends []*tokenSend, errs []error) {
	hour := now.Truncate(time.Hour)
	t.mu.Lock()
	defer t.mu.Unlock()
	for c, a := range t.accounts {
		if s := a.sending; s != nil {
			if now.Sub(s.rec.Timestamp) < inDoubtLimit {
				sends = append(sends, s)
				continue
			}
			a.sending = nil
			errs = append(errs, fmt.Errorf("customer %q: gave up resending %d million tokens of %s whose outcome is unknown: AWS no longer accepts it, so it may be unbilled",
				c, s.rec.Quantity, s.rec.Timestamp.Format(time.RFC3339)))
		}
		units := min((a.input+a.output)/tokensPerUnit, maxQuantity)
		if units == 0 || a.billedHour.Equal(hour) {
			if a.input+a.output == 0 && a.billedHour.Before(hour) {
				delete(t.accounts, c) // nothing left that the hour rule needs
			}
			continue
		}
		s := &tokenSend{customer: c, rec: UsageRecord{Dimension: DimensionTokens, Quantity: int(units), Timestamp: now}}
		if acct, lic, err := ParseLicenseCustomer(c); err == nil && isDigits(acct) {
			s.rec.CustomerAWSAccountId, s.rec.LicenseArn = acct, lic
		} else {
			s.rec.CustomerIdentifier = c
		}
		productCode := t.productCode
		if s.rec.LicenseArn != "" {
			productCode = ""
		}
		if err := s.rec.validate(0, productCode); err != nil {
			errs = append(errs, fmt.Errorf("customer %q: %w", c, err))
			continue
		}
		s.input = min(units*tokensPerUnit, a.input)
		s.output = units*tokensPerUnit - s.input
		a.input -= s.input
		a.output -= s.output
		a.sending = s
		sends = append(sends, s)
	}
	return sends, errs
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// send sends one call's records and settles them. A whole-call refusal
// caused by one record is bisected, so one bad customer does not hold up
// the others.
func (t *TokenBillingTracker) send(ctx context.Context, sends []*tokenSend, out *BatchMeterUsageOutput) []error {
	if err := ctx.Err(); err != nil {
		t.settle(sends, func(*tokenSend) result { return refusedResult })
		return []error{fmt.Errorf("%d records not sent: %w", len(sends), err)}
	}
	in := &BatchMeterUsageInput{UsageRecords: make([]UsageRecord, len(sends))}
	for i, s := range sends {
		in.UsageRecords[i] = s.rec
		if s.rec.CustomerIdentifier != "" {
			in.ProductCode = t.productCode
		}
	}
	res, err := t.metering.BatchMeterUsage(ctx, in)
	switch {
	case err == nil && res != nil:
		out.Results = append(out.Results, res.Results...)
		out.UnprocessedRecords = append(out.UnprocessedRecords, res.UnprocessedRecords...)
		return t.apply(sends, res)
	case err == nil:
		err = errors.New("BatchMeterUsage answered nothing")
	case refused(err) && recordFault(err) && len(sends) > 1:
		h := len(sends) / 2
		return append(t.send(ctx, sends[:h], out), t.send(ctx, sends[h:], out)...)
	case refused(err):
		t.settle(sends, func(*tokenSend) result { return refusedResult })
		return []error{err}
	}
	t.settle(sends, func(*tokenSend) result { return unknownResult })
	if !errors.Is(err, marketplace.ErrOutcomeUnknown) {
		err = fmt.Errorf("%w: %w", marketplace.ErrOutcomeUnknown, err)
	}
	return []error{err}
}

// result is what an answer means for one record.
type result int

const (
	unknownResult   result = iota // may have been applied, or unprocessed: resend unchanged
	refusedResult                 // not applied: its usage goes back
	billedResult                  // applied
	duplicateResult               // not applied, and AWS holds another record for its hour
	droppedResult                 // AWS will never take it
)

// apply settles the records of an answered call.
func (t *TokenBillingTracker) apply(sends []*tokenSend, res *BatchMeterUsageOutput) []error {
	got := make(map[string]result, len(sends))
	// An unprocessed record is kept unchanged too: a MeteringAPI that
	// retries inside (as MeteringClient does) may have applied it in an
	// attempt whose answer was lost.
	for _, r := range res.UnprocessedRecords {
		got[recordCustomer(r)] = unknownResult
	}
	var errs []error
	for _, r := range res.Results {
		c := recordCustomer(r.UsageRecord)
		switch r.MeteringStatus {
		case StatusSuccess:
			got[c] = billedResult
		case StatusDuplicateRecord:
			got[c] = duplicateResult
		case StatusCustomerNotSubscribed:
			got[c] = droppedResult
			errs = append(errs, fmt.Errorf("customer %q: AWS answered %s; its %d million tokens are dropped", c, r.MeteringStatus, r.UsageRecord.Quantity))
		default:
			got[c] = unknownResult
			errs = append(errs, fmt.Errorf("customer %q: %w: AWS answered status %q", c, marketplace.ErrOutcomeUnknown, r.MeteringStatus))
		}
	}
	t.settle(sends, func(s *tokenSend) result {
		r, ok := got[recordCustomer(s.rec)]
		if !ok {
			errs = append(errs, fmt.Errorf("customer %q: %w: absent from AWS's answer", s.customer, marketplace.ErrOutcomeUnknown))
		}
		return r // unknownResult when absent
	})
	return errs
}

// settle applies each record's result to its customer.
func (t *TokenBillingTracker) settle(sends []*tokenSend, resultOf func(*tokenSend) result) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range sends {
		a := t.accounts[s.customer]
		r := resultOf(s)
		if r == refusedResult && s.inDoubt {
			// This call was refused, but an earlier one may have applied it.
			r = unknownResult
		}
		switch r {
		case unknownResult:
			s.inDoubt = true
			continue
		case billedResult:
			a.billedHour = s.rec.Timestamp.Truncate(time.Hour)
		case duplicateResult:
			a.billedHour = s.rec.Timestamp.Truncate(time.Hour)
			fallthrough
		case refusedResult:
			a.input += s.input
			a.output += s.output
		}
		a.sending = nil
	}
}

// recordCustomer names the buyer of a record as the tracker does.
func recordCustomer(r UsageRecord) string {
	if r.CustomerIdentifier != "" {
		return r.CustomerIdentifier
	}
	return LicenseCustomer(r.CustomerAWSAccountId, r.LicenseArn)
}
