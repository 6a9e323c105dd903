package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/sqlite"
)

func TestMeterBacksUsageTracker(t *testing.T) {
	e := rtOpen(t, ledger.Config{})
	e.clock.Set(time.Now()) // the tracker stamps records with the real time
	m := ledger.Meter{Ledger: e.l, Provider: marketplace.Azure}
	tr := marketplace.NewUsageTracker()
	tr.Record("sub-1", "tokens", 5)
	tr.Record("sub-1", "tokens", 7)
	tr.Record("", "tokens", 1) // invalid: the whole flush fails and stays pending
	if _, err := tr.Flush(t.Context(), m); !errors.Is(err, marketplace.ErrMeteringFailed) || !errors.Is(err, ledger.ErrInvalidRecord) {
		t.Fatalf("flush with an invalid record: %v", err)
	}
	if tr.Pending() != 3 {
		t.Errorf("pending after failed flush = %d, want 3", tr.Pending())
	}
	tr2 := marketplace.NewUsageTracker()
	tr2.Record("sub-1", "tokens", 5)
	tr2.Record("sub-1", "tokens", 7)
	if n, err := tr2.Flush(t.Context(), m); err != nil || n != 2 {
		t.Fatalf("flush: %d, %v", n, err)
	}
	e.advance(2 * time.Hour)
	if _, err := e.l.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
	bs := e.states(t) // the tracker stamps real time, so the hour varies
	if len(bs) != 1 {
		t.Fatalf("%d buckets, want 1", len(bs))
	}
	for _, b := range bs {
		if b.Provider != marketplace.Azure || b.Customer != "sub-1" || b.Quantity != 12 || b.State != ledger.StateSealed {
			t.Errorf("bucket %s: quantity %d state %s", b.BucketKey, b.Quantity, b.State)
		}
	}
}

// cancellingStore ends the caller's context at the worst moments of a
// commit: just before it, and just after it landed, each followed by a
// pause longer than the ledger's VerdictWait, so the caller cannot learn the
// verdict.
type cancellingStore struct {
	*sqlite.Store
	mu     sync.Mutex
	rng    *rand.Rand
	cancel context.CancelFunc // of the current flush
	pause  time.Duration
}

func (s *cancellingStore) Append(ctx context.Context, b *ledger.AppendBatch) ([]bool, error) {
	s.mu.Lock()
	moment, cancel, pause := s.rng.IntN(3), s.cancel, s.pause
	s.mu.Unlock()
	switch moment {
	case 0: // before the commit
		cancel()
		time.Sleep(pause)
		return s.Store.Append(ctx, b)
	case 1: // after it landed, before the caller hears of it
		fresh, err := s.Store.Append(ctx, b)
		cancel()
		time.Sleep(pause)
		return fresh, err
	}
	return s.Store.Append(ctx, b)
}

// TestMeterCancelledFlushBillsExactly: a UsageTracker flushes into a Meter
// while contexts end at every moment of the commit (before it is queued,
// while queued, just before and just after it lands), hundreds of times.
// Some flushes end in doubt and some fail; none is ever counted twice or
// lost: the ledger holds exactly what was recorded.
func TestMeterCancelledFlushBillsExactly(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cs := &cancellingStore{Store: st, rng: rand.New(rand.NewPCG(3, 4)), pause: 3 * time.Millisecond}
	l := ledger.New(cs, ledger.Config{VerdictWait: time.Millisecond, Logger: discardLogger})
	defer l.Close()
	m := ledger.Meter{Ledger: l, Provider: marketplace.GCP}
	tr := marketplace.NewUsageTracker()
	rng := rand.New(rand.NewPCG(5, 6))
	var want int64
	var unknown, failed, ok int
	for range 300 {
		for range 1 + rng.IntN(4) {
			q := int64(1 + rng.IntN(1000))
			tr.Record(fmt.Sprintf("c%d", rng.IntN(5)), "calls", q)
			want += q
		}
		ctx, cancel := context.WithCancel(t.Context())
		cs.mu.Lock()
		cs.cancel = cancel
		cs.mu.Unlock()
		if rng.IntN(4) == 0 { // also while queued, or before the flush
			time.AfterFunc(time.Duration(rng.IntN(200))*time.Microsecond, cancel)
		}
		_, err := tr.Flush(ctx, m)
		cancel()
		switch {
		case err == nil:
			ok++
		case errors.Is(err, marketplace.ErrOutcomeUnknown):
			if errors.Is(err, marketplace.ErrMeteringFailed) {
				t.Fatalf("an unknown outcome also claims a failure: %v", err)
			}
			unknown++
		case errors.Is(err, context.Canceled):
			failed++
		default:
			t.Fatalf("flush: %v", err)
		}
	}
	t.Logf("%d flushes ok, %d in doubt, %d failed", ok, unknown, failed)
	if unknown == 0 || failed == 0 || ok == 0 {
		t.Fatalf("the test did not reach every outcome: %d ok, %d in doubt, %d failed", ok, unknown, failed)
	}
	cs.mu.Lock()
	cs.rng = rand.New(rand.NewPCG(0, 0))
	cs.cancel = func() {}
	cs.pause = 0
	cs.mu.Unlock()
	for i := 0; tr.InDoubt()+tr.Pending() > 0; i++ {
		if i == 10 {
			t.Fatalf("still %d in doubt, %d pending", tr.InDoubt(), tr.Pending())
		}
		if _, err := tr.Flush(t.Context(), m); err != nil && !errors.Is(err, marketplace.ErrOutcomeUnknown) {
			t.Fatal(err)
		}
	}
	if got := total(t, l); got != want {
		t.Errorf("ledger holds %d, recorded %d", got, want)
	}
}
