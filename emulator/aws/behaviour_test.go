package aws_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
)

func sdkCreds() awssdk.CredentialsProvider {
	return awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
		return awssdk.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey}, nil
	})
}

// TestMeteringAsAWS: the catalogue, MeterUsage's 6 hour window and
// DryRun, allocation tags and the request id, through the official client.
func TestMeteringAsAWS(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)
	clock := ledgertest.NewClock(now)
	e := emu.New(emu.Config{Clock: clock.Now, Credentials: []emu.Credentials{creds}, Logger: slog.New(slog.DiscardHandler),
		Products: map[string][]string{"prod": {"tokens"}}})
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	c := marketplacemetering.New(marketplacemetering.Options{Region: "us-east-1", BaseEndpoint: awssdk.String(srv.URL),
		RetryMaxAttempts: 1, Credentials: sdkCreds()})
	e.AddBuyer(emu.Buyer{ProductCode: "prod", CustomerIdentifier: "c"})
	meter := func(product, dim string, ts time.Time, dry bool, tags ...types.Tag) error {
		in := &marketplacemetering.MeterUsageInput{ProductCode: awssdk.String(product), UsageDimension: awssdk.String(dim),
			UsageQuantity: awssdk.Int32(1), Timestamp: awssdk.Time(ts), DryRun: awssdk.Bool(dry)}
		if tags != nil {
			in.UsageAllocations = []types.UsageAllocation{{AllocatedUsageQuantity: awssdk.Int32(1), Tags: tags}}
		}
		_, err := c.MeterUsage(t.Context(), in)
		return err
	}
	batch := func(dim string) error {
		_, err := c.BatchMeterUsage(t.Context(), &marketplacemetering.BatchMeterUsageInput{ProductCode: awssdk.String("prod"),
			UsageRecords: []types.UsageRecord{rec("c", dim, 1, now)}})
		return err
	}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"MeterUsage, known product and dimension", meter("prod", "tokens", now, false), ""},
		{"MeterUsage, unknown product", meter("other", "tokens", now, false), "InvalidProductCodeException"},
		{"MeterUsage, unknown dimension", meter("prod", "seats", now, false), "InvalidUsageDimensionException"},
		{"MeterUsage, 5 hours old", meter("prod", "tokens", now.Add(-5*time.Hour), false), ""},
		{"MeterUsage, 7 hours old", meter("prod", "tokens", now.Add(-7*time.Hour), false), "TimestampOutOfBoundsException"},
		{"MeterUsage, DryRun", meter("prod", "tokens", now.Add(-2*time.Hour), true), "DryRunOperation"},
		{"MeterUsage, tag with an empty key", meter("prod", "tokens", now, false, types.Tag{Key: awssdk.String(""), Value: awssdk.String("v")}), "InvalidTagException"},
		{"MeterUsage, tag with a key", meter("prod", "tokens", now.Add(-time.Hour), false, types.Tag{Key: awssdk.String("k"), Value: awssdk.String("v")}), ""},
		{"BatchMeterUsage, known dimension", batch("tokens"), ""},
		{"BatchMeterUsage, unknown dimension", batch("seats"), "InvalidUsageDimensionException"},
	}
	for _, tc := range cases {
		if got := code(tc.err); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := len(e.Bill().Lines); got != 4 {
		t.Errorf("%d lines billed, want 4 (the dry run bills nothing)", got)
	}

	// Every answer carries x-amzn-RequestId, which the SDK surfaces.
	out, err := c.BatchMeterUsage(t.Context(), &marketplacemetering.BatchMeterUsageInput{ProductCode: awssdk.String("prod"),
		UsageRecords: []types.UsageRecord{rec("c", "tokens", 1, now)}})
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := awsmiddleware.GetRequestIDMetadata(out.ResultMetadata); !ok || id == "" {
		t.Error("no request id on a success")
	}
	var re interface{ ServiceRequestID() string }
	if err := batch("seats"); !errors.As(err, &re) || re.ServiceRequestID() == "" {
		t.Errorf("no request id on an error: %v", err)
	}
}

