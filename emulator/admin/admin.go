// Package admin is the control surface that the AWS, Azure and Google
// emulators share: the same routes, JSON shapes and flag names for
// creating buyers, driving lifecycle events, reading the bill and setting
// faults. Each emulator supplies only what differs, by implementing Cloud.
//
// Routes (JSON bodies and answers; errors are {"error": "..."} with a 4xx):
//
//	POST /emulator/buyers                    BuyerRequest → 201 Buyer
//	GET  /emulator/buyers/{id}               Buyer, as it stands now
//	POST /emulator/buyers/{id}/events        EventRequest → EventResult
//	GET  /emulator/bill                      Bill
//	GET  /emulator/faults                    Faults
//	PUT  /emulator/faults                    Faults → Faults (replaces them all)
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// Cloud is one emulator as the admin routes drive it.
type Cloud interface {
	CreateBuyer(ctx context.Context, req BuyerRequest) (Buyer, error)
	Buyer(id string) (Buyer, error)
	Event(ctx context.Context, buyerID string, req EventRequest) (EventResult, error)
	Bill() Bill
	Faults() Faults
	SetFaults(Faults) error
}

// Errors a Cloud returns, wrapped, to choose the status code.
var (
	ErrNotFound   = errors.New("not found")   // 404
	ErrBadRequest = errors.New("bad request") // 400
	ErrConflict   = errors.New("conflict")    // 409: not allowed in the buyer's state
)

// BuyerRequest creates a buyer: a customer of a product on a plan.
type BuyerRequest struct {
	// Product is the AWS product code, the Azure offer (fixed by the
	// emulator's configuration; empty takes it) or the Google product.
	Product string `json:"product,omitempty"`
	// Plan is the Azure or Google plan; AWS has none.
	Plan string `json:"plan,omitempty"`
	// Account is the buyer's account id (AWS account, Google
	// procurement account); empty makes one up. Azure ignores it.
	Account string `json:"account,omitempty"`
	// Quantity is the Azure seat count; others ignore it.
	Quantity int64 `json:"quantity,omitempty"`
	// Email is the Azure buyer's email; others ignore it.
	Email string `json:"email,omitempty"`
	// Active skips the sign-up: the buyer comes back already active, as if
	// the seller had activated (Azure) or approved (Google) it. AWS
	// buyers are always active.
	Active bool `json:"active,omitempty"`
	// License makes an AWS buyer of a license-based product (identified
	// by account and license ARN) instead of a CustomerIdentifier.
	License bool `json:"license,omitempty"`
}

// Buyer is a buyer as the emulator holds it.
type Buyer struct {
	// ID names the buyer in the admin routes and on the bill: the AWS
	// customer identifier (or license ARN), the Azure subscription id,
	// the Google entitlement id.
	ID      string `json:"id"`
	Account string `json:"account,omitempty"`
	Product string `json:"product,omitempty"`
	Plan    string `json:"plan,omitempty"`
	// State is the cloud's own word for the subscription's state.
	State string `json:"state"`
	// Token is what the cloud posts to the seller's landing page: the AWS
	// registration token, the Azure marketplace token, the Google sign-up
	// JWT. Only set when the buyer is created.
	Token string `json:"token,omitempty"`
	// Cloud holds the cloud's other identifiers (usage reporting id,
	// license ARN, ...).
	Cloud map[string]string `json:"cloud,omitempty"`
}

// EventRequest is a lifecycle event: a buyer's or the cloud's change.
type EventRequest struct {
	// Event is the cloud's own name for it; each emulator lists its
	// names in its documentation and in the error for an unknown one.
	Event    string `json:"event"`
	Plan     string `json:"plan,omitempty"`     // a plan change's new plan
	Quantity int64  `json:"quantity,omitempty"` // an Azure quantity change
}

// EventResult says what the event did.
type EventResult struct {
	Buyer Buyer `json:"buyer"` // after the event
	// Operation is the Azure operation id or the Google event id.
	Operation string `json:"operation,omitempty"`
	// Deliveries are the notifications sent to the seller; empty when no
	// receiver is configured (the state still changed).
	Deliveries []Delivery `json:"deliveries"`
}

// Delivery is one notification sent to the seller.
type Delivery struct {
	To     string `json:"to"`               // URL, or "pubsub:<topic>"
	Status int    `json:"status,omitempty"` // the receiver's HTTP status
	Error  string `json:"error,omitempty"`
}

// Bill is the usage the emulator accepted.
type Bill struct {
	Lines []Line `json:"lines"`
	// Totals sums quantities per buyer and dimension.
	Totals map[string]map[string]float64 `json:"totals"`
}

// Line is one accepted usage record.
type Line struct {
	ID        string    `json:"id"`        // the cloud's record id
	Buyer     string    `json:"buyer"`     // customer, resource or consumer id
	Dimension string    `json:"dimension"` // dimension or metric
	Start     time.Time `json:"start"`     // the hour (AWS, Azure) or operation start (Google)
	Quantity  float64   `json:"quantity"`
}

