package aws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"golang.org/x/time/rate"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// LicenseCustomer is the ledger customer id of a buyer of a license-based
// product: the account id and the license ARN, joined by "/". (Account ids
// are digits, so the first "/" separates them.)
func LicenseCustomer(accountID, licenseArn string) string { return accountID + "/" + licenseArn }

// ParseLicenseCustomer splits a ledger customer id made by LicenseCustomer.
func ParseLicenseCustomer(customer string) (accountID, licenseArn string, err error) {
	acct, lic, ok := strings.Cut(customer, "/")
	if !ok || acct == "" || lic == "" {
		return "", "", fmt.Errorf("%w: customer %q is not <account id>/<license ARN>", ErrInvalidInput, customer)
	}
	return acct, lic, nil
}

// ReporterConfig tunes a Reporter.
type ReporterConfig struct {
	// ProductCode is the product; in product-code mode (the legacy one)
	// ledger customers are its CustomerIdentifiers.
	ProductCode string
	// LicenseMode: ledger customers are LicenseCustomer ids (account id and
	// license ARN), and no ProductCode is sent.
	LicenseMode bool
	// Rate caps BatchMeterUsage calls per second, bisection included.
	// Default 10 (AWS's quota); a burst of one.
	Rate float64
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Reporter is the ledger.Target of AWS: it sends sealed hours with
// BatchMeterUsage, at most 25 records and under 1 MB per call, one product
// or license per call, Timestamp = the hour's start. Per record, Success
// is reported (its MeteringRecordId stored), CustomerNotSubscribed is
// rejected, DuplicateRecord is a conflict (AWS holds another quantity for
// that hour: the first write wins) and UnprocessedRecords are retried.
// When AWS refuses a whole call because of one record (its timestamp, its
// customer, its dimension), the call is bisected until the bad record is
// alone, so the others still go through. Calls stay under Rate; a
// ThrottlingException halves the call rate (down to one call every two
// seconds), each successful call raises it by a tenth again up to Rate, and
// the throttled reports are retried after the ledger's backoff.
type Reporter struct {
	m       *Metering
	cfg     ReporterConfig
	limiter *rate.Limiter // its limit backs off on throttling (AIMD-like)
}

// NewReporter returns the AWS reporting target on m.
func NewReporter(m *Metering, cfg ReporterConfig) *Reporter {
	if cfg.Rate <= 0 {
		cfg.Rate = 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Reporter{m: m, cfg: cfg, limiter: rate.NewLimiter(rate.Limit(cfg.Rate), 1)}
}

var (
	_ ledger.Target  = (*Reporter)(nil)
	_ ledger.Grouper = (*Reporter)(nil)
	_ ledger.Sizer   = (*Reporter)(nil)
)

// Provider implements ledger.Target.
func (*Reporter) Provider() marketplace.CloudProvider { return marketplace.AWS }

// Limits implements ledger.Target. The rate is kept by Send itself, since
// one report round may take several calls.
func (*Reporter) Limits() ledger.Limits {
	return ledger.Limits{MaxItems: 25, MaxBytes: MaxRequestBytes - 4096, Deadline: 24 * time.Hour}
}

// GroupOf implements ledger.Grouper: one product (product-code mode) or
// one license per call.
func (r *Reporter) GroupOf(_ context.Context, rep ledger.Report) (string, error) {
	if !r.cfg.LicenseMode {
		return r.cfg.ProductCode, nil
	}
	_, lic, err := ParseLicenseCustomer(rep.Customer)
	if err != nil {
		return "", marketplace.Permanent(err)
	}
	return lic, nil
}

// Size implements ledger.Sizer.
func (r *Reporter) Size(rep ledger.Report) int { return recordSize(r.record(rep)) }

func (r *Reporter) record(rep ledger.Report) UsageRecord {
	rec := UsageRecord{Dimension: rep.Dimension, Quantity: int(rep.Quantity), Timestamp: rep.Hour.UTC()}
	if !r.cfg.LicenseMode {
		rec.CustomerIdentifier = rep.Customer
	} else {
		rec.CustomerAWSAccountId, rec.LicenseArn, _ = ParseLicenseCustomer(rep.Customer)
	}
	return rec
}

// productCode is the ProductCode sent: none in license mode.
func (r *Reporter) productCode() string {
	if r.cfg.LicenseMode {
		return ""
	}
	return r.cfg.ProductCode
}

// Send implements ledger.Target.
func (r *Reporter) Send(ctx context.Context, reports []ledger.Report) ([]ledger.Result, error) {
	results := make([]ledger.Result, len(reports))
	var send []int
	for i, rep := range reports {
		rec := r.record(rep)
		if err := rec.validate(0, r.productCode()); err != nil {
			results[i] = ledger.Result{Outcome: ledger.OutcomeRejected, Reason: err.Error()}
			continue
		}
		send = append(send, i)
	}
	if len(send) == 0 {
		return results, nil
	}
	return results, r.send(ctx, reports, send, results, true)
}

// recordFaults are AWS's whole-call errors caused by one record: the call
// is bisected to find it.
var recordFaults = []ErrorCode{ErrTimestampOutOfBounds, ErrInvalidCustomerIdentifier, ErrInvalidUsageDimension,
	ErrInvalidUsageAllocations, ErrInvalidTag, ErrInvalidLicense, ErrCustomerNotEntitled, ErrValidation}

func recordFault(err error) bool {
	for _, c := range recordFaults {
		if errors.Is(err, c) {
			return true
		}
	}
	return false
}

// send sends reports[idx] in one call and fills their results. Only the
// top call returns whole-call errors to the ledger; bisected halves turn
// them into per-report results.
func (r *Reporter) send(ctx context.Context, reports []ledger.Report, idx []int, results []ledger.Result, top bool) error {
	if err := r.limiter.Wait(ctx); err != nil {
		if top {
			return fmt.Errorf("%w: %w", ledger.ErrNotApplied, err)
		}
		// A bisected half that was never sent: the other half's results stand.
		for _, i := range idx {
			results[i] = ledger.Result{Outcome: ledger.OutcomeRetry, Reason: "not sent: " + err.Error()}
		}
		return nil
	}
	in := &BatchMeterUsageInput{ProductCode: r.productCode(), UsageRecords: make([]UsageRecord, len(idx))}
	for j, i := range idx {
		in.UsageRecords[j] = r.record(reports[i])
	}
	out, err := r.m.batchMeterUsage(ctx, in, func(o *marketplacemetering.Options) {
		o.RetryMaxAttempts = 1 // the ledger retries, with the same payload
	})
	r.adapt(errors.Is(err, ErrThrottling))
	if err == nil {
		r.apply(reports, idx, out, results)
		return nil
	}
	switch {
	case recordFault(err) && len(idx) > 1:
		h := len(idx) / 2
		if err := r.send(ctx, reports, idx[:h], results, false); err != nil {
			return err
		}
		return r.send(ctx, reports, idx[h:], results, false)
	case recordFault(err) && errors.Is(err, ErrTimestampOutOfBounds):
		results[idx[0]] = ledger.Result{Outcome: ledger.OutcomeExpired, Reason: err.Error()}
		return nil
	case recordFault(err), errors.Is(err, ErrInvalidProductCode):
		for _, i := range idx {
			results[i] = ledger.Result{Outcome: ledger.OutcomeRejected, Reason: err.Error()}
		}
		return nil
	}
	werr := classify(err)
	if top {
		return werr
	}
	res := ledger.Result{Outcome: ledger.OutcomeRetry, Reason: err.Error(), MaybeApplied: !errors.Is(werr, ledger.ErrNotApplied)}
	if d, ok := marketplace.RetryAfter(werr); ok {
		res.RetryAfter = d
	}
	for _, i := range idx {
		results[i] = res
	}
	return nil
}

// adapt backs the call rate off after throttling and brings it back after
// successful calls.
func (r *Reporter) adapt(throttled bool) {
	cur := float64(r.limiter.Limit())
	next := min(cur*1.1, r.cfg.Rate)
	if throttled {
		next = max(cur/2, 0.5)
	}
	if next != cur {
		r.limiter.SetLimit(rate.Limit(next))
	}
}

// classify marks a whole-call error for the ledger: throttling and
// refusals before processing were certainly not applied.
func classify(err error) error {
	var ae *APIError
	switch {
	case errors.Is(err, ErrThrottling):
		return marketplace.WithRetryAfter(fmt.Errorf("%w: %w", ledger.ErrNotApplied, err), time.Second)
	case errors.Is(err, ErrInternalServiceError):
		return err // AWS may have applied part of it
	case errors.As(err, &ae):
		// Another AWS answer: refused before processing.
		return fmt.Errorf("%w: %w", ledger.ErrNotApplied, err)
	case errors.Is(err, ErrInvalidInput):
		return marketplace.Permanent(err)
	}
	return err // no answer: maybe applied
}

type recordKey struct {
	customer, dimension string
	ts                  int64
}

func keyOf(r UsageRecord) recordKey {
	return recordKey{r.CustomerIdentifier + r.CustomerAWSAccountId + "/" + r.LicenseArn, r.Dimension, r.Timestamp.Unix()}
}

func (r *Reporter) apply(reports []ledger.Report, idx []int, out *BatchMeterUsageOutput, results []ledger.Result) {
	pos := make(map[recordKey]int, len(idx))
	for _, i := range idx {
		pos[keyOf(r.record(reports[i]))] = i
		results[i] = ledger.Result{Outcome: ledger.OutcomeRetry, MaybeApplied: true, Reason: "absent from AWS's answer"}
	}
	for _, u := range out.UnprocessedRecords {
		if i, ok := pos[keyOf(u)]; ok {
			results[i] = ledger.Result{Outcome: ledger.OutcomeRetry, Reason: "unprocessed by AWS"}
		}
	}
	for _, res := range out.Results {
		i, ok := pos[keyOf(res.UsageRecord)]
		if !ok {
			r.cfg.Logger.Warn("AWS answered a record that was not sent", "customer", res.UsageRecord.CustomerIdentifier, "dimension", res.UsageRecord.Dimension)
			continue
		}
		switch res.MeteringStatus {
		case StatusSuccess:
			results[i] = ledger.Result{Outcome: ledger.OutcomeReported, RecordID: res.MeteringRecordID}
		case StatusCustomerNotSubscribed:
			results[i] = ledger.Result{Outcome: ledger.OutcomeRejected, Reason: "AWS: " + StatusCustomerNotSubscribed}
		case StatusDuplicateRecord:
			results[i] = ledger.Result{Outcome: ledger.OutcomeConflict, Reason: "AWS: " + StatusDuplicateRecord + ": it holds another quantity for this customer, dimension and hour"}
		default:
			results[i] = ledger.Result{Outcome: ledger.OutcomeRetry, MaybeApplied: true, Reason: "AWS: unknown status " + res.MeteringStatus}
		}
	}
}
