package aws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering"

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

// ReporterConfig sets up a Reporter.
type ReporterConfig struct {
	// Client is the metering client (required).
	Client *Metering
	// ProductCode is the product; in product-code mode (the legacy one)
	// ledger customers are its CustomerIdentifiers.
	ProductCode string
	// LicenseMode: ledger customers are LicenseCustomer ids (account id and
	// license ARN), and no ProductCode is sent.
	LicenseMode bool
	// Limits overrides the fields of DefaultLimits that it sets.
	Limits ledger.Limits
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Clock returns the current time; default time.Now.
	Clock func() time.Time
}

// DefaultLimits are AWS's rules for BatchMeterUsage: 25 records and under
// 1 MB per call, 10 calls per second (AWS's quota), usage accepted for 24
// hours after its hour.
var DefaultLimits = ledger.Limits{MaxItems: 25, MaxBytes: MaxRequestBytes - 4096, Rate: 10, Deadline: 24 * time.Hour}

// Reporter is the ledger.Target of AWS: it sends sealed hours with
// BatchMeterUsage, one product or license per call, Timestamp = the hour's
// start. Per record, Success is reported (its MeteringRecordId stored),
// CustomerNotSubscribed is rejected, DuplicateRecord is a conflict (AWS
// holds another quantity for that hour: the first write wins) and
// UnprocessedRecords are retried. When AWS refuses a whole call because of
// one record (its timestamp, its customer, its dimension), Send answers
// ledger.ErrBadReport and the ledger bisects the call until the bad record
// is alone, so the others still go through. A ThrottlingException is
// ledger.ErrThrottled: the ledger's Reporter slows down.
//
// The product code (or, in license mode, the account and license) is
// frozen into each bucket before its first send (ledger.Freezer), so a
// changed ReporterConfig never changes a payload AWS may already hold.
type Reporter struct {
	m   *Metering
	cfg ReporterConfig
}

// NewReporter returns the AWS reporting target.
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	switch {
	case cfg.Client == nil:
		return nil, fmt.Errorf("%w: aws.ReporterConfig.Client is required", ErrInvalidInput)
	case !cfg.LicenseMode && cfg.ProductCode == "":
		return nil, fmt.Errorf("%w: aws.ReporterConfig.ProductCode is required unless LicenseMode is set", ErrInvalidInput)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	cfg.Limits = ledger.OverrideLimits(DefaultLimits, cfg.Limits)
	return &Reporter{m: cfg.Client, cfg: cfg}, nil
}

var (
	_ ledger.Target  = (*Reporter)(nil)
	_ ledger.Grouper = (*Reporter)(nil)
	_ ledger.Sizer   = (*Reporter)(nil)
	_ ledger.Freezer = (*Reporter)(nil)
)

// Provider implements ledger.Target.
func (*Reporter) Provider() marketplace.CloudProvider { return marketplace.AWS }

// Limits implements ledger.Target.
func (r *Reporter) Limits() ledger.Limits { return r.cfg.Limits }

// Attributes of a bucket frozen by Freeze.
const (
	attrProductCode = "productCode"
	attrAccountID   = "customerAWSAccountId"
	attrLicenseArn  = "licenseArn"
)

// Freeze implements ledger.Freezer: the product code, or the account and
// license of license mode.
func (r *Reporter) Freeze(_ context.Context, rep ledger.Report) (map[string]string, error) {
	if !r.cfg.LicenseMode {
		return map[string]string{attrProductCode: r.cfg.ProductCode}, nil
	}
	acct, lic, err := ParseLicenseCustomer(rep.Customer)
	if err != nil {
		return nil, marketplace.Permanent(err)
	}
	return map[string]string{attrAccountID: acct, attrLicenseArn: lic}, nil
}

// attributes are rep's frozen attributes, or those Freeze would freeze now
// for a report that has none (a direct call of Send).
func (r *Reporter) attributes(rep ledger.Report) (map[string]string, error) {
	if len(rep.Attributes) > 0 {
		return rep.Attributes, nil
	}
	return r.Freeze(context.Background(), rep)
}

