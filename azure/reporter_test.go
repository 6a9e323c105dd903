package azure_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/azure"
	emu "github.com/saasmarket/marketplace/emulator/azure"
	"github.com/saasmarket/marketplace/ledger"
)

type line struct {
	customer, dimension string
	hour                time.Time
}

// TestExactlyOnceThroughFaults ingests usage for several subscriptions and
// hours, reports it through ledger.Reporter and our client against the
// emulator while it injects each fault, and checks that the emulator's
// bill holds every hour exactly once with the ingested quantity.
func TestExactlyOnceThroughFaults(t *testing.T) {
	cases := []struct {
		name   string
		faults emu.Faults
	}{
		{"none", emu.Faults{}},
		{"apply then drop the response", emu.Faults{DropRate: 0.4}},
		{"throttled with Retry-After", emu.Faults{ThrottleRate: 0.5, RetryAfter: 2 * time.Second}},
		{"server errors", emu.Faults{ErrorRate: 0.4}},
		{"everything", emu.Faults{DropRate: 0.25, ThrottleRate: 0.25, ErrorRate: 0.25, Latency: time.Millisecond}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := newEnv(t, emu.Config{Seed: uint64(i + 1), Faults: emu.Faults{}}, ledger.Config{})
			var subs []string
			for range 8 {
				subs = append(subs, v.subscribe(t, "basic"))
			}
			v.emu.SetFaults(emu.Faults{DropRate: tc.faults.DropRate, ThrottleRate: tc.faults.ThrottleRate,
				RetryAfter: tc.faults.RetryAfter, ErrorRate: tc.faults.ErrorRate, Latency: tc.faults.Latency, MeteringOnly: true})
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			want := map[line]float64{}
			var recs []ledger.Record
			for n := range 800 {
				r := ledger.Record{Provider: marketplace.Azure, Customer: subs[rng.IntN(len(subs))],
					Dimension: []string{"requests", "images"}[rng.IntN(2)], Quantity: rng.Int64N(100),
					Time: onDay(4+rng.IntN(8), rng.IntN(60)), EventID: fmt.Sprint("ev-", n)}
				recs = append(recs, r)
				want[line{r.Customer, r.Dimension, r.Time.Truncate(time.Hour)}] += float64(r.Quantity)
			}
			for k, q := range want {
				if q == 0 {
					delete(want, k)
				}
			}
			if _, err := v.ledger.Ingest(t.Context(), recs); err != nil {
				t.Fatal(err)
			}
			// Retried ingest changes nothing.
			if _, err := v.ledger.Ingest(t.Context(), recs[:100]); err != nil {
				t.Fatal(err)
			}
			rep := ledger.NewReporter(v.ledger, mustReporter(t, azure.ReporterConfig{Client: v.client, Subscriptions: v.store, Clock: v.clock.Now}), reporting)
			v.reportAll(t, rep)

			got := map[line]float64{}
			for _, l := range v.emu.Bill() {
				if l.PlanID != "basic" {
					t.Errorf("line %+v billed with plan %q", l, l.PlanID)
				}
				got[line{l.ResourceID, l.Dimension, l.Hour}] += l.Quantity
			}
			if len(got) != len(want) {
				t.Errorf("bill has %d lines, want %d", len(got), len(want))
			}
			for k, q := range want {
				if got[k] != q {
					t.Errorf("%v: billed %v, want %v", k, got[k], q)
				}
			}
			bs, err := v.ledger.Buckets(t.Context(), ledger.BucketFilter{})
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range bs {
				if b.State != ledger.StateReported && b.State != ledger.StateSkipped {
					t.Errorf("bucket %s/%s@%s is %s (%s)", b.Customer, b.Dimension, b.Hour, b.State, b.Reason)
				}
				if b.State == ledger.StateReported && b.RecordID == "" {
					t.Errorf("bucket %s/%s@%s reported without the usageEventId", b.Customer, b.Dimension, b.Hour)
				}
			}
			calls := v.emu.Calls()
			for kind, rate := range map[string]float64{"drop": tc.faults.DropRate, "throttle": tc.faults.ThrottleRate, "error": tc.faults.ErrorRate} {
				if rate > 0 && calls["fault/"+kind] == 0 {
					t.Errorf("no %s fault was injected: the test proves nothing", kind)
				}
			}
		})
	}
}

