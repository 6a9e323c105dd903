package ledger_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
)

// groupingCloud is a FakeCloud that groups its reports (as the AWS target
// groups by product), and whose grouping lookup can be made to fail.
type groupingCloud struct {
	*ledgertest.FakeCloud
	fail atomic.Bool
}

func (g *groupingCloud) GroupOf(_ context.Context, r ledger.Report) (string, error) {
	if g.fail.Load() {
		return "", errors.New("product lookup: subscription store unavailable")
	}
	return r.Customer, nil
}

// TestDeadlinePolicy sends a bucket to the deadline (AWS: 24 hours after
// its hour, less the reporter's 5-minute margin) after various first
// attempts. A bucket no attempt can have reached the cloud is carried into
// the current hour; one that an attempt may have reached is expired, since
// carrying it could bill twice. Either way the usage is billed at most
// once, and exactly once where the cloud's fate is known.
func TestDeadlinePolicy(t *testing.T) {
	day1 := onDay(11, 0)                               // the bucket's hour
	deadline := day1.Add(24*time.Hour - 5*time.Minute) // when the reporter gives up on it
	day2 := ledger.HourOf(deadline)                    // the hour it is carried into
	tests := []struct {
		name    string
		policy  ledger.DeadlinePolicy
		attempt string // what happened before the deadline
		want    ledger.State
		billed  map[time.Time]int64
	}{
		{"never attempted", ledger.DeadlineCarry, "", ledger.StateCarried, map[time.Time]int64{day2: 7}},
		{"attempt not applied", ledger.DeadlineCarry, "not applied", ledger.StateCarried, map[time.Time]int64{day2: 7}},
		{"attempt answered unprocessed", ledger.DeadlineCarry, "unprocessed", ledger.StateCarried, map[time.Time]int64{day2: 7}},
		{"grouping failed before sending", ledger.DeadlineCarry, "group error", ledger.StateCarried, map[time.Time]int64{day2: 7}},
		{"attempt applied, answer lost", ledger.DeadlineCarry, "dropped", ledger.StateExpired, map[time.Time]int64{day1: 7}},
		{"crashed after sending", ledger.DeadlineCarry, "crashed", ledger.StateExpired, map[time.Time]int64{day1: 7}},
		{"expire policy", ledger.DeadlineExpire, "", ledger.StateExpired, map[time.Time]int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newLedger(t, ledger.Config{})
			ctx := t.Context()
			err := tl.Record(ctx, ledger.Record{Provider: marketplace.AWS, Customer: "c1", Dimension: "requests", Quantity: 7, Time: onDay(11, 10)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tl.Seal(ctx); err != nil {
				t.Fatal(err)
			}
			cloud := &groupingCloud{FakeCloud: tl.newCloud(marketplace.AWS, 1, ledgertest.Faults{})}
			cfg := fastReporting
			cfg.DeadlinePolicy = tt.policy
			rep := ledger.NewReporter(tl.Ledger, cloud, cfg)

			switch tt.attempt {
			case "not applied":
				cloud.SetFaults(ledgertest.Faults{NotApplied: 1})
			case "unprocessed":
				cloud.SetFaults(ledgertest.Faults{Unprocessed: 1})
			case "dropped":
				cloud.SetFaults(ledgertest.Faults{DropResponse: 1})
			case "group error":
				cloud.fail.Store(true)
			case "crashed":
				// A reporter claims the bucket, sends it, and dies before
				// storing the outcome: its lease runs out.
				claimed, err := tl.Store().Claim(ctx, ledger.ClaimRequest{Provider: marketplace.AWS, Owner: "dead", Now: tl.clock.Now(), Lease: time.Minute, Limit: 10})
				if err != nil || len(claimed) != 1 {
					t.Fatalf("Claim = %d buckets, %v", len(claimed), err)
				}
				b := claimed[0]
				r := ledger.Report{ID: b.ReportID, BucketID: b.ID, Provider: b.Provider, Customer: b.Customer,
					Dimension: b.Dimension, Hour: b.Hour, Quantity: b.Units, Attempt: 1}
				if _, err := cloud.Send(ctx, []ledger.Report{r}); err != nil {
					t.Fatal(err)
				}
			}
			if tt.attempt != "" && tt.attempt != "crashed" {
				if st, err := rep.RunOnce(ctx); err != nil || st.Retried != 1 {
					t.Fatalf("first attempt: %+v, %v; want a retry", st, err)
				}
				cloud.SetFaults(ledgertest.Faults{})
				cloud.fail.Store(false)
			}

			tl.clock.Set(deadline)
			if _, err := rep.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			bs := tl.buckets(t)
			if len(bs) != 1 {
				t.Fatalf("%d buckets, want 1", len(bs))
			}
			if bs[0].State != tt.want {
				t.Errorf("at the deadline: bucket %s (%s); want %s", bs[0].State, bs[0].Reason, tt.want)
			}
			if !strings.Contains(bs[0].Reason, "deadline") {
				t.Errorf("reason %q does not mention the deadline", bs[0].Reason)
			}
			if got := tl.metrics.Get("missed"); got != 1 {
				t.Errorf("metric missed = %d, want 1", got)
			}

			// Whatever was carried is billed in its new hour.
			tl.clock.Set(day2.Add(time.Hour + 6*time.Minute))
			if _, err := tl.Seal(ctx); err != nil {
				t.Fatal(err)
			}
			tl.reportAll(t, rep)
			want := make(map[lineKey]int64)
			for h, q := range tt.billed {
				want[lineKey{marketplace.AWS, "c1", "requests", h}] = q
			}
			compareBills(t, billOf(t, cloud.FakeCloud), want)
		})
	}
}

// TestValidation checks every rule of a record, and that the error names
// the record and the field.
func TestValidation(t *testing.T) {
	good := ledger.Record{Provider: marketplace.AWS, Customer: "c1", Dimension: "requests", Quantity: 1, Time: onDay(11, 0)}
	tests := []struct {
		name   string
		change func(r *ledger.Record)
		field  string // "" for a valid record
	}{
		{"valid", func(r *ledger.Record) {}, ""},
		{"zero quantity", func(r *ledger.Record) { r.Quantity = 0 }, ""},
		{"zero time means now", func(r *ledger.Record) { r.Time = time.Time{} }, ""},
		{"just within the future margin", func(r *ledger.Record) { r.Time = testNow.Add(5 * time.Minute) }, ""},
		{"just within the age limit", func(r *ledger.Record) { r.Time = testNow.Add(-23 * time.Hour) }, ""},
		{"largest quantity", func(r *ledger.Record) { r.Quantity = 1 << 53 }, ""},
		{"negative quantity", func(r *ledger.Record) { r.Quantity = -1 }, "quantity"},
		{"quantity over 2^53", func(r *ledger.Record) { r.Quantity = 1<<53 + 1 }, "quantity"},
		{"empty customer", func(r *ledger.Record) { r.Customer = "" }, "customer"},
		{"customer too long", func(r *ledger.Record) { r.Customer = strings.Repeat("c", 257) }, "customer"},
		{"customer not UTF-8", func(r *ledger.Record) { r.Customer = "c\xff" }, "customer"},
		{"empty dimension", func(r *ledger.Record) { r.Dimension = "" }, "dimension"},
		{"dimension not UTF-8", func(r *ledger.Record) { r.Dimension = "\xc3" }, "dimension"},
		{"unknown provider", func(r *ledger.Record) { r.Provider = "oracle" }, "provider"},
		{"empty provider", func(r *ledger.Record) { r.Provider = "" }, "provider"},
		{"event id too long", func(r *ledger.Record) { r.EventID = strings.Repeat("e", 257) }, "event_id"},
		{"time too far ahead", func(r *ledger.Record) { r.Time = testNow.Add(5*time.Minute + time.Second) }, "time"},
		{"time too old", func(r *ledger.Record) { r.Time = testNow.Add(-23*time.Hour - time.Second) }, "time"},
	}
	tl := newLedger(t, ledger.Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			tt.change(&r)
			_, err := tl.Ingest(t.Context(), []ledger.Record{good, r})
			if tt.field == "" {
				if err != nil {
					t.Fatalf("valid record refused: %v", err)
				}
				return
			}
			var ve *ledger.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a *ValidationError", err)
			}
			if ve.Field != tt.field || ve.Index != 1 {
				t.Errorf("error names record %d field %q, want record 1 field %q", ve.Index, ve.Field, tt.field)
			}
			if !errors.Is(err, ledger.ErrInvalidRecord) {
				t.Errorf("%v does not match ErrInvalidRecord", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("message %q does not name the field", err)
			}
		})
	}
}

