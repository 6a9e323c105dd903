package aws_test

import (
	"bytes"
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

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"
	"github.com/aws/smithy-go"

	"github.com/saasmarket/marketplace/emulator/admin"
	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
)

var creds = emu.Credentials{AccessKeyID: "AKIDTEST", SecretAccessKey: "secret"}

func start(t *testing.T, clock *ledgertest.Clock, f emu.Faults) (*emu.Emulator, *marketplacemetering.Client, *httptest.Server) {
	t.Helper()
	e := emu.New(emu.Config{Clock: clock.Now, Credentials: []emu.Credentials{creds}, Faults: f, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	c := marketplacemetering.New(marketplacemetering.Options{Region: "us-east-1", BaseEndpoint: awssdk.String(srv.URL),
		RetryMaxAttempts: 1,
		Credentials: awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
			return awssdk.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey}, nil
		})})
	return e, c, srv
}

func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return ""
}

func rec(cust string, dim string, q int32, ts time.Time) types.UsageRecord {
	return types.UsageRecord{CustomerIdentifier: awssdk.String(cust), Dimension: awssdk.String(dim), Quantity: awssdk.Int32(q), Timestamp: awssdk.Time(ts)}
}

func TestBatchMeterUsageRules(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)
	clock := ledgertest.NewClock(now)
	e, c, _ := start(t, clock, emu.Faults{})
	b := e.AddBuyer(emu.Buyer{ProductCode: "prod", CustomerIdentifier: "c1"})
	gone := e.AddBuyer(emu.Buyer{ProductCode: "prod", CustomerIdentifier: "c2"})
	if err := e.SetSubscribed(gone.Key(), false); err != nil {
		t.Fatal(err)
	}
	lic := e.AddBuyer(emu.Buyer{ProductCode: "prod", LicenseArn: "new"})
	h := now.Truncate(time.Hour)
	licRec := types.UsageRecord{CustomerAWSAccountId: awssdk.String(lic.CustomerAWSAccountId), LicenseArn: awssdk.String(lic.LicenseArn),
		Dimension: awssdk.String("d"), Quantity: awssdk.Int32(4), Timestamp: awssdk.Time(h)}
	both := rec(b.CustomerIdentifier, "d", 1, h)
	both.CustomerAWSAccountId = awssdk.String(b.CustomerAWSAccountId)
	badAlloc := rec(b.CustomerIdentifier, "alloc", 10, h)
	badAlloc.UsageAllocations = []types.UsageAllocation{{AllocatedUsageQuantity: awssdk.Int32(4)}, {AllocatedUsageQuantity: awssdk.Int32(5)}}
	goodAlloc := rec(b.CustomerIdentifier, "alloc", 9, h)
	goodAlloc.UsageAllocations = badAlloc.UsageAllocations
	many := make([]types.UsageRecord, 26)
	for i := range many {
		many[i] = rec(b.CustomerIdentifier, "d", 1, h)
	}

	tests := []struct {
		name    string
		product string
		recs    []types.UsageRecord
		code    string // whole-call error code
		status  []types.UsageRecordResultStatus
		sameID  int // index of an earlier case whose record id must come back
	}{
		{name: "first", product: "prod", recs: []types.UsageRecord{rec("c1", "d", 5, h.Add(10*time.Minute))}, status: []types.UsageRecordResultStatus{"Success"}},
		{name: "identical is idempotent (minutes ignored)", product: "prod", recs: []types.UsageRecord{rec("c1", "d", 5, h.Add(40*time.Minute))}, status: []types.UsageRecordResultStatus{"Success"}},
		{name: "other quantity same hour", product: "prod", recs: []types.UsageRecord{rec("c1", "d", 6, h)}, status: []types.UsageRecordResultStatus{"DuplicateRecord"}},
		{name: "unsubscribed", product: "prod", recs: []types.UsageRecord{rec("c2", "d", 6, h)}, status: []types.UsageRecordResultStatus{"CustomerNotSubscribed"}},
		{name: "license mode", recs: []types.UsageRecord{licRec}, status: []types.UsageRecordResultStatus{"Success"}},
		{name: "license mode with product code", product: "prod", recs: []types.UsageRecord{licRec}, code: "ValidationException"},
		{name: "both identifiers", product: "prod", recs: []types.UsageRecord{both}, code: "InvalidCustomerIdentifierException"},
		{name: "unknown customer", product: "prod", recs: []types.UsageRecord{rec("nobody", "d", 1, h)}, code: "InvalidCustomerIdentifierException"},
		{name: "wrong product", product: "other", recs: []types.UsageRecord{rec("c1", "d", 1, h)}, code: "InvalidProductCodeException"},
		{name: "24 hours old", product: "prod", recs: []types.UsageRecord{rec("c1", "d", 1, now.Add(-24*time.Hour))}, code: "TimestampOutOfBoundsException"},
		{name: "23 hours old", product: "prod", recs: []types.UsageRecord{rec("c1", "old", 1, now.Add(-23*time.Hour))}, status: []types.UsageRecordResultStatus{"Success"}},
		{name: "future", product: "prod", recs: []types.UsageRecord{rec("c1", "d", 1, now.Add(2*time.Hour))}, code: "TimestampOutOfBoundsException"},
		{name: "26 records", product: "prod", recs: many, code: "ValidationException"},
		{name: "allocations must sum", product: "prod", recs: []types.UsageRecord{badAlloc}, code: "InvalidUsageAllocationsException"},
		{name: "allocations that sum", product: "prod", recs: []types.UsageRecord{goodAlloc}, status: []types.UsageRecordResultStatus{"Success"}},
	}
	ids := map[string]string{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := &marketplacemetering.BatchMeterUsageInput{UsageRecords: tc.recs}
			if tc.product != "" {
				in.ProductCode = awssdk.String(tc.product)
			}
			out, err := c.BatchMeterUsage(t.Context(), in)
			if got := code(err); got != tc.code {
				t.Fatalf("error %q, want %q", got, tc.code)
			}
			if err != nil {
				return
			}
			if len(out.Results) != len(tc.status) {
				t.Fatalf("%d results, want %d", len(out.Results), len(tc.status))
			}
			for i, r := range out.Results {
				if r.Status != tc.status[i] {
					t.Errorf("result %d: %s, want %s", i, r.Status, tc.status[i])
				}
				if r.Status == "Success" && awssdk.ToString(r.MeteringRecordId) == "" {
					t.Error("Success without a MeteringRecordId")
				}
				ids[tc.name] = awssdk.ToString(r.MeteringRecordId)
			}
		})
	}
	if ids["first"] == "" || ids["first"] != ids["identical is idempotent (minutes ignored)"] {
		t.Errorf("identical record got id %q, first %q", ids["identical is idempotent (minutes ignored)"], ids["first"])
	}
	if got := e.Bill().Sum("c1", "d"); got != 5 {
		t.Errorf("bill c1/d = %d, want 5 (first write wins)", got)
	}
}

