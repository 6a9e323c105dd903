package gcp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxReportBytes is Service Control's limit on one request.
const MaxReportBytes = 1 << 20

// gRPC status codes used in reportErrors.
const (
	codeInvalidArgument    = 3
	codeAlreadyExists      = 6
	codeFailedPrecondition = 9
)

// The wire shapes of Service Control v1 that the emulator reads and writes
// (see servicecontrol-api.json). Int64 values travel as JSON strings.
type scOperation struct {
	OperationID     string            `json:"operationId"`
	OperationName   string            `json:"operationName"`
	ConsumerID      string            `json:"consumerId"`
	StartTime       string            `json:"startTime"`
	EndTime         string            `json:"endTime"`
	MetricValueSets []scMetricSet     `json:"metricValueSets"`
	UserLabels      map[string]string `json:"userLabels,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	// Fields of Operation the emulator accepts and ignores; any other
	// field is refused, as Google refuses it.
	Importance      json.RawMessage `json:"importance,omitempty"`
	LogEntries      json.RawMessage `json:"logEntries,omitempty"`
	QuotaProperties json.RawMessage `json:"quotaProperties,omitempty"`
	Resources       json.RawMessage `json:"resources,omitempty"`
	TraceSpans      json.RawMessage `json:"traceSpans,omitempty"`
	Extensions      json.RawMessage `json:"extensions,omitempty"`
}

type scMetricSet struct {
	MetricName   string          `json:"metricName"`
	MetricValues []scMetricValue `json:"metricValues"`
}

type scMetricValue struct {
	Int64Value *flexInt64 `json:"int64Value,omitempty"`
	// Accepted and ignored (the emulator bills int64 values only).
	Labels            map[string]string `json:"labels,omitempty"`
	StartTime         string            `json:"startTime,omitempty"`
	EndTime           string            `json:"endTime,omitempty"`
	BoolValue         json.RawMessage   `json:"boolValue,omitempty"`
	DoubleValue       json.RawMessage   `json:"doubleValue,omitempty"`
	StringValue       json.RawMessage   `json:"stringValue,omitempty"`
	DistributionValue json.RawMessage   `json:"distributionValue,omitempty"`
	MoneyValue        json.RawMessage   `json:"moneyValue,omitempty"`
}

// flexInt64 is an int64 in Google's JSON mapping: a string ("12") or,
// as the mapping also accepts, a number (12).
type flexInt64 string

func (f *flexInt64) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*f = flexInt64(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("int64Value must be a string or a number, got %s", b)
	}
	*f = flexInt64(n.String())
	return nil
}

type scStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type scReportError struct {
	OperationID string   `json:"operationId"`
	Status      scStatus `json:"status"`
}

type scCheckError struct {
	Code    string `json:"code"`
	Subject string `json:"subject,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// activeStates are the entitlement states in which usage is billed.
var activeStates = []string{
	"ENTITLEMENT_ACTIVE", "ENTITLEMENT_PENDING_CANCELLATION",
	"ENTITLEMENT_PENDING_PLAN_CHANGE", "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL",
}

// consumerErrorLocked says why consumerID may not be billed for usage
// that began at start (zero: now), or "". A cancelled entitlement still
// takes its final usage, of hours that began before the cancellation, for
// FinalReportGrace.
func (e *Emulator) consumerErrorLocked(consumerID string, start time.Time) string {
	if code := e.checkErr[consumerID]; code != "" {
		return code
	}
	now := e.now()
	for _, id := range e.entOrder {
		ent := e.ents[id]
		if ent.UsageReportingID != consumerID {
			continue
		}
		if slices.Contains(activeStates, ent.State) {
			return ""
		}
		if ent.State == StateCancelled && !ent.cancelledAt.IsZero() && now.Before(ent.cancelledAt.Add(FinalReportGrace)) &&
			(start.IsZero() || start.Before(ent.cancelledAt)) {
			return ""
		}
	}
	return "SERVICE_NOT_ACTIVATED"
}

// serviceMethod splits "svc:check" and checks the service.
func (e *Emulator) serviceMethod(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	svc, verb, ok := strings.Cut(name, ":")
	if !ok || (verb != "check" && verb != "report") {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "unknown method %q", name)
		return "", false
	}
	if svc != e.cfg.ServiceName {
		writeError(w, http.StatusForbidden, "PERMISSION_DENIED", "service %q is not managed by this emulator (it serves %q)", svc, e.cfg.ServiceName)
		return "", false
	}
	return verb, true
}

func (e *Emulator) serveServiceControl(w http.ResponseWriter, r *http.Request) {
	verb, ok := e.serviceMethod(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxReportBytes+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "read body: %v", err)
		return
	}
	if len(body) > MaxReportBytes {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "request payload size exceeds the limit: %d bytes", MaxReportBytes)
		return
	}
	if verb == "check" {
		e.check(w, body)
		return
	}
	e.report(w, body)
}

