// Package aws is an emulator of AWS Marketplace's Metering and Entitlement
// services. It speaks their JSON 1.1 protocol (POST /, X-Amz-Target,
// PascalCase fields, epoch-second timestamps, "__type" errors) closely
// enough that the official AWS SDK for Go v2 clients work against it
// unchanged: point their BaseEndpoint at the emulator's URL.
//
// It keeps AWS's rules: at most 25 records and 1 MB per BatchMeterUsage,
// exactly one buyer identifier per record, the 24 hour window with the
// month-end grace, idempotent identical records (same MeteringRecordId) and
// DuplicateRecord for another quantity in the same customer, dimension and
// hour (first write wins). What it accepted is "the bill" (Bill, or GET
// /emulator/bill). Faults (throttling above a rate, errors, latency,
// unprocessed records, and applying a request but dropping its response)
// let tests prove that a client bills exactly once.
//
// Buyers are created with AddBuyer, registration tokens minted with
// MintToken; lifecycle events are sent as signed SNS messages or
// EventBridge-shaped events (see events.go). The admin routes that all
// three emulators share (package emulator/admin, docs/emulators.md) do the
// same over HTTP under /emulator/.
package aws

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/saasmarket/marketplace/emulator/admin"
)

// Faults are failures the emulator injects into metering calls. Rates are
// probabilities between 0 and 1.
type Faults struct {
	// ThrottleTPS: metering calls above this rate per second get
	// ThrottlingException. Zero: no limit.
	ThrottleTPS float64
	// ThrottleBurst is how many calls may come at once; default one
	// second's worth of ThrottleTPS.
	ThrottleBurst int
	// ThrottleRate: calls refused with ThrottlingException at random, with
	// this probability.
	ThrottleRate float64
	// ErrorRate: calls refused with InternalServiceErrorException (HTTP
	// 500) before anything is applied.
	ErrorRate float64
	// Latency is added to every call.
	Latency time.Duration
	// UnprocessedRate: each record of a BatchMeterUsage is returned in
	// UnprocessedRecords (not applied) with this probability.
	UnprocessedRate float64
	// DropRate: the call is applied, then the connection is closed without
	// a response.
	DropRate float64
	// AllCalls applies the faults to every API call, not only to the
	// metering calls (BatchMeterUsage, MeterUsage).
	AllCalls bool
	// Seed makes the random faults reproducible.
	Seed uint64
}

// Credentials are the test credentials whose SigV4 signatures the emulator
// accepts.
type Credentials struct {
	AccessKeyID, SecretAccessKey string
}

// Config sets up an Emulator. The zero value is usable (no signature
// checks, no faults, real time).
type Config struct {
	// Credentials, when set, make every API call require a valid SigV4
	// signature (signing name aws-marketplace) by one of them.
	Credentials []Credentials
	Faults      Faults
	// Clock is the emulator's time (the 24 hour window, token expiry).
	// Signature times are checked against the wall clock, which the SDK
	// signs with.
	Clock func() time.Time
	// EmptyPages makes GetEntitlements answer an empty page with a
	// NextToken before every non-empty page after the first, as AWS may.
	EmptyPages bool
	// Notifications: where SendEventBridge and SendSNS deliver.
	Notify NotifyConfig
	// Products is the dimension catalogue: each product code the seller
	// lists, with the dimensions its pricing declares. A call naming
	// another product is InvalidProductCodeException, another dimension
	// InvalidUsageDimensionException. Nil accepts any product and
	// dimension.
	Products map[string][]string
	Logger   *slog.Logger
}

// errNoBuyer is the cause of every "no such buyer" error.
var errNoBuyer = errors.New("emulator: no buyer")

// knownProduct checks a product code against the catalogue.
func (e *Emulator) knownProduct(code string) error {
	if _, ok := e.cfg.Products[code]; e.cfg.Products != nil && !ok {
		return fmt.Errorf("product code %q is not in the catalogue", code)
	}
	return nil
}

// knownDimension checks a dimension of a product against the catalogue.
func (e *Emulator) knownDimension(code, dim string) error {
	if dims, ok := e.cfg.Products[code]; e.cfg.Products != nil && (!ok || !slices.Contains(dims, dim)) {
		return errorf("InvalidUsageDimensionException", "dimension %q is not a dimension of product %q", dim, code)
	}
	return nil
}