func TestMonthEndGrace(t *testing.T) {
	tests := []struct {
		now, ts time.Time
		code    string
	}{
		{time.Date(2026, 4, 1, 5, 59, 0, 0, time.UTC), time.Date(2026, 3, 30, 10, 0, 0, 0, time.UTC), ""},
		{time.Date(2026, 4, 1, 6, 0, 0, 0, time.UTC), time.Date(2026, 3, 30, 10, 0, 0, 0, time.UTC), "TimestampOutOfBoundsException"},
		{time.Date(2026, 4, 1, 5, 0, 0, 0, time.UTC), time.Date(2026, 2, 28, 10, 0, 0, 0, time.UTC), "TimestampOutOfBoundsException"},
		{time.Date(2026, 4, 2, 5, 0, 0, 0, time.UTC), time.Date(2026, 3, 31, 10, 0, 0, 0, time.UTC), "TimestampOutOfBoundsException"},
	}
	for _, tc := range tests {
		t.Run(tc.now.Format(time.RFC3339)+"/"+tc.ts.Format(time.RFC3339), func(t *testing.T) {
			e, c, _ := start(t, ledgertest.NewClock(tc.now), emu.Faults{})
			e.AddBuyer(emu.Buyer{ProductCode: "p", CustomerIdentifier: "c"})
			_, err := c.BatchMeterUsage(t.Context(), &marketplacemetering.BatchMeterUsageInput{ProductCode: awssdk.String("p"),
				UsageRecords: []types.UsageRecord{rec("c", "d", 1, tc.ts)}})
			if got := code(err); got != tc.code {
				t.Errorf("error %q, want %q", got, tc.code)
			}
		})
	}
}

