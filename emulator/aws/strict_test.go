package aws_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
)

// rawEmulator serves an emulator without credentials, for raw JSON 1.1 calls.
func rawEmulator(t *testing.T, now time.Time) (*emu.Emulator, string) {
	t.Helper()
	e := emu.New(emu.Config{Clock: ledgertest.NewClock(now).Now, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return e, srv.URL
}

// rawCall posts body to target and returns the HTTP status and the error
// code ("" on success) with the decoded answer.
func rawCall(t *testing.T, url, target, body string) (int, string, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", target)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	typ, _ := out["__type"].(string)
	_, code, _ := strings.Cut(typ, "#")
	return resp.StatusCode, code, out
}

// GetEntitlementsRequest.Filter (marketplace-entitlement.service-2.json):
// "CustomerIdentifier and CustomerAWSAccountId are mutually exclusive
// parameters. You must use one or the other, but not both in the same
// request."
func TestGetEntitlementsFilterExclusive(t *testing.T) {
	e, url := rawEmulator(t, time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	b := e.AddBuyer(emu.Buyer{ProductCode: "prod", CustomerIdentifier: "c1"})
	tests := []struct {
		name, filter, want string
	}{
		{"customer", `{"CUSTOMER_IDENTIFIER":["c1"]}`, ""},
		{"account", `{"CUSTOMER_AWS_ACCOUNT_ID":["` + b.CustomerAWSAccountId + `"]}`, ""},
		{"account and license", `{"CUSTOMER_AWS_ACCOUNT_ID":["1"],"LICENSE_ARN":["x"]}`, ""},
		{"both identifiers", `{"CUSTOMER_IDENTIFIER":["c1"],"CUSTOMER_AWS_ACCOUNT_ID":["` + b.CustomerAWSAccountId + `"]}`, "InvalidParameterException"},
		{"both with dimension", `{"CUSTOMER_IDENTIFIER":["c1"],"CUSTOMER_AWS_ACCOUNT_ID":["1"],"DIMENSION":["d"]}`, "InvalidParameterException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code, _ := rawCall(t, url, "AWSMPEntitlementService.GetEntitlements", `{"ProductCode":"prod","Filter":`+tt.filter+`}`)
			if code != tt.want || (tt.want != "" && status != http.StatusBadRequest) {
				t.Fatalf("got %d %q, want %q", status, code, tt.want)
			}
		})
	}
}

// MeterUsageRequest (meteringmarketplace.service-2.json): UsageDimension
// is 1..255 characters, ClientToken 1..64; "If you retry the operation
// with the same ClientToken, but with different parameters, the retry
// fails with an IdempotencyConflictException error": the refused call
// records nothing.
func TestMeterUsageClientTokenAndDimension(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)
	ts := `,"Timestamp":` + strconvUnix(now.Add(-time.Hour))
	ts2 := `,"Timestamp":` + strconvUnix(now)
	tests := []struct {
		name  string
		body  string
		want  string
		lines int // bill lines after the call
	}{
		{"first", `{"ProductCode":"p","UsageDimension":"d","UsageQuantity":1,"ClientToken":"t1"` + ts + `}`, "", 1},
		{"same token, same call", `{"ProductCode":"p","UsageDimension":"d","UsageQuantity":1,"ClientToken":"t1"` + ts + `}`, "", 1},
		{"same token, other hour", `{"ProductCode":"p","UsageDimension":"d","UsageQuantity":1,"ClientToken":"t1"` + ts2 + `}`, "IdempotencyConflictException", 1},
		{"same token, other dimension", `{"ProductCode":"p","UsageDimension":"e","UsageQuantity":1,"ClientToken":"t1"` + ts + `}`, "IdempotencyConflictException", 1},
		{"same token, other quantity", `{"ProductCode":"p","UsageDimension":"d","UsageQuantity":2,"ClientToken":"t1"` + ts + `}`, "IdempotencyConflictException", 1},
		{"other token, other quantity, same hour", `{"ProductCode":"p","UsageDimension":"d","UsageQuantity":2,"ClientToken":"t2"` + ts + `}`, "DuplicateRequestException", 1},
		{"no token, other quantity, same hour", `{"ProductCode":"p","UsageDimension":"d","UsageQuantity":2` + ts + `}`, "DuplicateRequestException", 1},
		{"same token, same call, again", `{"ProductCode":"p","UsageDimension":"d","UsageQuantity":1,"ClientToken":"t1"` + ts + `}`, "", 1},
		{"empty token", `{"ProductCode":"p","UsageDimension":"d","UsageQuantity":1,"ClientToken":""` + ts2 + `}`, "ValidationException", 1},
		{"65-character token", `{"ProductCode":"p","UsageDimension":"d","UsageQuantity":1,"ClientToken":"` + strings.Repeat("t", 65) + `"` + ts2 + `}`, "ValidationException", 1},
		{"64-character token", `{"ProductCode":"p","UsageDimension":"d","UsageQuantity":1,"ClientToken":"` + strings.Repeat("t", 64) + `"` + ts2 + `}`, "", 2},
		{"256-character dimension", `{"ProductCode":"p","UsageDimension":"` + strings.Repeat("d", 256) + `","UsageQuantity":1` + ts2 + `}`, "InvalidUsageDimensionException", 2},
		{"255-character dimension", `{"ProductCode":"p","UsageDimension":"` + strings.Repeat("d", 255) + `","UsageQuantity":1` + ts2 + `}`, "", 3},
	}
	e, url := rawEmulator(t, now)
	for _, tt := range tests {
		status, code, _ := rawCall(t, url, "AWSMPMeteringService.MeterUsage", tt.body)
		if code != tt.want {
			t.Fatalf("%s: got %d %q, want %q", tt.name, status, code, tt.want)
		}
		if n := len(e.Bill().Lines); n != tt.lines {
			t.Fatalf("%s: %d bill lines, want %d", tt.name, n, tt.lines)
		}
	}
}

func strconvUnix(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

// Tags and allocations (meteringmarketplace.service-2.json): TagKey and
// TagValue match ^[a-zA-Z0-9+ -=._:\/@]+$, TagList holds 1..5 tags, and
// MeterUsageRequest.UsageAllocations: "each UsageAllocation must have a
// unique set of tags".
func TestUsageAllocationTags(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)
	tests := []struct {
		name, target, allocs, want string
	}{
		{"meter, plain tags", "MeterUsage", `[{"AllocatedUsageQuantity":2,"Tags":[{"Key":"team","Value":"a b/c@d:e=f+g-h.i_j"}]}]`, ""},
		{"meter, tagged and untagged buckets", "MeterUsage", `[{"AllocatedUsageQuantity":1,"Tags":[{"Key":"k","Value":"v"}]},{"AllocatedUsageQuantity":1}]`, ""},
		{"meter, key with ?", "MeterUsage", `[{"AllocatedUsageQuantity":2,"Tags":[{"Key":"why?","Value":"v"}]}]`, "InvalidTagException"},
		{"meter, value with a brace", "MeterUsage", `[{"AllocatedUsageQuantity":2,"Tags":[{"Key":"k","Value":"{v}"}]}]`, "InvalidTagException"},
		{"meter, non-ASCII value", "MeterUsage", `[{"AllocatedUsageQuantity":2,"Tags":[{"Key":"k","Value":"café"}]}]`, "InvalidTagException"},
		{"meter, empty tag list", "MeterUsage", `[{"AllocatedUsageQuantity":2,"Tags":[]}]`, "InvalidTagException"},
		{"meter, two untagged buckets", "MeterUsage", `[{"AllocatedUsageQuantity":1},{"AllocatedUsageQuantity":1}]`, "InvalidUsageAllocationsException"},
		{"meter, same tags twice", "MeterUsage", `[{"AllocatedUsageQuantity":1,"Tags":[{"Key":"a","Value":"1"},{"Key":"b","Value":"2"}]},{"AllocatedUsageQuantity":1,"Tags":[{"Key":"b","Value":"2"},{"Key":"a","Value":"1"}]}]`, "InvalidUsageAllocationsException"},
		{"batch, plain tags", "BatchMeterUsage", `[{"AllocatedUsageQuantity":2,"Tags":[{"Key":"team","Value":"a"}]}]`, ""},
		{"batch, key with a backslash", "BatchMeterUsage", `[{"AllocatedUsageQuantity":2,"Tags":[{"Key":"a\\b","Value":"v"}]}]`, "InvalidTagException"},
		{"batch, empty tag list", "BatchMeterUsage", `[{"AllocatedUsageQuantity":2,"Tags":[]}]`, "InvalidTagException"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, url := rawEmulator(t, now)
			e.AddBuyer(emu.Buyer{ProductCode: "p", CustomerIdentifier: "c"})
			ts := strconvUnix(now.Add(-time.Duration(i) * time.Minute))
			body := `{"ProductCode":"p","UsageDimension":"d","UsageQuantity":2,"Timestamp":` + ts + `,"UsageAllocations":` + tt.allocs + `}`
			if tt.target == "BatchMeterUsage" {
				body = `{"ProductCode":"p","UsageRecords":[{"CustomerIdentifier":"c","Dimension":"d","Quantity":2,"Timestamp":` + ts + `,"UsageAllocations":` + tt.allocs + `}]}`
			}
			status, code, out := rawCall(t, url, "AWSMPMeteringService."+tt.target, body)
			if code != tt.want {
				t.Fatalf("got %d %q (%v), want %q", status, code, out["message"], tt.want)
			}
		})
	}
}