// NotifyConfig says where the emulator sends lifecycle events.
type NotifyConfig struct {
	// EventBridgeEndpoint receives EventBridge events as an API
	// destination would send them, with EventBridgeHeader:
	// EventBridgeSecret (the connection's API key).
	EventBridgeEndpoint string
	EventBridgeHeader   string
	EventBridgeSecret   string
	// SNSEndpoint receives signed SNS messages of SNSTopicArn; their
	// SigningCertURL is SNSCertURL (where this emulator's SNSCertPath is
	// served).
	SNSEndpoint string
	SNSTopicArn string
	SNSCertURL  string
	// Client sends them; default http.DefaultClient.
	Client *http.Client
}

// Emulator is the emulated AWS Marketplace. It is an http.Handler; serve it
// with httptest.NewServer or an http.Server.
type Emulator struct {
	cfg Config
	key *ecdsa.PrivateKey // signs RegisterUsage JWTs
	sns snsSigner
	mux *http.ServeMux

	mu          sync.Mutex
	faults      Faults
	rng         *mrand.Rand
	limiter     *rate.Limiter
	buyers      map[string]*Buyer // by buyer key
	tokens      map[string]token
	lines       map[lineKey]*line
	meterTokens map[string]string // MeterUsage client token → the other parameters of its first call
	queues      map[string][]*sqsMessage
	stats       Stats
	seq         int
}

type token struct {
	buyer   string
	expires time.Time
}

// Stats count what the emulator saw.
type Stats struct {
	Calls, Throttled, Errors, Dropped, Unprocessed int
	Accepted, Idempotent, Duplicate, NotSubscribed int
	OutOfBounds                                    int
}

// New returns an emulator.
func New(cfg Config) *Emulator {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	e := &Emulator{
		cfg: cfg, key: key, mux: http.NewServeMux(),
		buyers: map[string]*Buyer{}, tokens: map[string]token{},
		lines: map[lineKey]*line{}, meterTokens: map[string]string{},
	}
	e.SetFaults(cfg.Faults)
	e.mux.HandleFunc("POST /{$}", e.serveAPI)
	e.mux.HandleFunc("GET /emulator/keys", e.serveKeys)
	e.mux.HandleFunc("GET "+SNSCertPath, e.serveSNSCert)
	admin.Register(e.mux, e.Admin())
	return e
}

// ServeHTTP serves the AWS APIs at POST / and the emulator's own endpoints
// under /emulator/.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) { e.mux.ServeHTTP(w, r) }

// SetFaults replaces the faults; tests turn them on and off.
func (e *Emulator) SetFaults(f Faults) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = f
	e.rng = mrand.New(mrand.NewPCG(f.Seed, f.Seed^0x9e3779b97f4a7c15))
	e.limiter = nil
	if f.ThrottleTPS > 0 {
		burst := f.ThrottleBurst
		if burst <= 0 {
			burst = int(math.Max(1, math.Ceil(f.ThrottleTPS)))
		}
		e.limiter = rate.NewLimiter(rate.Limit(f.ThrottleTPS), burst)
	}
}

// Stats returns the counters.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

func (e *Emulator) allCalls() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.faults.AllCalls
}

func (e *Emulator) chance(p float64) bool { return p > 0 && e.rng.Float64() < p }

// apiError is an AWS error: its code goes to "__type".
type apiError struct {
	status int
	code   string
	msg    string
	// query is SQS's x-amzn-query-error value ("AWS.SimpleQueueService.NonExistentQueue;Sender");
	// set only on SQS errors, which also take SQS's namespace.
	query string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func errorf(code, format string, a ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, msg: fmt.Sprintf(format, a...)}
}

const maxRequestBytes = 1 << 20

// operation handles one X-Amz-Target.
type operation func(e *Emulator, body []byte) (any, error)

var operations = map[string]operation{
	"AWSMPMeteringService.BatchMeterUsage":    (*Emulator).batchMeterUsage,
	"AWSMPMeteringService.MeterUsage":         (*Emulator).meterUsage,
	"AWSMPMeteringService.ResolveCustomer":    (*Emulator).resolveCustomer,
	"AWSMPMeteringService.RegisterUsage":      (*Emulator).registerUsage,
	"AWSMPEntitlementService.GetEntitlements": (*Emulator).getEntitlements,
}

// metered operations are subject to the faults.
func metered(target string) bool {
	return target == "AWSMPMeteringService.BatchMeterUsage" || target == "AWSMPMeteringService.MeterUsage"
}