func TestSignatureRequired(t *testing.T) {
	clock := ledgertest.NewClock(time.Now())
	e, _, srv := start(t, clock, emu.Faults{})
	e.AddBuyer(emu.Buyer{ProductCode: "p", CustomerIdentifier: "c"})
	for _, tc := range []struct {
		name, want string
		cr         awssdk.Credentials
	}{
		{"wrong secret", "InvalidSignatureException", awssdk.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: "guess"}},
		{"unknown access key", "UnrecognizedClientException", awssdk.Credentials{AccessKeyID: "AKIDOTHER", SecretAccessKey: creds.SecretAccessKey}},
	} {
		cr := tc.cr
		t.Run(tc.name, func(t *testing.T) {
			c := marketplacemetering.New(marketplacemetering.Options{Region: "us-east-1", BaseEndpoint: awssdk.String(srv.URL), RetryMaxAttempts: 1,
				Credentials: awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) { return cr, nil })})
			_, err := c.BatchMeterUsage(t.Context(), &marketplacemetering.BatchMeterUsageInput{ProductCode: awssdk.String("p"),
				UsageRecords: []types.UsageRecord{rec("c", "d", 1, clock.Now())}})
			if got := code(err); got != tc.want {
				t.Errorf("error %q, want %s", got, tc.want)
			}
		})
	}
	t.Run("anonymous", func(t *testing.T) {
		c := marketplacemetering.New(marketplacemetering.Options{Region: "us-east-1", BaseEndpoint: awssdk.String(srv.URL), RetryMaxAttempts: 1,
			Credentials: awssdk.AnonymousCredentials{}})
		_, err := c.ResolveCustomer(t.Context(), &marketplacemetering.ResolveCustomerInput{RegistrationToken: awssdk.String("x")})
		if got := code(err); got != "MissingAuthenticationTokenException" {
			t.Errorf("error %q, want MissingAuthenticationTokenException", got)
		}
	})
	if n := len(e.Bill().Lines); n != 0 {
		t.Errorf("refused calls billed %d lines", n)
	}
}

func TestFaults(t *testing.T) {
	clock := ledgertest.NewClock(time.Now())
	tests := []struct {
		name   string
		faults emu.Faults
		code   string
		billed bool
	}{
		{"throttle", emu.Faults{ThrottleTPS: 0.001, ThrottleBurst: 1}, "ThrottlingException", false},
		{"error", emu.Faults{ErrorRate: 1}, "InternalServiceErrorException", false},
		{"drop", emu.Faults{DropRate: 1}, "error", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, c, _ := start(t, clock, tc.faults)
			e.AddBuyer(emu.Buyer{ProductCode: "p", CustomerIdentifier: "c"})
			in := &marketplacemetering.BatchMeterUsageInput{ProductCode: awssdk.String("p"), UsageRecords: []types.UsageRecord{rec("c", "d", 1, clock.Now())}}
			if tc.name == "throttle" {
				if _, err := c.BatchMeterUsage(t.Context(), in); err != nil {
					t.Fatalf("first call within the burst: %v", err)
				}
			}
			_, err := c.BatchMeterUsage(t.Context(), in)
			if got := code(err); !strings.HasPrefix(got, tc.code) {
				t.Errorf("error %q, want %q", got, tc.code)
			}
			if billed := e.Bill().Sum("c", "d") > 0; billed != tc.billed && tc.name != "throttle" {
				t.Errorf("billed = %v, want %v", billed, tc.billed)
			}
		})
	}
	t.Run("unprocessed", func(t *testing.T) {
		e, c, _ := start(t, clock, emu.Faults{UnprocessedRate: 1})
		e.AddBuyer(emu.Buyer{ProductCode: "p", CustomerIdentifier: "c"})
		out, err := c.BatchMeterUsage(t.Context(), &marketplacemetering.BatchMeterUsageInput{ProductCode: awssdk.String("p"), UsageRecords: []types.UsageRecord{rec("c", "d", 1, clock.Now())}})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.UnprocessedRecords) != 1 || len(out.Results) != 0 || e.Bill().Sum("c", "d") != 0 {
			t.Errorf("got %d unprocessed, %d results, bill %d", len(out.UnprocessedRecords), len(out.Results), e.Bill().Sum("c", "d"))
		}
	})
}

