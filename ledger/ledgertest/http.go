package ledgertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// The HTTP protocol of a FakeCloud, spoken by HTTPTarget:
//
//	POST /report  {"reports": [wireReport...]}  →  200 {"results": [wireResult...]}
//	              429 + Retry-After: throttled, not applied
//	              400: refused as a whole, not applied
//	              500, or the connection closed without an answer: applied or not, unknown
//	GET  /bill    →  200 Bill

type wireReport struct {
	ID        string                    `json:"id"`
	Provider  marketplace.CloudProvider `json:"provider"`
	Customer  string                    `json:"customer"`
	Dimension string                    `json:"dimension"`
	Hour      time.Time                 `json:"hour"`
	Quantity  int64                     `json:"quantity"`
	Attempt   int                       `json:"attempt"`
}

type wireResult struct {
	Outcome      string `json:"outcome"`
	RecordID     string `json:"record_id,omitempty"`
	Reason       string `json:"reason,omitempty"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

type wireError struct {
	Error        string `json:"error"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

var outcomeNames = map[ledger.Outcome]string{
	ledger.OutcomeRetry:    "retry",
	ledger.OutcomeReported: "reported",
	ledger.OutcomeRejected: "rejected",
	ledger.OutcomeConflict: "conflict",
	ledger.OutcomeExpired:  "expired",
}

func outcomeOf(name string) (ledger.Outcome, bool) {
	for o, n := range outcomeNames {
		if n == name {
			return o, true
		}
	}
	return 0, false
}

// maxRequest bounds a report request body (AWS: under 1 MB).
const maxRequest = 1 << 20

// ServeHTTP serves the cloud's HTTP protocol: POST /report and GET /bill.
func (f *FakeCloud) ServeHTTP(w http.ResponseWriter, r *http.Request) { f.mux.ServeHTTP(w, r) }

func (f *FakeCloud) serveBill(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, f.Bill())
}

