package azure_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/azure"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/sqlite"
)

// TestReporterMatchesResultsByKey: Azure's documentation does not promise
// that batch results come in the order of the events; each result echoes
// its resource, dimension and hour, and the reporter must match by those.
// This server answers in reverse order.
func TestReporterMatchesResultsByKey(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Request []map[string]any `json:"request"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var out []map[string]any
		for _, ev := range req.Request {
			res := map[string]any{
				"usageEventId": "id-" + ev["dimension"].(string), "status": "Accepted", "messageTime": "2026-03-10T12:00:00Z",
				"resourceId": ev["resourceId"], "quantity": ev["quantity"], "dimension": ev["dimension"],
				"effectiveStartTime": ev["effectiveStartTime"], "planId": ev["planId"],
			}
			if ev["dimension"] == "rejected" {
				res["status"] = "InvalidDimension"
			}
			out = append(out, res)
		}
		slices.Reverse(out)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"result": out, "count": len(out)})
	}))
	defer srv.Close()

	ctx := t.Context()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	const sub = "6d8f5f2e-0000-4000-8000-00000000000a"
	if _, err := store.PutSubscription(ctx, marketplace.Subscription{Provider: marketplace.Azure, ID: sub, CustomerID: sub, Status: marketplace.StatusActive, Plan: "basic"}); err != nil {
		t.Fatal(err)
	}
	client := azure.NewClient(azure.ClientConfig{BaseURL: srv.URL + "/api", Tokens: azure.StaticToken("t")})
	hour := time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
	var reports []ledger.Report
	for _, d := range []string{"tokens", "rejected", "images", "requests"} {
		reports = append(reports, ledger.Report{Provider: marketplace.Azure, Customer: sub, Dimension: d, Hour: hour, Quantity: 3})
	}
	res, err := mustReporter(t, azure.ReporterConfig{Client: client, Subscriptions: store}).Send(ctx, reports)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range reports {
		want := ledger.Result{Outcome: ledger.OutcomeReported, RecordID: "id-" + r.Dimension}
		if r.Dimension == "rejected" {
			want = ledger.Result{Outcome: ledger.OutcomeRejected}
		}
		if res[i].Outcome != want.Outcome || (want.RecordID != "" && res[i].RecordID != want.RecordID) {
			t.Errorf("report %d (%s): %+v, want %+v", i, r.Dimension, res[i], want)
		}
	}
}