// TestFinalHour: after License Deprovisioned (or unsubscribe-pending) AWS
// takes the buyer's usage for one more hour, then refuses it.
func TestFinalHour(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)
	clock := ledgertest.NewClock(now)
	e, c, _ := start(t, clock, emu.Faults{})
	b := e.AddBuyer(emu.Buyer{ProductCode: "p", LicenseArn: "new"})
	if _, err := e.EventBridgeEvent("License Deprovisioned - Manufacturer", b.Key()); err != nil {
		t.Fatal(err)
	}
	send := func(dim string) types.UsageRecordResultStatus {
		out, err := c.BatchMeterUsage(t.Context(), &marketplacemetering.BatchMeterUsageInput{UsageRecords: []types.UsageRecord{{
			CustomerAWSAccountId: awssdk.String(b.CustomerAWSAccountId), LicenseArn: awssdk.String(b.LicenseArn),
			Dimension: awssdk.String(dim), Quantity: awssdk.Int32(1), Timestamp: awssdk.Time(now)}}})
		if err != nil {
			t.Fatal(err)
		}
		return out.Results[0].Status
	}
	clock.Advance(59 * time.Minute)
	if got := send("a"); got != "Success" {
		t.Errorf("within the final hour: %s", got)
	}
	clock.Advance(time.Minute)
	if got := send("b"); got != "CustomerNotSubscribed" {
		t.Errorf("after the final hour: %s", got)
	}
}

