package gcp_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/servicecontrol/v1"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
	"github.com/saasmarket/marketplace/ledger"
)

// ingest records n random records for consumers over 09:00-11:59 and
// returns the expected bill per consumer and full metric name: whole
// millions of tokens (remainders carry, never round up) and requests.
func ingest(t *testing.T, e *env, rng *rand.Rand, consumers []string, n int) map[[2]string]int64 {
	t.Helper()
	raw := map[[2]string]int64{}
	recs := make([]ledger.Record, n)
	for i := range recs {
		dim := []string{gcp.DimensionTokens, "requests"}[rng.IntN(2)]
		q := rng.Int64N(10)
		if dim == gcp.DimensionTokens {
			q = rng.Int64N(900_000)
		}
		c := consumers[rng.IntN(len(consumers))]
		recs[i] = ledger.Record{Provider: marketplace.GCP, Customer: c, Dimension: dim, Quantity: q,
			Time: onDay(9+rng.IntN(3), rng.IntN(60)), EventID: fmt.Sprintf("ev-%d", i)}
		raw[[2]string{c, service + "/" + dim}] += q
	}
	if _, err := e.ledger.Ingest(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	// Retried ingest of the same events counts once.
	if _, err := e.ledger.Ingest(t.Context(), recs[:n/2]); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ledger.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := map[[2]string]int64{}
	for k, v := range raw {
		if strings.HasSuffix(k[1], gcp.DimensionTokens) {
			v /= 1_000_000
		}
		if v > 0 {
			want[k] = v
		}
	}
	return want
}

// checkBill compares the emulator's bill with want and checks that each
// consumer, metric and hour was billed by one operation.
func checkBill(t *testing.T, e *env, want map[[2]string]int64) {
	t.Helper()
	got := map[[2]string]int64{}
	lines := map[string]int{}
	for _, l := range e.emu.Bill() {
		got[[2]string{l.ConsumerID, l.MetricName}] += l.Value
		key := l.ConsumerID + l.MetricName + l.StartTime.String()
		lines[key]++
		if lines[key] > 1 {
			t.Errorf("%s billed by more than one operation", key)
		}
		if l.EndTime.Sub(l.StartTime) != time.Hour || l.StartTime.Truncate(time.Hour) != l.StartTime {
			t.Errorf("operation %s spans %s..%s, want one whole hour", l.OperationID, l.StartTime, l.EndTime)
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("bill %v = %d, want %d", k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected bill line %v = %d", k, v)
		}
	}
	if bad := e.buckets(t, ledger.StateRejected, ledger.StateConflict, ledger.StateExpired, ledger.StateCarried); len(bad) > 0 {
		t.Errorf("%d buckets not reported, first: %+v", len(bad), bad[0])
	}
}

func TestReportBillsEachHourOnce(t *testing.T) {
	e := newEnv(t, emu.Config{})
	_, c1 := e.activeConsumer(t, "acc-1")
	_, c2 := e.activeConsumer(t, "acc-2")
	want := ingest(t, e, rand.New(rand.NewPCG(1, 1)), []string{c1, c2}, 200)
	e.reportAll(t, e.reporter(t))
	checkBill(t, e, want)
	for _, b := range e.buckets(t, ledger.StateReported) {
		if b.RecordID != b.ReportID {
			t.Errorf("bucket %d: record id %q, want the operationId %q", b.ID, b.RecordID, b.ReportID)
		}
	}
	// Reporting again sends nothing new.
	n := len(e.emu.Bill())
	e.reportAll(t, e.reporter(t))
	if len(e.emu.Bill()) != n {
		t.Errorf("a second round billed %d more lines", len(e.emu.Bill())-n)
	}
}

// TestExactlyOnceThroughFaults drives the ledger's reporter through every
// fault the emulator injects; the bill must hold each hour exactly once.
func TestExactlyOnceThroughFaults(t *testing.T) {
	cases := []struct {
		name   string
		faults emu.Faults
	}{
		{"apply then drop the response", emu.Faults{DropResponse: 0.5}},
		{"throttled with retry-after", emu.Faults{Throttle: 0.5, RetryAfter: 2 * time.Second}},
		{"errors", emu.Faults{ErrorRate: 0.5}},
		{"latency", emu.Faults{Latency: 5 * time.Millisecond}},
		{"all at once", emu.Faults{DropResponse: 0.3, Throttle: 0.2, ErrorRate: 0.2, Latency: time.Millisecond}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, emu.Config{Seed: uint64(i)})
			var consumers []string
			for j := range 4 {
				_, c := e.activeConsumer(t, fmt.Sprintf("acc-%d", j))
				consumers = append(consumers, c)
			}
			want := ingest(t, e, rand.New(rand.NewPCG(uint64(i), 7)), consumers, 400)
			tc.faults.Scope = "servicecontrol"
			e.emu.SetFaults(tc.faults)
			e.reportAll(t, e.reporter(t))
			checkBill(t, e, want)
			calls := e.emu.Calls()
			if calls["services.report"] == 0 {
				t.Fatal("no report reached the emulator")
			}
			t.Logf("calls: %v", calls)
		})
	}
}

