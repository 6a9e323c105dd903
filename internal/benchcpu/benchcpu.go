// Package benchcpu reports the CPU time a benchmark's process spent per
// operation, beside the wall-clock ns/op that go test prints.
//
// On a machine shared with other work, wall-clock ns/op measures the
// scheduler as much as the code: Linux favours threads that sleep (a
// contended sync.Mutex parks its waiters), so a lock-free design that never
// sleeps gets a smaller share of a loaded machine and looks slower than it
// is. CPU time per operation does not depend on the share the process got.
package benchcpu

import (
	"testing"
	"time"
)

// Now returns the CPU time (user and system) the process has used so far,
// or 0 where the platform does not say.
func Now() time.Duration { return processCPU() }

// Report adds the metric cpu-ns/op: the process's CPU time since start,
// divided by b.N. Call it before the benchmark's own clean-up.
func Report(b *testing.B, start time.Duration) {
	if end := Now(); start > 0 && b.N > 0 {
		b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
	}
}
