package azure_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	emu "github.com/saasmarket/marketplace/emulator/azure"
)

// resolve posts a landing token to /saas/subscriptions/resolve.
func (f *fixture) resolve(t *testing.T, token string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", f.srv.URL+"/api/saas/subscriptions/resolve?api-version=2018-08-31", nil)
	req.Header.Set("Authorization", "Bearer "+f.token)
	req.Header.Set("x-ms-marketplace-token", token)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// refreshBearer takes a new access token at the fixture's current time.
func (f *fixture) refreshBearer(t *testing.T) {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"app"}, "client_secret": {"secret"},
		"scope": {emu.ResourceID + "/.default"}}
	resp, err := f.srv.Client().PostForm(f.srv.URL+"/"+f.e.Config().TenantID+"/oauth2/v2.0/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token: %d %v", resp.StatusCode, err)
	}
	f.token = tok.AccessToken
}

// saasapi.v2.json, FulfillmentOperations_Resolve: "This token is valid for
// one hour only"; an expired token is 400 ("x-ms-marketplace-token is
// missing, malformed, or expired").
func TestResolveTokenExpires(t *testing.T) {
	tests := []struct {
		name  string
		after time.Duration
		want  int
	}{
		{"at once", 0, http.StatusOK},
		{"after 59 minutes", 59 * time.Minute, http.StatusOK},
		{"after an hour", time.Hour, http.StatusBadRequest},
		{"after a day", 24 * time.Hour, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, emu.Config{})
			p, err := f.e.CreatePurchase(emu.Purchase{PlanID: "basic"})
			if err != nil {
				t.Fatal(err)
			}
			f.clock.Advance(tt.after)
			f.refreshBearer(t)
			if got := f.resolve(t, p.Token); got != tt.want {
				t.Fatalf("resolve %v after the purchase: %d, want %d", tt.after, got, tt.want)
			}
		})
	}
}

// WIRE.md (Azure webhook): "ChangePlan and ChangeQuantity are auto-accepted
// about 10 s after delivery when the publisher does not answer". With the
// default OperationDelay the operation is still InProgress before then.
func TestUnansweredOperationWaitsTenSeconds(t *testing.T) {
	tests := []struct {
		action emu.Action
		after  time.Duration
		want   string
	}{
		{emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"}, 3 * time.Second, emu.OpInProgress},
		{emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"}, 9 * time.Second, emu.OpInProgress},
		{emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"}, 10 * time.Second, emu.OpSucceeded},
		{emu.Action{Name: emu.ActionChangeQuantity, Quantity: 7}, 9 * time.Second, emu.OpInProgress},
		{emu.Action{Name: emu.ActionChangeQuantity, Quantity: 7}, 10 * time.Second, emu.OpSucceeded},
	}
	for _, tt := range tests {
		t.Run(tt.action.Name+"/"+tt.after.String(), func(t *testing.T) {
			f := newFixture(t, emu.Config{})
			id := f.subscribed(t, "basic")
			op, _, err := f.e.Drive(t.Context(), id, tt.action)
			if err != nil {
				t.Fatal(err)
			}
			f.clock.Advance(tt.after)
			if got, _ := f.e.Operation(op); got != tt.want {
				t.Fatalf("%v after delivery: %s, want %s", tt.after, got, tt.want)
			}
		})
	}
}