func TestCheckErrorsReject(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(e *env, ent, consumer string)
		reason string
		final  bool
	}{
		{"billing disabled", func(e *env, _, c string) { e.emu.SetCheckError(c, "BILLING_DISABLED") }, "BILLING_DISABLED", true},
		{"project deleted", func(e *env, _, c string) { e.emu.SetCheckError(c, "PROJECT_DELETED") }, "PROJECT_DELETED", true},
		{"cancelled entitlement, past the final report grace", func(e *env, ent, _ string) {
			if err := e.emu.Cancel(t.Context(), ent); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(emu.FinalReportGrace + time.Minute)
		}, "SERVICE_NOT_ACTIVATED", true},
		{"transient", func(e *env, _, c string) { e.emu.SetCheckError(c, "BILLING_STATUS_UNAVAILABLE") }, "BILLING_STATUS_UNAVAILABLE", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, emu.Config{})
			ent, bad := e.activeConsumer(t, "acc-bad")
			_, good := e.activeConsumer(t, "acc-good")
			for _, c := range []string{bad, good} {
				if err := e.ledger.Record(t.Context(), ledger.Record{Provider: marketplace.GCP, Customer: c, Dimension: "requests", Quantity: 7, Time: onDay(10, 5)}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := e.ledger.Seal(t.Context()); err != nil {
				t.Fatal(err)
			}
			tc.setup(e, ent, bad)
			r := e.reporter(t)
			if _, err := r.RunOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := e.emu.Total(good, service+"/requests"); got != 7 {
				t.Errorf("good consumer billed %d, want 7", got)
			}
			if got := e.emu.Total(bad, service+"/requests"); got != 0 {
				t.Errorf("refused consumer billed %d", got)
			}
			state := ledger.StateRejected
			if !tc.final {
				state = ledger.StateSealed
			}
			bs, err := e.ledger.Buckets(t.Context(), ledger.BucketFilter{Provider: marketplace.GCP, Customer: bad})
			if err != nil {
				t.Fatal(err)
			}
			if len(bs) != 1 || bs[0].State != state || !strings.Contains(bs[0].Reason, tc.reason) {
				t.Fatalf("bucket = %+v, want %s with reason %s", bs, state, tc.reason)
			}
			if !tc.final {
				e.emu.SetCheckError(bad, "")
				e.reportAll(t, r)
				if got := e.emu.Total(bad, service+"/requests"); got != 7 {
					t.Errorf("after the check recovered: billed %d, want 7", got)
				}
			}
		})
	}
}

