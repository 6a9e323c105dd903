package gcp_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace/emulator/admin"
	"github.com/saasmarket/marketplace/emulator/gcp"
)

// recorder is a Publisher that keeps what it is given.
type recorder struct {
	mu  sync.Mutex
	evs []string
}

func (r *recorder) Publish(_ context.Context, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, string(data))
	return nil
}

func (r *recorder) count(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.evs {
		if strings.Contains(ev, substr) {
			n++
		}
	}
	return n
}

// cloudcommerceprocurement-api.json, providers.accounts.reset: "Resets an
// Account and cancels all associated Entitlements."
func TestResetAccountCancelsEntitlements(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	pub := &recorder{}
	e, srv := start(t, gcp.Config{Clock: func() time.Time { return now }, Publisher: pub})
	base := srv.URL + "/v1/providers/" + e.ProviderID()
	active := e.Purchase(t.Context(), "acc-1", "prod", "plan")
	if code, _, body := post(t, base+"/entitlements/"+active+":approve", `{}`); code != 200 {
		t.Fatalf("approve: %d %s", code, body)
	}
	requested := e.Purchase(t.Context(), "acc-1", "prod", "plan2")
	other := e.Purchase(t.Context(), "acc-2", "prod", "plan")
	if code, _, body := post(t, base+"/accounts/acc-1:reset", `{}`); code != 200 {
		t.Fatalf("reset: %d %s", code, body)
	}
	tests := []struct {
		name, id, want string
	}{
		{"active entitlement of the account", active, gcp.StateCancelled},
		{"requested entitlement of the account", requested, gcp.StateCancelled},
		{"another account's entitlement", other, gcp.StateActivationRequested},
	}
	for _, tt := range tests {
		if state, _, _, _ := e.Entitlement(tt.id); state != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, state, tt.want)
		}
	}
	if n := pub.count("ENTITLEMENT_CANCELLED"); n != 2 {
		t.Errorf("%d ENTITLEMENT_CANCELLED events, want 2", n)
	}
	if got := e.AccountApproval("acc-1", gcp.SignupApproval); got != "PENDING" {
		t.Errorf("approval after reset: %s, want PENDING", got)
	}
}

// Each Procurement method takes its own request message
// (cloudcommerceprocurement-api.json: ApproveEntitlementRequest
// {entitlementMigrated, properties}, RejectEntitlementRequest {reason},
// ApproveEntitlementPlanChangeRequest {pendingPlanName},
// RejectAccountRequest {approvalName, reason}, ResetAccountRequest {},
// entitlements.patch an Entitlement); Google refuses a field the message
// does not have with 400 INVALID_ARGUMENT "Unknown name".
func TestRequestFieldsPerMethod(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"approve entitlement with properties", "POST", "entitlements/ENT:approve", `{"properties":{"k":"v"}}`, 200},
		{"approve entitlement with messageToUser", "POST", "entitlements/ENT:approve", `{"messageToUser":"hi"}`, 400},
		{"approve entitlement with pendingPlanName", "POST", "entitlements/ENT:approve", `{"pendingPlanName":"p"}`, 400},
		{"reject entitlement with reason", "POST", "entitlements/ENT:reject", `{"reason":"no"}`, 200},
		{"reject entitlement with messageToUser", "POST", "entitlements/ENT:reject", `{"reason":"no","messageToUser":"x"}`, 400},
		{"patch with messageToUser", "PATCH", "entitlements/ENT?updateMask=messageToUser", `{"messageToUser":"soon"}`, 200},
		{"patch with an output-only field", "PATCH", "entitlements/ENT?updateMask=messageToUser", `{"messageToUser":"soon","state":"ENTITLEMENT_ACTIVE"}`, 200},
		{"patch with reason", "PATCH", "entitlements/ENT?updateMask=messageToUser", `{"messageToUser":"soon","reason":"x"}`, 400},
		{"approve account with properties", "POST", "accounts/acc-1:approve", `{"approvalName":"signup","properties":{"k":"v"}}`, 200},
		{"approve account, snake_case name", "POST", "accounts/acc-1:approve", `{"approval_name":"signup"}`, 200},
		{"reject account with properties", "POST", "accounts/acc-1:reject", `{"approvalName":"signup","properties":{"k":"v"}}`, 400},
		{"reset account with approvalName", "POST", "accounts/acc-1:reset", `{"approvalName":"signup"}`, 400},
		{"reset account", "POST", "accounts/acc-1:reset", `{}`, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, srv := start(t, gcp.Config{Clock: func() time.Time { return now }})
			ent := e.Purchase(t.Context(), "acc-1", "prod", "plan")
			req, _ := http.NewRequestWithContext(t.Context(), tt.method,
				srv.URL+"/v1/providers/"+e.ProviderID()+"/"+strings.ReplaceAll(tt.path, "ENT", ent), strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || (tt.want == 400 && !strings.Contains(string(b), "Unknown name")) {
				t.Fatalf("%d %s, want %d", resp.StatusCode, b, tt.want)
			}
		})
	}
}