// TestAdminEndpoints: the shared admin routes (package emulator/admin)
// create a buyer whose token the official client resolves, drive its
// lifecycle, show the bill and set faults.
func TestAdminEndpoints(t *testing.T) {
	clock := ledgertest.NewClock(time.Now())
	_, c, srv := start(t, clock, emu.Faults{})
	var nb admin.Buyer
	if st := call(t, "POST", srv.URL+"/emulator/buyers", `{"product":"prod-demo"}`, &nb); st != http.StatusCreated || nb.Token == "" || nb.ID == "" || nb.State != "subscribed" {
		t.Fatalf("new buyer: %d %+v", st, nb)
	}
	out, err := c.ResolveCustomer(t.Context(), &marketplacemetering.ResolveCustomerInput{RegistrationToken: awssdk.String(nb.Token)})
	if err != nil || awssdk.ToString(out.CustomerIdentifier) != nb.ID {
		t.Fatalf("resolve the minted token: %v", err)
	}
	if _, err := c.BatchMeterUsage(t.Context(), &marketplacemetering.BatchMeterUsageInput{ProductCode: awssdk.String("prod-demo"),
		UsageRecords: []types.UsageRecord{rec(nb.ID, "d", 3, clock.Now())}}); err != nil {
		t.Fatal(err)
	}
	var bill admin.Bill
	if st := call(t, "GET", srv.URL+"/emulator/bill", "", &bill); st != 200 || bill.Totals[nb.ID]["d"] != 3 || len(bill.Lines) != 1 || bill.Lines[0].ID == "" {
		t.Errorf("bill %d %+v", st, bill)
	}
	var ev admin.EventResult
	if st := call(t, "POST", srv.URL+"/emulator/buyers/"+nb.ID+"/events", `{"event":"unsubscribe-pending"}`, &ev); st != 200 || ev.Buyer.State != "unsubscribe-pending" || len(ev.Deliveries) != 0 {
		t.Errorf("event without a receiver: %d %+v", st, ev)
	}
	var f admin.Faults
	if st := call(t, "PUT", srv.URL+"/emulator/faults", `{"errorRate":1}`, &f); st != 200 || f.ErrorRate != 1 || f.Scope != admin.ScopeMetering {
		t.Errorf("set faults: %d %+v", st, f)
	}
	if _, err := c.BatchMeterUsage(t.Context(), &marketplacemetering.BatchMeterUsageInput{ProductCode: awssdk.String("prod-demo"),
		UsageRecords: []types.UsageRecord{rec(nb.ID, "d", 3, clock.Now())}}); code(err) != "InternalServiceErrorException" {
		t.Errorf("with errorRate 1: %v", err)
	}
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/emulator/buyers", `{}`},
		{"POST", "/emulator/buyers", `{"ProductCode":"prod-demo"}`},
		{"POST", "/emulator/buyers/" + nb.ID + "/events", `{"event":"no-such-event"}`},
		{"PUT", "/emulator/faults", `{"errorRate":2}`},
		{"PUT", "/emulator/faults", `{"scope":"everything"}`},
	} {
		var e struct{ Error string }
		if st := call(t, tc.method, srv.URL+tc.path, tc.body, &e); st != http.StatusBadRequest || e.Error == "" {
			t.Errorf("%s %s %s: %d %q, want 400 with an error", tc.method, tc.path, tc.body, st, e.Error)
		}
	}
	if st := call(t, "POST", srv.URL+"/emulator/buyers/nobody/events", `{"event":"unsubscribe-success"}`, nil); st != http.StatusNotFound {
		t.Errorf("event for an unknown buyer: %d", st)
	}
}

// call makes a plain HTTP call and decodes its JSON answer into out.
func call(t *testing.T, method, url, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %d, %v", method, url, resp.StatusCode, err)
		}
	}
	return resp.StatusCode
}

// tamper changes a signed request's body on its way, as an attacker
// replaying a captured signature would.
type tamper struct{}

func (tamper) RoundTrip(r *http.Request) (*http.Response, error) {
	body, _ := io.ReadAll(r.Body)
	body = bytes.Replace(body, []byte(`"Quantity":1`), []byte(`"Quantity":9`), 1)
	r2 := r.Clone(r.Context())
	r2.Body = io.NopCloser(bytes.NewReader(body))
	r2.ContentLength = int64(len(body))
	return http.DefaultTransport.RoundTrip(r2)
}

func TestSignatureCoversBody(t *testing.T) {
	clock := ledgertest.NewClock(time.Now())
	e, _, srv := start(t, clock, emu.Faults{})
	e.AddBuyer(emu.Buyer{ProductCode: "p", CustomerIdentifier: "c"})
	c := marketplacemetering.New(marketplacemetering.Options{Region: "us-east-1", BaseEndpoint: awssdk.String(srv.URL), RetryMaxAttempts: 1,
		HTTPClient: &http.Client{Transport: tamper{}},
		Credentials: awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
			return awssdk.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey}, nil
		})})
	_, err := c.BatchMeterUsage(t.Context(), &marketplacemetering.BatchMeterUsageInput{ProductCode: awssdk.String("p"),
		UsageRecords: []types.UsageRecord{rec("c", "d", 1, clock.Now())}})
	if got := code(err); got != "InvalidSignatureException" {
		t.Errorf("tampered body: %q, want InvalidSignatureException", got)
	}
	if n := len(e.Bill().Lines); n != 0 {
		t.Errorf("tampered request billed %d lines", n)
	}
}
