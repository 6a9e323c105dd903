package gcp_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/api/cloudcommerceprocurement/v1"
	"google.golang.org/api/option"
	"google.golang.org/api/servicecontrol/v1"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
	"github.com/saasmarket/marketplace/ledger"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// exchange is one HTTP call as it crossed the wire.
type exchange struct {
	method, path string
	req, resp    []byte
}

// recorder passes calls to h and keeps their bodies.
type recorder struct {
	h  http.Handler
	mu sync.Mutex
	ex []exchange
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	req.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	r.h.ServeHTTP(rec, req)
	r.mu.Lock()
	r.ex = append(r.ex, exchange{req.Method, req.URL.Path, body, rec.Body.Bytes()})
	r.mu.Unlock()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

func (r *recorder) last(t *testing.T, suffix string) exchange {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.ex) - 1; i >= 0; i-- {
		if strings.HasSuffix(r.ex[i].path, suffix) {
			return r.ex[i]
		}
	}
	t.Fatalf("no call to *%s", suffix)
	return exchange{}
}

// golden compares b (JSON) with testdata/golden/name, or rewrites it with -update.
func golden(t *testing.T, name string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	buf.WriteByte('\n')
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update once)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("%s changed:\n got %s\nwant %s", name, buf.Bytes(), want)
	}
	return want
}

// TestGoldenPayloads records what the official clients and the emulator
// put on the wire, compares it with the golden files and checks every
// golden file against the discovery documents.
func TestGoldenPayloads(t *testing.T) {
	e := newEnv(t, emu.Config{})
	ctx := t.Context()
	rec := &recorder{h: e.emu.Handler()}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	opts := []option.ClientOption{option.WithEndpoint(srv.URL + "/"), option.WithoutAuthentication()}
	sc, err := servicecontrol.NewService(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := cloudcommerceprocurement.NewService(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	proc := gcp.NewProcurement(ps, e.emu.ProviderID())

	ent := e.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	if err := proc.ApproveAccount(ctx, "acc-1", gcp.SignupApproval, "signed up"); err != nil {
		t.Fatal(err)
	}
	if err := proc.ApproveEntitlement(ctx, ent); err != nil {
		t.Fatal(err)
	}
	_, _, consumer, _ := e.emu.Entitlement(ent)
	target, err := gcp.NewReporter(gcp.ReporterConfig{Client: sc, ServiceName: service, Metrics: map[string]string{gcp.DimensionTokens: "tokens_1m", "requests": "requests"}})
	if err != nil {
		t.Fatal(err)
	}
	reports := []ledger.Report{
		{ID: "6f1c2b8e-2f0a-5d7c-9a41-3b5e8c0d1f22", Provider: marketplace.GCP, Customer: consumer, Dimension: gcp.DimensionTokens, Hour: onDay(10, 0), Quantity: 42},
		{ID: "0b7d4e6a-9c3f-5a21-8e5d-7f1a2c3b4d5e", Provider: marketplace.GCP, Customer: "project_number:999", Dimension: "requests", Hour: onDay(10, 0), Quantity: 7},
	}
	if _, err := target.Send(ctx, reports); err != nil {
		t.Fatal(err)
	}
	// A different payload under a used operationId, for a reportErrors answer.
	conflict := reports[0]
	conflict.Quantity = 43
	if _, err := target.Send(ctx, []ledger.Report{conflict}); err != nil {
		t.Fatal(err)
	}
	if _, err := proc.Entitlements(ctx, "state=active"); err != nil {
		t.Fatal(err)
	}
	if _, err := proc.Accounts(ctx); err != nil {
		t.Fatal(err)
	}
	if err := proc.ApprovePlanChange(ctx, ent, "pro"); err == nil {
		t.Fatal("approvePlanChange of an entitlement without a pending change succeeded")
	}

	scSpec, procSpec := "servicecontrol-api.json", "cloudcommerceprocurement-api.json"
	var checks []exchange
	for _, x := range rec.ex {
		if strings.HasSuffix(x.path, ":check") {
			checks = append(checks, x)
		}
	}
	if len(checks) < 2 {
		t.Fatalf("%d check calls, want one per consumer", len(checks))
	}
	cases := []struct {
		file, spec, def string
		body            []byte
	}{
		{"check_request.json", scSpec, "CheckRequest", checks[0].req},
		{"check_response.json", scSpec, "CheckResponse", checks[0].resp},
		{"check_response_error.json", scSpec, "CheckResponse", checks[1].resp},
		{"report_request.json", scSpec, "ReportRequest", rec.last(t, ":report").req},
		{"report_response_error.json", scSpec, "ReportResponse", rec.last(t, ":report").resp},
		{"approve_account_request.json", procSpec, "ApproveAccountRequest", rec.last(t, ":approve").req},
		{"approve_plan_change_request.json", procSpec, "ApproveEntitlementPlanChangeRequest", rec.last(t, ":approvePlanChange").req},
		{"list_entitlements_response.json", procSpec, "ListEntitlementsResponse", rec.last(t, "/entitlements").resp},
		{"list_accounts_response.json", procSpec, "ListAccountsResponse", rec.last(t, "/accounts").resp},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			want := golden(t, tc.file, normalize(t, tc.body))
			conformJSON(t, tc.spec, tc.def, tc.file, want)
		})
	}
}

// normalize replaces what differs between runs (the emulator's consumer
// numbers stay stable; nothing else varies) and sorts keys.
func normalize(t *testing.T, b []byte) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
