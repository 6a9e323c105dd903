package gcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"google.golang.org/api/googleapi"
	"google.golang.org/api/servicecontrol/v1"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// MaxRequestBytes keeps a services.report request safely under Service
// Control's 1 MB limit.
const MaxRequestBytes = 900 << 10

// ReporterConfig sets up a Reporter.
type ReporterConfig struct {
	// Client is the official Service Control client (required; point it
	// at the emulator with option.WithEndpoint).
	Client *servicecontrol.Service
	// ServiceName is the product's Service Control service, e.g.
	// "example-api.endpoints.my-project.cloud.goog" (required).
	ServiceName string
	// Metrics maps a ledger dimension to its metric name in the service
	// config, without the service prefix: {"tokens_1m": "tokens_1m"}. A
	// dimension missing here is rejected, never guessed.
	Metrics map[string]string
	// OperationName labels operations; default "marketplace/usage".
	OperationName string
	// Limits overrides the fields of DefaultLimits that it sets (MaxItems
	// is operations per services.report call).
	Limits ledger.Limits
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Clock returns the current time; default time.Now.
	Clock func() time.Time
}

// DefaultLimits are Service Control's rules for services.report: 100
// operations per call, under 1 MB. Google sets no deadline the reporter
// could check, and no call rate; the ledger's Reporter follows its
// RESOURCE_EXHAUSTED answers.
var DefaultLimits = ledger.Limits{MaxItems: 100, MaxBytes: MaxRequestBytes}

// Reporter is the ledger's ledger.Target for Google: it reports sealed
// hourly buckets through Service Control, services.check first (once per
// consumer and call), then one services.report with every operation that
// passed. Each bucket is one operation whose operationId is the bucket's
// deterministic report id (UUIDv5), so a resent operation is deduplicated
// by Google; consumerId is the ledger customer, which is the entitlement's
// usageReportingId exactly as Google gave it. Its time range is the
// bucket's hour, or up to the seal time of a final flush, never in the
// future. The consumer id, metric name and operation name are frozen into
// the bucket before its first send (ledger.Freezer), so a changed
// ReporterConfig never changes an operation Google may already hold.
type Reporter struct {
	svc *servicecontrol.Service
	cfg ReporterConfig
}

var (
	_ ledger.Target  = (*Reporter)(nil)
	_ ledger.Sizer   = (*Reporter)(nil)
	_ ledger.Freezer = (*Reporter)(nil)
)

// NewReporter returns the Google reporting target.
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("gcp: ReporterConfig.Client is required")
	case cfg.ServiceName == "":
		return nil, errors.New("gcp: ReporterConfig.ServiceName is required")
	}
	if cfg.OperationName == "" {
		cfg.OperationName = "marketplace/usage"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	cfg.Limits = ledger.OverrideLimits(DefaultLimits, cfg.Limits)
	return &Reporter{svc: cfg.Client, cfg: cfg}, nil
}

// Provider is marketplace.GCP.
func (*Reporter) Provider() marketplace.CloudProvider { return marketplace.GCP }

// Limits implements ledger.Target.
func (r *Reporter) Limits() ledger.Limits { return r.cfg.Limits }

// Attributes of a bucket frozen by Freeze.
const (
	attrConsumerID    = "consumerId"
	attrMetric        = "metricName"
	attrOperationName = "operationName"
)

// Freeze implements ledger.Freezer: the consumer id, the full metric name
// and the operation name.
func (r *Reporter) Freeze(_ context.Context, rep ledger.Report) (map[string]string, error) {
	metric, ok := r.cfg.Metrics[rep.Dimension]
	if !ok {
		return nil, marketplace.Permanent(fmt.Errorf("gcp: dimension %q has no Service Control metric in ReporterConfig.Metrics", rep.Dimension))
	}
	return map[string]string{attrConsumerID: rep.Customer, attrMetric: r.cfg.ServiceName + "/" + metric,
		attrOperationName: r.cfg.OperationName}, nil
}

// Size estimates the report's share of a request.
func (r *Reporter) Size(rep ledger.Report) int {
	op, err := r.Operation(rep)
	if err != nil {
		return 0
	}
	b, _ := json.Marshal(op)
	return len(b) + 1
}

