package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
)

// usageRecord is one record of POST /v1/usage, in the seller's own names.
type usageRecord struct {
	EventID  string                    `json:"event_id"`
	Provider marketplace.CloudProvider `json:"provider"`
	Product  string                    `json:"product"`
	Customer string                    `json:"customer"`
	Metric   string                    `json:"metric"`
	Quantity quantity                  `json:"quantity"`
	Time     string                    `json:"time"`
}

// quantity decodes any JSON value without failing, so that a bad quantity is
// reported with its record's index like every other field.
type quantity struct {
	n   int64
	set bool
	bad string
}

func (q *quantity) UnmarshalJSON(b []byte) error {
	q.set = true
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		q.bad = string(b)
		if len(q.bad) > 40 {
			q.bad = q.bad[:40] + "…"
		}
		return nil
	}
	q.n = n
	return nil
}

type usageRequest struct {
	Records []usageRecord `json:"records"`
}

type usageResponse struct {
	Accepted     int      `json:"accepted"`
	Duplicates   int      `json:"duplicates"`
	DuplicateIDs []string `json:"duplicate_event_ids"`
}

// postUsage ingests a batch, all or nothing: a bad record refuses the whole
// batch (400 naming the record and field) and nothing of it is stored;
// success means the batch is committed to disk.
func (s *Server) postUsage(w http.ResponseWriter, r *http.Request) {
	if !requireJSON(w, r) {
		return
	}
	select {
	case s.ingestSem <- struct{}{}:
		defer func() { <-s.ingestSem }()
	default:
		w.Header().Set("Retry-After", "1")
		writeError(w, r, http.StatusTooManyRequests, "too_many_requests",
			fmt.Sprintf("more than %d usage requests at once; retry after 1 s", s.cfg.MaxInFlight))
		return
	}
	var req usageRequest
	if !decodeJSON(w, r, s.cfg.MaxBodyBytes, &req, "a usage batch") {
		return
	}
	switch n := len(req.Records); {
	case n == 0:
		writeError(w, r, http.StatusBadRequest, "invalid_request", "records: at least one record is required")
		return
	case n > s.cfg.MaxRecords:
		writeError(w, r, http.StatusRequestEntityTooLarge, "too_many_records",
			fmt.Sprintf("records: %d records, at most %d per request", n, s.cfg.MaxRecords))
		return
	}
	// The key's rule is the ledger's (IngestOnce refuses a bad key too);
	// checked here so that the 400 names the header.
	key := r.Header.Get("Idempotency-Key")
	if len(key) > ledger.MaxIDLen || !utf8.ValidString(key) {
		writeError(w, r, http.StatusBadRequest, "invalid_request", fmt.Sprintf("Idempotency-Key: must be 1 to %d bytes of UTF-8", ledger.MaxIDLen))
		return
	}
	recs := make([]ledger.Record, len(req.Records))
	for i := range req.Records {
		if field, msg := s.toRecord(&req.Records[i], &recs[i]); field != "" {
			writeErrorBody(w, r, http.StatusBadRequest, errorBody{Code: "invalid_record", Record: &i, Field: field,
				Message: fmt.Sprintf("records[%d].%s: %s", i, field, msg)})
			return
		}
	}
	// A batch that got this far is committed even if the caller goes away
	// meanwhile: its fate is then settled, not left in doubt. Under an
	// Idempotency-Key the batch counts once as a whole (one stored id).
	ctx := context.WithoutCancel(r.Context())
	var (
		res ledger.IngestResult
		err error
	)
	if key != "" {
		res, err = s.deps.Ledger.IngestOnce(ctx, key, recs)
	} else {
		res, err = s.deps.Ledger.Ingest(ctx, recs)
	}
	if err != nil {
		var ve *ledger.ValidationError
		if errors.As(err, &ve) {
			field := ve.Field
			if field == "dimension" {
				field = "metric"
			}
			writeErrorBody(w, r, http.StatusBadRequest, errorBody{Code: "invalid_record", Record: &ve.Index, Field: field,
				Message: fmt.Sprintf("records[%d].%s: %s", ve.Index, field, ve.Rule)})
			return
		}
		// Not known whether the commit happened: a retry with the same
		// event ids is counted once.
		s.log.Error("ingest failed", "request_id", RequestID(r.Context()), "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, r, http.StatusServiceUnavailable, "unavailable",
			"the ledger could not confirm the commit; retry the same batch (with its Idempotency-Key, or its event ids, it is counted once)")
		return
	}
	out := usageResponse{Accepted: res.Accepted, Duplicates: res.Duplicates, DuplicateIDs: []string{}}
	for i, d := range res.Duplicate {
		if d && req.Records[i].EventID != "" {
			out.DuplicateIDs = append(out.DuplicateIDs, req.Records[i].EventID)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// toRecord checks a record against the catalogue and converts it; on a bad
// record it returns the field and what is wrong. The rules that are the
// ledger's own (lengths of ids, the event id, the time window) are left to
// it: postUsage maps its ValidationError to the same 400.
func (s *Server) toRecord(u *usageRecord, rec *ledger.Record) (field, msg string) {
	if !u.Provider.Valid() {
		return "provider", fmt.Sprintf("%q is not one of aws, azure, gcp", u.Provider)
	}
	if u.Customer == "" {
		return "customer", "is required"
	}
	if !u.Quantity.set {
		return "quantity", "is required"
	}
	if u.Quantity.bad != "" {
		return "quantity", fmt.Sprintf("want a whole number, got %s", u.Quantity.bad)
	}
	if u.Quantity.n < 0 {
		return "quantity", fmt.Sprintf("must not be negative, got %d", u.Quantity.n)
	}
	dim, err := s.cfg.Catalogue.Resolve(u.Provider, u.Product, u.Metric)
	if err != nil {
		var re *errResolve
		if errors.As(err, &re) {
			return re.field, re.msg
		}
		return "metric", err.Error()
	}
	var t time.Time
	if u.Time != "" {
		if t, err = time.Parse(time.RFC3339Nano, u.Time); err != nil {
			return "time", fmt.Sprintf("want RFC 3339 (2026-12-01T14:05:00Z), got %q", u.Time)
		}
	}
	*rec = ledger.Record{Provider: u.Provider, Customer: u.Customer, Dimension: dim, Quantity: u.Quantity.n, Time: t, EventID: u.EventID}
	return "", ""
}

// provider reads and checks a provider parameter; "" is returned after an
// error response.
func (s *Server) provider(w http.ResponseWriter, r *http.Request, v string, required bool) (marketplace.CloudProvider, bool) {
	p := marketplace.CloudProvider(v)
	switch {
	case v == "" && !required:
		return "", true
	case v == "":
		writeError(w, r, http.StatusBadRequest, "invalid_request", "provider: is required (aws, azure or gcp)")
	case !p.Valid():
		writeError(w, r, http.StatusBadRequest, "invalid_request", fmt.Sprintf("provider: %q is not one of aws, azure, gcp", v))
	case !s.providers[p]:
		writeError(w, r, http.StatusBadRequest, "invalid_request", fmt.Sprintf("provider: %s is not configured on this daemon", p))
	default:
		return p, true
	}
	return "", false
}

var (
	entitledBody     = []byte(`{"entitled":true}` + "\n")
	inactiveBody     = []byte(`{"entitled":false,"reason":"no_active_subscription"}` + "\n")
	deniedBody       = []byte(`{"entitled":false,"reason":"entitlement_denied"}` + "\n")
	jsonContentTypes = []string{"application/json"}
)

// checkEntitlement answers from the in-process cache: a refusal is an answer
// (200, entitled false), not an error.
func (s *Server) checkEntitlement(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, ok := s.provider(w, r, q.Get("provider"), true)
	if !ok {
		return
	}
	customer := q.Get("customer")
	if customer == "" {
		writeError(w, r, http.StatusBadRequest, "invalid_request", "customer: is required")
		return
	}
	err := s.deps.Entitlements.Check(r.Context(), entitlement.Key{Provider: p, Customer: customer, Feature: q.Get("feature")})
	var body []byte
	switch {
	case err == nil:
		body = entitledBody
	case errors.Is(err, marketplace.ErrNoActiveSubscription):
		body = inactiveBody
	case errors.Is(err, marketplace.ErrEntitlementDenied):
		body = deniedBody
	default:
		s.log.Error("entitlement check failed", "request_id", RequestID(r.Context()), "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, r, http.StatusServiceUnavailable, "unavailable", "the entitlement could not be decided: the store did not answer")
		return
	}
	w.Header()["Content-Type"] = jsonContentTypes
	w.Write(body)
}

// subscription is the API's view of a marketplace.Subscription.
type subscription struct {
	Provider     marketplace.CloudProvider `json:"provider"`
	ID           string                    `json:"id"`
	Customer     string                    `json:"customer"`
	Product      string                    `json:"product"`
	Status       string                    `json:"status"`
	Plan         string                    `json:"plan"`
	Quantity     int64                     `json:"quantity"`
	Entitlements []string                  `json:"entitlements"`
	AccountID    string                    `json:"account_id"`
	ExpiresAt    *time.Time                `json:"expires_at"`
	CloudUpdated *time.Time                `json:"cloud_updated"`
	Updated      time.Time                 `json:"updated"`
	Version      int64                     `json:"version"`
}

func toSubscription(s *marketplace.Subscription) subscription {
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC()
		return &t
	}
	ents := s.Entitlements
	if ents == nil {
		ents = []string{}
	}
	return subscription{
		Provider: s.Provider, ID: s.ID, Customer: s.CustomerID, Product: s.ProductCode, Status: s.Status,
		Plan: s.Plan, Quantity: s.Quantity, Entitlements: ents, AccountID: s.AccountID,
		ExpiresAt: opt(s.ExpiresAt), CloudUpdated: opt(s.CloudUpdated), Updated: s.Updated.UTC(), Version: s.Version,
	}
}

var statuses = []string{marketplace.StatusPending, marketplace.StatusActive, marketplace.StatusSuspended,
	marketplace.StatusCancelled, marketplace.StatusExpired}

const (
	defaultPage = 100
	maxPage     = 1000
)

// listSubscriptions pages through subscriptions ordered by provider and id;
// the cursor is the last item's "provider/id". The store pages (indexed).
func (s *Server) listSubscriptions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, ok := s.provider(w, r, q.Get("provider"), false)
	if !ok {
		return
	}
	state := q.Get("state")
	if state != "" && !slices.Contains(statuses, state) {
		writeError(w, r, http.StatusBadRequest, "invalid_request", fmt.Sprintf("state: %q is not one of %s", state, strings.Join(statuses, ", ")))
		return
	}
	limit := defaultPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPage {
			writeError(w, r, http.StatusBadRequest, "invalid_request", fmt.Sprintf("limit: want 1 to %d, got %q", maxPage, v))
			return
		}
		limit = n
	}
	f := marketplace.SubscriptionFilter{Provider: p, Status: state, Limit: limit + 1}
	if c := q.Get("cursor"); c != "" {
		cp, id, ok := strings.Cut(c, "/")
		if !ok || !marketplace.CloudProvider(cp).Valid() {
			writeError(w, r, http.StatusBadRequest, "invalid_request", fmt.Sprintf("cursor: %q is not a next_cursor this API returned", c))
			return
		}
		f.AfterProvider, f.AfterID = marketplace.CloudProvider(cp), id
	}
	subs, err := s.deps.Subscriptions.ListSubscriptions(r.Context(), f)
	if err != nil {
		s.unavailable(w, r, "listing subscriptions", err)
		return
	}
	page := subs[:min(limit, len(subs))]
	out := struct {
		Subscriptions []subscription `json:"subscriptions"`
		NextCursor    *string        `json:"next_cursor"`
	}{Subscriptions: make([]subscription, 0, len(page))}
	for i := range page {
		out.Subscriptions = append(out.Subscriptions, toSubscription(&page[i]))
	}
	if len(subs) > limit {
		last := page[len(page)-1]
		c := string(last.Provider) + "/" + last.ID
		out.NextCursor = &c
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getSubscription(w http.ResponseWriter, r *http.Request) {
	p, ok := s.provider(w, r, r.PathValue("provider"), true)
	if !ok {
		return
	}
	customer := r.PathValue("customer")
	sub, err := s.deps.Subscriptions.FindSubscription(r.Context(), p, customer)
	switch {
	case errors.Is(err, marketplace.ErrNotFound):
		writeError(w, r, http.StatusNotFound, "not_found", fmt.Sprintf("no %s subscription for customer %q", p, customer))
	case err != nil:
		s.unavailable(w, r, "reading a subscription", err)
	default:
		writeJSON(w, http.StatusOK, toSubscription(sub))
	}
}

// bucket is the API's view of a ledger bucket.
type bucket struct {
	Dimension string       `json:"dimension"`
	Hour      time.Time    `json:"hour"`
	Quantity  int64        `json:"quantity"`
	Late      int64        `json:"late"`
	Units     int64        `json:"units"`
	State     ledger.State `json:"state"`
	ReportID  string       `json:"report_id"`
	RecordID  string       `json:"record_id"`
	Reason    string       `json:"reason"`
	Attempts  int          `json:"attempts"`
}

// getUsage lists a buyer's hourly buckets in [from, to), by default the
// last 48 hours.
func (s *Server) getUsage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, ok := s.provider(w, r, q.Get("provider"), true)
	if !ok {
		return
	}
	customer := q.Get("customer")
	if customer == "" {
		writeError(w, r, http.StatusBadRequest, "invalid_request", "customer: is required")
		return
	}
	now := s.now()
	from, to := now.Add(-48*time.Hour), now.Add(time.Hour)
	for _, tp := range []struct {
		name string
		dst  *time.Time
	}{{"from", &from}, {"to", &to}} {
		if v := q.Get(tp.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeError(w, r, http.StatusBadRequest, "invalid_request", fmt.Sprintf("%s: want RFC 3339 (2026-12-01T14:00:00Z), got %q", tp.name, v))
				return
			}
			*tp.dst = t
		}
	}
	if !from.Before(to) {
		writeError(w, r, http.StatusBadRequest, "invalid_request", "from: must be before to")
		return
	}
	// Fresh quantities: usage committed but not yet folded shows at once.
	if err := s.deps.Ledger.Fold(r.Context()); err != nil {
		s.unavailable(w, r, "folding usage", err)
		return
	}
	bs, err := s.deps.Ledger.Buckets(r.Context(), ledger.BucketFilter{Provider: p, Customer: customer})
	if err != nil {
		s.unavailable(w, r, "listing usage", err)
		return
	}
	out := struct {
		Buckets []bucket `json:"buckets"`
	}{Buckets: []bucket{}}
	for _, b := range bs {
		if b.Hour.Before(ledger.HourOf(from)) || !b.Hour.Before(to) {
			continue
		}
		out.Buckets = append(out.Buckets, bucket{Dimension: b.Dimension, Hour: b.Hour.UTC(), Quantity: b.Quantity, Late: b.Late,
			Units: b.Units, State: b.State, ReportID: b.ReportID, RecordID: b.RecordID, Reason: b.Reason, Attempts: b.Attempts})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, doing string, err error) {
	s.log.Error(doing+" failed", "request_id", RequestID(r.Context()), "err", err)
	w.Header().Set("Retry-After", "1")
	writeError(w, r, http.StatusServiceUnavailable, "unavailable", doing+" failed: the store did not answer")
}
