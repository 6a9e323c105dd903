package azure_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	emu "github.com/saasmarket/marketplace/emulator/azure"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
)

var now = time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)

type fixture struct {
	e     *emu.Emulator
	srv   *httptest.Server
	clock *ledgertest.Clock
	token string
}

func newFixture(t *testing.T, cfg emu.Config) *fixture {
	t.Helper()
	clock := ledgertest.NewClock(now)
	cfg.Clock = clock.Now
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Clients = map[string]string{"app": "secret"}
	e := emu.New(cfg)
	srv := httptest.NewTLSServer(e)
	t.Cleanup(srv.Close)
	f := &fixture{e: e, srv: srv, clock: clock}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"app"}, "client_secret": {"secret"},
		"scope": {emu.ResourceID + "/.default openid profile"}}
	resp, err := srv.Client().PostForm(srv.URL+"/"+e.Config().TenantID+"/oauth2/v2.0/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != 200 || tok.AccessToken == "" || tok.ExpiresIn <= 0 {
		t.Fatalf("token: %d %+v %v", resp.StatusCode, tok, err)
	}
	f.token = tok.AccessToken
	return f
}

// call makes an API call; path is under /api, query gets api-version
// unless it sets one.
func (f *fixture) call(t *testing.T, method, path, token string, body any) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	u := f.srv.URL + "/api" + path
	if !strings.Contains(path, "api-version") {
		if strings.Contains(path, "?") {
			u += "&api-version=2018-08-31"
		} else {
			u += "?api-version=2018-08-31"
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, u, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		return 0, nil, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func (f *fixture) subscribed(t *testing.T, plan string) string {
	t.Helper()
	p, err := f.e.CreatePurchase(emu.Purchase{PlanID: plan})
	if err != nil {
		t.Fatal(err)
	}
	if st, _, b := f.call(t, "POST", "/saas/subscriptions/"+p.SubscriptionID+"/activate", f.token, map[string]string{"planId": plan}); st != 200 {
		t.Fatalf("activate: %d %s", st, b)
	}
	return p.SubscriptionID
}

func TestAPIVersionAndBearer(t *testing.T) {
	f := newFixture(t, emu.Config{})
	wrongAud := f.e.WebhookClaims() // a genuine token, but for the publisher's app, not the APIs
	other, _ := f.e.SignToken(wrongAud)
	cases := []struct {
		name, path, token string
		want              int
	}{
		{"ok", "/saas/subscriptions", f.token, 200},
		{"no api-version", "/saas/subscriptions?api-version=", f.token, 400},
		{"other api-version", "/saas/subscriptions?api-version=2022-01-01", f.token, 400},
		{"no token", "/saas/subscriptions", "", 403},
		{"token for another audience", "/saas/subscriptions", other, 403},
		{"garbage token", "/saas/subscriptions", "abc.def.ghi", 403},
	}
	for _, tc := range cases {
		if st, _, b := f.call(t, "GET", tc.path, tc.token, nil); st != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, st, b, tc.want)
		}
	}
}

