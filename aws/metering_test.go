package aws_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"
	"github.com/golang-jwt/jwt/v5"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger"
)

func TestResolveCustomerErrors(t *testing.T) {
	e := newEnv(t, emu.Config{})
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"})
	good, _ := e.emu.MintToken(b.Key(), time.Hour)
	expired, _ := e.emu.MintToken(b.Key(), time.Minute)
	e.clock.Advance(2 * time.Minute)

	out, err := e.meter.ResolveCustomer(t.Context(), good)
	if err != nil || out.CustomerIdentifier != b.CustomerIdentifier || out.ProductCode != "p" || out.CustomerAWSAccountId != b.CustomerAWSAccountId {
		t.Fatalf("ResolveCustomer = %+v, %v", out, err)
	}
	_, err = e.meter.ResolveCustomer(t.Context(), expired)
	var exp *types.ExpiredTokenException
	if !errors.Is(err, aws.ErrExpiredToken) || !errors.As(err, &exp) {
		t.Errorf("expired token: %v", err)
	}
	_, err = e.meter.ResolveCustomer(t.Context(), "forged")
	var inv *types.InvalidTokenException
	if !errors.Is(err, aws.ErrInvalidToken) || !errors.As(err, &inv) || errors.Is(err, aws.ErrExpiredToken) {
		t.Errorf("invalid token: %v", err)
	}
}

func TestValidation(t *testing.T) {
	e := newEnv(t, emu.Config{})
	now := e.clock.Now()
	ok := aws.UsageRecord{CustomerIdentifier: "c", Dimension: "d", Quantity: 1, Timestamp: now}
	with := func(f func(r *aws.UsageRecord)) []aws.UsageRecord { r := ok; f(&r); return []aws.UsageRecord{r} }
	tests := []struct {
		name  string
		in    aws.BatchMeterUsageInput
		field string
	}{
		{"no records", aws.BatchMeterUsageInput{ProductCode: "p"}, "UsageRecords"},
		{"26 records", aws.BatchMeterUsageInput{ProductCode: "p", UsageRecords: make([]aws.UsageRecord, 26)}, "UsageRecords"},
		{"no timestamp", aws.BatchMeterUsageInput{ProductCode: "p", UsageRecords: with(func(r *aws.UsageRecord) { r.Timestamp = time.Time{} })}, "Timestamp"},
		{"no dimension", aws.BatchMeterUsageInput{ProductCode: "p", UsageRecords: with(func(r *aws.UsageRecord) { r.Dimension = "" })}, "Dimension"},
		{"long dimension", aws.BatchMeterUsageInput{ProductCode: "p", UsageRecords: with(func(r *aws.UsageRecord) { r.Dimension = strings.Repeat("x", 256) })}, "Dimension"},
		{"negative", aws.BatchMeterUsageInput{ProductCode: "p", UsageRecords: with(func(r *aws.UsageRecord) { r.Quantity = -1 })}, "Quantity"},
		{"above int32", aws.BatchMeterUsageInput{ProductCode: "p", UsageRecords: with(func(r *aws.UsageRecord) { r.Quantity = 1 << 31 })}, "Quantity"},
		{"both identifiers", aws.BatchMeterUsageInput{ProductCode: "p", UsageRecords: with(func(r *aws.UsageRecord) { r.CustomerAWSAccountId = "123" })}, "CustomerIdentifier"},
		{"no identifier", aws.BatchMeterUsageInput{ProductCode: "p", UsageRecords: with(func(r *aws.UsageRecord) { r.CustomerIdentifier = "" })}, "CustomerIdentifier"},
		{"legacy without product", aws.BatchMeterUsageInput{UsageRecords: with(func(r *aws.UsageRecord) {})}, "CustomerIdentifier"},
		{"license with product", aws.BatchMeterUsageInput{ProductCode: "p", UsageRecords: with(func(r *aws.UsageRecord) {
			r.CustomerIdentifier, r.CustomerAWSAccountId, r.LicenseArn = "", "123", "arn:aws:license-manager::1:license:l-1"
		})}, "CustomerAWSAccountId"},
		{"license without ARN", aws.BatchMeterUsageInput{UsageRecords: with(func(r *aws.UsageRecord) { r.CustomerIdentifier, r.CustomerAWSAccountId = "", "123" })}, "CustomerAWSAccountId"},
		{"allocations", aws.BatchMeterUsageInput{ProductCode: "p", UsageRecords: with(func(r *aws.UsageRecord) {
			r.UsageAllocations = []aws.UsageAllocation{{AllocatedUsageQuantity: 2}}
		})}, "UsageAllocations"},
		{"1 MB", aws.BatchMeterUsageInput{ProductCode: "p", UsageRecords: with(func(r *aws.UsageRecord) {
			r.Quantity = 2500
			for i := range 2500 {
				r.UsageAllocations = append(r.UsageAllocations, aws.UsageAllocation{AllocatedUsageQuantity: 1,
					Tags: map[string]string{"k": strings.Repeat("v", 200), "k2": strings.Repeat("w", 200), "n": fmt.Sprint(i)}})
			}
		})}, "UsageRecords"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.meter.BatchMeterUsage(t.Context(), &tc.in)
			var ve *aws.ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, aws.ErrInvalidInput) || ve.Field != tc.field {
				t.Errorf("got %v, want a ValidationError on %s", err, tc.field)
			}
		})
	}
	if st := e.emu.Stats(); st.Calls != 0 {
		t.Errorf("invalid inputs reached AWS: %d calls", st.Calls)
	}
}