// servicecontrol-api.json, Operation.startTime: "Required. Start time of
// the operation." (endTime: "Required when the operation is used in
// ServiceController.Report, but optional when the operation is used in
// ServiceController.Check.")
func TestCheckNeedsStartTime(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	e, srv := start(t, gcp.Config{Clock: func() time.Time { return now }})
	ent := e.Purchase(t.Context(), "acc-1", "prod", "plan")
	_, _, consumer, _ := e.Entitlement(ent)
	tests := []struct {
		name, fields string
		want         int
	}{
		{"start and end", `,"startTime":"2026-03-10T11:00:00Z","endTime":"2026-03-10T12:00:00Z"`, 200},
		{"start only", `,"startTime":"2026-03-10T11:00:00Z"`, 200},
		{"no start", `,"endTime":"2026-03-10T12:00:00Z"`, 400},
		{"malformed start", `,"startTime":"yesterday"`, 400},
	}
	for _, tt := range tests {
		code, _, body := post(t, srv.URL+"/v1/services/"+service+":check",
			`{"operation":{"operationId":"op-1","operationName":"check","consumerId":"`+consumer+`"`+tt.fields+`}}`)
		if code != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, code, body, tt.want)
		}
	}
}

// Buyer-side transitions follow the EntitlementState descriptions of
// cloudcommerceprocurement-api.json: only an active entitlement (or one
// with a pending plan change, "currently active") is cancelled at term
// end; a cancelled one is not cancelled again; "ENTITLEMENT_CANCELLED …
// The entitlement can now be deleted", and not before.
func TestBuyerTransitionsFollowStates(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	type step = func(e *gcp.Emulator, id string) error
	approve := func(e *gcp.Emulator, srv string, id string) error {
		if code, _, body := post(t, srv+"/v1/providers/"+e.ProviderID()+"/entitlements/"+id+":approve", `{}`); code != 200 {
			t.Fatalf("approve: %d %s", code, body)
		}
		return nil
	}
	cancelAtTermEnd := func(e *gcp.Emulator, id string) error { return e.CancelAtTermEnd(t.Context(), id) }
	cancel := func(e *gcp.Emulator, id string) error { return e.Cancel(t.Context(), id) }
	del := func(e *gcp.Emulator, id string) error { return e.DeleteEntitlement(t.Context(), id) }
	planChange := func(e *gcp.Emulator, id string) error { return e.RequestPlanChange(t.Context(), id, "pro") }
	tests := []struct {
		name     string
		approved bool
		setup    []step
		do       step
		ok       bool
	}{
		{"cancel at term end, active", true, nil, cancelAtTermEnd, true},
		{"cancel at term end, plan change pending", true, []step{planChange}, cancelAtTermEnd, true},
		{"cancel at term end, activation requested", false, nil, cancelAtTermEnd, false},
		{"cancel at term end, cancelled", true, []step{cancel}, cancelAtTermEnd, false},
		{"cancel, activation requested", false, nil, cancel, true},
		{"cancel, cancelled", true, []step{cancel}, cancel, false},
		{"delete, cancelled", true, []step{cancel}, del, true},
		{"delete, active", true, nil, del, false},
		{"delete, pending cancellation", true, []step{cancelAtTermEnd}, del, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, srv := start(t, gcp.Config{Clock: func() time.Time { return now }})
			id := e.Purchase(t.Context(), "acc-1", "prod", "plan")
			if tt.approved {
				approve(e, srv.URL, id)
			}
			for _, s := range tt.setup {
				if err := s(e, id); err != nil {
					t.Fatal(err)
				}
			}
			before, _, _, _ := e.Entitlement(id)
			err := tt.do(e, id)
			if (err == nil) != tt.ok {
				t.Fatalf("from %s: %v, want ok=%v", before, err, tt.ok)
			}
			if after, _, _, _ := e.Entitlement(id); err != nil && after != before {
				t.Fatalf("a refused transition changed %s to %s", before, after)
			}
		})
	}
}

