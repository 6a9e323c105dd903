package marketplace

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// keyedMetering is a MeteringService that honours idempotency keys as
// ledger.Meter does: a batch whose key was applied before is not applied
// again. outcome decides each call: whether it applies the batch and what it
// returns.
type keyedMetering struct {
	mu      sync.Mutex
	applied map[string][]UsageRecord // key → the batch applied under it
	bill    map[pairKey]int64
	outcome func() (apply bool, err error)
	t       *testing.T
}

func newKeyedMetering(t *testing.T, outcome func() (bool, error)) *keyedMetering {
	return &keyedMetering{applied: map[string][]UsageRecord{}, bill: map[pairKey]int64{}, outcome: outcome, t: t}
}

func (m *keyedMetering) SubmitUsage(ctx context.Context, recs []UsageRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	key, ok := IdempotencyKey(ctx)
	if !ok {
		m.t.Error("SubmitUsage without an idempotency key")
	}
	apply, err := m.outcome()
	if prev, ok := m.applied[key]; ok {
		if !slices.Equal(prev, recs) {
			m.t.Errorf("key %s resubmitted with other records: %v, then %v", key, prev, recs)
		}
		return err // already counted: applying again is a no-op
	}
	if apply {
		m.applied[key] = slices.Clone(recs)
		for _, r := range recs {
			m.bill[pairKey{r.CustomerID, r.Dimension}] += r.Quantity
		}
	}
	return err
}

var errUnavailable = errors.New("service unavailable")

// TestUsageTrackerFlushOutcomeUnknownBillsOnce: flushes end in every way,
// above all with an unknown outcome whether or not the batch was applied,
// many times; once the service is healthy again the bill equals what was
// recorded, and nothing stays pending or in doubt.
func TestUsageTrackerFlushOutcomeUnknownBillsOnce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	healthy := false
	m := newKeyedMetering(t, func() (bool, error) {
		if healthy {
			return true, nil
		}
		switch rng.IntN(4) {
		case 0:
			return true, nil
		case 1: // applied, but the caller stopped waiting
			return true, fmt.Errorf("waiting for commit: %w: %w", ErrOutcomeUnknown, context.Canceled)
		case 2: // not applied, and the caller cannot tell
			return false, fmt.Errorf("waiting for commit: %w: %w", ErrOutcomeUnknown, context.Canceled)
		default:
			return false, errUnavailable
		}
	})
	tr := NewUsageTracker()
	want := map[pairKey]int64{}
	var unknown, failed int
	for i := range 2000 {
		for range rng.IntN(5) {
			k := pairKey{fmt.Sprintf("c%d", rng.IntN(7)), fmt.Sprintf("d%d", rng.IntN(3))}
			q := int64(rng.IntN(100) + 1)
			tr.Record(k.customer, k.dimension, q)
			want[k] += q
		}
		_, err := tr.Flush(t.Context(), m)
		switch {
		case err == nil:
		case errors.Is(err, ErrOutcomeUnknown):
			unknown++
		case errors.Is(err, errUnavailable):
			failed++
		default:
			t.Fatalf("flush %d: %v", i, err)
		}
	}
	if unknown == 0 || failed == 0 {
		t.Fatalf("the test did not exercise both outcomes: %d unknown, %d failed", unknown, failed)
	}
	healthy = true
	if _, err := tr.Flush(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	if n, d := tr.Pending(), tr.InDoubt(); n != 0 || d != 0 {
		t.Errorf("after a healthy flush: %d pending, %d in doubt", n, d)
	}
	for k, q := range want {
		if m.bill[k] != q {
			t.Errorf("%v billed %d, recorded %d", k, m.bill[k], q)
		}
	}
	if len(m.bill) != len(want) {
		t.Errorf("billed %d pairs, recorded %d", len(m.bill), len(want))
	}
}

// TestUsageTrackerFlushInDoubtFirst: a batch in doubt is resubmitted before
// new usage is drained, and while it stays in doubt new usage stays pending.
func TestUsageTrackerFlushInDoubtFirst(t *testing.T) {
	var outcomes []error
	m := newKeyedMetering(t, func() (bool, error) {
		err := outcomes[0]
		outcomes = outcomes[1:]
		return false, err
	})
	tr := NewUsageTracker()
	tr.Record("c", "d", 5)
	outcomes = []error{ErrOutcomeUnknown}
	if n, err := tr.Flush(t.Context(), m); !errors.Is(err, ErrOutcomeUnknown) || n != 0 {
		t.Fatalf("flush: %d, %v; want 0 and ErrOutcomeUnknown", n, err)
	}
	if tr.InDoubt() != 1 || tr.Pending() != 0 {
		t.Fatalf("in doubt %d, pending %d; want 1, 0", tr.InDoubt(), tr.Pending())
	}
	tr.Record("c", "d", 7)
	outcomes = []error{errUnavailable} // the resubmission fails: nothing else is sent
	if _, err := tr.Flush(t.Context(), m); !errors.Is(err, errUnavailable) {
		t.Fatalf("flush: %v", err)
	}
	if tr.InDoubt() != 1 || tr.Pending() != 1 {
		t.Fatalf("in doubt %d, pending %d; want 1, 1", tr.InDoubt(), tr.Pending())
	}
	m.outcome = func() (bool, error) { return true, nil }
	if n, err := tr.Flush(t.Context(), m); err != nil || n != 2 {
		t.Fatalf("flush: %d, %v; want 2 accepted", n, err)
	}
	if got := m.bill[pairKey{"c", "d"}]; got != 12 {
		t.Errorf("billed %d, want 12", got)
	}
	if len(m.applied) != 2 {
		t.Errorf("%d batches applied, want 2 (the one in doubt, then the new one)", len(m.applied))
	}
}
