package server

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/sqlite"
)

const (
	testKey  = "test-key-0123456789abcdef"
	testKey2 = "rotated-key-0123456789abcdef"
)

// t0 is the tests' clock: mid-hour, so records "now" stay in one hour.
var t0 = time.Date(2026, 12, 1, 14, 20, 0, 0, time.UTC)

type harnessOptions struct {
	cfg       func(*Config)
	clouds    []Cloud
	lifecycle Runner
	// quarantine replaces the store's quarantine (default: the SQLite
	// store's, when it keeps one).
	quarantine marketplace.QuarantineStore
	// ledgerStore wraps the store the ledger uses (default: the store).
	ledgerStore func(ledger.Store) ledger.Store
}

// harness is a Server on a real SQLite store, behind an httptest server whose
// exchanges are validated against the OpenAPI document.
type harness struct {
	srv    *Server
	url    string
	rawURL string // the same server without validation (for requests that stream)
	store  *sqlite.Store
	ledger *ledger.Ledger
	logs   *syncBuffer
	cfg    Config
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testConfig(t testing.TB) Config {
	cat, err := LoadCatalogue(filepath.Join("testdata", "catalogue.json"))
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Addr: "127.0.0.1:0", DataDir: t.TempDir(), CataloguePath: "testdata/catalogue.json", Catalogue: cat,
		APIKeys:      []string{testKey, testKey2},
		MaxBodyBytes: 1 << 20, MaxRecords: 1000, MaxInFlight: 4,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		IdleTimeout: time.Minute, ShutdownTimeout: 5 * time.Second, EntitlementTTL: time.Minute,
		LogLevel: slog.LevelDebug,
	}
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	cfg := testConfig(t)
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	store, err := sqlite.Open(t.Context(), cfg.DBPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	clock := func() time.Time { return t0 }
	metrics := NewMetrics()
	var ls ledger.Store = store
	if o.ledgerStore != nil {
		ls = o.ledgerStore(store)
	}
	led := ledger.New(ls, ledger.Config{Units: cfg.Catalogue.Units(), Clock: clock, Metrics: metrics, Logger: logger})
	t.Cleanup(func() { led.Close() })
	cache := entitlement.New(entitlement.StoreLoader{Subscriptions: store, Entitlements: store, Clock: clock}.Load,
		entitlement.Config{Clock: clock})
	t.Cleanup(cache.Close)
	engine, err := lifecycle.New(lifecycle.Deps{Store: store, Ledger: led, Entitlements: cache, Logger: logger, Clock: clock}, lifecycle.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if q, ok := any(store).(marketplace.QuarantineStore); ok && o.quarantine == nil {
		o.quarantine = q
	}
	srv, err := New(cfg, Deps{Ledger: led, Subscriptions: store, Entitlements: cache, Metrics: metrics, Logger: logger, Clock: clock,
		Clouds: o.clouds, Lifecycle: o.lifecycle, Updater: engine, Quarantine: o.quarantine,
		Maintain: ledger.MaintainConfig{FoldEvery: 10 * time.Millisecond, SealEvery: 10 * time.Millisecond},
		Reporter: ledger.ReporterConfig{Poll: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(validated(t, srv.Handler()))
	t.Cleanup(ts.Close)
	raw := httptest.NewServer(srv.Handler())
	t.Cleanup(raw.Close)
	return &harness{srv: srv, url: ts.URL, rawURL: raw.URL, store: store, ledger: led, logs: logs, cfg: cfg}
}

// do sends a request with the first API key (key "" sends none; "-" the
// given header verbatim is not needed) and returns the response and body.
func (h *harness) do(t *testing.T, method, path string, body any, key string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, h.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

type rec map[string]any

func usage(records ...rec) map[string]any { return map[string]any{"records": records} }

func TestIngestIsDurableAndIdempotent(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	batch := usage(
		rec{"event_id": "e1", "provider": "aws", "customer": "c1", "metric": "tokens", "quantity": 1_500_000},
		rec{"event_id": "e2", "provider": "aws", "product": "prod-inference", "customer": "c1", "metric": "gpu_seconds", "quantity": 7200, "time": t0.Add(-time.Hour).Format(time.RFC3339)},
		rec{"event_id": "e3", "provider": "gcp", "customer": "acct-9", "metric": "tokens", "quantity": 42},
	)
	resp, body := h.do(t, "POST", "/v1/usage", batch, testKey)
	if resp.StatusCode != 200 {
		t.Fatalf("POST /v1/usage: %d %s", resp.StatusCode, body)
	}
	got := decode[usageResponse](t, body)
	if got.Accepted != 3 || got.Duplicates != 0 {
		t.Fatalf("first send: %+v, want 3 accepted", got)
	}
	// The same batch again (a client retry) is counted once; the second key works too.
	resp, body = h.do(t, "POST", "/v1/usage", batch, testKey2)
	got = decode[usageResponse](t, body)
	if resp.StatusCode != 200 || got.Accepted != 0 || got.Duplicates != 3 || strings.Join(got.DuplicateIDs, ",") != "e1,e2,e3" {
		t.Fatalf("retry: %d %+v, want 3 duplicates e1,e2,e3", resp.StatusCode, got)
	}

	// Durable: what a fresh store on the same file holds, mapped to each cloud's dimension.
	h.ledger.Close()
	h.store.Close()
	store, err := sqlite.Open(t.Context(), h.cfg.DBPath())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := store.Fold(t.Context()); err != nil {
		t.Fatal(err)
	}
	bs, err := store.Buckets(t.Context(), ledger.BucketFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, b := range bs {
		lines = append(lines, string(b.Provider)+" "+b.Customer+" "+b.Dimension+" "+b.Hour.Format("15")+" "+itoa64(b.Quantity))
	}
	want := []string{
		"aws c1 gpu_hours 13 7200",
		"aws c1 tokens_1m 14 1500000",
		"gcp acct-9 inference.endpoints.example-project.cloud.goog/tokens 14 42",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stored buckets:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func itoa64(n int64) string {
	return strings.TrimSpace(strings.Replace(string(mustJSON(n)), "\n", "", -1))
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func TestIngestRefusesBadRecordsNamingRecordAndField(t *testing.T) {
	good := rec{"event_id": "ok", "provider": "aws", "customer": "c1", "metric": "tokens", "quantity": 5}
	with := func(k string, v any) rec {
		r := rec{}
		for kk, vv := range good {
			r[kk] = vv
		}
		if v == nil {
			delete(r, k)
		} else {
			r[k] = v
		}
		return r
	}
	cases := []struct {
		name   string
		record rec
		field  string
		msg    string
	}{
		{"unknown provider", with("provider", "ibm"), "provider", `"ibm" is not one of`},
		{"no customer", with("customer", nil), "customer", "is required"},
		{"unknown metric", with("metric", "tokenz"), "metric", `"tokenz" is not in the catalogue for aws`},
		{"unknown product", with("product", "prod-other"), "product", `product "prod-other" has no metric "tokens"`},
		{"negative quantity", with("quantity", -1), "quantity", "must not be negative"},
		{"fractional quantity", with("quantity", 1.5), "quantity", "want a whole number, got 1.5"},
		{"string quantity", with("quantity", "7"), "quantity", `want a whole number, got "7"`},
		{"no quantity", with("quantity", nil), "quantity", "is required"},
		{"bad time", with("time", "yesterday"), "time", "want RFC 3339"},
		{"too old", with("time", t0.Add(-30*time.Hour).Format(time.RFC3339)), "time", ""},
		{"too far ahead", with("time", t0.Add(time.Hour).Format(time.RFC3339)), "time", ""},
		// The event id's rules are the ledger's; the 400 is the same.
		{"long event id", with("event_id", strings.Repeat("x", 257)), "event_id", "at most 256 bytes"},
		{"event id in the batch-key namespace", with("event_id", "\x1fkey:0"), "event_id", "not starting with the control character US"},
		{"long customer", with("customer", strings.Repeat("c", 257)), "customer", "at most 256 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			// The bad record is second: the first, good one must not be stored either.
			resp, body := h.do(t, "POST", "/v1/usage", usage(good, c.record), testKey)
			if resp.StatusCode != 400 {
				t.Fatalf("status %d %s, want 400", resp.StatusCode, body)
			}
			e := decode[apiError](t, body).Error
			if e.Code != "invalid_record" || e.Record == nil || *e.Record != 1 || e.Field != c.field || !strings.Contains(e.Message, c.msg) {
				t.Fatalf("error %+v (record %v), want record 1, field %q, message with %q", e, e.Record, c.field, c.msg)
			}
			if err := h.ledger.Fold(t.Context()); err != nil {
				t.Fatal(err)
			}
			if bs, _ := h.ledger.Buckets(t.Context(), ledger.BucketFilter{}); len(bs) != 0 {
				t.Fatalf("a refused batch stored %v", bs)
			}
		})
	}
}

func TestIngestRefusals(t *testing.T) {
	h := newHarness(t, harnessOptions{cfg: func(c *Config) { c.MaxBodyBytes = 4096; c.MaxRecords = 3 }})
	one := rec{"provider": "aws", "customer": "c1", "metric": "tokens", "quantity": 5}
	cases := []struct {
		name   string
		body   any
		key    string
		hdr    []string
		status int
		code   string
	}{
		{"no key", usage(one), "", nil, 401, "unauthorized"},
		{"wrong key", usage(one), "test-key-0123456789abcdeX", nil, 401, "unauthorized"},
		{"key prefix", usage(one), "test-key", nil, 401, "unauthorized"},
		{"not json", "records: 1", testKey, nil, 400, "invalid_json"},
		{"unknown field", `{"records":[],"extra":1}`, testKey, nil, 400, "invalid_json"},
		{"two values", `{"records":[{"provider":"aws","customer":"c","metric":"tokens","quantity":1}]} {}`, testKey, nil, 400, "invalid_json"},
		{"empty batch", usage(), testKey, nil, 400, "invalid_request"},
		{"text/plain", usage(one), testKey, []string{"Content-Type", "text/plain"}, 415, "unsupported_media_type"},
		{"too many records", usage(one, one, one, one), testKey, nil, 413, "too_many_records"},
		{"body too large", usage(rec{"provider": "aws", "customer": strings.Repeat("c", 5000), "metric": "tokens", "quantity": 1}), testKey, nil, 413, "body_too_large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := h.do(t, "POST", "/v1/usage", c.body, c.key, c.hdr...)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, body, c.status)
			}
			if e := decode[apiError](t, body).Error; e.Code != c.code || e.RequestID == "" {
				t.Fatalf("error %+v, want code %q with a request id", e, c.code)
			}
		})
	}
}

// TestIngestTooManyInFlight holds MaxInFlight requests open (their bodies
// unfinished) and checks that the next one gets 429 with Retry-After, and that
// the held ones then succeed.
func TestIngestTooManyInFlight(t *testing.T) {
	h := newHarness(t, harnessOptions{cfg: func(c *Config) { c.MaxInFlight = 2 }})
	held := make([]*io.PipeWriter, 2)
	results := make(chan int, 2)
	for i := range held {
		pr, pw := io.Pipe()
		held[i] = pw
		req, _ := http.NewRequestWithContext(t.Context(), "POST", h.rawURL+"/v1/usage", pr)
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				results <- 0
				return
			}
			resp.Body.Close()
			results <- resp.StatusCode
		}()
		pw.Write([]byte(`{"records":[`))
	}
	// Wait until both hold a slot.
	deadline := time.Now().Add(5 * time.Second)
	for len(h.srv.ingestSem) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the held requests never reached the handler")
		}
		time.Sleep(time.Millisecond)
	}
	resp, body := h.do(t, "POST", "/v1/usage", usage(rec{"provider": "aws", "customer": "c", "metric": "tokens", "quantity": 1}), testKey)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third request: %d (Retry-After %q) %s, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	for i, pw := range held {
		pw.Write([]byte(`{"event_id":"h` + string(rune('0'+i)) + `","provider":"aws","customer":"c","metric":"tokens","quantity":1}]}`))
		pw.Close()
	}
	for range held {
		if code := <-results; code != 200 {
			t.Fatalf("a held request ended with %d, want 200", code)
		}
	}
}

// TestIngestStoreFailure: when the ledger cannot commit, the answer is 503
// with Retry-After, and the error is logged with the request id.
func TestIngestStoreFailure(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.ledger.Close() // Ingest now fails with ledger.ErrClosed
	resp, body := h.do(t, "POST", "/v1/usage", usage(rec{"provider": "aws", "customer": "c", "metric": "tokens", "quantity": 1}), testKey,
		"X-Request-Id", "trace-abc")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%d %s, want 503 with Retry-After", resp.StatusCode, body)
	}
	if e := decode[apiError](t, body).Error; e.RequestID != "trace-abc" {
		t.Fatalf("request id %q, want the caller's trace-abc", e.RequestID)
	}
	if !strings.Contains(h.logs.String(), `"msg":"ingest failed","request_id":"trace-abc"`) {
		t.Fatalf("logs lack the failure with its request id:\n%s", h.logs)
	}
}

func putSub(t *testing.T, h *harness, s marketplace.Subscription) {
	t.Helper()
	if s.Updated.IsZero() {
		s.Updated = t0
	}
	if _, err := h.store.PutSubscription(t.Context(), s); err != nil {
		t.Fatal(err)
	}
}

func TestEntitlementCheck(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	putSub(t, h, marketplace.Subscription{ID: "sub-1", CustomerID: "c-active", Provider: marketplace.AWS, ProductCode: "prod-inference",
		Status: marketplace.StatusActive, Plan: "pro", Entitlements: []string{"gpu"}})
	putSub(t, h, marketplace.Subscription{ID: "sub-2", CustomerID: "c-suspended", Provider: marketplace.AWS, Status: marketplace.StatusSuspended, Plan: "pro"})
	cases := []struct {
		query  string
		status int
		want   string
	}{
		{"provider=aws&customer=c-active", 200, `{"entitled":true}`},
		{"provider=aws&customer=c-active&feature=gpu", 200, `{"entitled":true}`},
		{"provider=aws&customer=c-active&feature=pro", 200, `{"entitled":true}`},
		{"provider=aws&customer=c-active&feature=fpga", 200, `{"entitled":false,"reason":"entitlement_denied"}`},
		{"provider=aws&customer=c-suspended", 200, `{"entitled":false,"reason":"no_active_subscription"}`},
		{"provider=aws&customer=nobody", 200, `{"entitled":false,"reason":"no_active_subscription"}`},
		{"provider=azure&customer=c-active", 200, `{"entitled":false,"reason":"no_active_subscription"}`},
		{"customer=c-active", 400, "provider: is required"},
		{"provider=ibm&customer=c", 400, `provider: \"ibm\" is not one of`},
		{"provider=aws", 400, "customer: is required"},
	}
	for _, c := range cases {
		resp, body := h.do(t, "GET", "/v1/entitlements/check?"+c.query, nil, testKey)
		if resp.StatusCode != c.status || !strings.Contains(string(body), c.want) {
			t.Errorf("%s: %d %s, want %d with %s", c.query, resp.StatusCode, body, c.status, c.want)
		}
	}
	if resp, _ := h.do(t, "GET", "/v1/entitlements/check?provider=aws&customer=c-active", nil, ""); resp.StatusCode != 401 {
		t.Errorf("without a key: %d, want 401", resp.StatusCode)
	}
}

func TestEntitlementCheckProviderNotConfigured(t *testing.T) {
	h := newHarness(t, harnessOptions{cfg: func(c *Config) {
		cat, err := ParseCatalogue([]byte(`{"products":[{"provider":"aws","product":"p","metrics":{"tokens":{"dimension":"tokens"}}}]}`))
		if err != nil {
			t.Fatal(err)
		}
		c.Catalogue = cat
	}})
	resp, body := h.do(t, "GET", "/v1/entitlements/check?provider=gcp&customer=c", nil, testKey)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "gcp is not configured") {
		t.Fatalf("%d %s, want 400 naming gcp as not configured", resp.StatusCode, body)
	}
}

func TestSubscriptions(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, s := range []marketplace.Subscription{
		{ID: "a1", CustomerID: "ca1", Provider: marketplace.AWS, Status: marketplace.StatusActive, Plan: "pro", ExpiresAt: t0.Add(24 * time.Hour)},
		{ID: "a2", CustomerID: "ca2", Provider: marketplace.AWS, Status: marketplace.StatusCancelled},
		{ID: "a3", CustomerID: "ca3", Provider: marketplace.AWS, Status: marketplace.StatusActive},
		{ID: "z1", CustomerID: "cz1", Provider: marketplace.Azure, Status: marketplace.StatusActive, Quantity: 5},
		{ID: "g1", CustomerID: "cg1", Provider: marketplace.GCP, Status: marketplace.StatusPending},
	} {
		putSub(t, h, s)
	}
	type page struct {
		Subscriptions []subscription `json:"subscriptions"`
		NextCursor    *string        `json:"next_cursor"`
	}
	// Page through everything, two at a time.
	var ids []string
	cursor := ""
	for range 10 {
		q := "/v1/subscriptions?limit=2"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		resp, body := h.do(t, "GET", q, nil, testKey)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", q, resp.StatusCode, body)
		}
		p := decode[page](t, body)
		for _, s := range p.Subscriptions {
			ids = append(ids, string(s.Provider)+"/"+s.ID)
		}
		if p.NextCursor == nil {
			break
		}
		cursor = *p.NextCursor
	}
	if got := strings.Join(ids, " "); got != "aws/a1 aws/a2 aws/a3 azure/z1 gcp/g1" {
		t.Fatalf("paged ids %q", got)
	}
	// Filtered.
	_, body := h.do(t, "GET", "/v1/subscriptions?provider=aws&state=active", nil, testKey)
	p := decode[page](t, body)
	if len(p.Subscriptions) != 2 || p.Subscriptions[0].ID != "a1" || p.Subscriptions[1].ID != "a3" || p.NextCursor != nil {
		t.Fatalf("aws active: %s", body)
	}
	if s := p.Subscriptions[0]; s.ExpiresAt == nil || !s.ExpiresAt.Equal(t0.Add(24*time.Hour)) || s.Plan != "pro" || s.Customer != "ca1" {
		t.Fatalf("a1 as served: %+v", s)
	}
	for _, q := range []string{"state=gone", "limit=0", "limit=1001", "limit=x", "provider=ibm", "cursor=nonsense"} {
		if resp, body := h.do(t, "GET", "/v1/subscriptions?"+q, nil, testKey); resp.StatusCode != 400 {
			t.Errorf("%s: %d %s, want 400", q, resp.StatusCode, body)
		}
	}
	// One customer.
	resp, body := h.do(t, "GET", "/v1/subscriptions/azure/cz1", nil, testKey)
	if s := decode[subscription](t, body); resp.StatusCode != 200 || s.ID != "z1" || s.Quantity != 5 || s.ExpiresAt != nil {
		t.Fatalf("azure/cz1: %d %s", resp.StatusCode, body)
	}
	if resp, body := h.do(t, "GET", "/v1/subscriptions/azure/nobody", nil, testKey); resp.StatusCode != 404 {
		t.Fatalf("azure/nobody: %d %s, want 404", resp.StatusCode, body)
	}
	if resp, body := h.do(t, "GET", "/v1/subscriptions/ibm/c", nil, testKey); resp.StatusCode != 400 {
		t.Fatalf("ibm/c: %d %s, want 400", resp.StatusCode, body)
	}
	if resp, _ := h.do(t, "GET", "/v1/subscriptions", nil, ""); resp.StatusCode != 401 {
		t.Fatalf("without a key: %d, want 401", resp.StatusCode)
	}
}