// Operation builds the Service Control operation of one report from its
// frozen attributes (or, for a report that has none, from the
// configuration now). Every attempt for a bucket builds the same one.
func (r *Reporter) Operation(rep ledger.Report) (*servicecontrol.Operation, error) {
	a := rep.Attributes
	if len(a) == 0 {
		var err error
		if a, err = r.Freeze(context.Background(), rep); err != nil {
			return nil, err
		}
	}
	end := rep.End
	if end.IsZero() {
		end = rep.Hour.Add(time.Hour)
	}
	q := rep.Quantity
	return &servicecontrol.Operation{
		OperationId:   rep.ID,
		OperationName: a[attrOperationName],
		ConsumerId:    a[attrConsumerID],
		StartTime:     rep.Hour.UTC().Format(time.RFC3339),
		EndTime:       end.UTC().Format(time.RFC3339),
		MetricValueSets: []*servicecontrol.MetricValueSet{{
			MetricName:   a[attrMetric],
			MetricValues: []*servicecontrol.MetricValue{{Int64Value: &q}},
		}},
	}, nil
}

// transientCheck are check error codes that say "try again", not "no".
var transientCheck = []string{
	"NAMESPACE_LOOKUP_UNAVAILABLE", "SERVICE_STATUS_UNAVAILABLE", "BILLING_STATUS_UNAVAILABLE",
	"QUOTA_CHECK_UNAVAILABLE", "CLOUD_RESOURCE_MANAGER_BACKEND_UNAVAILABLE",
	"SECURITY_POLICY_BACKEND_UNAVAILABLE", "LOCATION_POLICY_BACKEND_UNAVAILABLE",
	"LOAS_PROJECT_LOOKUP_UNAVAILABLE", "RESOURCE_EXHAUSTED", "LOAD_SHEDDING",
}

// Send checks each consumer, then reports the operations that passed in
// one services.report call, and answers one result per report.
func (r *Reporter) Send(ctx context.Context, reports []ledger.Report) ([]ledger.Result, error) {
	results := make([]ledger.Result, len(reports))
	decided := make([]bool, len(reports))
	ops := make([]*servicecontrol.Operation, len(reports))
	now := r.cfg.Clock()
	for i, rep := range reports {
		if res, early := ledger.Early(rep, now); early {
			results[i], decided[i] = res, true
			continue
		}
		op, err := r.Operation(rep)
		if err != nil {
			results[i], decided[i] = ledger.Result{Outcome: ledger.OutcomeRejected, Reason: err.Error()}, true
			continue
		}
		ops[i] = op
	}
	// services.check once per consumer: it has no side effect, so any
	// failure leaves the consumer's reports certainly unapplied. Once
	// Google throttles, no further call is made: every report left waits.
	checked := map[string]ledger.Result{}
	var throttled *ledger.Result
	for i := range reports {
		if decided[i] {
			continue
		}
		res, ok := checked[ops[i].ConsumerId]
		switch {
		case throttled != nil:
			res = *throttled
		case !ok:
			res = r.check(ctx, ops[i])
			checked[ops[i].ConsumerId] = res
			if res.Throttled {
				throttled = &res
			}
		}
		if res.Outcome != ledger.OutcomeReported {
			results[i], decided[i] = res, true
		}
	}
	var send []*servicecontrol.Operation
	var idx []int
	for i := range reports {
		switch {
		case decided[i]:
		case throttled != nil: // passed its check before Google throttled
			results[i] = *throttled
		default:
			send = append(send, ops[i])
			idx = append(idx, i)
		}
	}
	if len(send) == 0 {
		return results, nil
	}
	resp, err := r.svc.Services.Report(r.cfg.ServiceName, &servicecontrol.ReportRequest{Operations: send}).Context(ctx).Do()
	if err != nil {
		// Answered per report: the checks decided some already.
		res := ledger.ResultOf(r.classify(fmt.Errorf("services.report: %w", err)))
		for _, i := range idx {
			results[i] = res
		}
		return results, nil
	}
	failed := map[string]*servicecontrol.Status{}
	for _, re := range resp.ReportErrors {
		if re != nil {
			failed[re.OperationId] = re.Status
		}
	}
	matched := 0
	for _, i := range idx {
		st, bad := failed[ops[i].OperationId]
		if !bad {
			results[i] = ledger.Result{Outcome: ledger.OutcomeReported, RecordID: ops[i].OperationId}
			continue
		}
		matched++
		results[i] = reportFailure(st)
	}
	if matched < len(failed) {
		r.cfg.Logger.Warn("gcp: services.report answered errors for operations that were not sent", "unmatched", len(failed)-matched)
	}
	return results, nil
}