// Entitlement.messageToUser (cloudcommerceprocurement-api.json): "This
// field is cleared automatically when the entitlement state changes",
// whoever changes it: the provider's methods, the buyer or Google.
func TestMessageToUserClearedOnStateChange(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		approved bool // message set while a plan change awaits approval
		do       func(e *gcp.Emulator, id string) error
		want     string
	}{
		{"buyer cancels a requested entitlement", false, func(e *gcp.Emulator, id string) error { return e.Cancel(t.Context(), id) }, ""},
		{"buyer cancels during a plan change", true, func(e *gcp.Emulator, id string) error { return e.Cancel(t.Context(), id) }, ""},
		{"buyer cancels at term end during a plan change", true, func(e *gcp.Emulator, id string) error { return e.CancelAtTermEnd(t.Context(), id) }, ""},
		{"no state change", false, func(*gcp.Emulator, string) error { return nil }, "provisioning"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, srv := start(t, gcp.Config{Clock: func() time.Time { return now }})
			base := srv.URL + "/v1/providers/" + e.ProviderID() + "/entitlements/"
			id := e.Purchase(t.Context(), "acc-1", "prod", "plan")
			if tt.approved {
				post(t, base+id+":approve", `{}`)
				if err := e.RequestPlanChange(t.Context(), id, "pro"); err != nil {
					t.Fatal(err)
				}
			}
			req, _ := http.NewRequestWithContext(t.Context(), "PATCH", base+id+"?updateMask=messageToUser", strings.NewReader(`{"messageToUser":"provisioning"}`))
			if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
				t.Fatalf("patch: %v %v", resp, err)
			}
			if err := tt.do(e, id); err != nil {
				t.Fatal(err)
			}
			resp, err := http.Get(base + id)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var ent struct{ MessageToUser, State string }
			_ = json.NewDecoder(resp.Body).Decode(&ent)
			if ent.MessageToUser != tt.want {
				t.Fatalf("messageToUser %q in %s, want %q", ent.MessageToUser, ent.State, tt.want)
			}
		})
	}
}

// ApproveAccountRequest.reason, RejectAccountRequest.reason
// (cloudcommerceprocurement-api.json): "Max allowed length: 256 bytes.
// Longer strings will be truncated."
func TestReasonTruncated(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name, verb, reason string
		wantLen            int
	}{
		{"short approval", "approve", "signed up", 9},
		{"256 bytes", "approve", strings.Repeat("a", 256), 256},
		{"300 bytes", "reject", strings.Repeat("a", 300), 256},
		{"multibyte at the cut", "reject", strings.Repeat("a", 255) + "é" + "b", 255},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, srv := start(t, gcp.Config{Clock: func() time.Time { return now }})
			e.Purchase(t.Context(), "acc-1", "prod", "plan")
			b, _ := json.Marshal(map[string]string{"approvalName": gcp.SignupApproval, "reason": tt.reason})
			if code, _, body := post(t, srv.URL+"/v1/providers/"+e.ProviderID()+"/accounts/acc-1:"+tt.verb, string(b)); code != 200 {
				t.Fatalf("%s: %d %s", tt.verb, code, body)
			}
			resp, err := http.Get(srv.URL + "/v1/providers/" + e.ProviderID() + "/accounts/acc-1")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var acc struct{ Approvals []struct{ Reason string } }
			_ = json.NewDecoder(resp.Body).Decode(&acc)
			if len(acc.Approvals) != 1 || len(acc.Approvals[0].Reason) != tt.wantLen || !strings.HasPrefix(tt.reason, acc.Approvals[0].Reason) {
				t.Fatalf("approvals %+v, want a reason of %d bytes", acc.Approvals, tt.wantLen)
			}
		})
	}
}

// servicecontrol-api.json, Operation.resources: "The maximum supported
// number of entries in this field is 100."
func TestReportResourcesAtMost100(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	e, srv := start(t, gcp.Config{Clock: func() time.Time { return now }})
	ent := e.Purchase(t.Context(), "acc-1", "prod", "plan")
	post(t, srv.URL+"/v1/providers/"+e.ProviderID()+"/entitlements/"+ent+":approve", `{}`)
	_, _, consumer, _ := e.Entitlement(ent)
	resources := func(n int) string {
		r := make([]string, n)
		for i := range r {
			r[i] = `{"resourceName":"projects/1/r` + strconv.Itoa(i) + `"}`
		}
		return "[" + strings.Join(r, ",") + "]"
	}
	tests := []struct {
		name string
		n    int
		ok   bool
	}{
		{"100 resources", 100, true},
		{"101 resources", 101, false},
	}
	for _, tt := range tests {
		o := strings.TrimSuffix(op("op-"+strconv.Itoa(tt.n), consumer, service+"/requests", "1"), "}") + `,"resources":` + resources(tt.n) + `}`
		_, _, body := post(t, srv.URL+"/v1/services/"+service+":report", `{"operations":[`+o+`]}`)
		if refused := strings.Contains(body, "reportErrors"); refused == tt.ok {
			t.Errorf("%s: %s", tt.name, body)
		}
	}
}