func TestMeteringRules(t *testing.T) {
	f := newFixture(t, emu.Config{Plans: []emu.Plan{{ID: "basic", Dimensions: []string{"requests"}}}})
	id := f.subscribed(t, "basic")
	pending, _ := f.e.CreatePurchase(emu.Purchase{PlanID: "basic"})
	ev := func(res string, q float64, dim string, at time.Time) map[string]any {
		return map[string]any{"resourceId": res, "quantity": q, "dimension": dim, "effectiveStartTime": at.Format(time.RFC3339), "planId": "basic"}
	}
	hour := now.Truncate(time.Hour).Add(-2 * time.Hour)
	single := []struct {
		name string
		ev   map[string]any
		want int
		code string
	}{
		{"accepted", ev(id, 5, "requests", hour.Add(10*time.Minute)), 200, "Accepted"},
		{"duplicate in the same hour", ev(id, 9, "requests", hour.Add(50*time.Minute)), 409, "Conflict"},
		{"quantity 0", ev(id, 0, "requests", hour.Add(time.Hour)), 400, "InvalidQuantity"},
		{"negative quantity", ev(id, -1, "requests", hour.Add(time.Hour)), 400, "InvalidQuantity"},
		{"24 hours old", ev(id, 1, "requests", now.Add(-24*time.Hour)), 400, "Expired"},
		{"in the future", ev(id, 1, "requests", now.Add(time.Hour)), 400, "BadArgument"},
		{"unknown resource", ev("7c9f0000-0000-4000-8000-000000000000", 1, "requests", hour), 400, "ResourceNotFound"},
		{"not activated", ev(pending.SubscriptionID, 1, "requests", hour), 400, "ResourceNotActive"},
		{"dimension not in plan", ev(id, 1, "images", hour), 400, "InvalidDimension"},
	}
	var acceptedID string
	for _, tc := range single {
		st, _, b := f.call(t, "POST", "/usageEvent", f.token, tc.ev)
		var out struct {
			Status, Code, UsageEventID string
			AdditionalInfo             struct {
				AcceptedMessage struct {
					UsageEventID string
					Quantity     float64
				}
			}
		}
		json.Unmarshal(b, &out)
		got := out.Status + out.Code
		if st != tc.want || got != tc.code {
			t.Errorf("%s: %d %q (%s), want %d %q", tc.name, st, got, b, tc.want, tc.code)
		}
		switch tc.name {
		case "accepted":
			acceptedID = out.UsageEventID
		case "duplicate in the same hour":
			if m := out.AdditionalInfo.AcceptedMessage; m.UsageEventID != acceptedID || m.Quantity != 5 {
				t.Errorf("duplicate does not carry the accepted event: %s", b)
			}
		}
	}
	// Batches: per-item statuses, 1 to 25 events.
	batch := []map[string]any{ev(id, 2, "requests", hour.Add(-time.Hour)), ev(id, 2, "requests", hour), ev(id, 0, "requests", hour.Add(-2*time.Hour))}
	st, _, b := f.call(t, "POST", "/batchUsageEvent", f.token, map[string]any{"request": batch})
	var br struct {
		Result []struct{ Status string }
		Count  int
	}
	json.Unmarshal(b, &br)
	if st != 200 || br.Count != 3 || br.Result[0].Status != "Accepted" || br.Result[1].Status != "Duplicate" || br.Result[2].Status != "InvalidQuantity" {
		t.Errorf("batch: %d %s", st, b)
	}
	for _, n := range []int{0, 26} {
		evs := make([]map[string]any, n)
		for i := range evs {
			evs[i] = ev(id, 1, "requests", hour.Add(-5*time.Hour))
		}
		if st, _, b := f.call(t, "POST", "/batchUsageEvent", f.token, map[string]any{"request": evs}); st != 400 {
			t.Errorf("%d events: %d %s", n, st, b)
		}
	}
	if bill := f.e.Bill(); len(bill) != 2 || bill[0].Quantity+bill[1].Quantity != 7 {
		t.Errorf("bill: %+v", bill)
	}
	st, _, b = f.call(t, "GET", "/usageEvents?usageStartDate="+url.QueryEscape(hour.Add(-time.Hour).Format(time.RFC3339)), f.token, nil)
	var recs []map[string]any
	json.Unmarshal(b, &recs)
	if st != 200 || len(recs) != 2 {
		t.Errorf("usageEvents: %d %s", st, b)
	}
}