func TestMeterUsageAndRegisterUsage(t *testing.T) {
	e := newEnv(t, emu.Config{})
	in := &aws.MeterUsageInput{ProductCode: "ami-prod", Dimension: "vcpu", Quantity: 3, Timestamp: e.clock.Now(), ClientToken: "tok-1"}
	a, err := e.meter.MeterUsage(t.Context(), in)
	if err != nil || a.MeteringRecordID == "" {
		t.Fatalf("MeterUsage: %+v %v", a, err)
	}
	b, err := e.meter.MeterUsage(t.Context(), in)
	if err != nil || b.MeteringRecordID != a.MeteringRecordID {
		t.Errorf("retry: %+v %v, want the same record id %q", b, err, a.MeteringRecordID)
	}
	in2 := *in
	in2.Quantity = 4
	if _, err := e.meter.MeterUsage(t.Context(), &in2); !errors.Is(err, aws.ErrIdempotencyConflict) {
		t.Errorf("same client token, other quantity: %v, want IdempotencyConflictException", err)
	}
	in2.ClientToken = "tok-2"
	if _, err := e.meter.MeterUsage(t.Context(), &in2); !errors.Is(err, aws.ErrDuplicateRequest) {
		t.Errorf("other quantity, same hour: %v, want DuplicateRequestException", err)
	}
	if _, err := e.meter.MeterUsage(t.Context(), &aws.MeterUsageInput{ProductCode: "p", Dimension: "d", Timestamp: e.clock.Now().Add(-25 * time.Hour)}); !errors.Is(err, aws.ErrTimestampOutOfBounds) {
		t.Errorf("old record: %v", err)
	}

	out, err := e.meter.RegisterUsage(t.Context(), &aws.RegisterUsageInput{ProductCode: "container-prod", PublicKeyVersion: 1, Nonce: "n-1"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(e.srv.URL + "/emulator/keys")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	kf, err := keyfunc.NewJWKSetJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Parse(out.Signature, kf.Keyfunc, jwt.WithValidMethods([]string{"ES256"}))
	if err != nil {
		t.Fatalf("RegisterUsage signature does not verify with the published key: %v", err)
	}
	if c := tok.Claims.(jwt.MapClaims); c["productCode"] != "container-prod" || c["nonce"] != "n-1" {
		t.Errorf("claims %v", c)
	}
	if _, err := e.meter.RegisterUsage(t.Context(), &aws.RegisterUsageInput{ProductCode: "x", PublicKeyVersion: 2}); !errors.Is(err, aws.ErrInvalidPublicKeyVersion) {
		t.Errorf("key version 2: %v", err)
	}
}

// TestReporterIsolatesBadRecords: a whole-call exception caused by one
// record (too old; an unknown customer) is bisected, so every other record
// of the call is billed; CustomerNotSubscribed is rejected and a
// DuplicateRecord is a conflict.
func TestReporterIsolatesBadRecords(t *testing.T) {
	var e *env
	// AWS's clock runs two hours ahead of ours, so it refuses the 09:00
	// record that the ledger still thinks is in time.
	e = newEnv(t, emu.Config{Clock: func() time.Time { return e.clock.Now().Add(2 * time.Hour) }})
	var customers []string
	for i := range 10 {
		customers = append(customers, e.emu.AddBuyer(emu.Buyer{ProductCode: "p", CustomerIdentifier: fmt.Sprintf("c%d", i)}).Key())
	}
	if err := e.emu.SetSubscribed("c3", false); err != nil {
		t.Fatal(err)
	}
	var recs []ledger.Record
	for _, c := range append(customers, "ghost") {
		recs = append(recs, ledger.Record{Provider: marketplace.AWS, Customer: c, Dimension: "requests", Quantity: 5, Time: onDay(11, 0)})
	}
	// An old record, still accepted by the ledger but refused by AWS at the
	// time of sending (the reporter runs late).
	recs = append(recs, ledger.Record{Provider: marketplace.AWS, Customer: "c5", Dimension: "requests", Quantity: 9, Time: onDay(9, 0)})
	if _, err := e.ledger.Ingest(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ledger.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	// c7 already holds another quantity for 11:00: DuplicateRecord.
	if _, err := e.meter.BatchMeterUsage(t.Context(), &aws.BatchMeterUsageInput{ProductCode: "p",
		UsageRecords: []aws.UsageRecord{{CustomerIdentifier: "c7", Dimension: "requests", Quantity: 1, Timestamp: onDay(11, 0)}}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(onDay(9, 0).Add(23 * time.Hour))
	target := mustReporter(t, aws.ReporterConfig{Client: e.meter, ProductCode: "p", Limits: ledger.Limits{Rate: 1000}, Logger: discard})
	rep := ledger.NewReporter(e.ledger, target, fastReporting)
	if _, err := rep.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := e.emu.Stats(); st.OutOfBounds == 0 || st.Calls < 4 {
		t.Errorf("expected AWS to refuse calls for the old record and the bisection to follow: %+v", st)
	}
	want := map[string]ledger.State{"c3": ledger.StateRejected, "ghost": ledger.StateRejected, "c7": ledger.StateConflict}
	bs, err := e.ledger.Buckets(t.Context(), ledger.BucketFilter{Provider: marketplace.AWS})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		w, ok := want[b.Customer]
		switch {
		case b.Hour.Equal(onDay(9, 0)):
			w = ledger.StateCarried // refused as too old: the deadline policy carries it
		case !ok:
			w = ledger.StateReported
		}
		if b.State != w {
			t.Errorf("%s@%s: %s (%s), want %s", b.Customer, b.Hour.Format("15:04"), b.State, b.Reason, w)
		}
	}
	for _, c := range customers {
		if c == "c3" || c == "c7" {
			continue
		}
		if got := e.emu.Bill().Sum(c, "requests"); got != 5 {
			t.Errorf("%s billed %d, want 5", c, got)
		}
	}
}

// TestReporterRate: by default the reporter stays within AWS's 10 TPS.
func TestReporterRate(t *testing.T) {
	e := newEnv(t, emu.Config{})
	var recs []ledger.Record
	for i := range 6 {
		lic := e.emu.AddBuyer(emu.Buyer{ProductCode: "p", LicenseArn: "new"})
		recs = append(recs, ledger.Record{Provider: marketplace.AWS, Customer: aws.LicenseCustomer(lic.CustomerAWSAccountId, lic.LicenseArn),
			Dimension: "requests", Quantity: int64(i + 1), Time: onDay(11, 0)})
	}
	if _, err := e.ledger.Ingest(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ledger.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var calls []time.Time
	rep := ledger.NewReporter(e.ledger, mustReporter(t, aws.ReporterConfig{Client: e.meter, ProductCode: "p", LicenseMode: true, Logger: discard}), fastReporting)
	var watch http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, time.Now())
		mu.Unlock()
		e.emu.ServeHTTP(w, r)
	})
	e.wrap.Store(&watch)
	st, err := rep.RunOnce(t.Context())
	if err != nil || st.Reported != 6 || len(calls) != 6 {
		t.Fatalf("round: %+v %v, %d calls (one per license)", st, err, len(calls))
	}
	if d := calls[5].Sub(calls[0]); d < 450*time.Millisecond {
		t.Errorf("6 calls in %s: faster than 10 per second", d)
	}
}

func TestAWSCertURL(t *testing.T) {
	for raw, want := range map[string]bool{
		"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem":        true,
		"https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem":    true,
		"http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem":         false,
		"https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-a.pem": false,
		"https://evil.com/sns.us-east-1.amazonaws.com/x.pem":                           false,
		"https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-abc.pem":   false,
		"https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem":   false,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := aws.AWSCertURL(u); got != want {
			t.Errorf("%s: %v, want %v", raw, got, want)
		}
	}
}

// TestLoadDefaultConfig: credentials, region and the emulator's endpoint
// come from the environment, as `marketplaced emulate` tells users.
func TestLoadDefaultConfig(t *testing.T) {
	e := newEnv(t, emu.Config{})
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: "p", LicenseArn: "new"})
	tok, _ := e.emu.MintToken(b.Key(), time.Hour)
	t.Setenv("AWS_ACCESS_KEY_ID", testCreds.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", testCreds.SecretAccessKey)
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	t.Setenv("AWS_ENDPOINT_URL_MARKETPLACE_METERING", e.srv.URL)
	m, err := aws.LoadMetering(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.ResolveCustomer(t.Context(), tok)
	if err != nil || out.LicenseArn != b.LicenseArn || out.CustomerIdentifier != "" {
		t.Fatalf("ResolveCustomer through the default config: %+v %v", out, err)
	}
	x, err := aws.LoadEntitlements(t.Context(), e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.GetEntitlements(t.Context(), "p", aws.EntitlementFilter{}); err != nil {
		t.Errorf("GetEntitlements with a base endpoint override: %v", err)
	}
}

// TestReporterBacksOffOnThrottling: a client set far above what the
// service allows slows down after ThrottlingExceptions instead of being
// throttled on every call.
func TestReporterBacksOffOnThrottling(t *testing.T) {
	e := newEnv(t, emu.Config{Faults: emu.Faults{ThrottleTPS: 50, ThrottleBurst: 1}})
	var recs []ledger.Record
	for range 60 {
		lic := e.emu.AddBuyer(emu.Buyer{ProductCode: "p", LicenseArn: "new"})
		recs = append(recs, ledger.Record{Provider: marketplace.AWS, Customer: aws.LicenseCustomer(lic.CustomerAWSAccountId, lic.LicenseArn),
			Dimension: "requests", Quantity: 1, Time: onDay(11, 0)})
	}
	if _, err := e.ledger.Ingest(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ledger.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	rep := ledger.NewReporter(e.ledger, mustReporter(t, aws.ReporterConfig{Client: e.meter, ProductCode: "p", LicenseMode: true, Limits: ledger.Limits{Rate: 1000}, Logger: discard}), fastReporting)
	st, err := rep.RunOnce(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	throttled := e.emu.Stats().Throttled
	t.Logf("60 calls: %d reported, %d throttled", st.Reported, throttled)
	if throttled > 20 {
		t.Errorf("%d of 60 calls throttled: the reporter did not back off", throttled)
	}
}
