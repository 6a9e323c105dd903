package gcp_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/cloudcommerceprocurement/v1"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	"google.golang.org/api/servicecontrol/v1"

	"github.com/saasmarket/marketplace/emulator/gcp"
)

// TestProcurementAsGoogle, through the official client: the discovery
// document's default page sizes, subscriptionEndTime on a pending
// cancellation, and Google's JSON errors for unknown fields and paths.
func TestProcurementAsGoogle(t *testing.T) {
	e, srv := start(t, gcp.Config{})
	ctx := t.Context()
	svc, err := cloudcommerceprocurement.NewService(ctx, option.WithEndpoint(srv.URL+"/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	parent := "providers/" + e.ProviderID()
	var last string
	for i := range 210 {
		last = e.Purchase(ctx, "acc-"+string(rune('a'+i%26))+strings.Repeat("x", i/26), "prod", "basic")
	}
	accs, err := svc.Providers.Accounts.List(parent).Context(ctx).Do()
	if err != nil || len(accs.Accounts) != 25 || accs.NextPageToken == "" {
		t.Errorf("accounts, default page: %d, %v", len(accs.Accounts), err)
	}
	ents, err := svc.Providers.Entitlements.List(parent).Context(ctx).Do()
	if err != nil || len(ents.Entitlements) != 200 || ents.NextPageToken == "" {
		t.Errorf("entitlements, default page: %d, %v", len(ents.Entitlements), err)
	}

	name := parent + "/entitlements/" + last
	if _, err := svc.Providers.Entitlements.Approve(name, &cloudcommerceprocurement.ApproveEntitlementRequest{}).Context(ctx).Do(); err != nil {
		t.Fatal(err)
	}
	if err := e.CancelAtTermEnd(ctx, last); err != nil {
		t.Fatal(err)
	}
	ent, err := svc.Providers.Entitlements.Get(name).Context(ctx).Do()
	if err != nil {
		t.Fatal(err)
	}
	if end, err := time.Parse(time.RFC3339Nano, ent.SubscriptionEndTime); err != nil || !end.After(time.Now()) {
		t.Errorf("pending cancellation: subscriptionEndTime %q", ent.SubscriptionEndTime)
	}
	if err := e.RevertCancellation(ctx, last); err != nil {
		t.Fatal(err)
	}
	if ent, _ := svc.Providers.Entitlements.Get(name).Context(ctx).Do(); ent.SubscriptionEndTime != "" {
		t.Errorf("after the revert: subscriptionEndTime %q", ent.SubscriptionEndTime)
	}

	code, _, body := post(t, srv.URL+"/v1/"+name+":reject", `{"reason":"x","colour":"red"}`)
	if code != 400 || !strings.Contains(body, `Unknown name \"colour\"`) {
		t.Errorf("unknown field: %d %s", code, body)
	}
	for _, path := range []string{"/v1/nothing", "/v2/" + parent + "/accounts"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	_, err = svc.Providers.Accounts.Get(parent + "/accounts/nobody:frobnicate").Context(ctx).Do()
	var ge *googleapi.Error
	if !errors.As(err, &ge) || ge.Code != 404 || ge.Message == "" {
		t.Errorf("unknown method through the client: %v", err)
	}
}

// TestServiceControlAsGoogle: int64Value as a JSON number is accepted, two
// values for one metric in an operation reject the whole request, and an
// unknown field is refused.
func TestServiceControlAsGoogle(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	e, srv := start(t, gcp.Config{Clock: func() time.Time { return now }})
	ctx := t.Context()
	id := e.Purchase(ctx, "acc", "prod", "plan")
	if code, _, body := post(t, srv.URL+"/v1/providers/"+e.ProviderID()+"/entitlements/"+id+":approve", `{}`); code != 200 {
		t.Fatal(code, body)
	}
	_, _, consumer, _ := e.Entitlement(id)
	url := srv.URL + "/v1/services/" + service + ":report"
	metric := service + "/requests"
	number := `{"operations":[{"operationId":"n","consumerId":"` + consumer + `","startTime":"2026-03-10T10:00:00Z","endTime":"2026-03-10T11:00:00Z",` +
		`"metricValueSets":[{"metricName":"` + metric + `","metricValues":[{"int64Value":7}]}]}]}`
	if code, _, body := post(t, url, number); code != 200 || strings.Contains(body, "reportErrors") {
		t.Errorf("int64Value as a number: %d %s", code, body)
	}
	twice := `{"operations":[{"operationId":"t","consumerId":"` + consumer + `","startTime":"2026-03-10T10:00:00Z","endTime":"2026-03-10T11:00:00Z",` +
		`"metricValueSets":[{"metricName":"` + metric + `","metricValues":[{"int64Value":"1"},{"int64Value":"2"}]}]}]}`
	if code, _, body := post(t, url, twice); code != 400 {
		t.Errorf("two values for one metric: %d %s", code, body)
	}
	if got := e.Total(consumer, metric); got != 7 {
		t.Errorf("billed %d, want 7 (the rejected request bills nothing)", got)
	}

	sc, err := servicecontrol.NewService(ctx, option.WithEndpoint(srv.URL+"/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	_, err = sc.Services.Report(service, &servicecontrol.ReportRequest{Operations: []*servicecontrol.Operation{{
		OperationId: "c", ConsumerId: consumer, StartTime: "2026-03-10T10:00:00Z", EndTime: "2026-03-10T11:00:00Z",
		MetricValueSets: []*servicecontrol.MetricValueSet{
			{MetricName: metric, MetricValues: []*servicecontrol.MetricValue{{Int64Value: googleapi.Int64(1)}}},
			{MetricName: metric, MetricValues: []*servicecontrol.MetricValue{{Int64Value: googleapi.Int64(2)}}},
		}}}}).Context(ctx).Do()
	var ge *googleapi.Error
	if !errors.As(err, &ge) || ge.Code != 400 {
		t.Errorf("one metric in two sets, through the client: %v", err)
	}
	if code, _, body := post(t, url, `{"operations":[],"extra":1}`); code != 400 || !strings.Contains(body, "Unknown name") {
		t.Errorf("unknown field: %d %s", code, body)
	}
}

// TestListFilter: the filter grammar the discovery document points to
// (AIP-160), through the official client.
func TestListFilter(t *testing.T) {
	e, srv := start(t, gcp.Config{})
	ctx := t.Context()
	svc, err := cloudcommerceprocurement.NewService(ctx, option.WithEndpoint(srv.URL+"/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	a := e.Purchase(ctx, "acc-a", "prod", "basic")
	b := e.Purchase(ctx, "acc-b", "prod", "pro plan")
	c := e.Purchase(ctx, "acc-c", "other", "basic")
	if err := e.Cancel(ctx, c); err != nil {
		t.Fatal(err)
	}
	_, _, usage, _ := e.Entitlement(b)
	cases := []struct {
		filter string
		want   []string
	}{
		{"", []string{a, b, c}},
		{"plan=basic", []string{a, c}},
		{`plan="pro plan"`, []string{b}},
		{"plan=basic AND product_external_name=prod", []string{a}},
		{"plan=basic product_external_name=prod", []string{a}},
		{"account=acc-a OR account=acc-b", []string{a, b}},
		{"NOT state=cancelled", []string{a, b}},
		{"-plan=basic", []string{b}},
		{"(account=acc-a OR account=acc-c) AND NOT state=ENTITLEMENT_CANCELLED", []string{a}},
		{"consumers.project=" + strings.TrimPrefix(usage, "project_number:"), []string{b}},
		{"customer_billing_account=x", nil},
		{"new_pending_offer!=x quote_external_name!=y services!=z change_history.new_offer!=w", []string{a, b, c}},
	}
	for _, tc := range cases {
		out, err := svc.Providers.Entitlements.List("providers/" + e.ProviderID()).Filter(tc.filter).Context(ctx).Do()
		if err != nil {
			t.Errorf("%q: %v", tc.filter, err)
			continue
		}
		var got []string
		for _, ent := range out.Entitlements {
			got = append(got, ent.Name[strings.LastIndex(ent.Name, "/")+1:])
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%q: %v, want %v", tc.filter, got, tc.want)
		}
	}
	for _, bad := range []string{"(plan=basic", "plan=basic)", "plan", "colour=red", `plan="open`, "AND plan=basic", "plan=basic OR"} {
		_, err := svc.Providers.Entitlements.List("providers/" + e.ProviderID()).Filter(bad).Context(ctx).Do()
		var ge *googleapi.Error
		if !errors.As(err, &ge) || ge.Code != 400 {
			t.Errorf("%q: %v, want 400", bad, err)
		}
	}
}

// TestThrottleTPS: requests above the rate are refused with 429.
func TestThrottleTPS(t *testing.T) {
	_, srv := start(t, gcp.Config{Faults: gcp.Faults{ThrottleTPS: 1}})
	codes := map[int]int{}
	for range 5 {
		code, _, _ := post(t, srv.URL+"/v1/services/"+service+":report", `{"operations":[]}`)
		codes[code]++
	}
	if codes[http.StatusTooManyRequests] < 3 {
		t.Errorf("5 requests at once under 1 TPS: %v", codes)
	}
}
