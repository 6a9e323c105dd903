package aws_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
)

// TestMeteringClientSigV4 runs the seed's MeteringClient with the SigV4
// signer against the emulator, which checks signatures.
func TestMeteringClientSigV4(t *testing.T) {
	e := newEnv(t, emu.Config{})
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"})
	creds := awssdk.NewCredentialsCache(awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
		return awssdk.Credentials{AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: testCreds.SecretAccessKey}, nil
	}))
	c := aws.NewMeteringClient(e.srv.URL, aws.NewSigV4Signer(creds, "us-east-1"))
	out, err := c.BatchMeterUsage(t.Context(), &aws.BatchMeterUsageInput{ProductCode: "p",
		UsageRecords: []aws.UsageRecord{{CustomerIdentifier: b.CustomerIdentifier, Dimension: "d", Quantity: 2, Timestamp: e.clock.Now()}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Results) != 1 || out.Results[0].MeteringStatus != aws.StatusSuccess || out.Results[0].MeteringRecordID == "" {
		t.Errorf("results %+v", out.Results)
	}
	bad := aws.NewMeteringClient(e.srv.URL, aws.NewSigV4Signer(awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
		return awssdk.Credentials{AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: "wrong"}, nil
	}), "us-east-1"))
	if _, err := bad.ResolveCustomer(t.Context(), "x"); err == nil || !strings.Contains(err.Error(), "InvalidSignature") {
		t.Errorf("wrong secret: %v", err)
	}
	unsigned := aws.NewMeteringClient(e.srv.URL, nil)
	if _, err := unsigned.ResolveCustomer(t.Context(), "x"); err == nil {
		t.Error("unsigned request accepted")
	}
}

// dropFirst makes the emulator apply the first n metering calls and then
// close the connection without an answer; it counts every call.
func (e *env) dropFirst(n int64) *atomic.Int64 {
	var calls atomic.Int64
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) > n {
			e.emu.ServeHTTP(w, r)
			return
		}
		e.emu.ServeHTTP(httptest.NewRecorder(), r) // applied...
		panic(http.ErrAbortHandler)                // ...and the answer lost
	})
	e.wrap.Store(&h)
	return &calls
}

func signedClient(e *env) *aws.MeteringClient {
	creds := awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
		return awssdk.Credentials{AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: testCreds.SecretAccessKey}, nil
	})
	c := aws.NewMeteringClient(e.srv.URL, aws.NewSigV4Signer(creds, "us-east-1"))
	c.Retry = marketplace.RetryConfig{MaxAttempts: 3, BaseDelay: time.Millisecond}
	return c
}

// TestMeteringClientRetry: the seed's Retry resends an identical request
// after a lost answer (billed once, same record id), does not retry a
// refusal, and keeps ErrOutcomeUnknown when a later attempt is refused.
func TestMeteringClientRetry(t *testing.T) {
	t.Run("lost answer", func(t *testing.T) {
		e := newEnv(t, emu.Config{})
		b := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"})
		calls := e.dropFirst(1)
		out, err := signedClient(e).BatchMeterUsage(t.Context(), &aws.BatchMeterUsageInput{ProductCode: "p",
			UsageRecords: []aws.UsageRecord{{CustomerIdentifier: b.CustomerIdentifier, Dimension: "d", Quantity: 7, Timestamp: e.clock.Now()}}})
		if err != nil || len(out.Results) != 1 || out.Results[0].MeteringStatus != aws.StatusSuccess {
			t.Fatalf("%+v %v", out, err)
		}
		bill := e.emu.Bill()
		if calls.Load() != 2 || bill.Sum(b.CustomerIdentifier, "d") != 7 || out.Results[0].MeteringRecordID != bill.Lines[0].MeteringRecordId {
			t.Errorf("%d calls, billed %d (want 2 calls, 7 billed once under the first call's record id)", calls.Load(), bill.Sum(b.CustomerIdentifier, "d"))
		}
	})
	t.Run("refusal is final", func(t *testing.T) {
		e := newEnv(t, emu.Config{})
		calls := e.dropFirst(0)
		_, err := signedClient(e).BatchMeterUsage(t.Context(), &aws.BatchMeterUsageInput{ProductCode: "p",
			UsageRecords: []aws.UsageRecord{{CustomerIdentifier: "nobody", Dimension: "d", Quantity: 1, Timestamp: e.clock.Now()}}})
		if !errors.Is(err, aws.ErrInvalidCustomerIdentifier) || errors.Is(err, marketplace.ErrOutcomeUnknown) || calls.Load() != 1 {
			t.Errorf("%d calls, %v; want one call refused with InvalidCustomerIdentifier", calls.Load(), err)
		}
	})
	t.Run("lost every time", func(t *testing.T) {
		e := newEnv(t, emu.Config{})
		b := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"})
		calls := e.dropFirst(3)
		_, err := signedClient(e).BatchMeterUsage(t.Context(), &aws.BatchMeterUsageInput{ProductCode: "p",
			UsageRecords: []aws.UsageRecord{{CustomerIdentifier: b.CustomerIdentifier, Dimension: "d", Quantity: 1, Timestamp: e.clock.Now()}}})
		if !errors.Is(err, marketplace.ErrOutcomeUnknown) || calls.Load() != 3 {
			t.Errorf("%d calls, %v; want 3 attempts and ErrOutcomeUnknown", calls.Load(), err)
		}
	})
	t.Run("lost then throttled", func(t *testing.T) {
		// One call a year is allowed: the first (applied, answer lost) uses it.
		e := newEnv(t, emu.Config{Faults: emu.Faults{ThrottleTPS: 1e-7, ThrottleBurst: 1}})
		b := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"})
		e.dropFirst(1)
		c := signedClient(e)
		c.Retry.MaxAttempts = 2
		_, err := c.BatchMeterUsage(t.Context(), &aws.BatchMeterUsageInput{ProductCode: "p",
			UsageRecords: []aws.UsageRecord{{CustomerIdentifier: b.CustomerIdentifier, Dimension: "d", Quantity: 1, Timestamp: e.clock.Now()}}})
		if !errors.Is(err, aws.ErrThrottling) || !errors.Is(err, marketplace.ErrOutcomeUnknown) {
			t.Errorf("%v; want ThrottlingException and ErrOutcomeUnknown (the first attempt was applied)", err)
		}
		if got := e.emu.Bill().Sum(b.CustomerIdentifier, "d"); got != 1 {
			t.Errorf("billed %d, want 1", got)
		}
	})
}
