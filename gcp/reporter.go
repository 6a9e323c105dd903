package gcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
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
	// ServiceName is the product's Service Control service, e.g.
	// "example-api.endpoints.my-project.cloud.goog".
	ServiceName string
	// Metrics maps a ledger dimension to its metric name in the service
	// config, without the service prefix: {"tokens_1m": "tokens_1m"}. A
	// dimension missing here is rejected, never guessed.
	Metrics map[string]string
	// OperationName labels operations; default "marketplace/usage".
	OperationName string
	// MaxOperations per services.report call; default 100.
	MaxOperations int
	// Rate of calls per second; default 0 (unlimited).
	Rate float64
}

// Reporter is the ledger's ledger.Target for Google: it reports sealed
// hourly buckets through Service Control, services.check first (once per
// consumer and call), then one services.report with every operation that
// passed. Each bucket is one operation whose operationId is the bucket's
// deterministic report id (UUIDv5), so a resent operation is deduplicated
// by Google; consumerId is the ledger customer, which is the entitlement's
// usageReportingId exactly as Google gave it.
type Reporter struct {
	svc *servicecontrol.Service
	cfg ReporterConfig
}

// NewReporter returns a Reporter on the official Service Control client
// (point it at the emulator with option.WithEndpoint).
func NewReporter(svc *servicecontrol.Service, cfg ReporterConfig) (*Reporter, error) {
	if cfg.ServiceName == "" {
		return nil, errors.New("gcp: ReporterConfig.ServiceName is required")
	}
	if cfg.OperationName == "" {
		cfg.OperationName = "marketplace/usage"
	}
	if cfg.MaxOperations <= 0 {
		cfg.MaxOperations = 100
	}
	return &Reporter{svc: svc, cfg: cfg}, nil
}

// Provider is marketplace.GCP.
func (*Reporter) Provider() marketplace.CloudProvider { return marketplace.GCP }

// Limits: MaxOperations per call, under 1 MB, no deadline (Google expects
// hourly reports but sets none the reporter could check).
func (r *Reporter) Limits() ledger.Limits {
	return ledger.Limits{MaxItems: r.cfg.MaxOperations, MaxBytes: MaxRequestBytes, Rate: r.cfg.Rate}
}

// Size estimates the report's share of a request.
func (r *Reporter) Size(rep ledger.Report) int {
	op, err := r.operation(rep)
	if err != nil {
		return 0
	}
	b, _ := json.Marshal(op)
	return len(b) + 1
}

// Operation builds the Service Control operation of one report. Every
// attempt for a bucket builds the same one.
func (r *Reporter) Operation(rep ledger.Report) (*servicecontrol.Operation, error) {
	return r.operation(rep)
}

func (r *Reporter) operation(rep ledger.Report) (*servicecontrol.Operation, error) {
	metric, ok := r.cfg.Metrics[rep.Dimension]
	if !ok {
		return nil, fmt.Errorf("gcp: dimension %q has no Service Control metric in ReporterConfig.Metrics", rep.Dimension)
	}
	q := rep.Quantity
	return &servicecontrol.Operation{
		OperationId:   rep.ID,
		OperationName: r.cfg.OperationName,
		ConsumerId:    rep.Customer,
		StartTime:     rep.Hour.UTC().Format(time.RFC3339),
		EndTime:       rep.Hour.UTC().Add(time.Hour).Format(time.RFC3339),
		MetricValueSets: []*servicecontrol.MetricValueSet{{
			MetricName:   r.cfg.ServiceName + "/" + metric,
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
	for i, rep := range reports {
		op, err := r.operation(rep)
		if err != nil {
			results[i], decided[i] = ledger.Result{Outcome: ledger.OutcomeRejected, Reason: err.Error()}, true
			continue
		}
		ops[i] = op
	}
	// services.check once per consumer: it has no side effect, so any
	// failure leaves the consumer's reports certainly unapplied.
	checked := map[string]ledger.Result{}
	for i, rep := range reports {
		if decided[i] {
			continue
		}
		res, ok := checked[rep.Customer]
		if !ok {
			res = r.check(ctx, ops[i])
			checked[rep.Customer] = res
		}
		if res.Outcome != ledger.OutcomeReported {
			results[i], decided[i] = res, true
		}
	}
	var send []*servicecontrol.Operation
	var idx []int
	for i := range reports {
		if !decided[i] {
			send = append(send, ops[i])
			idx = append(idx, i)
		}
	}
	if len(send) == 0 {
		return results, nil
	}
	resp, err := r.svc.Services.Report(r.cfg.ServiceName, &servicecontrol.ReportRequest{Operations: send}).Context(ctx).Do()
	if err != nil {
		res := callFailure("services.report", err, true)
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
	for _, i := range idx {
		st, bad := failed[ops[i].OperationId]
		if !bad {
			results[i] = ledger.Result{Outcome: ledger.OutcomeReported, RecordID: ops[i].OperationId}
			continue
		}
		results[i] = reportFailure(st)
	}
	return results, nil
}

// check runs services.check for op's consumer; Outcome Reported means "passed".
func (r *Reporter) check(ctx context.Context, op *servicecontrol.Operation) ledger.Result {
	cop := &servicecontrol.Operation{OperationId: op.OperationId, OperationName: op.OperationName,
		ConsumerId: op.ConsumerId, StartTime: op.StartTime}
	resp, err := r.svc.Services.Check(r.cfg.ServiceName, &servicecontrol.CheckRequest{Operation: cop}).Context(ctx).Do()
	if err != nil {
		return callFailure("services.check", err, false)
	}
	for _, ce := range resp.CheckErrors {
		if ce == nil {
			continue
		}
		reason := "services.check: " + ce.Code
		if ce.Detail != "" {
			reason += ": " + ce.Detail
		}
		if slices.Contains(transientCheck, ce.Code) {
			return ledger.Result{Outcome: ledger.OutcomeRetry, Reason: reason}
		}
		return ledger.Result{Outcome: ledger.OutcomeRejected, Reason: reason}
	}
	return ledger.Result{Outcome: ledger.OutcomeReported}
}

// callFailure maps a failed call. mayApply says whether the call could
// have been applied at all (report can, check cannot).
func callFailure(method string, err error, mayApply bool) ledger.Result {
	res := ledger.Result{Outcome: ledger.OutcomeRetry, Reason: method + ": " + err.Error(), MaybeApplied: mayApply}
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		return res // transport error, timeout, lost response: maybe applied
	}
	switch {
	case ge.Code == http.StatusTooManyRequests:
		res.MaybeApplied = false
		if s := ge.Header.Get("Retry-After"); s != "" {
			if n, err := strconv.Atoi(s); err == nil && n > 0 {
				res.RetryAfter = time.Duration(n) * time.Second
			}
		}
	case ge.Code == http.StatusServiceUnavailable:
		res.MaybeApplied = false
	case ge.Code == http.StatusBadRequest:
		// The request itself is invalid: sending it again cannot help.
		res.Outcome, res.MaybeApplied = ledger.OutcomeRejected, false
	case ge.Code == http.StatusUnauthorized || ge.Code == http.StatusForbidden:
		// Credentials or IAM: the operator fixes them; keep the usage.
		res.MaybeApplied = false
	}
	return res
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
	case codeCancelled, codeUnknown, codeDeadlineExceeded, codeResourceExhausted, codeAborted, codeInternal, codeUnavailable:
		return ledger.Result{Outcome: ledger.OutcomeRetry, Reason: reason}
	}
	return ledger.Result{Outcome: ledger.OutcomeRetry, Reason: reason}
}