// BatchMeterUsage (meteringmarketplace.service-2.json): "Each
// BatchMeterUsage request is for only one product. If you want to meter
// usage for multiple products, you must make multiple BatchMeterUsage
// calls." License records carry no ProductCode; their licenses must be of
// one product, and nothing of a refused batch is billed.
func TestBatchMeterUsageOneProduct(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)
	e, url := rawEmulator(t, now)
	a1 := e.AddBuyer(emu.Buyer{ProductCode: "prod-a", LicenseArn: "new"})
	a2 := e.AddBuyer(emu.Buyer{ProductCode: "prod-a", LicenseArn: "new"})
	b1 := e.AddBuyer(emu.Buyer{ProductCode: "prod-b", LicenseArn: "new"})
	lic := func(b emu.Buyer) string {
		return `{"CustomerAWSAccountId":"` + b.CustomerAWSAccountId + `","LicenseArn":"` + b.LicenseArn + `","Dimension":"d","Quantity":1,"Timestamp":` + strconvUnix(now) + `}`
	}
	tests := []struct {
		name, records, want string
		lines               int
	}{
		{"two licenses of one product", lic(a1) + "," + lic(a2), "", 2},
		{"licenses of two products", lic(a1) + "," + lic(b1), "ValidationException", 2},
		{"one license of the other product", lic(b1), "", 3},
	}
	for _, tt := range tests {
		status, code, out := rawCall(t, url, "AWSMPMeteringService.BatchMeterUsage", `{"UsageRecords":[`+tt.records+`]}`)
		if code != tt.want {
			t.Fatalf("%s: got %d %q (%v), want %q", tt.name, status, code, out["message"], tt.want)
		}
		if n := len(e.Bill().Lines); n != tt.lines {
			t.Fatalf("%s: %d bill lines, want %d", tt.name, n, tt.lines)
		}
	}
}