// TestReporterStatuses maps every per-item status of a batch.
func TestReporterStatuses(t *testing.T) {
	v := newEnv(t, emu.Config{Plans: []emu.Plan{{ID: "basic", Dimensions: []string{"requests"}}, {ID: "pro"}}}, ledger.Config{})
	ctx := t.Context()
	ok := v.subscribe(t, "basic")
	dup := v.subscribe(t, "basic")
	conflict := v.subscribe(t, "basic")
	suspended := v.subscribe(t, "basic")
	if _, _, err := v.emu.Drive(ctx, suspended, emu.Action{Name: emu.ActionSuspend}); err != nil {
		t.Fatal(err)
	}
	wrongPlan := v.subscribe(t, "basic")
	v.put(t, marketplace.Subscription{ID: "0b8e7c1e-0000-4000-8000-000000000001", Provider: marketplace.Azure, Status: marketplace.StatusActive, Plan: "basic"})
	sub, err := v.store.GetSubscription(ctx, marketplace.Azure, wrongPlan)
	if err != nil {
		t.Fatal(err)
	}
	sub.Plan = "pro"
	v.put(t, *sub)
	hour := onDay(10, 0)
	for _, pre := range []struct {
		id string
		q  float64
	}{{dup, 5}, {conflict, 6}} {
		res, err := v.client.PostUsageEvent(ctx, azure.UsageEvent{ResourceID: pre.id, Quantity: pre.q, Dimension: "requests", EffectiveStartTime: azure.Time{hour}, PlanID: "basic"})
		if err != nil || res.Status != azure.UsageAccepted {
			t.Fatalf("pre-record: %+v, %v", res, err)
		}
	}
	rep := func(customer, dim string, h time.Time, q int64) ledger.Report {
		return ledger.Report{Provider: marketplace.Azure, Customer: customer, Dimension: dim, Hour: h, Quantity: q}
	}
	reports := []ledger.Report{
		rep(ok, "requests", hour, 5),
		rep(dup, "requests", hour, 5),
		rep(conflict, "requests", hour, 5),
		rep(suspended, "requests", hour, 5),
		rep(wrongPlan, "requests", hour, 5),
		rep(ok, "images", hour, 5),
		rep("0b8e7c1e-0000-4000-8000-000000000001", "requests", hour, 5),
		rep(ok, "requests", onDay(9, 0).Add(-24*time.Hour), 5),
		rep("not-stored", "requests", hour, 5),
	}
	want := []struct {
		outcome ledger.Outcome
		reason  string
	}{
		{ledger.OutcomeReported, ""},
		{ledger.OutcomeReported, ""},
		{ledger.OutcomeConflict, "Azure holds quantity 6 for this hour, we sent 5"},
		{ledger.OutcomeRejected, "ResourceNotActive: the subscription is Suspended"},
		{ledger.OutcomeRejected, `ResourceNotAuthorized: planId "pro" is not the subscription's plan`},
		{ledger.OutcomeRejected, `InvalidDimension: dimension "images" is not in plan basic`},
		{ledger.OutcomeRejected, `ResourceNotFound: no subscription "0b8e7c1e-0000-4000-8000-000000000001"`},
		{ledger.OutcomeExpired, "Expired: usage older than 24 hours is not accepted"},
		{ledger.OutcomeRejected, "no stored Azure subscription not-stored"},
	}
	res, err := mustReporter(t, azure.ReporterConfig{Client: v.client, Subscriptions: v.store, Clock: v.clock.Now}).Send(ctx, reports)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if res[i].Outcome != w.outcome || res[i].Reason != w.reason {
			t.Errorf("report %d: got %v %q, want %v %q", i, res[i].Outcome, res[i].Reason, w.outcome, w.reason)
		}
	}
	if res[0].RecordID == "" || res[1].RecordID == "" {
		t.Errorf("reported without usageEventId: %+v", res[:2])
	}
}

