package ledger_test

import (
	"errors"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
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