// Identifier shapes (meteringmarketplace.service-2.json, marketplace-
// entitlement.service-2.json): ProductCode at most 255 characters of
// ^[-a-zA-Z0-9/=:_.@]*$ (1..255 for GetEntitlements), CustomerIdentifier
// at most 255, CustomerAWSAccountId ^[0-9]+$ (1..255), LicenseArn the ARN
// pattern, Nonce at most 255. The emulator took any product code when it
// has no catalogue.
func TestIdentifierShapes(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)
	e, url := rawEmulator(t, now)
	lic := e.AddBuyer(emu.Buyer{ProductCode: "prod", LicenseArn: "new"})
	ts := strconvUnix(now)
	long := strings.Repeat("p", 256)
	tests := []struct {
		name, target, body, want string
	}{
		{"meter, good product", "MeterUsage", `{"ProductCode":"prod-1/a=b:c_d.e@f","UsageDimension":"d","Timestamp":` + ts + `}`, ""},
		{"meter, product with a space", "MeterUsage", `{"ProductCode":"my prod","UsageDimension":"d","Timestamp":` + ts + `}`, "ValidationException"},
		{"meter, 256-character product", "MeterUsage", `{"ProductCode":"` + long + `","UsageDimension":"d","Timestamp":` + ts + `}`, "ValidationException"},
		{"register, product with a #", "RegisterUsage", `{"ProductCode":"prod#1","PublicKeyVersion":1}`, "ValidationException"},
		{"register, 256-character nonce", "RegisterUsage", `{"ProductCode":"prod","PublicKeyVersion":1,"Nonce":"` + long + `"}`, "ValidationException"},
		{"register, good", "RegisterUsage", `{"ProductCode":"prod","PublicKeyVersion":1,"Nonce":"n"}`, ""},
		{"batch, product with a *", "BatchMeterUsage", `{"ProductCode":"prod*","UsageRecords":[]}`, "ValidationException"},
		{"batch, account id with letters", "BatchMeterUsage", `{"UsageRecords":[{"CustomerAWSAccountId":"12ab","LicenseArn":"` + lic.LicenseArn + `","Dimension":"d","Timestamp":` + ts + `}]}`, "ValidationException"},
		{"batch, license that is no ARN", "BatchMeterUsage", `{"UsageRecords":[{"CustomerAWSAccountId":"` + lic.CustomerAWSAccountId + `","LicenseArn":"license-1","Dimension":"d","Timestamp":` + ts + `}]}`, "ValidationException"},
		{"batch, 256-character customer", "BatchMeterUsage", `{"ProductCode":"prod","UsageRecords":[{"CustomerIdentifier":"` + long + `","Dimension":"d","Timestamp":` + ts + `}]}`, "ValidationException"},
		{"batch, good license", "BatchMeterUsage", `{"UsageRecords":[{"CustomerAWSAccountId":"` + lic.CustomerAWSAccountId + `","LicenseArn":"` + lic.LicenseArn + `","Dimension":"d","Timestamp":` + ts + `}]}`, ""},
		{"entitlements, 256-character product", "GetEntitlements", `{"ProductCode":"` + long + `"}`, "InvalidParameterException"},
	}
	for _, tt := range tests {
		target := "AWSMPMeteringService." + tt.target
		if tt.target == "GetEntitlements" {
			target = "AWSMPEntitlementService.GetEntitlements"
		}
		status, code, out := rawCall(t, url, target, tt.body)
		if code != tt.want {
			t.Errorf("%s: got %d %q (%v), want %q", tt.name, status, code, out["message"], tt.want)
		}
	}
}