func (f *FakeCloud) serveReport(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Reports []wireReport `json:"reports"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequest)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, wireError{Error: "ValidationException: " + err.Error()})
		return
	}
	reports := make([]ledger.Report, len(req.Reports))
	for i, wr := range req.Reports {
		reports[i] = ledger.Report{ID: wr.ID, Provider: wr.Provider, Customer: wr.Customer, Dimension: wr.Dimension,
			Hour: wr.Hour.UTC(), Quantity: wr.Quantity, Attempt: wr.Attempt}
	}
	results, fault, err := f.call(r.Context(), reports)
	switch {
	case errors.Is(err, ledger.ErrNotApplied) && !marketplace.IsPermanent(err):
		we := wireError{Error: err.Error()}
		if d, ok := marketplace.RetryAfter(err); ok {
			we.RetryAfterMS = d.Milliseconds()
			w.Header().Set("Retry-After", strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10))
		}
		writeJSON(w, http.StatusTooManyRequests, we)
		return
	case err != nil:
		writeJSON(w, http.StatusBadRequest, wireError{Error: err.Error()})
		return
	case fault == faultDrop:
		f.mu.Lock()
		with500 := f.faults.DropWith500
		f.mu.Unlock()
		if !with500 {
			// Close the connection without a word: the client cannot tell
			// whether the call was applied.
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		writeJSON(w, http.StatusInternalServerError, wireError{Error: "InternalServiceErrorException"})
		return
	}
	out := struct {
		Results []wireResult `json:"results"`
	}{Results: make([]wireResult, len(results))}
	for i, res := range results {
		out.Results[i] = wireResult{Outcome: outcomeNames[res.Outcome], RecordID: res.RecordID, Reason: res.Reason,
			RetryAfterMS: res.RetryAfter.Milliseconds()}
	}
	writeJSON(w, http.StatusOK, out)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client sees a short body as a failure
}

// HTTPTarget is a ledger.Target that reports to a FakeCloud over HTTP,
// typically one served by another process. It maps a transport error, a
// 500 or an unreadable answer to an error that leaves open whether the
// call was applied, a 429 to ledger.ErrNotApplied with the server's
// retry-after hint, and a 400 to a permanent refusal.
type HTTPTarget struct {
	// URL is the cloud's base URL (the server's root).
	URL string
	// Cloud is the provider this target reports for; default AWS. It must
	// match the server's.
	Cloud marketplace.CloudProvider
	// Limit are returned by Limits; MaxItems defaults to 25.
	Limit ledger.Limits
	// Client sends the requests; default http.DefaultClient.
	Client *http.Client
}

// NewHTTPTarget returns a target for the FakeCloud served at url, reporting
// AWS usage with the default limits. Set its fields to change that.
func NewHTTPTarget(url string) *HTTPTarget {
	return &HTTPTarget{URL: strings.TrimSuffix(url, "/"), Cloud: marketplace.AWS, Limit: ledger.Limits{MaxItems: 25}}
}

var _ ledger.Target = (*HTTPTarget)(nil)

// Provider implements ledger.Target.
func (t *HTTPTarget) Provider() marketplace.CloudProvider {
	if t.Cloud == "" {
		return marketplace.AWS
	}
	return t.Cloud
}

// Limits implements ledger.Target.
func (t *HTTPTarget) Limits() ledger.Limits {
	l := t.Limit
	if l.MaxItems <= 0 {
		l.MaxItems = 25
	}
	return l
}

func (t *HTTPTarget) client() *http.Client {
	if t.Client != nil {
		return t.Client
	}
	return http.DefaultClient
}

// Send implements ledger.Target.
func (t *HTTPTarget) Send(ctx context.Context, reports []ledger.Report) ([]ledger.Result, error) {
	in := struct {
		Reports []wireReport `json:"reports"`
	}{Reports: make([]wireReport, len(reports))}
	for i, r := range reports {
		in.Reports[i] = wireReport{ID: r.ID, Provider: r.Provider, Customer: r.Customer, Dimension: r.Dimension,
			Hour: r.Hour.UTC(), Quantity: r.Quantity, Attempt: r.Attempt}
	}
	body, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("ledgertest: encode reports: %w: %w", ledger.ErrNotApplied, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL+"/report", bytes.NewReader(body))
	if err != nil {
		return nil, marketplace.Permanent(fmt.Errorf("ledgertest: %w: %w", ledger.ErrNotApplied, err))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.client().Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			// Never connected: nothing was sent.
			return nil, fmt.Errorf("ledgertest: send reports: %w: %w", ledger.ErrNotApplied, err)
		}
		return nil, fmt.Errorf("ledgertest: send reports (fate unknown): %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("ledgertest: read answer (fate unknown): %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
		var we wireError
		_ = json.Unmarshal(data, &we) // the status alone says enough
		err := fmt.Errorf("ledgertest: %s %s: %w", resp.Status, we.Error, ledger.ErrNotApplied)
		if we.RetryAfterMS > 0 {
			return nil, marketplace.WithRetryAfter(err, time.Duration(we.RetryAfterMS)*time.Millisecond)
		}
		if d := marketplace.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); d > 0 {
			return nil, marketplace.WithRetryAfter(err, d)
		}
		return nil, err
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		var we wireError
		_ = json.Unmarshal(data, &we)
		return nil, marketplace.Permanent(fmt.Errorf("ledgertest: %s %s: %w", resp.Status, we.Error, ledger.ErrNotApplied))
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("ledgertest: %s (fate unknown): %s", resp.Status, bytes.TrimSpace(data))
	}
	var out struct {
		Results []wireResult `json:"results"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("ledgertest: decode answer (fate unknown): %w", err)
	}
	results := make([]ledger.Result, len(out.Results))
	for i, wr := range out.Results {
		o, ok := outcomeOf(wr.Outcome)
		if !ok {
			return nil, fmt.Errorf("ledgertest: unknown outcome %q (fate unknown)", wr.Outcome)
		}
		results[i] = ledger.Result{Outcome: o, RecordID: wr.RecordID, Reason: wr.Reason,
			RetryAfter: time.Duration(wr.RetryAfterMS) * time.Millisecond}
	}
	return results, nil
}

// Bill fetches the bill of the FakeCloud served at t.URL.
func (t *HTTPTarget) Bill(ctx context.Context) (Bill, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL+"/bill", nil)
	if err != nil {
		return Bill{}, fmt.Errorf("ledgertest: bill: %w", err)
	}
	resp, err := t.client().Do(req)
	if err != nil {
		return Bill{}, fmt.Errorf("ledgertest: bill: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Bill{}, fmt.Errorf("ledgertest: bill: %s", resp.Status)
	}
	var b Bill
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		return Bill{}, fmt.Errorf("ledgertest: bill: %w", err)
	}
	return b, nil
}