func (e *Emulator) serveAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-amzn-RequestId", uuid.NewString()) // on every answer, as AWS
	target := r.Header.Get("X-Amz-Target")
	op, ok := operations[target]
	if !ok && !strings.HasPrefix(target, "AmazonSQS.") {
		writeError(w, &apiError{status: http.StatusBadRequest, code: "UnknownOperationException", msg: "unknown X-Amz-Target " + target})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
	if err != nil {
		writeError(w, errorf("SerializationException", "read body: %v", err))
		return
	}
	if len(body) >= maxRequestBytes { // "each request must be less than 1 MB"
		writeError(w, &apiError{status: http.StatusRequestEntityTooLarge, code: "RequestEntityTooLargeException", msg: "request is 1 MB or more"})
		return
	}
	if len(e.cfg.Credentials) > 0 {
		// The SDK signs with the wall clock, not with cfg.Clock.
		if err := verifySigV4(r, body, e.cfg.Credentials, time.Now()); err != nil {
			ae := &apiError{status: http.StatusForbidden, code: "InvalidSignatureException", msg: err.Error()}
			switch {
			case errors.Is(err, errUnknownKey):
				ae.status, ae.code, ae.msg = http.StatusBadRequest, "UnrecognizedClientException", "The security token included in the request is invalid."
			case errors.Is(err, errExpired):
				ae.status, ae.msg = http.StatusBadRequest, strings.TrimPrefix(err.Error(), errExpired.Error()+": ")
			case errors.Is(err, errNoAuth):
				ae.code = "MissingAuthenticationTokenException"
			}
			writeError(w, ae)
			return
		}
	}
	if strings.HasPrefix(target, "AmazonSQS.") {
		e.serveSQS(w, r, target, body)
		return
	}
	drop := false
	if metered(target) || e.allCalls() {
		e.mu.Lock()
		f := e.faults
		e.stats.Calls++
		var fault *apiError
		switch {
		case e.limiter != nil && !e.limiter.Allow(), e.chance(f.ThrottleRate):
			e.stats.Throttled++
			fault = errorf("ThrottlingException", "rate exceeded (%.4g TPS)", f.ThrottleTPS)
		case e.chance(f.ErrorRate):
			e.stats.Errors++
			fault = &apiError{status: http.StatusInternalServerError, code: "InternalServiceErrorException", msg: "injected fault"}
		case e.chance(f.DropRate):
			e.stats.Dropped++
			drop = true
		}
		e.mu.Unlock()
		if f.Latency > 0 {
			select {
			case <-time.After(f.Latency):
			case <-r.Context().Done():
				return
			}
		}
		if fault != nil {
			writeError(w, fault)
			return
		}
	}
	out, err := op(e, body)
	if drop {
		dropConnection(w)
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	writeJSON(w, out)
}

func writeJSON(w http.ResponseWriter, v any) {
	_ = json.NewEncoder(w).Encode(v) // the client went away
}

// dropConnection closes the client's connection without an answer: the
// request was applied but its caller cannot know.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler) // HTTP/2: abort the stream
}

func writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{status: http.StatusInternalServerError, code: "InternalServiceErrorException", msg: err.Error()}
	}
	ns, ct := "com.amazonaws.marketplace#", "application/x-amz-json-1.1"
	if ae.query != "" {
		ns, ct = "com.amazonaws.sqs#", "application/x-amz-json-1.0"
		w.Header().Set("x-amzn-query-error", ae.query)
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("X-Amzn-ErrorType", ae.code)
	w.WriteHeader(ae.status)
	_ = json.NewEncoder(w).Encode(map[string]string{
		"__type":  ns + ae.code,
		"message": ae.msg,
	})
}

// decode reads a JSON 1.1 request body into v.
func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return errorf("SerializationException", "malformed request: %v", err)
	}
	return nil
}

// epoch is a JSON 1.1 timestamp: epoch seconds, possibly fractional.
type epoch struct{ time.Time }

func (t *epoch) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("timestamp must be epoch seconds: %w", err)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1<<40 {
		return errors.New("timestamp out of range")
	}
	sec, frac := math.Modf(f)
	t.Time = time.Unix(int64(sec), int64(frac*1e9)).UTC()
	return nil
}

func (t epoch) MarshalJSON() ([]byte, error) {
	return json.Marshal(float64(t.UnixMilli()) / 1000)
}
