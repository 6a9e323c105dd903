package azure_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace/azure"
	"github.com/saasmarket/marketplace/emulator/admin"
	emu "github.com/saasmarket/marketplace/emulator/azure"
)

// admin calls an admin route and decodes its answer into out.
func (f *fixture) admin(t *testing.T, method, path, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, f.srv.URL+path, strings.NewReader(body))
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %d, %v", method, path, resp.StatusCode, err)
		}
	}
	return resp.StatusCode
}

// TestAdminEndpoints: the shared admin routes create an active buyer,
// drive its lifecycle (no webhook: the state changes all the same), show
// the bill and set faults.
func TestAdminEndpoints(t *testing.T) {
	f := newFixture(t, emu.Config{OperationDelay: time.Minute, Plans: []emu.Plan{{ID: "basic", Dimensions: []string{"tokens"}}, {ID: "pro"}}})
	var b admin.Buyer
	if st := f.admin(t, "POST", "/emulator/buyers", `{"plan":"basic","active":true}`, &b); st != 201 || b.State != emu.StatusSubscribed || b.Token == "" {
		t.Fatalf("new active buyer: %d %+v", st, b)
	}
	var pending admin.Buyer
	if st := f.admin(t, "POST", "/emulator/buyers", `{"plan":"pro"}`, &pending); st != 201 || pending.State != emu.StatusPendingFulfillmentStart {
		t.Fatalf("new buyer: %d %+v", st, pending)
	}
	var ev admin.EventResult
	if st := f.admin(t, "POST", "/emulator/buyers/"+b.ID+"/events", `{"event":"Suspend"}`, &ev); st != 200 || ev.Buyer.State != emu.StatusSuspended || ev.Operation == "" || ev.Deliveries == nil {
		t.Errorf("Suspend: %d %+v", st, ev)
	}
	if st := f.admin(t, "POST", "/emulator/buyers/"+pending.ID+"/events", `{"event":"ChangePlan","plan":"basic"}`, nil); st != http.StatusConflict {
		t.Errorf("ChangePlan before activation: %d, want 409", st)
	}
	f.admin(t, "POST", "/emulator/buyers/"+b.ID+"/events", `{"event":"Reinstate"}`, nil)
	f.clock.Advance(time.Minute)
	if st, _, body := f.call(t, "POST", "/usageEvent", f.token, map[string]any{"resourceId": b.ID, "planId": "basic", "dimension": "tokens",
		"quantity": 5, "effectiveStartTime": now.Truncate(time.Hour).Format(time.RFC3339)}); st != 200 {
		t.Fatalf("usage: %d %s", st, body)
	}
	var bill admin.Bill
	if f.admin(t, "GET", "/emulator/bill", "", &bill); bill.Totals[b.ID]["tokens"] != 5 || len(bill.Lines) != 1 || bill.Lines[0].ID == "" {
		t.Errorf("bill %+v", bill)
	}
	var got admin.Faults
	if st := f.admin(t, "PUT", "/emulator/faults", `{"throttleRate":1,"retryAfter":"3s","scope":"all"}`, &got); st != 200 || got.ThrottleRate != 1 || got.Scope != "all" || got.RetryAfter != admin.Duration(3*time.Second) {
		t.Errorf("faults: %d %+v", st, got)
	}
	if st, h, _ := f.call(t, "GET", "/saas/subscriptions", f.token, nil); st != 429 || h.Get("Retry-After") != "3" {
		t.Errorf("with scope all, a fulfillment call: %d %v", st, h)
	}
	if st := f.admin(t, "PUT", "/emulator/faults", `{"unprocessedRate":0.5}`, nil); st != 400 {
		t.Errorf("AWS's unprocessedRate on Azure: %d, want 400", st)
	}
}

// TestThrottleTPS: calls above the rate are answered 429.
func TestThrottleTPS(t *testing.T) {
	f := newFixture(t, emu.Config{Faults: emu.Faults{ThrottleTPS: 1}})
	codes := map[int]int{}
	for range 5 {
		st, _, _ := f.call(t, "POST", "/usageEvent", f.token, map[string]any{})
		codes[st]++
	}
	if codes[429] < 3 {
		t.Errorf("5 calls at once under 1 TPS: %v", codes)
	}
}

// TestFulfillmentAsAzure: an empty list is {"subscriptions":[]}, term
// dates are date-times, and request and correlation ids are made up when
// the caller sends none (and echoed when it does).
func TestFulfillmentAsAzure(t *testing.T) {
	f := newFixture(t, emu.Config{})
	st, h, body := f.call(t, "GET", "/saas/subscriptions", f.token, nil)
	if st != 200 || strings.TrimSpace(string(body)) != `{"subscriptions":[]}` {
		t.Errorf("empty list: %d %s", st, body)
	}
	if h.Get("x-ms-requestid") == "" || h.Get("x-ms-correlationid") == "" {
		t.Errorf("no ids made up: %v", h)
	}
	id := f.subscribed(t, "basic")
	_, _, body = f.call(t, "GET", "/saas/subscriptions/"+id, f.token, nil)
	var s struct {
		Term struct{ StartDate, EndDate string }
	}
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{s.Term.StartDate, s.Term.EndDate} {
		if _, err := time.Parse(time.RFC3339, d); err != nil {
			t.Errorf("term date %q is not a date-time: %v", d, err)
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", f.srv.URL+"/api/saas/subscriptions?api-version=2018-08-31", bytes.NewReader(nil))
	req.Header.Set("Authorization", "Bearer "+f.token)
	req.Header.Set("x-ms-requestid", "req-1")
	req.Header.Set("x-ms-correlationid", "corr-1")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("x-ms-requestid") != "req-1" || resp.Header.Get("x-ms-correlationid") != "corr-1" {
		t.Errorf("ids not echoed: %v", resp.Header)
	}
}

// TestPlanComponents: listAvailablePlans carries each plan's
// planComponents, and the azure package's Plan decodes them.
func TestPlanComponents(t *testing.T) {
	f := newFixture(t, emu.Config{Plans: []emu.Plan{{ID: "basic", Dimensions: []string{"tokens", "gpu_hours"}}}})
	id := f.subscribed(t, "basic")
	st, _, body := f.call(t, "GET", "/saas/subscriptions/"+id+"/listAvailablePlans", f.token, nil)
	var out struct{ Plans []azure.Plan }
	if err := json.Unmarshal(body, &out); st != 200 || err != nil || len(out.Plans) != 1 {
		t.Fatalf("%d %s %v", st, body, err)
	}
	pc := out.Plans[0].PlanComponents
	if len(pc.MeteringDimensions) != 2 || pc.MeteringDimensions[1].ID != "gpu_hours" || len(pc.RecurrentBillingTerms) != 1 || pc.RecurrentBillingTerms[0].TermUnit != "P1M" {
		t.Errorf("planComponents %+v", pc)
	}
	if out.Plans[0].SourceOffers == nil {
		t.Error("sourceOffers not decoded")
	}
}