// TestClockSkewWording: a request signed 20 minutes ago is refused with
// AWS's "Signature expired" message.
func TestClockSkewWording(t *testing.T) {
	e := emu.New(emu.Config{Credentials: []emu.Credentials{creds}, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	body := `{"RegistrationToken":"x"}`
	req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/", strings.NewReader(body))
	req.Header.Set("X-Amz-Target", "AWSMPMeteringService.ResolveCustomer")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	sum := sha256.Sum256([]byte(body))
	err := v4.NewSigner().SignHTTP(t.Context(), awssdk.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey},
		req, hex.EncodeToString(sum[:]), "aws-marketplace", "us-east-1", time.Now().Add(-20*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "InvalidSignatureException") || !strings.Contains(string(b), "Signature expired: ") {
		t.Errorf("skewed request: %d %s", resp.StatusCode, b)
	}
}

// TestSQSAsAWS: an earlier receipt handle still deletes, a missing queue
// is QueueDoesNotExist with SQS's error header, and an empty receive is an
// empty list.
func TestSQSAsAWS(t *testing.T) {
	e := emu.New(emu.Config{Credentials: []emu.Credentials{creds}, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	c := sqs.New(sqs.Options{Region: "us-east-1", BaseEndpoint: awssdk.String(srv.URL), RetryMaxAttempts: 1, Credentials: sdkCreds()})
	q := srv.URL + "/123456789012/events"
	e.EnqueueRaw(q, "hello")
	receive := func() string {
		t.Helper()
		// The SDK omits a zero VisibilityTimeout: one second, then wait for it.
		out, err := c.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: awssdk.String(q), VisibilityTimeout: 1, WaitTimeSeconds: 2})
		if err != nil || len(out.Messages) != 1 {
			t.Fatalf("receive: %v %+v", err, out)
		}
		return awssdk.ToString(out.Messages[0].ReceiptHandle)
	}
	first := receive()
	if second := receive(); second == first {
		t.Fatal("a re-receive gave the same receipt handle")
	}
	if _, err := c.DeleteMessage(t.Context(), &sqs.DeleteMessageInput{QueueUrl: awssdk.String(q), ReceiptHandle: awssdk.String(first)}); err != nil {
		t.Errorf("delete with the earlier receipt handle: %v", err)
	}
	if n := e.QueueLen(q); n != 0 {
		t.Errorf("%d messages left", n)
	}
	_, err := c.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: awssdk.String(srv.URL + "/123456789012/nope")})
	var missing *sqstypes.QueueDoesNotExist
	if !errors.As(err, &missing) {
		t.Errorf("missing queue: %v, want QueueDoesNotExist", err)
	}

	// The wire: the query error header, SQS's namespace, and [] not null.
	raw := func(target, body string) (int, http.Header, string) {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/", strings.NewReader(body))
		req.Header.Set("X-Amz-Target", target)
		req.Header.Set("Content-Type", "application/x-amz-json-1.0")
		sum := sha256.Sum256([]byte(body))
		if err := v4.NewSigner().SignHTTP(t.Context(), awssdk.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey},
			req, hex.EncodeToString(sum[:]), "sqs", "us-east-1", time.Now()); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	st, h, b := raw("AmazonSQS.ReceiveMessage", `{"QueueUrl":"`+srv.URL+`/123456789012/nope"}`)
	if st != 400 || h.Get("x-amzn-query-error") != "AWS.SimpleQueueService.NonExistentQueue;Sender" || !strings.Contains(b, `"com.amazonaws.sqs#QueueDoesNotExist"`) {
		t.Errorf("missing queue on the wire: %d %v %s", st, h, b)
	}
	if _, _, b := raw("AmazonSQS.ReceiveMessage", `{"QueueUrl":"`+q+`"}`); !strings.Contains(b, `"Messages":[]`) {
		t.Errorf("empty receive: %s", b)
	}
}

// TestFaultScopeAndThrottleRate: scope "metering" spares ResolveCustomer,
// "all" does not; a throttle rate of 1 throttles every metering call.
func TestFaultScopeAndThrottleRate(t *testing.T) {
	clock := ledgertest.NewClock(time.Now())
	e, c, _ := start(t, clock, emu.Faults{ErrorRate: 1})
	b := e.AddBuyer(emu.Buyer{ProductCode: "p"})
	tok, err := e.MintToken(b.Key(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	resolve := func() error {
		_, err := c.ResolveCustomer(t.Context(), &marketplacemetering.ResolveCustomerInput{RegistrationToken: awssdk.String(tok)})
		return err
	}
	if err := resolve(); err != nil {
		t.Errorf("metering-only faults hit ResolveCustomer: %v", err)
	}
	e.SetFaults(emu.Faults{ErrorRate: 1, AllCalls: true})
	if got := code(resolve()); got != "InternalServiceErrorException" {
		t.Errorf("faults on all calls: ResolveCustomer %q", got)
	}
	e.SetFaults(emu.Faults{ThrottleRate: 1})
	_, err = c.BatchMeterUsage(t.Context(), &marketplacemetering.BatchMeterUsageInput{ProductCode: awssdk.String("p"),
		UsageRecords: []types.UsageRecord{rec(b.CustomerIdentifier, "d", 1, clock.Now())}})
	if got := code(err); got != "ThrottlingException" {
		t.Errorf("throttle rate 1: %q", got)
	}
}