// BatchMeterUsage (meteringmarketplace.service-2.json): "each request
// must be less than 1 MB in size": a body of exactly 1 MiB is refused.
func TestRequestUnderOneMB(t *testing.T) {
	_, url := rawEmulator(t, time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	body := `{"UsageRecords":[]}`
	tests := []struct {
		name string
		size int
		want int
	}{
		{"1 MiB less a byte", 1<<20 - 1, http.StatusOK},
		{"1 MiB", 1 << 20, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		padded := body + strings.Repeat(" ", tt.size-len(body))
		if status, code, _ := rawCall(t, url, "AWSMPMeteringService.BatchMeterUsage", padded); status != tt.want {
			t.Errorf("%s: %d %q, want %d", tt.name, status, code, tt.want)
		}
	}
}

// GetEntitlementsRequest.NextToken is a NonEmptyString (pattern \S+,
// marketplace-entitlement.service-2.json): an empty token is refused, not
// taken as the first page.
func TestGetEntitlementsEmptyNextToken(t *testing.T) {
	_, url := rawEmulator(t, time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	tests := []struct{ name, token, want string }{
		{"no token", ``, ""},
		{"empty token", `,"NextToken":""`, "InvalidParameterException"},
		{"blank token", `,"NextToken":"  "`, "InvalidParameterException"},
	}
	for _, tt := range tests {
		if status, code, _ := rawCall(t, url, "AWSMPEntitlementService.GetEntitlements", `{"ProductCode":"prod"`+tt.token+`}`); code != tt.want {
			t.Errorf("%s: %d %q, want %q", tt.name, status, code, tt.want)
		}
	}
}

// SNS subscription actions (WIRE.md, AWS Marketplace, SNS): subscribe-fail
// means the buyer's subscription failed, so its usage is
// CustomerNotSubscribed (the emulator kept metering it as subscribed).
func TestSubscriptionActionsGateMetering(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)
	tests := []struct {
		actions []string
		want    string
	}{
		{nil, "Success"},
		{[]string{"subscribe-success"}, "Success"},
		{[]string{"subscribe-fail"}, "CustomerNotSubscribed"},
		{[]string{"subscribe-fail", "subscribe-success"}, "Success"},
		{[]string{"unsubscribe-pending"}, "Success"}, // the final hour
		{[]string{"unsubscribe-success"}, "CustomerNotSubscribed"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append([]string{"new"}, tt.actions...), ","), func(t *testing.T) {
			e, url := rawEmulator(t, now)
			b := e.AddBuyer(emu.Buyer{ProductCode: "p", CustomerIdentifier: "c"})
			for _, a := range tt.actions {
				if _, err := e.SNSNotification("arn:aws:sns:us-east-1:287250355862:aws-mp-subscription-notification-p", a, b.Key(), 2, "https://sns.us-east-1.amazonaws.com/x.pem"); err != nil {
					t.Fatal(err)
				}
			}
			_, code, out := rawCall(t, url, "AWSMPMeteringService.BatchMeterUsage",
				`{"ProductCode":"p","UsageRecords":[{"CustomerIdentifier":"c","Dimension":"d","Quantity":1,"Timestamp":`+strconvUnix(now)+`}]}`)
			res, _ := out["Results"].([]any)
			if code != "" || len(res) != 1 || res[0].(map[string]any)["Status"] != tt.want {
				t.Fatalf("%q %v, want %s", code, out, tt.want)
			}
		})
	}
}

// MeterUsage (meteringmarketplace.service-2.json): "If you submit records
// more than six hours after events occur, the records won't be accepted";
// the month-end grace to 06:00 UTC on the 1st is documented for
// BatchMeterUsage only (UsageRecord.Timestamp), not for MeterUsage.
func TestMeterUsageHasNoMonthEndGrace(t *testing.T) {
	tests := []struct {
		name     string
		now, ts  time.Time
		target   string
		wantCode string
	}{
		{"meter, 5 hours old", time.Date(2026, 4, 1, 3, 0, 0, 0, time.UTC), time.Date(2026, 3, 31, 22, 30, 0, 0, time.UTC), "MeterUsage", ""},
		{"meter, 20 hours old at 03:00 on the 1st", time.Date(2026, 4, 1, 3, 0, 0, 0, time.UTC), time.Date(2026, 3, 31, 7, 0, 0, 0, time.UTC), "MeterUsage", "TimestampOutOfBoundsException"},
		{"meter, 10 days old at 03:00 on the 1st", time.Date(2026, 4, 1, 3, 0, 0, 0, time.UTC), time.Date(2026, 3, 22, 3, 0, 0, 0, time.UTC), "MeterUsage", "TimestampOutOfBoundsException"},
		{"batch, 2 days old at 03:00 on the 1st", time.Date(2026, 4, 1, 3, 0, 0, 0, time.UTC), time.Date(2026, 3, 30, 3, 0, 0, 0, time.UTC), "BatchMeterUsage", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, url := rawEmulator(t, tt.now)
			e.AddBuyer(emu.Buyer{ProductCode: "p", CustomerIdentifier: "c"})
			body := `{"ProductCode":"p","UsageDimension":"d","UsageQuantity":1,"Timestamp":` + strconvUnix(tt.ts) + `}`
			if tt.target == "BatchMeterUsage" {
				body = `{"ProductCode":"p","UsageRecords":[{"CustomerIdentifier":"c","Dimension":"d","Quantity":1,"Timestamp":` + strconvUnix(tt.ts) + `}]}`
			}
			if status, code, _ := rawCall(t, url, "AWSMPMeteringService."+tt.target, body); code != tt.wantCode {
				t.Fatalf("%d %q, want %q", status, code, tt.wantCode)
			}
		})
	}
}