// TestReporterPerMillionTokens bills whole millions per hour, carries the
// remainder and never sends an hour without a whole unit.
func TestReporterPerMillionTokens(t *testing.T) {
	v := newEnv(t, emu.Config{}, ledger.Config{Units: map[string]int64{"tokens_1m": 1_000_000}})
	a := v.subscribe(t, "basic")
	b := v.subscribe(t, "pro")
	recs := []ledger.Record{
		{Provider: marketplace.Azure, Customer: a, Dimension: "tokens_1m", Quantity: 1_600_000, Time: onDay(9, 5)},
		{Provider: marketplace.Azure, Customer: a, Dimension: "tokens_1m", Quantity: 500_000, Time: onDay(10, 5)},
		{Provider: marketplace.Azure, Customer: b, Dimension: "tokens_1m", Quantity: 999_999, Time: onDay(9, 5)},
		{Provider: marketplace.Azure, Customer: b, Dimension: "tokens_1m", Quantity: 0, Time: onDay(11, 5)},
	}
	if _, err := v.ledger.Ingest(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	v.reportAll(t, ledger.NewReporter(v.ledger, mustReporter(t, azure.ReporterConfig{Client: v.client, Subscriptions: v.store, Clock: v.clock.Now}), reporting))
	got := map[line]float64{}
	plans := map[string]string{}
	for _, l := range v.emu.Bill() {
		got[line{l.ResourceID, l.Dimension, l.Hour}] = l.Quantity
		plans[l.ResourceID] = l.PlanID
	}
	want := map[line]float64{{a, "tokens_1m", onDay(9, 0)}: 1, {a, "tokens_1m", onDay(10, 0)}: 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("bill %v, want %v", got, want)
	}
	if plans[a] != "basic" {
		t.Errorf("plan %q", plans[a])
	}
}

// TestReporterHonoursRetryAfter: a 429 is not applied and the bucket waits
// at least the Retry-After the emulator sent.
func TestReporterHonoursRetryAfter(t *testing.T) {
	v := newEnv(t, emu.Config{}, ledger.Config{})
	id := v.subscribe(t, "basic")
	if _, err := v.ledger.Ingest(t.Context(), []ledger.Record{{Provider: marketplace.Azure, Customer: id, Dimension: "requests", Quantity: 4, Time: onDay(10, 0)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.ledger.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	v.emu.SetFaults(emu.Faults{ThrottleRate: 1, RetryAfter: 90 * time.Second, MeteringOnly: true})
	rep := ledger.NewReporter(v.ledger, mustReporter(t, azure.ReporterConfig{Client: v.client, Subscriptions: v.store, Clock: v.clock.Now}), reporting)
	if _, err := rep.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	bs, err := v.ledger.Buckets(t.Context(), ledger.BucketFilter{})
	if err != nil || len(bs) != 1 {
		t.Fatal(bs, err)
	}
	b := bs[0]
	if b.State != ledger.StateSealed || b.MaybeApplied || b.NextAttempt.Before(v.clock.Now().Add(90*time.Second)) {
		t.Fatalf("after a 429 with Retry-After 90: %s maybeApplied=%v next in %v", b.State, b.MaybeApplied, b.NextAttempt.Sub(v.clock.Now()))
	}
	v.emu.SetFaults(emu.Faults{})
	v.reportAll(t, rep)
	if bill := v.emu.Bill(); len(bill) != 1 || bill[0].Quantity != 4 {
		t.Fatalf("bill %+v", bill)
	}
}

func mustReporter(t testing.TB, cfg azure.ReporterConfig) *azure.Reporter {
	t.Helper()
	r, err := azure.NewReporter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestFrozenPlanAcrossPlanChange: Azure applies the first send and the
// response is lost; the stored subscription then moves to another plan
// (Azure completes a plan change asynchronously, so our store may lead it).
// The retry sends the plan frozen at the first send, so Azure recognises
// it as the same event (Duplicate, same quantity): billed once, reported.
func TestFrozenPlanAcrossPlanChange(t *testing.T) {
	v := newEnv(t, emu.Config{}, ledger.Config{})
	id := v.subscribe(t, "basic")
	if err := v.ledger.Record(t.Context(), ledger.Record{Provider: marketplace.Azure, Customer: id, Dimension: "requests", Quantity: 7, Time: onDay(10, 5)}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.ledger.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	rep := ledger.NewReporter(v.ledger, mustReporter(t, azure.ReporterConfig{Client: v.client, Subscriptions: v.store, Clock: v.clock.Now}), reporting)
	v.emu.SetFaults(emu.Faults{DropRate: 1, MeteringOnly: true})
	if _, err := rep.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if v.emu.Calls()["fault/drop"] != 1 || len(v.emu.Bill()) != 1 {
		t.Fatalf("the first send was not applied and dropped: calls %v, bill %+v", v.emu.Calls(), v.emu.Bill())
	}
	sub, err := v.store.GetSubscription(t.Context(), marketplace.Azure, id)
	if err != nil {
		t.Fatal(err)
	}
	sub.Plan = "pro"
	v.put(t, *sub)
	v.emu.SetFaults(emu.Faults{})
	v.clock.Advance(time.Minute)
	v.reportAll(t, rep)

	bill := v.emu.Bill()
	if len(bill) != 1 || bill[0].Quantity != 7 || bill[0].PlanID != "basic" {
		t.Fatalf("bill %+v, want one line of 7 on plan basic", bill)
	}
	bs, err := v.ledger.Buckets(t.Context(), ledger.BucketFilter{Provider: marketplace.Azure})
	if err != nil || len(bs) != 1 {
		t.Fatal(bs, err)
	}
	if b := bs[0]; b.State != ledger.StateReported || b.RecordID != bill[0].UsageEventID || b.Attributes["planId"] != "basic" || b.Attempts != 2 {
		t.Errorf("bucket %v record %q attributes %v; want reported twice-attempted as %q on the frozen plan basic", b, b.RecordID, b.Attributes, bill[0].UsageEventID)
	}
}

// TestReporterBacksOffWhenThrottled: every call is answered 429 with a
// Retry-After; the Reporter halves its rate, stops the round after the
// first throttled call and sends nothing until the Retry-After has passed.
// When Azure lets calls through again, everything is billed exactly once.
func TestReporterBacksOffWhenThrottled(t *testing.T) {
	v := newEnv(t, emu.Config{}, ledger.Config{})
	var recs []ledger.Record
	for range 5 {
		id := v.subscribe(t, "basic")
		for h := 9; h <= 11; h++ {
			recs = append(recs, ledger.Record{Provider: marketplace.Azure, Customer: id, Dimension: "requests", Quantity: int64(h), Time: onDay(h, 0)})
		}
	}
	if _, err := v.ledger.Ingest(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	if _, err := v.ledger.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	target := mustReporter(t, azure.ReporterConfig{Client: v.client, Subscriptions: v.store, Clock: v.clock.Now, Limits: ledger.Limits{MaxItems: 2, Rate: 1000}})
	rep := ledger.NewReporter(v.ledger, target, reporting)
	v.emu.SetFaults(emu.Faults{ThrottleRate: 1, RetryAfter: 40 * time.Second, MeteringOnly: true})
	st, err := rep.RunOnce(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Calls != 1 || st.Throttled != 1 || v.emu.Calls()["fault/throttle"] != 1 {
		t.Fatalf("throttled round: %+v, emulator %v; want one call, then a pause", st, v.emu.Calls())
	}
	if rep.Rate() != 500 {
		t.Errorf("rate %v after a 429, want 500", rep.Rate())
	}
	v.clock.Advance(30 * time.Second)
	if st, _ := rep.RunOnce(t.Context()); st.Calls != 0 {
		t.Errorf("called during the Retry-After: %+v", st)
	}
	// Half the calls throttled from now on: the bill still comes out exact.
	v.emu.SetFaults(emu.Faults{ThrottleRate: 0.5, RetryAfter: 5 * time.Second, MeteringOnly: true})
	v.clock.Advance(15 * time.Second)
	v.reportAll(t, rep)
	if v.emu.Calls()["fault/throttle"] < 2 {
		t.Errorf("throttled %d times: the test proves nothing", v.emu.Calls()["fault/throttle"])
	}
	got := map[string]float64{}
	for _, l := range v.emu.Bill() {
		got[l.ResourceID+l.Hour.Format("15")] += l.Quantity
	}
	if len(got) != len(recs) {
		t.Errorf("bill has %d lines, want %d", len(got), len(recs))
	}
	for _, r := range recs {
		if q := got[r.Customer+r.Time.Format("15")]; q != float64(r.Quantity) {
			t.Errorf("%s@%s billed %v, want %d", r.Customer, r.Time.Format("15"), q, r.Quantity)
		}
	}
}

// reporting is fastReporting with a floor to the pace that throttling
// brings a reporter down to: the emulator throttles at random, not by
// rate, and the pace runs on real time.
var reporting = func() ledger.ReporterConfig {
	c := fastReporting
	c.MinRate = 200
	return c
}()

func TestNewReporterRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  azure.ReporterConfig
		want string
	}{
		{azure.ReporterConfig{}, "azure: ReporterConfig.Client is required"},
		{azure.ReporterConfig{Client: azure.NewClient(azure.ClientConfig{})}, "azure: ReporterConfig.Subscriptions is required"},
	} {
		if _, err := azure.NewReporter(tc.cfg); err == nil || err.Error() != tc.want {
			t.Errorf("NewReporter(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