// TestValidationStoresNothing sends a batch with one bad record: none of
// it is stored, not even the event ids of the good ones.
func TestValidationStoresNothing(t *testing.T) {
	tl := newLedger(t, ledger.Config{})
	ctx := t.Context()
	good := []ledger.Record{
		{Provider: marketplace.AWS, Customer: "c1", Dimension: "requests", Quantity: 5, Time: onDay(11, 0), EventID: "g1"},
		{Provider: marketplace.GCP, Customer: "c2", Dimension: "requests", Quantity: 6, Time: onDay(10, 0), EventID: "g2"},
	}
	bad := ledger.Record{Provider: marketplace.AWS, Customer: "c1", Dimension: "requests", Quantity: -5, Time: onDay(11, 0), EventID: "b1"}
	_, err := tl.Ingest(ctx, append(good[:2:2], bad))
	var ve *ledger.ValidationError
	if !errors.As(err, &ve) || ve.Index != 2 || ve.Field != "quantity" {
		t.Fatalf("err = %v, want a *ValidationError for record 2's quantity", err)
	}
	if _, err := tl.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if bs := tl.buckets(t); len(bs) != 0 {
		t.Errorf("buckets after a refused batch: %+v", bs)
	}
	if got := tl.metrics.Get("recorded"); got != 0 {
		t.Errorf("metric recorded = %d", got)
	}
	// The good records' event ids were not spent.
	res, err := tl.Ingest(ctx, good)
	if err != nil || res.Accepted != 2 || res.Duplicates != 0 {
		t.Errorf("resending the good records: %+v, %v; want 2 accepted", res, err)
	}
}