func TestUsageReport(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	resp, body := h.do(t, "POST", "/v1/usage", usage(
		rec{"event_id": "u1", "provider": "aws", "customer": "c1", "metric": "tokens", "quantity": 2_500_000, "time": t0.Add(-2 * time.Hour).Format(time.RFC3339)},
		rec{"event_id": "u2", "provider": "aws", "customer": "c1", "metric": "tokens", "quantity": 10},
		rec{"event_id": "u3", "provider": "aws", "customer": "c2", "metric": "tokens", "quantity": 99},
	), testKey)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if _, err := h.ledger.Seal(t.Context()); err != nil { // seals 12:00 (ended, past grace)
		t.Fatal(err)
	}
	type report struct {
		Buckets []bucket `json:"buckets"`
	}
	_, body = h.do(t, "GET", "/v1/usage?provider=aws&customer=c1", nil, testKey)
	r := decode[report](t, body)
	if len(r.Buckets) != 2 {
		t.Fatalf("buckets %s, want 2", body)
	}
	if b := r.Buckets[0]; b.Hour.Hour() != 12 || b.State != ledger.StateSealed || b.Units != 2 || b.Quantity != 2_500_000 || b.ReportID == "" || b.Dimension != "tokens_1m" {
		t.Fatalf("sealed bucket %+v", b)
	}
	if b := r.Buckets[1]; b.Hour.Hour() != 14 || b.State != ledger.StateOpen || b.Quantity != 10 {
		t.Fatalf("open bucket %+v", b)
	}
	_, body = h.do(t, "GET", "/v1/usage?provider=aws&customer=c1&from="+t0.Add(-time.Hour).Format(time.RFC3339), nil, testKey)
	if r := decode[report](t, body); len(r.Buckets) != 1 || r.Buckets[0].Hour.Hour() != 14 {
		t.Fatalf("from 13:20: %s, want the 14:00 bucket only", body)
	}
	for _, q := range []string{"customer=c1", "provider=aws", "provider=aws&customer=c1&from=today", "provider=aws&customer=c1&from=2026-12-01T14:00:00Z&to=2026-12-01T13:00:00Z"} {
		if resp, body := h.do(t, "GET", "/v1/usage?"+q, nil, testKey); resp.StatusCode != 400 {
			t.Errorf("%s: %d %s, want 400", q, resp.StatusCode, body)
		}
	}
}

