package aws_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
)

// oneShotMeter is the official SDK client with its own retries off, so
// that every lost answer reaches the tracker.
func oneShotMeter(e *env) *aws.Metering {
	creds := awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
		return awssdk.Credentials{AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: testCreds.SecretAccessKey}, nil
	})
	return aws.NewMetering(marketplacemetering.New(marketplacemetering.Options{Region: "us-east-1",
		BaseEndpoint: awssdk.String(e.srv.URL), Credentials: creds, RetryMaxAttempts: 1}))
}

func newTracker(e *env, m aws.MeteringAPI) *aws.TokenBillingTracker {
	tr := aws.NewTokenBillingTracker("p", m)
	tr.Clock = e.clock.Now
	return tr
}

// pendingTokens is the customer's TotalTokens in Snapshot.
func pendingTokens(tr *aws.TokenBillingTracker, customer string) int64 {
	for _, r := range tr.Snapshot() {
		if r.CustomerIdentifier == customer {
			return r.TotalTokens
		}
	}
	return 0
}

// answerNext makes the next n metering calls answer AWS error code with
// status, without reaching the emulator.
func (e *env) answerNext(n int64, status int, code string) {
	var calls atomic.Int64
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) > n {
			e.emu.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.Header().Set("X-Amzn-ErrorType", code)
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"__type":"com.amazonaws.marketplace#%s","message":"injected"}`, code)
	})
	e.wrap.Store(&h)
}

func TestTokenBillingTrackerRemainder(t *testing.T) {
	e := newEnv(t, emu.Config{})
	c1 := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"}).CustomerIdentifier
	c2 := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"}).CustomerIdentifier
	c3 := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"}).CustomerIdentifier
	lb := e.emu.AddBuyer(emu.Buyer{ProductCode: "p", LicenseArn: "new"})
	lic := aws.LicenseCustomer(lb.CustomerAWSAccountId, lb.LicenseArn)
	e.clock.Set(onDay(10, 5))
	tr := newTracker(e, e.meter)
	tr.RecordUsage(c1, 500_000, 500_000)
	tr.RecordUsage(c1, 300_000, 200_000) // 1.5M
	tr.RecordUsage(c2, 2_000_000, 1_000_000)
	tr.RecordUsage(c3, 999_999, 0) // under a million: nothing to bill
	tr.RecordUsage(lic, 1_000_000, 1)
	tr.RecordUsage(c3, -5, -5) // ignored
	if s := tr.Snapshot(); len(s) != 4 || s[0].CustomerIdentifier > s[1].CustomerIdentifier {
		t.Fatalf("snapshot %+v", s)
	}
	out, err := tr.Flush(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Results) != 3 {
		t.Fatalf("results %+v, want c1, c2 and the license", out.Results)
	}
	bill := e.emu.Bill()
	ids := map[string]bool{}
	for _, l := range bill.Lines {
		ids[l.MeteringRecordId] = true
	}
	for _, r := range out.Results {
		if r.MeteringStatus != aws.StatusSuccess || !ids[r.MeteringRecordID] || r.UsageRecord.Dimension != aws.DimensionTokens {
			t.Errorf("result %+v is not AWS's answer", r)
		}
	}
	for _, tc := range []struct {
		cust    string
		pending int64
	}{{c1, 500_000}, {c2, 0}, {c3, 999_999}, {lic, 1}} {
		if got := pendingTokens(tr, tc.cust); got != tc.pending {
			t.Errorf("%s: %d tokens pending after the flush, want %d", tc.cust, got, tc.pending)
		}
	}
	// The same hour again: AWS takes one record per customer and hour, so
	// c1's next million waits for the next hour.
	tr.RecordUsage(c1, 600_000, 0) // 1.1M
	if out, err := tr.Flush(t.Context()); err != nil || len(out.Results) != 0 {
		t.Errorf("second flush in the hour sent %+v, %v", out.Results, err)
	}
	e.clock.Set(onDay(11, 5))
	if _, err := tr.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	bill = e.emu.Bill()
	for _, tc := range []struct {
		cust string
		want int64
	}{{c1, 2}, {c2, 3}, {c3, 0}, {lb.CustomerAWSAccountId, 1}} {
		if got := bill.Sum(tc.cust, aws.DimensionTokens); got != tc.want {
			t.Errorf("%s billed %d million, want %d (whole millions, remainder carried, never rounded up)", tc.cust, got, tc.want)
		}
	}
	if got := pendingTokens(tr, c1); got != 100_000 {
		t.Errorf("c1 carries %d tokens, want 100000", got)
	}
	if s := tr.Snapshot(); s[0].InputTokens+s[0].OutputTokens != s[0].TotalTokens {
		t.Errorf("snapshot %+v: input and output do not add up", s[0])
	}
}

// TestTokenBillingTrackerFailureKeepsUsage: a refused call puts the usage
// back, to be billed with later usage; a call without an answer keeps the
// exact record and resends it unchanged, so it is billed once.
func TestTokenBillingTrackerFailureKeepsUsage(t *testing.T) {
	tests := []struct {
		name    string
		fail    func(e *env)
		meter   func(e *env) aws.MeteringAPI
		unknown bool
	}{
		{"throttled", func(e *env) { e.answerNext(1, http.StatusBadRequest, "ThrottlingException") }, oneShot, false},
		{"internal error", func(e *env) { e.answerNext(1, http.StatusInternalServerError, "InternalServiceErrorException") }, oneShot, true},
		{"answer lost", func(e *env) { e.dropFirst(1) }, oneShot, true},
		{"answer lost, seed client", func(e *env) { e.dropFirst(1) }, func(e *env) aws.MeteringAPI {
			c := signedClient(e)
			c.Retry.MaxAttempts = 1
			return c
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, emu.Config{})
			c := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"}).CustomerIdentifier
			var m aws.MeteringAPI = e.meter
			if tc.meter != nil {
				m = tc.meter(e)
			}
			tr := newTracker(e, m)
			tr.RecordUsage(c, 2_500_000, 0)
			tc.fail(e)
			_, err := tr.Flush(t.Context())
			if err == nil || errors.Is(err, marketplace.ErrOutcomeUnknown) != tc.unknown {
				t.Fatalf("Flush: %v (want ErrOutcomeUnknown: %v)", err, tc.unknown)
			}
			sent := tr.InDoubt()
			if tc.unknown {
				if len(sent) != 1 || sent[0].Quantity != 2 || pendingTokens(tr, c) != 500_000 {
					t.Fatalf("in doubt %+v, pending %d: want the 2 million record kept aside", sent, pendingTokens(tr, c))
				}
			} else if len(sent) != 0 || pendingTokens(tr, c) != 2_500_000 {
				t.Fatalf("in doubt %+v, pending %d: want all usage back", sent, pendingTokens(tr, c))
			}
			e.clock.Advance(10 * time.Minute)
			tr.RecordUsage(c, 1_000_000, 0)
			out, err := tr.Flush(t.Context())
			if err != nil || len(out.Results) != 1 {
				t.Fatalf("retry: %+v %v", out, err)
			}
			got := out.Results[0].UsageRecord
			if tc.unknown {
				// The identical record, not merged with the new usage.
				if got.Quantity != 2 || !got.Timestamp.Equal(sent[0].Timestamp) || len(tr.InDoubt()) != 0 {
					t.Errorf("resent %+v, want %+v unchanged", got, sent[0])
				}
				e.clock.Advance(time.Hour)
				if _, err := tr.Flush(t.Context()); err != nil {
					t.Fatal(err)
				}
			} else if got.Quantity != 3 {
				t.Errorf("sent %d million, want 3 (refused usage merged with new)", got.Quantity)
			}
			if billed := e.emu.Bill().Sum(c, aws.DimensionTokens); billed != 3 || pendingTokens(tr, c) != 500_000 {
				t.Errorf("billed %d million with %d pending, want 3 and 500000", billed, pendingTokens(tr, c))
			}
		})
	}
}

func oneShot(e *env) aws.MeteringAPI { return oneShotMeter(e) }

// TestTokenBillingTrackerUnprocessed: unprocessed records are kept and
// resent unchanged.
func TestTokenBillingTrackerUnprocessed(t *testing.T) {
	e := newEnv(t, emu.Config{Faults: emu.Faults{UnprocessedRate: 1}})
	c := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"}).CustomerIdentifier
	tr := newTracker(e, e.meter)
	tr.RecordUsage(c, 1_000_000, 1_000_000)
	out, err := tr.Flush(t.Context())
	if err != nil || len(out.UnprocessedRecords) != 1 || len(out.Results) != 0 {
		t.Fatalf("%+v %v", out, err)
	}
	kept := tr.InDoubt()
	if len(kept) != 1 || kept[0].Quantity != 2 {
		t.Fatalf("unprocessed record not kept: %+v", kept)
	}
	e.emu.SetFaults(emu.Faults{})
	e.clock.Advance(time.Minute)
	tr.RecordUsage(c, 1_000_000, 0)
	out, err = tr.Flush(t.Context())
	if err != nil || len(out.Results) != 1 || !out.Results[0].UsageRecord.Timestamp.Equal(kept[0].Timestamp) {
		t.Fatalf("resend: %+v %v", out, err)
	}
	if got := e.emu.Bill().Sum(c, aws.DimensionTokens); got != 2 || pendingTokens(tr, c) != 1_000_000 {
		t.Errorf("billed %d million, %d pending; want 2 and 1000000", got, pendingTokens(tr, c))
	}
}

// TestTokenBillingTrackerContextEndsAfterApply ends the caller's context
// at the worst moment: AWS has applied the call and its answer is on the
// way. The record is kept and resent unchanged, and billed once.
func TestTokenBillingTrackerContextEndsAfterApply(t *testing.T) {
	e := newEnv(t, emu.Config{})
	c := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"}).CustomerIdentifier
	tr := newTracker(e, e.meter)
	ctx, cancel := context.WithCancel(t.Context())
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.emu.ServeHTTP(httptest.NewRecorder(), r) // applied
		cancel()
		<-r.Context().Done() // the client hung up
	})
	e.wrap.Store(&h)
	tr.RecordUsage(c, 4_000_000, 0)
	if _, err := tr.Flush(ctx); !errors.Is(err, marketplace.ErrOutcomeUnknown) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Flush: %v; want ErrOutcomeUnknown and context.Canceled", err)
	}
	e.wrap.Store(nil)
	if e.emu.Bill().Sum(c, aws.DimensionTokens) != 4 || len(tr.InDoubt()) != 1 {
		t.Fatal("the call was not applied, or its record not kept")
	}
	tr.RecordUsage(c, 1_000_000, 0)
	if _, err := tr.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := e.emu.Bill().Sum(c, aws.DimensionTokens); got != 4 {
		t.Errorf("billed %d million after the resend, want 4 (once)", got)
	}
	if pendingTokens(tr, c) != 1_000_000 {
		t.Errorf("new usage %d, want 1000000 waiting for the next hour", pendingTokens(tr, c))
	}
	// A context that ended before anything was sent: nothing in doubt.
	e.clock.Advance(time.Hour)
	done, stop := context.WithCancel(t.Context())
	stop()
	if _, err := tr.Flush(done); !errors.Is(err, context.Canceled) || errors.Is(err, marketplace.ErrOutcomeUnknown) || len(tr.InDoubt()) != 0 {
		t.Errorf("Flush with an ended context: %v, in doubt %v", err, tr.InDoubt())
	}
	if pendingTokens(tr, c) != 1_000_000 {
		t.Errorf("unsent usage not put back: %d", pendingTokens(tr, c))
	}
}

// TestTokenBillingTrackerRefusals: a customer AWS does not know is
// isolated (the others of its call are billed) and kept; one that is not
// subscribed any more is dropped, and Flush says so.
func TestTokenBillingTrackerRefusals(t *testing.T) {
	e := newEnv(t, emu.Config{})
	good := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"}).CustomerIdentifier
	gone := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"}).CustomerIdentifier
	if err := e.emu.SetSubscribed(gone, false); err != nil {
		t.Fatal(err)
	}
	tr := newTracker(e, e.meter)
	for _, c := range []string{good, gone, "nobody"} {
		tr.RecordUsage(c, 1_000_000, 0)
	}
	tr.RecordUsage("", 1_000_000, 0) // invalid: never sent
	_, err := tr.Flush(t.Context())
	for _, want := range []string{"nobody", gone, "CustomerNotSubscribed", `customer ""`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Flush error %v does not name %q", err, want)
		}
	}
	if got := e.emu.Bill().Sum(good, aws.DimensionTokens); got != 1 {
		t.Errorf("good customer billed %d, want 1", got)
	}
	if pendingTokens(tr, "nobody") != 1_000_000 || pendingTokens(tr, gone) != 0 || pendingTokens(tr, "") != 1_000_000 {
		t.Errorf("snapshot %+v: want nobody's and the invalid usage kept, the unsubscribed dropped", tr.Snapshot())
	}
}

// TestTokenBillingTrackerChaos flushes hundreds of times with every fault
// of the emulator on (errors, lost answers after applying, unprocessed
// records, latency), contexts ending at random points, and answers lost
// after the context ended; the bill comes out exact.
func TestTokenBillingTrackerChaos(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			e := newEnv(t, emu.Config{Faults: emu.Faults{ErrorRate: 0.1, DropRate: 0.15, UnprocessedRate: 0.1, Latency: 200 * time.Microsecond, Seed: seed}})
			rng := rand.New(rand.NewPCG(seed, 7))
			var m aws.MeteringAPI = oneShotMeter(e)
			if seed%2 == 1 {
				c := signedClient(e) // the seed client, retrying
				c.Retry.MaxAttempts = 2
				m = c
			}
			tr := newTracker(e, m)
			var customers, billedAs []string
			for i := range 6 {
				if i < 4 {
					b := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"})
					customers, billedAs = append(customers, b.CustomerIdentifier), append(billedAs, b.CustomerIdentifier)
					continue
				}
				b := e.emu.AddBuyer(emu.Buyer{ProductCode: "p", LicenseArn: "new"})
				customers = append(customers, aws.LicenseCustomer(b.CustomerAWSAccountId, b.LicenseArn))
				billedAs = append(billedAs, b.CustomerAWSAccountId)
			}
			recorded := map[string]int64{}
			// cancelNext, when set, cancels a call's context once the
			// emulator has applied it.
			var cancelNext atomic.Pointer[context.CancelFunc]
			var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if f := cancelNext.Swap(nil); f != nil {
					e.emu.ServeHTTP(httptest.NewRecorder(), r)
					(*f)()
					<-r.Context().Done()
					return
				}
				e.emu.ServeHTTP(w, r)
			})
			e.wrap.Store(&h)
			var unknown int
			for round := range 150 {
				for range rng.IntN(8) {
					c := customers[rng.IntN(len(customers))]
					in, out := rng.Int64N(900_000), rng.Int64N(600_000)
					tr.RecordUsage(c, in, out)
					recorded[c] += in + out
				}
				ctx, cancel := context.WithCancel(t.Context())
				switch rng.IntN(4) {
				case 0:
					cancelNext.Store(&cancel)
				case 1:
					time.AfterFunc(time.Duration(rng.IntN(3000))*time.Microsecond, cancel)
				}
				if _, err := tr.Flush(ctx); errors.Is(err, marketplace.ErrOutcomeUnknown) {
					unknown++
				}
				cancel()
				cancelNext.Store(nil)
				e.clock.Advance(time.Duration(10+rng.IntN(50)) * time.Minute)
				_ = round
			}
			e.emu.SetFaults(emu.Faults{})
			for i := 0; len(tr.InDoubt()) > 0 || anyMillion(tr); i++ {
				if i == 5 {
					t.Fatalf("still in doubt %v, pending %+v", tr.InDoubt(), tr.Snapshot())
				}
				e.clock.Advance(time.Hour)
				if _, err := tr.Flush(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			bill, st := e.emu.Bill(), e.emu.Stats()
			t.Logf("%d calls: %d dropped after applying, %d errors, %d unprocessed, %d idempotent resends; %d flushes with unknown outcomes",
				st.Calls, st.Dropped, st.Errors, st.Unprocessed, st.Idempotent, unknown)
			if st.Dropped == 0 || st.Idempotent == 0 || unknown == 0 {
				t.Error("the faults did not reach the tracker")
			}
			if st.Duplicate != 0 {
				t.Errorf("%d DuplicateRecords: the tracker sent a second quantity for an hour", st.Duplicate)
			}
			for i, c := range customers {
				got := bill.Sum(billedAs[i], aws.DimensionTokens)*1_000_000 + pendingTokens(tr, c)
				if got != recorded[c] {
					t.Errorf("%s: billed %d million + %d pending = %d tokens, recorded %d", c, bill.Sum(billedAs[i], aws.DimensionTokens),
						pendingTokens(tr, c), got, recorded[c])
				}
			}
		})
	}
}

func anyMillion(tr *aws.TokenBillingTracker) bool {
	for _, r := range tr.Snapshot() {
		if r.TotalTokens >= 1_000_000 {
			return true
		}
	}
	return false
}