// ENTITLEMENT_ACTIVATION_REQUESTED (cloudcommerceprocurement-api.json):
// "The entitlement remains in this state until it becomes active … If
// approved, the entitlement transitions to the ENTITLEMENT_ACTIVE state
// after either a short processing delay or …": with ActivationDelay set,
// approve answers at once and the entitlement becomes active, with its
// ENTITLEMENT_ACTIVE event, only once the delay has passed; approving
// again meanwhile changes nothing, rejecting is refused. A served
// emulator activates by itself (Start), without a request.
func TestApproveActivatesAfterADelay(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	pub := &recorder{}
	e, srv := start(t, gcp.Config{Clock: clock, Publisher: pub, ActivationDelay: 2 * time.Second})
	base := srv.URL + "/v1/providers/" + e.ProviderID()
	id := e.Purchase(t.Context(), "acc-1", "prod", "plan")
	state := func() string { s, _, _, _ := e.Entitlement(id); return s }

	steps := []struct {
		name       string
		do         func() (int, string)
		wantCode   int
		wantState  string
		wantActive int // ENTITLEMENT_ACTIVE events published so far
	}{
		{"approve", func() (int, string) { c, _, b := post(t, base+"/entitlements/"+id+":approve", `{}`); return c, b }, 200, gcp.StateActivationRequested, 0},
		{"approve again", func() (int, string) { c, _, b := post(t, base+"/entitlements/"+id+":approve", `{}`); return c, b }, 200, gcp.StateActivationRequested, 0},
		{"reject once approved", func() (int, string) {
			c, _, b := post(t, base+"/entitlements/"+id+":reject", `{"reason":"no"}`)
			return c, b
		}, 400, gcp.StateActivationRequested, 0},
		{"1.9 s later", func() (int, string) { advance(1900 * time.Millisecond); return 0, "" }, 0, gcp.StateActivationRequested, 0},
		{"2 s after approve", func() (int, string) { advance(100 * time.Millisecond); return 0, "" }, 0, gcp.StateActive, 1},
		{"read again", func() (int, string) { advance(time.Hour); return 0, "" }, 0, gcp.StateActive, 1},
	}
	for _, s := range steps {
		code, body := s.do()
		if code != s.wantCode {
			t.Fatalf("%s: %d %s, want %d", s.name, code, body, s.wantCode)
		}
		if got := state(); got != s.wantState {
			t.Fatalf("%s: %s, want %s", s.name, got, s.wantState)
		}
		if n := pub.count("ENTITLEMENT_ACTIVE"); n != s.wantActive {
			t.Fatalf("%s: %d ENTITLEMENT_ACTIVE events, want %d", s.name, n, s.wantActive)
		}
	}

	// Cancelled, or cancelled and deleted, while it activates: it never
	// becomes active and no ENTITLEMENT_ACTIVE is published for it.
	for _, del := range []bool{false, true} {
		id := e.Purchase(t.Context(), "acc-3", "prod", "plan")
		if code, _, body := post(t, base+"/entitlements/"+id+":approve", `{}`); code != 200 {
			t.Fatalf("approve: %d %s", code, body)
		}
		if err := e.Cancel(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		if del {
			if err := e.DeleteEntitlement(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}
		advance(time.Hour)
		e.Settle(t.Context())
		if got, _, _, ok := e.Entitlement(id); ok == del || (!del && got != gcp.StateCancelled) {
			t.Errorf("cancelled while activating (deleted %v): %s %v", del, got, ok)
		}
		if n := pub.count("ENTITLEMENT_ACTIVE"); n != 1 {
			t.Errorf("cancelled while activating (deleted %v): %d ENTITLEMENT_ACTIVE events, want still 1", del, n)
		}
	}

	// The admin API's active buyer is set up already active: no delay.
	b, err := e.Admin().CreateBuyer(t.Context(), admin.BuyerRequest{Product: "prod", Plan: "plan", Active: true})
	if err != nil || b.State != gcp.StateActive {
		t.Fatalf("admin buyer, active: %+v %v; want %s at once", b, err, gcp.StateActive)
	}

	// Served with Start on the wall clock: ENTITLEMENT_ACTIVE is published
	// with nobody asking.
	pub2 := &recorder{}
	e2, err := gcp.New(gcp.Config{Publisher: pub2, ActivationDelay: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	url, err := e2.Start(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	id2 := e2.Purchase(t.Context(), "acc-2", "prod", "plan")
	if code, _, body := post(t, url+"/v1/providers/"+e2.ProviderID()+"/entitlements/"+id2+":approve", `{}`); code != 200 {
		t.Fatalf("approve: %d %s", code, body)
	}
	for deadline := time.Now().Add(5 * time.Second); pub2.count("ENTITLEMENT_ACTIVE") == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no ENTITLEMENT_ACTIVE within 5 s of an approval with a 200 ms delay")
		}
	}
}