// NewBill sums lines into a Bill.
func NewBill(lines []Line) Bill {
	b := Bill{Lines: lines, Totals: map[string]map[string]float64{}}
	if b.Lines == nil {
		b.Lines = []Line{}
	}
	for _, l := range lines {
		if b.Totals[l.Buyer] == nil {
			b.Totals[l.Buyer] = map[string]float64{}
		}
		b.Totals[l.Buyer][l.Dimension] += l.Quantity
	}
	return b
}

// BillOf is the Bill of an emulator's accepted records, each mapped to a
// Line by line.
func BillOf[R any](recs []R, line func(R) Line) Bill {
	var lines []Line
	for _, r := range recs {
		lines = append(lines, line(r))
	}
	return NewBill(lines)
}

// Fault scopes.
const (
	ScopeMetering = "metering" // only the metering calls
	ScopeAll      = "all"      // every cloud API call
)

// Faults are the failures an emulator injects, in one vocabulary for the
// three clouds. Rates are probabilities from 0 to 1.
type Faults struct {
	// ThrottleRate is the share of calls refused as throttled before they
	// apply (AWS ThrottlingException, Azure 429, Google 429
	// RESOURCE_EXHAUSTED).
	ThrottleRate float64 `json:"throttleRate"`
	// ThrottleTPS throttles calls above this many per second; 0: no limit.
	ThrottleTPS float64 `json:"throttleTPS"`
	// RetryAfter is the Retry-After of Azure's and Google's 429 answers
	// (AWS sends none).
	RetryAfter Duration `json:"retryAfter"`
	// ErrorRate is the share of calls refused with a server error before
	// they apply.
	ErrorRate float64 `json:"errorRate"`
	// DropRate is the share of calls applied whose response is then lost.
	DropRate float64 `json:"dropRate"`
	// UnprocessedRate is the share of AWS BatchMeterUsage records returned
	// unprocessed; only AWS has this.
	UnprocessedRate float64 `json:"unprocessedRate"`
	// Latency is added to every call.
	Latency Duration `json:"latency"`
	// Scope is ScopeMetering (the default) or ScopeAll.
	Scope string `json:"scope"`
}

// Validate reports the first setting out of range.
func (f Faults) Validate() error {
	for name, v := range map[string]float64{"throttleRate": f.ThrottleRate, "errorRate": f.ErrorRate, "dropRate": f.DropRate, "unprocessedRate": f.UnprocessedRate} {
		if v < 0 || v > 1 {
			return fmt.Errorf("%w: %s is %g; want a share from 0 to 1", ErrBadRequest, name, v)
		}
	}
	switch {
	case f.ThrottleTPS < 0:
		return fmt.Errorf("%w: throttleTPS is %g; want 0 (no limit) or more", ErrBadRequest, f.ThrottleTPS)
	case f.RetryAfter < 0 || f.Latency < 0:
		return fmt.Errorf("%w: retryAfter and latency must not be negative", ErrBadRequest)
	case !slices.Contains([]string{"", ScopeMetering, ScopeAll}, f.Scope):
		return fmt.Errorf("%w: scope is %q; want %q or %q", ErrBadRequest, f.Scope, ScopeMetering, ScopeAll)
	}
	return nil
}

// MeteringOnly reports whether the faults spare the non-metering calls.
func (f Faults) MeteringOnly() bool { return f.Scope != ScopeAll }

// FaultMapping is how one emulator holds the shared Faults. The
// validation, the refusal of a setting the cloud lacks and the scope are
// the same for the three emulators (Convert, Shared); each supplies only
// its field mapping and, unless it is AWS, why it has no UnprocessedRate.
type FaultMapping[F any] struct {
	// NoUnprocessed says why the cloud refuses a non-zero
	// UnprocessedRate; empty when it has one (AWS).
	NoUnprocessed string
	// To maps valid shared settings to the emulator's; meteringOnly is
	// their scope.
	To func(f Faults, meteringOnly bool) F
	// From maps the emulator's settings back, Scope aside; meteringOnly
	// is their scope.
	From func(F) (f Faults, meteringOnly bool)
}

// Convert validates f and maps it to the emulator's settings.
func (m FaultMapping[F]) Convert(f Faults) (F, error) {
	var none F
	if err := f.Validate(); err != nil {
		return none, err
	}
	if f.UnprocessedRate != 0 && m.NoUnprocessed != "" {
		return none, fmt.Errorf("%w: unprocessedRate is AWS's only; %s", ErrBadRequest, m.NoUnprocessed)
	}
	return m.To(f, f.MeteringOnly()), nil
}