func (e *Emulator) check(w http.ResponseWriter, body []byte) {
	var req struct {
		Operation              *scOperation    `json:"operation"`
		ServiceConfigID        string          `json:"serviceConfigId,omitempty"`
		RequestProjectSettings bool            `json:"requestProjectSettings,omitempty"`
		SkipActivationCheck    bool            `json:"skipActivationCheck,omitempty"`
		Resources              json.RawMessage `json:"resources,omitempty"`
	}
	if err := strictJSON(body, &req); err != nil {
		writeAPIError(w, err)
		return
	}
	if req.Operation == nil {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "invalid CheckRequest: operation is required")
		return
	}
	op := req.Operation
	if op.ConsumerID == "" || op.OperationID == "" {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "operation.consumerId and operation.operationId are required")
		return
	}
	// Operation.startTime: "Required. Start time of the operation." (only
	// endTime is optional in Check).
	start, err := time.Parse(time.RFC3339Nano, op.StartTime)
	if err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "operation.startTime is required (RFC 3339): %q", op.StartTime)
		return
	}
	e.mu.Lock()
	e.calls["services.check"]++
	code := e.consumerErrorLocked(op.ConsumerID, start)
	e.mu.Unlock()
	resp := map[string]any{"operationId": op.OperationID, "serviceConfigId": "emulator"}
	if code != "" {
		resp["checkErrors"] = []scCheckError{{Code: code, Subject: op.ConsumerID, Detail: "consumer " + op.ConsumerID + ": " + code}}
	} else if n, ok := strings.CutPrefix(op.ConsumerID, "project_number:"); ok {
		resp["checkInfo"] = map[string]any{"consumerInfo": map[string]any{"projectNumber": n, "type": "PROJECT"}}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (e *Emulator) report(w http.ResponseWriter, body []byte) {
	var req struct {
		Operations      []scOperation `json:"operations"`
		ServiceConfigID string        `json:"serviceConfigId,omitempty"`
	}
	if err := strictJSON(body, &req); err != nil {
		writeAPIError(w, err)
		return
	}
	if len(req.Operations) == 0 {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "operations must not be empty")
		return
	}
	// The discovery document: "If multiple metric values are present in an
	// operation for the same metric, the whole request is rejected."
	for _, op := range req.Operations {
		seen := map[string]int{}
		for _, set := range op.MetricValueSets {
			if seen[set.MetricName] += len(set.MetricValues); seen[set.MetricName] > 1 {
				writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "operation %s has more than one value for metric %s", op.OperationID, set.MetricName)
				return
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls["services.report"]++
	var errs []scReportError
	for _, op := range req.Operations {
		if code, msg := e.applyLocked(op); code != 0 {
			errs = append(errs, scReportError{OperationID: op.OperationID, Status: scStatus{Code: code, Message: msg}})
		}
	}
	resp := map[string]any{"serviceConfigId": "emulator"}
	if len(errs) > 0 {
		resp["reportErrors"] = errs
	}
	writeJSON(w, http.StatusOK, resp)
}

// opRecord is what the emulator remembers of an accepted operation.
type opRecord struct {
	fingerprint string
	lines       []BillLine
}

// applyLocked validates and bills one operation; it answers a gRPC code and
// message for a refused one.
func (e *Emulator) applyLocked(op scOperation) (int, string) {
	lines, err := e.validate(op)
	if err != nil {
		return codeInvalidArgument, err.Error()
	}
	if code := e.consumerErrorLocked(op.ConsumerID, lines[0].StartTime); code != "" {
		return codeFailedPrecondition, code + ": consumer " + op.ConsumerID + " cannot be billed"
	}
	fp, _ := json.Marshal(lines)
	if prev, ok := e.ops[op.OperationID]; ok {
		if prev.fingerprint == string(fp) {
			return 0, "" // the same operation again: deduplicated
		}
		return codeAlreadyExists, "operation " + op.OperationID + " was already reported with different content"
	}
	e.ops[op.OperationID] = &opRecord{fingerprint: string(fp), lines: lines}
	e.opOrder = append(e.opOrder, op.OperationID)
	return 0, ""
}

func (e *Emulator) validate(op scOperation) ([]BillLine, error) {
	if op.OperationID == "" || op.ConsumerID == "" {
		return nil, errors.New("operationId and consumerId are required")
	}
	start, err := time.Parse(time.RFC3339Nano, op.StartTime)
	if err != nil {
		return nil, fmt.Errorf("startTime: %w", err)
	}
	end, err := time.Parse(time.RFC3339Nano, op.EndTime)
	if err != nil {
		return nil, fmt.Errorf("endTime: %w", err)
	}
	if end.Before(start) {
		return nil, errors.New("endTime is before startTime")
	}
	if start.After(e.now().Add(5 * time.Minute)) {
		return nil, errors.New("startTime is in the future")
	}
	if len(op.MetricValueSets) == 0 {
		return nil, errors.New("metricValueSets must not be empty")
	}
	// Operation.resources: "The maximum supported number of entries in
	// this field is 100."
	if len(op.Resources) > 0 {
		var res []json.RawMessage
		if err := json.Unmarshal(op.Resources, &res); err != nil {
			return nil, fmt.Errorf("resources must be a list: %w", err)
		}
		if len(res) > 100 {
			return nil, fmt.Errorf("resources holds %d entries; at most 100 are supported", len(res))
		}
	}
	var lines []BillLine
	for _, set := range op.MetricValueSets {
		metric, ok := strings.CutPrefix(set.MetricName, e.cfg.ServiceName+"/")
		if !ok || metric == "" {
			return nil, fmt.Errorf("metricName %q is not a metric of service %s", set.MetricName, e.cfg.ServiceName)
		}
		if len(e.cfg.Metrics) > 0 && !slices.Contains(e.cfg.Metrics, metric) {
			return nil, fmt.Errorf("metricName %q is not defined", set.MetricName)
		}
		if len(set.MetricValues) == 0 {
			return nil, fmt.Errorf("metric %s has no values", set.MetricName)
		}
		for _, v := range set.MetricValues {
			if v.Int64Value == nil {
				return nil, fmt.Errorf("metric %s: int64Value required", set.MetricName)
			}
			n, err := strconv.ParseInt(string(*v.Int64Value), 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("metric %s: int64Value %q must be a non-negative int64", set.MetricName, string(*v.Int64Value))
			}
			lines = append(lines, BillLine{OperationID: op.OperationID, ConsumerID: op.ConsumerID, MetricName: set.MetricName,
				StartTime: start.UTC(), EndTime: end.UTC(), Value: n})
		}
	}
	return lines, nil
}