func TestFaults(t *testing.T) {
	f := newFixture(t, emu.Config{})
	id := f.subscribed(t, "basic")
	ev := map[string]any{"resourceId": id, "quantity": 1, "dimension": "d", "effectiveStartTime": now.Add(-time.Hour).Format(time.RFC3339), "planId": "basic"}

	f.e.SetFaults(emu.Faults{ThrottleRate: 1, RetryAfter: 3 * time.Second})
	if st, h, _ := f.call(t, "POST", "/usageEvent", f.token, ev); st != 429 || h.Get("Retry-After") != "3" {
		t.Errorf("throttle: %d Retry-After %q", st, h.Get("Retry-After"))
	}
	f.e.SetFaults(emu.Faults{ErrorRate: 1})
	if st, _, _ := f.call(t, "POST", "/usageEvent", f.token, ev); st != 500 {
		t.Errorf("error: %d", st)
	}
	if len(f.e.Bill()) != 0 {
		t.Fatal("a refused call was applied")
	}
	f.e.SetFaults(emu.Faults{DropRate: 1})
	if st, _, b := f.call(t, "POST", "/usageEvent", f.token, ev); st != 0 {
		t.Errorf("drop: got a response %d %s", st, b)
	}
	if len(f.e.Bill()) != 1 {
		t.Fatal("a dropped call was not applied")
	}
	f.e.SetFaults(emu.Faults{ErrorRate: 1, MeteringOnly: true})
	if st, _, _ := f.call(t, "GET", "/saas/subscriptions/"+id, f.token, nil); st != 200 {
		t.Errorf("metering-only faults hit fulfillment: %d", st)
	}
	c := f.e.Calls()
	if c["fault/throttle"] != 1 || c["fault/error"] != 1 || c["fault/drop"] != 1 {
		t.Errorf("fault counts %v", c)
	}
}

// TestWebhookAnswers: a 4xx answer fails an operation Azure waits on; a
// 200 without a PATCH lets it succeed after the delay.
func TestWebhookAnswers(t *testing.T) {
	var answer int
	var got []map[string]any
	var auth string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p map[string]any
		json.NewDecoder(r.Body).Decode(&p)
		got = append(got, p)
		auth = r.Header.Get("Authorization")
		w.WriteHeader(answer)
	}))
	defer hook.Close()
	f := newFixture(t, emu.Config{WebhookURL: hook.URL, OperationDelay: time.Minute})
	id := f.subscribed(t, "basic")

	answer = 400
	op, st, err := f.e.Drive(t.Context(), id, emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"})
	if err != nil || st != 400 {
		t.Fatal(st, err)
	}
	if s, _ := f.e.Operation(op); s != emu.OpFailed {
		t.Errorf("after 400: %s", s)
	}
	answer = 200
	op, _, _ = f.e.Drive(t.Context(), id, emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"})
	if s, _ := f.e.Operation(op); s != emu.OpInProgress {
		t.Errorf("before the delay: %s", s)
	}
	f.clock.Advance(time.Minute)
	if s, _ := f.e.Operation(op); s != emu.OpSucceeded {
		t.Errorf("after the delay: %s", s)
	}
	if _, plan, _, _ := f.e.Status(id); plan != "pro" {
		t.Errorf("plan %q", plan)
	}
	last := got[len(got)-1]
	for _, k := range []string{"id", "activityId", "publisherId", "offerId", "planId", "quantity", "subscriptionId", "timeStamp", "action", "status", "operationRequestSource", "subscription"} {
		if _, ok := last[k]; !ok {
			t.Errorf("webhook payload lacks %q", k)
		}
	}
	if last["action"] != "ChangePlan" || last["status"] != "InProgress" {
		t.Errorf("payload %v", last)
	}
	tok, _, err := jwt.NewParser().ParseUnverified(strings.TrimPrefix(auth, "Bearer "), jwt.MapClaims{})
	if err != nil || tok.Header["alg"] != "RS256" || tok.Header["kid"] != f.e.KeyID() {
		t.Errorf("webhook token: %v %v", tok, err)
	}
	c := tok.Claims.(jwt.MapClaims)
	if c["aud"] != f.e.Config().PublisherApp || c["tid"] != f.e.Config().TenantID || c["appid"] != emu.ResourceID {
		t.Errorf("claims %v", c)
	}
}

func TestEntraDiscovery(t *testing.T) {
	f := newFixture(t, emu.Config{})
	tenant := f.e.Config().TenantID
	resp, err := f.srv.Client().Get(f.srv.URL + "/" + tenant + "/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var oc map[string]any
	json.NewDecoder(resp.Body).Decode(&oc)
	resp.Body.Close()
	if oc["issuer"] != f.srv.URL+"/"+tenant+"/v2.0" || oc["token_endpoint"] != f.srv.URL+"/"+tenant+"/oauth2/v2.0/token" {
		t.Errorf("openid configuration %v", oc)
	}
	resp, err = f.srv.Client().Get(f.srv.URL + "/" + tenant + "/discovery/v2.0/keys")
	if err != nil {
		t.Fatal(err)
	}
	var ks struct{ Keys []map[string]any }
	json.NewDecoder(resp.Body).Decode(&ks)
	resp.Body.Close()
	if len(ks.Keys) != 1 || ks.Keys[0]["kid"] != f.e.KeyID() || ks.Keys[0]["kty"] != "RSA" {
		t.Errorf("keys %v", ks)
	}
	// A wrong secret gets no token.
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"app"}, "client_secret": {"wrong"}, "scope": {emu.ResourceID + "/.default"}}
	resp, err = f.srv.Client().PostForm(f.srv.URL+"/"+tenant+"/oauth2/v2.0/token", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("wrong secret: %d", resp.StatusCode)
	}
}