// Set converts f and, when it is valid, hands it to set: a Cloud's
// SetFaults.
func (m FaultMapping[F]) Set(f Faults, set func(F)) error {
	ef, err := m.Convert(f)
	if err != nil {
		return err
	}
	set(ef)
	return nil
}

// Shared maps the emulator's settings back to the shared ones: a Cloud's
// Faults.
func (m FaultMapping[F]) Shared(ef F) Faults {
	f, meteringOnly := m.From(ef)
	f.Scope = ScopeAll
	if meteringOnly {
		f.Scope = ScopeMetering
	}
	return f
}

// RegisterFlags adds the fault flags of one cloud to fs, named
// -<cloud>-throttle-rate, -<cloud>-throttle-tps, and so on.
func (f *Faults) RegisterFlags(fs *flag.FlagSet, cloud string) {
	fs.Float64Var(&f.ThrottleRate, cloud+"-throttle-rate", 0, cloud+" emulator: share of calls refused as throttled")
	fs.Float64Var(&f.ThrottleTPS, cloud+"-throttle-tps", 0, cloud+" emulator: throttle calls above this rate per second (0: no limit)")
	f.RetryAfter = Duration(time.Second)
	fs.Var(&f.RetryAfter, cloud+"-retry-after", cloud+" emulator: Retry-After of throttled answers (AWS sends none)")
	fs.Float64Var(&f.ErrorRate, cloud+"-error-rate", 0, cloud+" emulator: share of calls refused with a server error")
	fs.Float64Var(&f.DropRate, cloud+"-drop-rate", 0, cloud+" emulator: share of calls applied, then their response dropped")
	if cloud == "aws" {
		fs.Float64Var(&f.UnprocessedRate, cloud+"-unprocessed-rate", 0, cloud+" emulator: share of BatchMeterUsage records returned unprocessed")
	}
	fs.Var(&f.Latency, cloud+"-latency", cloud+" emulator: latency added to every call")
	f.Scope = ScopeMetering
	fs.StringVar(&f.Scope, cloud+"-fault-scope", ScopeMetering, cloud+` emulator: calls the faults apply to: "metering" or "all"`)
}

// Duration is a time.Duration written as "1.5s" in JSON and flags.
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

// Set parses a flag value.
func (d *Duration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes "1.5s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads "1.5s" (or a number of nanoseconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if json.Unmarshal(b, &n) != nil {
			return fmt.Errorf("a duration is a string such as \"1.5s\", got %s", b)
		}
		*d = Duration(n)
		return nil
	}
	return d.Set(s)
}

// Register adds the admin routes of c to mux.
func Register(mux *http.ServeMux, c Cloud) {
	mux.HandleFunc("POST /emulator/buyers", func(w http.ResponseWriter, r *http.Request) {
		var req BuyerRequest
		if !decode(w, r, &req) {
			return
		}
		b, err := c.CreateBuyer(r.Context(), req)
		reply(w, http.StatusCreated, b, err)
	})
	mux.HandleFunc("GET /emulator/buyers/{id}", func(w http.ResponseWriter, r *http.Request) {
		b, err := c.Buyer(r.PathValue("id"))
		reply(w, http.StatusOK, b, err)
	})
	mux.HandleFunc("POST /emulator/buyers/{id}/events", func(w http.ResponseWriter, r *http.Request) {
		var req EventRequest
		if !decode(w, r, &req) {
			return
		}
		if req.Event == "" {
			reply(w, 0, nil, fmt.Errorf("%w: event is required", ErrBadRequest))
			return
		}
		res, err := c.Event(r.Context(), r.PathValue("id"), req)
		if res.Deliveries == nil {
			res.Deliveries = []Delivery{}
		}
		reply(w, http.StatusOK, res, err)
	})
	mux.HandleFunc("GET /emulator/bill", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusOK, c.Bill(), nil)
	})
	mux.HandleFunc("GET /emulator/faults", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusOK, c.Faults(), nil)
	})
	mux.HandleFunc("PUT /emulator/faults", func(w http.ResponseWriter, r *http.Request) {
		var f Faults
		if !decode(w, r, &f) {
			return
		}
		err := f.Validate()
		if err == nil {
			err = c.SetFaults(f)
		}
		reply(w, http.StatusOK, c.Faults(), err)
	})
}

// decode reads a JSON body strictly: an unknown field is an error, so a
// misspelt setting is not silently ignored. An empty body is {}.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	d := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		reply(w, 0, nil, fmt.Errorf("%w: body: %v", ErrBadRequest, err))
		return false
	}
	return true
}

func reply(w http.ResponseWriter, status int, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		status = http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrNotFound):
			status = http.StatusNotFound
		case errors.Is(err, ErrBadRequest):
			status = http.StatusBadRequest
		case errors.Is(err, ErrConflict):
			status = http.StatusConflict
		}
		v = map[string]string{"error": err.Error()}
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
