package ledger_test

import (
	"math"
	"testing"

	"github.com/saasmarket/marketplace/ledger"
)

// TestReporterReplicasShareRate: N reporters of one cloud (N daemons on one
// store) each pace at 1/N of the cloud's rate, so that together they stay
// under the seller's quota; an uncapped cloud stays uncapped.
func TestReporterReplicasShareRate(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	for _, c := range []struct {
		rate     float64
		replicas int
		want     float64
	}{
		{10, 0, 10},
		{10, 1, 10},
		{10, 3, 10.0 / 3},
		{0, 3, math.Inf(1)},
	} {
		tg := &rtTarget{limits: ledger.Limits{Rate: c.rate}}
		if got := ledger.NewReporter(e.l, tg, ledger.ReporterConfig{Replicas: c.replicas}).Rate(); math.Abs(got-c.want) > 1e-9 && got != c.want {
			t.Errorf("rate %g, %d replicas: each reporter paces at %g/s, want %g/s", c.rate, c.replicas, got, c.want)
		}
	}
}