// GroupOf implements ledger.Grouper: one product (product-code mode) or
// one license per call.
func (r *Reporter) GroupOf(_ context.Context, rep ledger.Report) (string, error) {
	a, err := r.attributes(rep)
	if err != nil {
		return "", err
	}
	if pc := a[attrProductCode]; pc != "" {
		return "product:" + pc, nil
	}
	return "license:" + a[attrLicenseArn], nil
}

// Size implements ledger.Sizer.
func (r *Reporter) Size(rep ledger.Report) int {
	rec, _, err := r.record(rep)
	if err != nil {
		return 0
	}
	return recordSize(rec)
}

// record is the usage record of rep and the ProductCode of its call.
func (r *Reporter) record(rep ledger.Report) (UsageRecord, string, error) {
	a, err := r.attributes(rep)
	if err != nil {
		return UsageRecord{}, "", err
	}
	rec := UsageRecord{Dimension: rep.Dimension, Quantity: int(rep.Quantity), Timestamp: rep.Hour.UTC()}
	pc := a[attrProductCode]
	if pc != "" {
		rec.CustomerIdentifier = rep.Customer
	} else {
		rec.CustomerAWSAccountId, rec.LicenseArn = a[attrAccountID], a[attrLicenseArn]
	}
	return rec, pc, nil
}

// Send implements ledger.Target: one BatchMeterUsage call. The reports of
// one call share a group (see GroupOf).
func (r *Reporter) Send(ctx context.Context, reports []ledger.Report) ([]ledger.Result, error) {
	results := make([]ledger.Result, len(reports))
	in := &BatchMeterUsageInput{}
	var idx []int // in.UsageRecords[j] is reports[idx[j]]
	now := r.cfg.Clock()
	for i, rep := range reports {
		rec, pc, err := r.record(rep)
		if err == nil {
			err = rec.validate(0, pc)
		}
		if err != nil {
			results[i] = ledger.Result{Outcome: ledger.OutcomeRejected, Reason: err.Error()}
			continue
		}
		if res, early := ledger.Early(rep, now); early {
			results[i] = res
			continue
		}
		if len(idx) > 0 && pc != in.ProductCode {
			return nil, marketplace.Permanent(fmt.Errorf("%w: one call mixes product codes %q and %q", ErrInvalidInput, in.ProductCode, pc))
		}
		in.ProductCode = pc
		in.UsageRecords = append(in.UsageRecords, rec)
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return results, nil
	}
	out, err := r.m.batchMeterUsage(ctx, in, func(o *marketplacemetering.Options) {
		o.RetryMaxAttempts = 1 // the ledger retries, with the same payload
	})
	if err != nil {
		return nil, r.classify(err)
	}
	r.apply(reports, in.UsageRecords, idx, out, results)
	return results, nil
}

// recordFaults are AWS's whole-call errors caused by one record: the
// ledger bisects the call to find it.
var recordFaults = []ErrorCode{ErrTimestampOutOfBounds, ErrInvalidCustomerIdentifier, ErrInvalidUsageDimension,
	ErrInvalidUsageAllocations, ErrInvalidTag, ErrInvalidLicense, ErrCustomerNotEntitled, ErrValidation}

func recordFault(err error) bool {
	return slices.ContainsFunc(recordFaults, func(c ErrorCode) bool { return errors.Is(err, c) })
}

// classify maps a failed call to the ledger's whole-call errors:
// throttling and refusals before processing were certainly not applied.
func (r *Reporter) classify(err error) error {
	var ae *APIError
	switch {
	case errors.Is(err, ErrThrottling):
		return fmt.Errorf("%w: %w", ledger.ErrThrottled, err)
	case errors.Is(err, ErrTimestampOutOfBounds):
		return fmt.Errorf("%w: %w: %w", ledger.ErrBadReport, ledger.ErrPastDeadline, err)
	case recordFault(err):
		return fmt.Errorf("%w: %w", ledger.ErrBadReport, err)
	case errors.Is(err, ErrInvalidProductCode):
		return marketplace.Permanent(err)
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

func (r *Reporter) apply(reports []ledger.Report, recs []UsageRecord, idx []int, out *BatchMeterUsageOutput, results []ledger.Result) {
	pos := make(map[recordKey]int, len(idx))
	for j, i := range idx {
		pos[keyOf(recs[j])] = i
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
