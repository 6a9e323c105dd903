package ledgertest_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
)

var hour = time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)

func report(customer, dimension string, h time.Time, q int64) ledger.Report {
	return ledger.Report{ID: "r-" + customer + dimension, Provider: marketplace.AWS, Customer: customer,
		Dimension: dimension, Hour: h, Quantity: q, Attempt: 1}
}

// TestDedupe checks the AWS rules, in-process and over HTTP.
func TestDedupe(t *testing.T) {
	for _, viaHTTP := range []bool{false, true} {
		name := "direct"
		if viaHTTP {
			name = "http"
		}
		t.Run(name, func(t *testing.T) {
			cloud := ledgertest.NewFakeCloud(ledgertest.Config{Seed: 1})
			var target ledger.Target = cloud
			if viaHTTP {
				srv := httptest.NewServer(cloud)
				t.Cleanup(srv.Close)
				target = ledgertest.NewHTTPTarget(srv.URL)
			}
			steps := []struct {
				name   string
				report ledger.Report
				want   ledger.Outcome
			}{
				{"first", report("c1", "d", hour, 5), ledger.OutcomeReported},
				{"identical again", report("c1", "d", hour, 5), ledger.OutcomeReported},
				{"other quantity", report("c1", "d", hour, 6), ledger.OutcomeConflict},
				{"next hour", report("c1", "d", hour.Add(time.Hour), 6), ledger.OutcomeReported},
				{"other dimension", report("c1", "e", hour, 6), ledger.OutcomeReported},
				{"zero units", report("c2", "d", hour, 0), ledger.OutcomeRejected},
			}
			var firstID string
			for _, s := range steps {
				res, err := target.Send(t.Context(), []ledger.Report{s.report})
				if err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				if len(res) != 1 || res[0].Outcome != s.want {
					t.Fatalf("%s: got %+v, want outcome %d", s.name, res, s.want)
				}
				switch s.name {
				case "first":
					firstID = res[0].RecordID
				case "identical again", "other quantity":
					if res[0].RecordID != firstID {
						t.Errorf("%s: record id %q, want the first one %q", s.name, res[0].RecordID, firstID)
					}
				}
			}
			bill := cloud.Bill()
			if got := bill.Sum("", ""); got != 17 {
				t.Errorf("billed %d, want 17", got)
			}
			if got := bill.Sum("c1", "d"); got != 11 {
				t.Errorf("billed c1/d %d, want 11", got)
			}
			if l, ok := bill.Line("c1", "d", hour); !ok || l.Sends != 2 || l.Quantity != 5 {
				t.Errorf("line c1/d@hour = %+v, %v; want quantity 5 sent twice", l, ok)
			}
			if st := bill.Stats; st.Conflicts != 1 || st.Duplicates != 1 || st.Accepted != 3 || st.Rejected != 1 {
				t.Errorf("stats %+v", st)
			}
			if viaHTTP {
				remote, err := target.(*ledgertest.HTTPTarget).Bill(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if remote.Sum("", "") != bill.Sum("", "") || len(remote.Lines) != len(bill.Lines) || remote.Stats != bill.Stats {
					t.Errorf("bill over HTTP %+v, want %+v", remote, bill)
				}
			}
		})
	}
}

func TestCustomerOutcomes(t *testing.T) {
	cloud := ledgertest.NewFakeCloud(ledgertest.Config{})
	cloud.Unsubscribe("gone")
	cloud.SetCustomerOutcome("slow", ledger.Result{Outcome: ledger.OutcomeRetry, Reason: "unprocessed"})
	res, err := cloud.Send(t.Context(), []ledger.Report{report("gone", "d", hour, 1), report("slow", "d", hour, 1), report("ok", "d", hour, 1)})
	if err != nil {
		t.Fatal(err)
	}
	want := []ledger.Outcome{ledger.OutcomeRejected, ledger.OutcomeRetry, ledger.OutcomeReported}
	for i, w := range want {
		if res[i].Outcome != w {
			t.Errorf("report %d: outcome %d, want %d", i, res[i].Outcome, w)
		}
	}
	if res[0].Reason != ledgertest.ReasonNotSubscribed {
		t.Errorf("reason %q", res[0].Reason)
	}
	if got := cloud.Bill().Sum("", ""); got != 1 {
		t.Errorf("billed %d, want only the subscribed customer's 1", got)
	}
	cloud.ClearCustomer("gone")
	if res, _ := cloud.Send(t.Context(), []ledger.Report{report("gone", "d", hour, 1)}); res[0].Outcome != ledger.OutcomeReported {
		t.Errorf("after ClearCustomer: %+v", res)
	}
}

func TestDeadline(t *testing.T) {
	clock := ledgertest.NewClock(hour.Add(23 * time.Hour))
	cloud := ledgertest.NewFakeCloud(ledgertest.Config{Clock: clock.Now, Limits: ledger.Limits{Deadline: 24 * time.Hour}})
	if res, _ := cloud.Send(t.Context(), []ledger.Report{report("c", "d", hour, 1)}); res[0].Outcome != ledger.OutcomeReported {
		t.Fatalf("within deadline: %+v", res)
	}
	clock.Advance(time.Hour)
	if res, _ := cloud.Send(t.Context(), []ledger.Report{report("c", "d", hour, 1)}); res[0].Outcome != ledger.OutcomeExpired {
		t.Fatalf("at deadline: %+v", res)
	}
}

func TestTooManyItems(t *testing.T) {
	cloud := ledgertest.NewFakeCloud(ledgertest.Config{})
	reports := make([]ledger.Report, 26)
	for i := range reports {
		reports[i] = report("c", "d", hour.Add(time.Duration(i)*time.Hour), 1)
	}
	_, err := cloud.Send(t.Context(), reports)
	if !marketplace.IsPermanent(err) || !errors.Is(err, ledger.ErrNotApplied) {
		t.Fatalf("26 reports: err %v, want a permanent not-applied error", err)
	}
	if got := cloud.Bill().Sum("", ""); got != 0 {
		t.Errorf("billed %d", got)
	}
}

// TestFaults checks that each fault reaches the caller as the right kind
// of error, in-process and over HTTP, and that a dropped call was applied.
func TestFaults(t *testing.T) {
	tests := []struct {
		name        string
		faults      ledgertest.Faults
		http        bool
		notApplied  bool // the error wraps ErrNotApplied
		billed      int64
		wantRetryIn time.Duration
	}{
		{name: "throttled", faults: ledgertest.Faults{NotApplied: 1, RetryAfter: 1500 * time.Millisecond}, notApplied: true, wantRetryIn: 1500 * time.Millisecond},
		{name: "throttled/http", faults: ledgertest.Faults{NotApplied: 1, RetryAfter: 1500 * time.Millisecond}, http: true, notApplied: true, wantRetryIn: 1500 * time.Millisecond},
		{name: "dropped", faults: ledgertest.Faults{DropResponse: 1}, billed: 3},
		{name: "dropped/http hijack", faults: ledgertest.Faults{DropResponse: 1}, http: true, billed: 3},
		{name: "dropped/http 500", faults: ledgertest.Faults{DropResponse: 1, DropWith500: true}, http: true, billed: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cloud := ledgertest.NewFakeCloud(ledgertest.Config{Faults: tt.faults})
			var target ledger.Target = cloud
			if tt.http {
				srv := httptest.NewServer(cloud)
				t.Cleanup(srv.Close)
				target = ledgertest.NewHTTPTarget(srv.URL)
			}
			_, err := target.Send(t.Context(), []ledger.Report{report("c", "d", hour, 3)})
			if err == nil {
				t.Fatal("no error")
			}
			if got := errors.Is(err, ledger.ErrNotApplied); got != tt.notApplied {
				t.Errorf("errors.Is(%v, ErrNotApplied) = %v, want %v", err, got, tt.notApplied)
			}
			if marketplace.IsPermanent(err) {
				t.Errorf("%v is permanent", err)
			}
			if d, _ := marketplace.RetryAfter(err); d != tt.wantRetryIn {
				t.Errorf("retry after %v, want %v", d, tt.wantRetryIn)
			}
			if got := cloud.Bill().Sum("", ""); got != tt.billed {
				t.Errorf("billed %d, want %d", got, tt.billed)
			}
		})
	}
}

func TestHTTPUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err := ledgertest.NewHTTPTarget(url).Send(t.Context(), []ledger.Report{report("c", "d", hour, 1)})
	if !errors.Is(err, ledger.ErrNotApplied) {
		t.Fatalf("connection refused: %v, want ErrNotApplied (nothing was sent)", err)
	}
}

// TestFaultRates checks that the seeded fault rates come out near their
// probabilities, and the same for the same seed.
func TestFaultRates(t *testing.T) {
	run := func() ledgertest.Stats {
		cloud := ledgertest.NewFakeCloud(ledgertest.Config{Seed: 42, Faults: ledgertest.Faults{DropResponse: 0.3, NotApplied: 0.2}})
		for i := range 1000 {
			_, _ = cloud.Send(t.Context(), []ledger.Report{report("c", "d", hour.Add(time.Duration(i)*time.Hour), 1)})
		}
		return cloud.Bill().Stats
	}
	st := run()
	if st.Dropped < 250 || st.Dropped > 350 || st.Throttled < 150 || st.Throttled > 250 {
		t.Errorf("1000 calls: %d dropped, %d throttled; want about 300 and 200", st.Dropped, st.Throttled)
	}
	if st.Accepted != 1000-st.Throttled {
		t.Errorf("accepted %d of %d applied calls", st.Accepted, 1000-st.Throttled)
	}
	if again := run(); again != st {
		t.Errorf("same seed, other stats: %+v then %+v", st, again)
	}
}

// TestConcurrent sends the same reports from many goroutines: each hour
// is billed once.
func TestConcurrent(t *testing.T) {
	cloud := ledgertest.NewFakeCloud(ledgertest.Config{Faults: ledgertest.Faults{DropResponse: 0.5}})
	srv := httptest.NewServer(cloud)
	t.Cleanup(srv.Close)
	var wg sync.WaitGroup
	for g := range 8 {
		var target ledger.Target = cloud
		if g%2 == 1 {
			target = ledgertest.NewHTTPTarget(srv.URL)
		}
		wg.Go(func() {
			for i := range 50 {
				_, _ = target.Send(t.Context(), []ledger.Report{report("c", "d", hour.Add(time.Duration(i)*time.Hour), 2)})
			}
		})
	}
	wg.Wait()
	bill := cloud.Bill()
	if got := bill.Sum("", ""); got != 100 {
		t.Errorf("billed %d, want 50 hours × 2", got)
	}
	if bill.Stats.Conflicts != 0 || bill.Stats.Accepted != 50 || bill.Stats.Duplicates != 350 {
		t.Errorf("stats %+v", bill.Stats)
	}
}
