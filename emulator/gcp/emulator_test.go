package gcp_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	"google.golang.org/api/servicecontrol/v1"

	"github.com/saasmarket/marketplace/emulator/admin"
	"github.com/saasmarket/marketplace/emulator/gcp"
)

const service = "svc.endpoints.p.cloud.goog"

func start(t *testing.T, cfg gcp.Config) (*gcp.Emulator, *httptest.Server) {
	t.Helper()
	cfg.ServiceName = service
	cfg.Logger = slog.New(slog.DiscardHandler)
	e, err := gcp.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e.Handler())
	t.Cleanup(srv.Close)
	return e, srv
}

func post(t *testing.T, url, body string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func op(id, consumer, metric, value string) string {
	return `{"operationId":"` + id + `","operationName":"u","consumerId":"` + consumer + `","startTime":"2026-03-10T10:00:00Z","endTime":"2026-03-10T11:00:00Z",` +
		`"metricValueSets":[{"metricName":"` + metric + `","metricValues":[{"int64Value":"` + value + `"}]}]}`
}

func TestReportValidation(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	e, srv := start(t, gcp.Config{Metrics: []string{"requests"}, Clock: func() time.Time { return now }})
	ent := e.Purchase(t.Context(), "acc", "prod", "plan")
	_, _, consumer, _ := e.Entitlement(ent)
	// Not active yet: refused.
	url := srv.URL + "/v1/services/" + service + ":report"
	_, _, body := post(t, url, `{"operations":[`+op("a", consumer, service+"/requests", "1")+`]}`)
	if !strings.Contains(body, "SERVICE_NOT_ACTIVATED") {
		t.Fatalf("inactive consumer: %s", body)
	}
	if code, _, _ := post(t, srv.URL+"/v1/providers/"+e.ProviderID()+"/entitlements/"+ent+":approve", `{}`); code != 200 {
		t.Fatalf("approve: %d", code)
	}
	cases := []struct {
		name, op, want string
	}{
		{"accepted", op("ok", consumer, service+"/requests", "5"), ""},
		{"same again: deduplicated", op("ok", consumer, service+"/requests", "5"), ""},
		{"same id, other value", op("ok", consumer, service+"/requests", "6"), `"code":6`},
		{"foreign service", op("b", consumer, "other.service/requests", "1"), `"code":3`},
		{"undefined metric", op("c", consumer, service+"/tokens", "1"), `"code":3`},
		{"negative", op("d", consumer, service+"/requests", "-1"), `"code":3`},
		{"not a number", op("e", consumer, service+"/requests", "1.5"), `"code":3`},
		{"unknown consumer", op("f", "project_number:1", service+"/requests", "1"), `"code":9`},
	}
	for _, tc := range cases {
		_, _, body := post(t, url, `{"operations":[`+tc.op+`]}`)
		if tc.want == "" && strings.Contains(body, "reportErrors") || tc.want != "" && !strings.Contains(body, tc.want) {
			t.Errorf("%s: %s", tc.name, body)
		}
	}
	if bill := e.Bill(); len(bill) != 1 || bill[0].Value != 5 {
		t.Errorf("bill %+v", bill)
	}
	one := op("x", consumer, service+"/requests", "1")
	big := `{"operations":[` + strings.Repeat(one+",", gcp.MaxReportBytes/len(one)) + op("y", consumer, service+"/requests", "1") + `]}`
	if code, _, body := post(t, url, big); code != http.StatusBadRequest || !strings.Contains(body, "exceeds") {
		t.Errorf("a %d-byte request: %d %s", len(big), code, body)
	}
	if code, _, _ := post(t, srv.URL+"/v1/services/other.service:report", `{"operations":[]}`); code != http.StatusForbidden {
		t.Errorf("another service: %d", code)
	}
	// The bill as JSON.
	resp, err := http.Get(srv.URL + "/emulator/bill")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b struct {
		Lines []map[string]any `json:"lines"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil || len(b.Lines) != 1 || b.Lines[0]["quantity"] != 5.0 {
		t.Errorf("GET /emulator/bill: %+v %v", b, err)
	}
}

// TestFaults: each fault, seen through the official client.
func TestFaults(t *testing.T) {
	e, srv := start(t, gcp.Config{})
	ent := e.Purchase(t.Context(), "acc", "prod", "plan")
	_, _, consumer, _ := e.Entitlement(ent)
	code, _, _ := post(t, srv.URL+"/v1/providers/"+e.ProviderID()+"/entitlements/"+ent+":approve", `{}`)
	if code != 200 {
		t.Fatal(code)
	}
	sc, err := servicecontrol.NewService(t.Context(), option.WithEndpoint(srv.URL+"/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	report := func(id string) error {
		v := int64(1)
		_, err := sc.Services.Report(service, &servicecontrol.ReportRequest{Operations: []*servicecontrol.Operation{{
			OperationId: id, ConsumerId: consumer, StartTime: "2026-03-10T10:00:00Z", EndTime: "2026-03-10T11:00:00Z",
			MetricValueSets: []*servicecontrol.MetricValueSet{{MetricName: service + "/requests", MetricValues: []*servicecontrol.MetricValue{{Int64Value: &v}}}},
		}}}).Context(t.Context()).Do()
		return err
	}
	cases := []struct {
		name    string
		faults  gcp.Faults
		code    int // googleapi error code; 0: transport error
		applied bool
	}{
		{"throttle", gcp.Faults{Throttle: 1, RetryAfter: 3 * time.Second}, 429, false},
		{"error", gcp.Faults{ErrorRate: 1}, 503, false},
		{"drop", gcp.Faults{DropResponse: 1}, 0, true},
		{"procurement only", gcp.Faults{ErrorRate: 1, Scope: "procurement"}, -1, true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.SetFaults(tc.faults)
			before := len(e.Bill())
			id := "op-" + string(rune('a'+i))
			err := report(id)
			var ge *googleapi.Error
			switch {
			case tc.code == -1:
				if err != nil {
					t.Fatalf("fault outside its scope: %v", err)
				}
			case tc.code == 0:
				if err == nil || errors.As(err, &ge) {
					t.Fatalf("want a lost response, got %v", err)
				}
			default:
				if !errors.As(err, &ge) || ge.Code != tc.code {
					t.Fatalf("want HTTP %d, got %v", tc.code, err)
				}
				if tc.code == 429 && ge.Header.Get("Retry-After") != "3" {
					t.Errorf("Retry-After %q", ge.Header.Get("Retry-After"))
				}
			}
			if applied := len(e.Bill()) > before; applied != tc.applied {
				t.Fatalf("applied = %v, want %v", applied, tc.applied)
			}
		})
	}
}

func TestKeysAndBuyerRoutes(t *testing.T) {
	e, srv := start(t, gcp.Config{})
	resp, err := http.Get(srv.URL + "/x509")
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]string
	json.NewDecoder(resp.Body).Decode(&keys)
	resp.Body.Close()
	if len(keys) != 1 {
		t.Fatalf("keys %v", keys)
	}
	for _, v := range keys {
		if !strings.HasPrefix(v, "-----BEGIN CERTIFICATE-----") {
			t.Fatalf("not a PEM certificate: %q", v)
		}
	}
	code, _, body := post(t, srv.URL+"/emulator/buyers", `{"account":"acc-9","product":"prod","plan":"basic"}`)
	var p admin.Buyer
	json.Unmarshal([]byte(body), &p)
	if code != 201 || p.ID == "" || !strings.HasPrefix(p.Cloud["usageReportingId"], "project_number:") || p.Token == "" || p.State != gcp.StateActivationRequested {
		t.Fatalf("new buyer: %d %s", code, body)
	}
	if code, _, body := post(t, srv.URL+"/emulator/buyers/"+p.ID+"/events", `{"event":"cancel"}`); code != 200 || !strings.Contains(body, gcp.StateCancelled) {
		t.Fatalf("cancel: %d %s", code, body)
	}
	if st, _, _, _ := e.Entitlement(p.ID); st != gcp.StateCancelled {
		t.Fatalf("state %s", st)
	}
	if code, _, _ := post(t, srv.URL+"/emulator/buyers/nope/events", `{"event":"cancel"}`); code != 404 {
		t.Errorf("unknown entitlement: %d", code)
	}
	if code, _, body := post(t, srv.URL+"/emulator/buyers/"+p.ID+"/events", `{"event":"deleteAccount"}`); code != 200 {
		t.Errorf("delete account: %d %s", code, body)
	}
	code, _, body = post(t, srv.URL+"/emulator/buyers", `{"product":"prod","plan":"basic","active":true}`)
	json.Unmarshal([]byte(body), &p)
	if code != 201 || p.State != gcp.StateActive || p.Cloud["approval/signup"] != "APPROVED" {
		t.Fatalf("new active buyer: %d %s", code, body)
	}
}

func TestPagingAndFilterErrors(t *testing.T) {
	e, srv := start(t, gcp.Config{})
	for range 3 {
		e.Purchase(t.Context(), "acc", "prod", "plan")
	}
	base := srv.URL + "/v1/providers/" + e.ProviderID() + "/entitlements"
	for _, q := range []string{"?pageToken=garbage", "?pageSize=-1", "?filter=%28state%3Dactive%20OR%20plan%3Dx", "?filter=color%3Dred"} {
		resp, err := http.Get(base + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d", q, resp.StatusCode)
		}
	}
	resp, err := http.Get(srv.URL + "/v1/providers/someone-else/entitlements")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("another provider: %d", resp.StatusCode)
	}
}

func TestStartServesOnLoopbackOnly(t *testing.T) {
	e, err := gcp.New(gcp.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Start(t.Context(), "0.0.0.0:0"); err == nil {
		t.Fatal("listening on every interface was allowed")
	}
	ctx, cancel := context.WithCancel(t.Context())
	base, err := e.Start(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(base + "/emulator/bill")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /emulator/bill: %d", resp.StatusCode)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := http.Get(base + "/emulator/bill"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still serving after its context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