func TestUnmappedDimensionRejected(t *testing.T) {
	e := newEnv(t, emu.Config{})
	_, c := e.activeConsumer(t, "acc")
	if err := e.ledger.Record(t.Context(), ledger.Record{Provider: marketplace.GCP, Customer: c, Dimension: "gpu_seconds", Quantity: 3, Time: onDay(10, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ledger.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.reportAll(t, e.reporter(t))
	bs := e.buckets(t, ledger.StateRejected)
	if len(bs) != 1 || !strings.Contains(bs[0].Reason, "gpu_seconds") {
		t.Fatalf("rejected = %+v, want the gpu_seconds bucket", bs)
	}
}

// TestReportErrorsPerOperation: a resend of the same operation is
// deduplicated; a different payload under a used operationId is a
// conflict; an invalid operation is rejected; the others are reported.
func TestReportErrorsPerOperation(t *testing.T) {
	e := newEnv(t, emu.Config{})
	_, c := e.activeConsumer(t, "acc")
	target, err := gcp.NewReporter(gcp.ReporterConfig{Client: e.sc, ServiceName: service,
		Metrics: map[string]string{"requests": "requests", "bogus": "not-in-service-config"}})
	if err != nil {
		t.Fatal(err)
	}
	rep := func(id, dim string, q int64) ledger.Report {
		return ledger.Report{ID: id, Provider: marketplace.GCP, Customer: c, Dimension: dim, Hour: onDay(10, 0), Quantity: q}
	}
	if _, err := target.Send(t.Context(), []ledger.Report{rep("op-1", "requests", 5)}); err != nil {
		t.Fatal(err)
	}
	res, err := target.Send(t.Context(), []ledger.Report{rep("op-1", "requests", 5), rep("op-1b", "requests", 1), rep("op-2", "bogus", 1)})
	if err != nil {
		t.Fatal(err)
	}
	conflict, err := target.Send(t.Context(), []ledger.Report{rep("op-1", "requests", 6)})
	if err != nil {
		t.Fatal(err)
	}
	res = append(res, conflict...)
	want := []ledger.Outcome{ledger.OutcomeReported, ledger.OutcomeReported, ledger.OutcomeRejected, ledger.OutcomeConflict}
	for i, r := range res {
		if r.Outcome != want[i] {
			t.Errorf("report %d: outcome %v (%s), want %v", i, r.Outcome, r.Reason, want[i])
		}
	}
	if got := e.emu.Total(c, service+"/requests"); got != 6 {
		t.Errorf("billed %d, want 6", got)
	}
}

// TestRequestsStayUnderOneMegabyte: Size never underestimates an
// operation's share of the request, so a call the reporter fills to
// MaxBytes stays under Service Control's 1 MB limit.
func TestRequestsStayUnderOneMegabyte(t *testing.T) {
	e := newEnv(t, emu.Config{})
	target, err := gcp.NewReporter(gcp.ReporterConfig{Client: e.sc, ServiceName: service, Metrics: map[string]string{"requests": "requests"}})
	if err != nil {
		t.Fatal(err)
	}
	var ops []*servicecontrol.Operation
	size := 0
	for i := 0; size+2000 < gcp.MaxRequestBytes; i++ {
		r := ledger.Report{ID: fmt.Sprintf("%08d-0000-5000-8000-000000000000", i), Customer: fmt.Sprintf("project_number:%d", 100_000_000_000+i),
			Dimension: "requests", Hour: onDay(10, 0), Quantity: 1 << 40}
		op, err := target.Operation(r)
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, op)
		size += target.Size(r)
	}
	body, err := json.Marshal(&servicecontrol.ReportRequest{Operations: ops})
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > size+64 || len(body) >= emu.MaxReportBytes {
		t.Fatalf("%d operations: request of %d bytes, estimated %d", len(ops), len(body), size)
	}
	if gcp.MaxRequestBytes >= emu.MaxReportBytes {
		t.Fatal("MaxRequestBytes leaves no room under 1 MB")
	}
}

// TestTokensBilledPerMillionWithCarry: whole millions are billed each
// hour and the remainder carries into the next hour, never rounded up.
func TestTokensBilledPerMillionWithCarry(t *testing.T) {
	e := newEnv(t, emu.Config{})
	_, c := e.activeConsumer(t, "acc")
	for _, r := range []struct {
		h int
		q int64
	}{{9, 2_500_000}, {10, 700_000}, {11, 900_000}} {
		if err := e.ledger.Record(t.Context(), ledger.Record{Provider: marketplace.GCP, Customer: c, Dimension: gcp.DimensionTokens, Quantity: r.q, Time: onDay(r.h, 30)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.ledger.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.reportAll(t, e.reporter(t))
	got := map[int]int64{}
	for _, l := range e.emu.Bill() {
		got[l.StartTime.Hour()] += l.Value
	}
	want := map[int]int64{9: 2, 10: 1, 11: 1} // 2.5M → 2 (+0.5M), 1.2M → 1 (+0.2M), 1.1M → 1 (+0.1M)
	if len(got) != len(want) || got[9] != 2 || got[10] != 1 || got[11] != 1 {
		t.Fatalf("billed per hour %v, want %v", got, want)
	}
}

// TestReporterBacksOffWhenThrottled: Service Control answers 429 with a
// Retry-After; the Reporter halves its rate, stops after the first
// throttled call and sends nothing until the Retry-After has passed. With
// half the calls throttled after that, each hour is still billed once.
func TestReporterBacksOffWhenThrottled(t *testing.T) {
	e := newEnv(t, emu.Config{Seed: 9})
	var consumers []string
	for j := range 3 {
		_, c := e.activeConsumer(t, fmt.Sprintf("acc-%d", j))
		consumers = append(consumers, c)
	}
	want := ingest(t, e, rand.New(rand.NewPCG(9, 9)), consumers, 300)
	target, err := gcp.NewReporter(gcp.ReporterConfig{Client: e.sc, ServiceName: service, Clock: e.clock.Now, Logger: discard,
		Metrics: map[string]string{gcp.DimensionTokens: "tokens_1m", "requests": "requests"}, Limits: ledger.Limits{MaxItems: 5, Rate: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	r := ledger.NewReporter(e.ledger, target, ledger.ReporterConfig{Lease: time.Minute, BackoffBase: time.Second,
		BackoffMax: 10 * time.Second, MinRate: 200, Logger: discard})
	e.emu.SetFaults(emu.Faults{Throttle: 1, RetryAfter: 40 * time.Second, Scope: "servicecontrol"})
	st, err := r.RunOnce(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if calls := e.emu.Calls(); st.Calls != 1 || st.Throttled != 1 || calls["services.check"]+calls["services.report"] != 0 {
		t.Fatalf("throttled round: %+v, emulator %v; want one throttled call, then a pause", st, calls)
	}
	if r.Rate() != 500 {
		t.Errorf("rate %v after a 429, want 500", r.Rate())
	}
	for _, b := range e.buckets(t, ledger.StateSealed) {
		if b.MaybeApplied || b.NextAttempt.Before(e.clock.Now().Add(40*time.Second)) {
			t.Fatalf("bucket %v: next attempt %v, maybe applied %v; want after the Retry-After, not applied", b, b.NextAttempt, b.MaybeApplied)
		}
	}
	e.clock.Advance(30 * time.Second)
	if st, _ := r.RunOnce(t.Context()); st.Calls != 0 {
		t.Errorf("called during the Retry-After: %+v", st)
	}
	e.emu.SetFaults(emu.Faults{Throttle: 0.5, RetryAfter: 5 * time.Second, Scope: "servicecontrol"})
	e.reportAll(t, r)
	checkBill(t, e, want)
}

// TestFinalFlushEndsAtSealTime: a final flush (SealCustomer) in the middle
// of an hour reports that hour up to the seal time, never an endTime in
// the future.
func TestFinalFlushEndsAtSealTime(t *testing.T) {
	e := newEnv(t, emu.Config{})
	_, c := e.activeConsumer(t, "acc")
	for _, at := range []time.Time{onDay(11, 40), e.clock.Now().Add(-5 * time.Minute)} {
		if err := e.ledger.Record(t.Context(), ledger.Record{Provider: marketplace.GCP, Customer: c, Dimension: "requests", Quantity: 3, Time: at}); err != nil {
			t.Fatal(err)
		}
	}
	sealedAt := e.clock.Now()
	if _, err := e.ledger.SealCustomer(t.Context(), marketplace.GCP, c); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	e.reportAll(t, e.reporter(t))
	bill := e.emu.Bill()
	if len(bill) != 2 {
		t.Fatalf("bill %+v, want the 11:00 hour and the current one", bill)
	}
	for _, l := range bill {
		wantEnd := l.StartTime.Add(time.Hour)
		if l.StartTime.Equal(ledger.HourOf(sealedAt)) {
			wantEnd = sealedAt.Truncate(time.Second)
		}
		if !l.EndTime.Equal(wantEnd) || l.EndTime.After(sealedAt) || l.Value != 3 {
			t.Errorf("operation %s..%s of %d; want it to end %s, not after the seal at %s", l.StartTime, l.EndTime, l.Value, wantEnd, sealedAt)
		}
	}
}

// TestFrozenOperationAcrossConfigChange: the first report is applied and
// its response lost; the seller then maps the dimension to another metric.
// The retry sends the operation frozen at the first send, which Google
// deduplicates: billed once, reported.
func TestFrozenOperationAcrossConfigChange(t *testing.T) {
	e := newEnv(t, emu.Config{})
	_, c := e.activeConsumer(t, "acc")
	if err := e.ledger.Record(t.Context(), ledger.Record{Provider: marketplace.GCP, Customer: c, Dimension: "requests", Quantity: 4, Time: onDay(10, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ledger.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	reporter := func(metric string) *ledger.Reporter {
		target, err := gcp.NewReporter(gcp.ReporterConfig{Client: e.sc, ServiceName: service, Clock: e.clock.Now, Logger: discard,
			Metrics: map[string]string{"requests": metric}})
		if err != nil {
			t.Fatal(err)
		}
		return ledger.NewReporter(e.ledger, target, ledger.ReporterConfig{Lease: time.Minute, BackoffBase: time.Second, Logger: discard})
	}
	// Responses are lost at random (checks too): report until Google holds
	// the operation while the bucket is still sealed, its answer lost.
	e.emu.SetFaults(emu.Faults{DropResponse: 0.5, Scope: "servicecontrol"})
	first := reporter("requests")
	for round := 0; len(e.emu.Bill()) == 0; round++ {
		if round == 50 {
			t.Fatal("no report was applied in 50 rounds")
		}
		if _, err := first.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Minute)
	}
	if bs := e.buckets(t, ledger.StateSealed); len(bs) != 1 || !bs[0].MaybeApplied {
		t.Fatalf("the applied report's answer was not lost: sealed buckets %+v", bs)
	}
	e.emu.SetFaults(emu.Faults{})
	e.clock.Advance(time.Minute)
	e.reportAll(t, reporter("tokens_1m"))
	if bill := e.emu.Bill(); len(bill) != 1 || bill[0].MetricName != service+"/requests" || bill[0].Value != 4 {
		t.Fatalf("bill %+v, want one line of 4 requests", bill)
	}
	if bs := e.buckets(t, ledger.StateReported); len(bs) != 1 || bs[0].Attributes["metricName"] != service+"/requests" {
		t.Fatalf("reported buckets %+v, want the one bucket, with the frozen metric", bs)
	}
}

func TestNewReporterRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  gcp.ReporterConfig
		want string
	}{
		{gcp.ReporterConfig{ServiceName: service}, "gcp: ReporterConfig.Client is required"},
		{gcp.ReporterConfig{Client: &servicecontrol.Service{}}, "gcp: ReporterConfig.ServiceName is required"},
	} {
		if _, err := gcp.NewReporter(tc.cfg); err == nil || err.Error() != tc.want {
			t.Errorf("NewReporter(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
