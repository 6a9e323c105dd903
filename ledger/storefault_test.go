package ledger_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
	"github.com/saasmarket/marketplace/sqlite"
)

// flakyStore fails Append, Fold and Seal while down is set: a disk that is
// full, a database that is briefly unreachable.
type flakyStore struct {
	*sqlite.Store
	down    atomic.Bool
	appends atomic.Int64 // failed appends
}

var errDown = errors.New("store unavailable")

func (s *flakyStore) Append(ctx context.Context, b *ledger.AppendBatch) ([]bool, error) {
	if s.down.Load() {
		s.appends.Add(1)
		return nil, errDown
	}
	return s.Store.Append(ctx, b)
}

func (s *flakyStore) Fold(ctx context.Context) ([]ledger.BucketDelta, error) {
	if s.down.Load() {
		return nil, errDown
	}
	return s.Store.Fold(ctx)
}

func (s *flakyStore) Seal(ctx context.Context, req ledger.SealRequest) (ledger.SealResult, error) {
	if s.down.Load() {
		return ledger.SealResult{}, errDown
	}
	return s.Store.Seal(ctx, req)
}

func openFlaky(t *testing.T) *flakyStore {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "f.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &flakyStore{Store: st}
}

func total(t *testing.T, l *ledger.Ledger) int64 {
	t.Helper()
	if err := l.Fold(t.Context()); err != nil {
		t.Fatal(err)
	}
	bs, err := l.Buckets(t.Context(), ledger.BucketFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, b := range bs {
		n += b.Quantity
	}
	return n
}

func TestDurableCommitFailure(t *testing.T) {
	st := openFlaky(t)
	clk := ledgertest.NewClock(rtNow)
	l := ledger.New(st, ledger.Config{Clock: clk.Now, Logger: discardLogger})
	defer l.Close()
	r := ledger.Record{Provider: marketplace.AWS, Customer: "c", Dimension: "d", Quantity: 5, EventID: "e1"}
	st.down.Store(true)
	if _, err := l.Ingest(t.Context(), []ledger.Record{r}); !errors.Is(err, errDown) {
		t.Fatalf("ingest while the store is down: %v, want the store's error", err)
	}
	st.down.Store(false)
	// The caller retries with the same event id: counted once.
	for range 2 {
		if _, err := l.Ingest(t.Context(), []ledger.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	if got := total(t, l); got != 5 {
		t.Errorf("total = %d, want 5", got)
	}
}

func TestBufferedCommitFailureLosesNothing(t *testing.T) {
	st := openFlaky(t)
	clk := ledgertest.NewClock(rtNow)
	l := ledger.New(st, ledger.Config{Clock: clk.Now, Durability: ledger.Buffered, FlushInterval: 10 * time.Millisecond, Logger: discardLogger})
	defer l.Close()
	st.down.Store(true)
	for range 10 {
		if _, err := l.Ingest(t.Context(), []ledger.Record{{Provider: marketplace.GCP, Customer: "c", Dimension: "d", Quantity: 3}}); err != nil {
			t.Fatal(err)
		}
	}
	// Let several flush intervals fail.
	deadline := time.Now().Add(5 * time.Second)
	for st.appends.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st.appends.Load() < 3 {
		t.Fatalf("only %d failed commits were tried", st.appends.Load())
	}
	st.down.Store(false)
	if err := l.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := total(t, l); got != 30 {
		t.Errorf("total after the store came back = %d, want 30: buffered usage was lost", got)
	}
}

func TestMaintainSurvivesStoreOutage(t *testing.T) {
	st := openFlaky(t)
	clk := ledgertest.NewClock(rtNow)
	l := ledger.New(st, ledger.Config{Clock: clk.Now, Logger: discardLogger})
	defer l.Close()
	if err := l.Record(t.Context(), ledger.Record{Provider: marketplace.Azure, Customer: "c", Dimension: "d", Quantity: 7, Time: rtNow.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	st.down.Store(true)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- l.Maintain(ctx, ledger.MaintainConfig{FoldEvery: 5 * time.Millisecond, SealEvery: 5 * time.Millisecond})
	}()
	time.Sleep(50 * time.Millisecond) // several failed rounds
	st.down.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		bs, err := l.Buckets(t.Context(), ledger.BucketFilter{States: []ledger.State{ledger.StateSealed}})
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) == 1 && bs[0].Quantity == 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Maintain did not seal after the store came back: %+v", bs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Maintain returned %v", err)
	}
}

// slowStore holds every Append until release is closed: a disk that stalls.
type slowStore struct {
	*sqlite.Store
	entered chan struct{} // closed when the first Append starts
	release chan struct{}
	once    sync.Once
}

func (s *slowStore) Append(ctx context.Context, b *ledger.AppendBatch) ([]bool, error) {
	s.once.Do(func() { close(s.entered) })
	<-s.release
	return s.Store.Append(ctx, b)
}

// TestIngestCancelledWhileCommitting: a caller whose context ends while its
// commit is under way gets an error, the commit still lands, and retrying
// with the same event id counts the record once.
func TestIngestCancelledWhileCommitting(t *testing.T) {
	st := &slowStore{Store: openFlaky(t).Store, entered: make(chan struct{}), release: make(chan struct{})}
	clk := ledgertest.NewClock(rtNow)
	l := ledger.New(st, ledger.Config{Clock: clk.Now, Logger: discardLogger})
	defer l.Close()
	r := ledger.Record{Provider: marketplace.AWS, Customer: "c", Dimension: "d", Quantity: 9, EventID: "once"}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := l.Ingest(ctx, []ledger.Record{r})
		done <- err
	}()
	<-st.entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("ingest with a cancelled context: %v, want context.Canceled", err)
	}
	close(st.release)
	res, err := l.Ingest(t.Context(), []ledger.Record{r})
	if err != nil || res.Duplicates != 1 {
		t.Errorf("retry after the cancelled wait: %+v, %v; want one duplicate (the first commit landed)", res, err)
	}
	if got := total(t, l); got != 9 {
		t.Errorf("total = %d, want 9", got)
	}
}