func TestMetricsHealthAndRequestIDs(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.do(t, "POST", "/v1/usage", usage(rec{"event_id": "m1", "provider": "azure", "customer": "c", "metric": "tokens", "quantity": 3}), testKey)
	h.do(t, "POST", "/v1/usage", usage(rec{"event_id": "m1", "provider": "azure", "customer": "c", "metric": "tokens", "quantity": 3}), testKey)
	resp, body := h.do(t, "GET", "/metrics", nil, "")
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	for _, want := range []string{
		`marketplaced_usage_recorded_total{provider="azure"} 1`,
		`marketplaced_usage_duplicates_total 1`,
		`marketplaced_buckets_reported_total{provider="aws"} 0`,
		`marketplaced_http_request_duration_seconds_count{code="200",method="POST",route="POST /v1/usage"} 2`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	resp, body = h.do(t, "GET", "/healthz", nil, "")
	if resp.StatusCode != 200 || resp.Header.Get("X-Request-Id") == "" {
		t.Fatalf("/healthz: %d %s (X-Request-Id %q)", resp.StatusCode, body, resp.Header.Get("X-Request-Id"))
	}
	// Not running (no Run): the workers are not up.
	if resp, body := h.do(t, "GET", "/readyz", nil, ""); resp.StatusCode != 503 {
		t.Fatalf("/readyz before Run: %d %s, want 503", resp.StatusCode, body)
	}
	resp, _ = h.do(t, "GET", "/healthz", nil, "", "X-Request-Id", "mine-1")
	if resp.Header.Get("X-Request-Id") != "mine-1" {
		t.Fatalf("caller's request id not kept: %q", resp.Header.Get("X-Request-Id"))
	}
	resp, _ = h.do(t, "GET", "/healthz", nil, "", "X-Request-Id", "has space")
	if id := resp.Header.Get("X-Request-Id"); id == "" || id == "has space" {
		t.Fatalf("unusable request id kept or none made: %q", id)
	}
	if resp, _ := h.do(t, "GET", "/v2/nothing", nil, testKey); resp.StatusCode != 404 {
		t.Fatalf("unknown route: %d, want 404", resp.StatusCode)
	}
	// Logs are JSON lines with the request id.
	for line := range strings.SplitSeq(strings.TrimSpace(h.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		if m["msg"] == "request" && m["request_id"] == "" {
			t.Fatalf("request log without id: %s", line)
		}
	}
	if strings.Contains(h.logs.String(), testKey) {
		t.Fatal("an API key appears in the logs")
	}
}

// TestIngestIdempotencyKey: a batch sent under an Idempotency-Key counts
// once as a whole, however often it is retried under that key; another key
// is another batch; a bad key is refused before anything is stored.
func TestIngestIdempotencyKey(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	batch := usage(
		rec{"provider": "aws", "customer": "ck", "metric": "tokens", "quantity": 100},
		rec{"provider": "aws", "customer": "ck", "metric": "tokens", "quantity": 20},
	)
	for i, want := range []usageResponse{{Accepted: 2}, {Duplicates: 2}, {Duplicates: 2}} {
		resp, body := h.do(t, "POST", "/v1/usage", batch, testKey, "Idempotency-Key", "batch-1")
		got := decode[usageResponse](t, body)
		if resp.StatusCode != 200 || got.Accepted != want.Accepted || got.Duplicates != want.Duplicates || len(got.DuplicateIDs) != 0 {
			t.Fatalf("send %d: %d %+v, want %+v", i, resp.StatusCode, got, want)
		}
	}
	if resp, body := h.do(t, "POST", "/v1/usage", batch, testKey, "Idempotency-Key", "batch-2"); resp.StatusCode != 200 || decode[usageResponse](t, body).Accepted != 2 {
		t.Fatalf("another key: %d %s", resp.StatusCode, body)
	}
	resp, body := h.do(t, "POST", "/v1/usage", batch, testKey, "Idempotency-Key", strings.Repeat("k", 300))
	if resp.StatusCode != 400 || !strings.Contains(string(body), "Idempotency-Key") {
		t.Fatalf("a 300-byte key: %d %s, want 400 naming Idempotency-Key", resp.StatusCode, body)
	}
	if err := h.ledger.Fold(t.Context()); err != nil {
		t.Fatal(err)
	}
	bs, err := h.ledger.Buckets(t.Context(), ledger.BucketFilter{Customer: "ck"})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, b := range bs {
		total += b.Quantity
	}
	if total != 240 {
		t.Errorf("stored %d tokens, want 240 (two batches of 120, the first retried twice)", total)
	}
}