// TestStart serves over TLS with the certificate it returns.
func TestStart(t *testing.T) {
	e := emu.New(emu.Config{Logger: slog.New(slog.DiscardHandler)})
	base, certPEM, err := e.Start(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("no certificate")
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(base + "/emulator/bill")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("bill: %d", resp.StatusCode)
	}
	hc.CloseIdleConnections()
}

// TestPatchDelay: an operation the publisher PATCHes stays InProgress for
// PatchDelay, as at Azure, and only then completes with the PATCHed
// status; a contrary PATCH meanwhile is a conflict, a repeated one is not.
func TestPatchDelay(t *testing.T) {
	cases := []struct {
		patch, want, plan string
	}{
		{"Success", emu.OpSucceeded, "pro"},
		{"Failure", emu.OpFailed, "basic"},
	}
	for _, tc := range cases {
		t.Run(tc.patch, func(t *testing.T) {
			f := newFixture(t, emu.Config{OperationDelay: time.Hour, PatchDelay: time.Minute})
			id := f.subscribed(t, "basic")
			op, _, err := f.e.Drive(t.Context(), id, emu.Action{Name: emu.ActionChangePlan, PlanID: "pro"})
			if err != nil {
				t.Fatal(err)
			}
			path := "/saas/subscriptions/" + id + "/operations/" + op
			other := map[string]string{"Success": "Failure", "Failure": "Success"}[tc.patch]
			for _, step := range []struct {
				status string
				want   int
			}{{tc.patch, 200}, {tc.patch, 200}, {other, 409}} {
				if st, _, b := f.call(t, "PATCH", path, f.token, map[string]string{"status": step.status}); st != step.want {
					t.Fatalf("PATCH %s: %d %s, want %d", step.status, st, b, step.want)
				}
			}
			f.clock.Advance(time.Minute - time.Millisecond)
			if st, _, b := f.call(t, "GET", path, f.token, nil); st != 200 || !strings.Contains(string(b), `"status":"InProgress"`) {
				t.Fatalf("before PatchDelay: %d %s", st, b)
			}
			if _, plan, _, _ := f.e.Status(id); plan != "basic" {
				t.Fatalf("applied before PatchDelay: plan %q", plan)
			}
			f.clock.Advance(time.Millisecond)
			if st, _, b := f.call(t, "GET", path, f.token, nil); st != 200 || !strings.Contains(string(b), `"status":"`+tc.want+`"`) {
				t.Fatalf("after PatchDelay: %d %s, want %s", st, b, tc.want)
			}
			if _, plan, _, _ := f.e.Status(id); plan != tc.plan {
				t.Fatalf("after PatchDelay: plan %q, want %q", plan, tc.plan)
			}
			if st, _, b := f.call(t, "PATCH", path, f.token, map[string]string{"status": other}); st != 409 {
				t.Fatalf("contrary PATCH after completion: %d %s", st, b)
			}
		})
	}
}