// check runs services.check for op's consumer; Outcome Reported means "passed".
func (r *Reporter) check(ctx context.Context, op *servicecontrol.Operation) ledger.Result {
	cop := &servicecontrol.Operation{OperationId: op.OperationId, OperationName: op.OperationName,
		ConsumerId: op.ConsumerId, StartTime: op.StartTime}
	resp, err := r.svc.Services.Check(r.cfg.ServiceName, &servicecontrol.CheckRequest{Operation: cop}).Context(ctx).Do()
	if err != nil {
		res := ledger.ResultOf(r.classify(fmt.Errorf("services.check: %w", err)))
		res.MaybeApplied = false // check has no side effect
		return res
	}
	for _, ce := range resp.CheckErrors {
		if ce == nil {
			continue
		}
		reason := "services.check: " + ce.Code
		if ce.Detail != "" {
			reason += ": " + ce.Detail
		}
		switch {
		case ce.Code == "RESOURCE_EXHAUSTED":
			return ledger.Result{Outcome: ledger.OutcomeRetry, Reason: reason, Throttled: true}
		case slices.Contains(transientCheck, ce.Code):
			return ledger.Result{Outcome: ledger.OutcomeRetry, Reason: reason}
		}
		return ledger.Result{Outcome: ledger.OutcomeRejected, Reason: reason}
	}
	return ledger.Result{Outcome: ledger.OutcomeReported}
}

// classify maps a failed call to the ledger's whole-call errors.
func (r *Reporter) classify(err error) error {
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		return err // transport error, timeout, lost response: maybe applied
	}
	switch {
	case ge.Code == http.StatusTooManyRequests:
		return marketplace.WithRetryAfter(fmt.Errorf("%w: %w", ledger.ErrThrottled, err),
			marketplace.ParseRetryAfter(ge.Header.Get("Retry-After"), r.cfg.Clock()))
	case ge.Code == http.StatusServiceUnavailable:
		return fmt.Errorf("%w: %w", ledger.ErrNotApplied, err)
	case ge.Code == http.StatusBadRequest:
		// The request itself is invalid: sending it again cannot help.
		return marketplace.Permanent(err)
	case ge.Code == http.StatusUnauthorized || ge.Code == http.StatusForbidden:
		// Credentials or IAM: the operator fixes them; keep the usage.
		return fmt.Errorf("%w: %w", ledger.ErrNotApplied, err)
	}
	return err
}

// gRPC status codes of reportErrors.
const (
	codeCancelled          = 1
	codeUnknown            = 2
	codeInvalidArgument    = 3
	codeDeadlineExceeded   = 4
	codeNotFound           = 5
	codeAlreadyExists      = 6
	codePermissionDenied   = 7
	codeResourceExhausted  = 8
	codeFailedPrecondition = 9
	codeAborted            = 10
	codeInternal           = 13
	codeUnavailable        = 14
)

func reportFailure(st *servicecontrol.Status) ledger.Result {
	if st == nil {
		return ledger.Result{Outcome: ledger.OutcomeRetry, Reason: "services.report: operation failed without a status"}
	}
	reason := fmt.Sprintf("services.report: code %d: %s", st.Code, st.Message)
	switch st.Code {
	case codeAlreadyExists:
		return ledger.Result{Outcome: ledger.OutcomeConflict, Reason: reason}
	case codeInvalidArgument, codeFailedPrecondition, codeNotFound, codePermissionDenied:
		return ledger.Result{Outcome: ledger.OutcomeRejected, Reason: reason}
	case codeResourceExhausted:
		return ledger.Result{Outcome: ledger.OutcomeRetry, Reason: reason, Throttled: true}
	case codeCancelled, codeUnknown, codeDeadlineExceeded, codeAborted, codeInternal, codeUnavailable:
		return ledger.Result{Outcome: ledger.OutcomeRetry, Reason: reason}
	}
	return ledger.Result{Outcome: ledger.OutcomeRetry, Reason: reason}
}
