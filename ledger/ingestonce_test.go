package ledger_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// sum returns the quantity in the ledger's buckets per customer.
func sum(t *testing.T, tl *testLedger) map[string]int64 {
	t.Helper()
	if err := tl.Fold(t.Context()); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, b := range tl.buckets(t) {
		out[b.Customer] += b.Quantity
	}
	return out
}

// TestIngestOnce: a batch under an idempotency key counts once, as a whole,
// however often and however concurrently it is retried; its own event ids
// still dedupe records; other keys are other batches.
func TestIngestOnce(t *testing.T) {
	for _, mode := range []ledger.Durability{ledger.Durable, ledger.Buffered} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			tl := newLedger(t, ledger.Config{Durability: mode})
			ctx := t.Context()
			batch := func(cust string, n int) []ledger.Record {
				recs := make([]ledger.Record, n)
				for i := range recs {
					recs[i] = ledger.Record{Provider: marketplace.AWS, Customer: cust, Dimension: "d", Quantity: 1, Time: testNow}
				}
				return recs
			}
			// The same batch sent 8 times at once (one group commit, most
			// likely), then again in sequence.
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := tl.IngestOnce(ctx, "k1", batch("a", 10)); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			res, err := tl.IngestOnce(ctx, "k1", batch("a", 10))
			if err != nil {
				t.Fatal(err)
			}
			if mode == ledger.Durable && (res.Accepted != 0 || res.Duplicates != 10) {
				t.Errorf("retry: %+v, want all 10 duplicates", res)
			}
			// Another key is another batch; a record's own event id still counts once.
			withID := batch("b", 3)
			withID[0].EventID, withID[1].EventID = "ev-1", "ev-1"
			if _, err := tl.IngestOnce(ctx, "k2", withID); err != nil {
				t.Fatal(err)
			}
			if _, err := tl.IngestOnce(ctx, "k3", withID); err != nil { // ev-1 again, plus one new record under k3
				t.Fatal(err)
			}
			if mode == ledger.Buffered {
				if err := tl.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			got := sum(t, tl)
			if got["a"] != 10 || got["b"] != 3 {
				t.Errorf("buckets %v, want a=10 (one batch of 10, retried 8 times) and b=3 (ev-1 once, one record under k2 and one under k3)", got)
			}
		})
	}
}

func TestIngestOnceRefusesBadKeysAndReservedIDs(t *testing.T) {
	tl := newLedger(t, ledger.Config{})
	rec := ledger.Record{Provider: marketplace.AWS, Customer: "c", Dimension: "d", Quantity: 1, Time: testNow}
	for _, key := range []string{"", string(make([]byte, 300)), "\xff"} {
		if _, err := tl.IngestOnce(t.Context(), key, []ledger.Record{rec}); !errors.Is(err, ledger.ErrInvalidRecord) {
			t.Errorf("key %q: %v, want ErrInvalidRecord", key, err)
		}
	}
	rec.EventID = "\x1fbatch:k"
	if _, err := tl.Ingest(t.Context(), []ledger.Record{rec}); !errors.Is(err, ledger.ErrInvalidRecord) {
		t.Errorf("an event id in the batch-key namespace: %v, want ErrInvalidRecord", err)
	}
}
