package postgres_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
	"github.com/saasmarket/marketplace/postgres"
)

// TestFoldAndSealWhileOthersIngest: three handles (three processes, each
// with its own pool and ledger) ingest into one database while every one
// of them folds and seals in a loop. Each record must be counted exactly
// once: a fold takes exactly the log rows it deletes, and folds and seals
// of different processes never interleave.
func TestFoldAndSealWhileOthersIngest(t *testing.T) {
	db := pg.NewDB(t)
	hour := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	clock := ledgertest.NewClock(hour.Add(90 * time.Minute)) // 10:00 sealable, 11:00 open
	const handles, writers, batches, per = 3, 4, 30, 50
	var (
		stores  []*postgres.Store
		ledgers []*ledger.Ledger
	)
	for range handles {
		s := open(t, db)
		l := ledger.New(s, ledger.Config{Clock: clock.Now})
		t.Cleanup(func() { l.Close() })
		stores, ledgers = append(stores, s), append(ledgers, l)
	}
	var (
		wg, maint sync.WaitGroup
		stop      atomic.Bool
		sealed    atomic.Int64
	)
	for i, s := range stores {
		maint.Go(func() {
			for !stop.Load() {
				if _, err := s.Fold(t.Context()); err != nil {
					t.Errorf("fold %d: %v", i, err)
					return
				}
				res, err := s.Seal(t.Context(), ledger.SealRequest{Before: hour.Add(time.Hour), Now: clock.Now()})
				if err != nil {
					t.Errorf("seal %d: %v", i, err)
					return
				}
				sealed.Add(int64(len(res.Sealed)))
			}
		})
	}
	for i, l := range ledgers {
		for w := range writers {
			wg.Go(func() {
				for b := range batches {
					recs := make([]ledger.Record, per)
					for r := range recs {
						n := ((i*writers+w)*batches+b)*per + r
						// Half into 10:00, which the seals close: what
						// arrives after a seal is late usage for 11:00.
						at := hour.Add(time.Duration(n%2) * 70 * time.Minute)
						recs[r] = ledger.Record{Provider: marketplace.GCP, Customer: fmt.Sprintf("c%d", n%5), Dimension: "req",
							Quantity: 1, Time: at, EventID: fmt.Sprintf("e%d", n)}
					}
					if _, err := l.Ingest(t.Context(), recs); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	stop.Store(true)
	maint.Wait()
	if _, err := stores[0].Fold(t.Context()); err != nil {
		t.Fatal(err)
	}
	bs, err := stores[1].Buckets(t.Context(), ledger.BucketFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, b := range bs {
		total += b.Quantity
	}
	if want := int64(handles * writers * batches * per); total != want {
		t.Errorf("buckets hold %d, want %d (every record once)", total, want)
	}
	if sealed.Load() == 0 {
		t.Error("no seal happened during ingest: the test did not test interleaving")
	}
}
