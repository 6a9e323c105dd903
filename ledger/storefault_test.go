package ledger_test

import (
	"context"
	"errors"
	"fmt"
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
	tried   atomic.Int64 // records given to failed appends
	largest atomic.Int64 // records of the largest append
}

var errDown = errors.New("store unavailable")

func (s *flakyStore) Append(ctx context.Context, b *ledger.AppendBatch) ([]bool, error) {
	n := int64(len(b.Records()))
	for {
		if m := s.largest.Load(); n <= m || s.largest.CompareAndSwap(m, n) {
			break
		}
	}
	if s.down.Load() {
		s.appends.Add(1)
		s.tried.Add(n)
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
// commit is under way, and whose commit gives no verdict within VerdictWait,
// gets ErrOutcomeUnknown; the commit still lands, and retrying with the same
// event id counts the record once.
func TestIngestCancelledWhileCommitting(t *testing.T) {
	st := &slowStore{Store: openFlaky(t).Store, entered: make(chan struct{}), release: make(chan struct{})}
	clk := ledgertest.NewClock(rtNow)
	l := ledger.New(st, ledger.Config{Clock: clk.Now, VerdictWait: 10 * time.Millisecond, Logger: discardLogger})
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
	if err := <-done; !errors.Is(err, marketplace.ErrOutcomeUnknown) || !errors.Is(err, context.Canceled) {
		t.Fatalf("ingest with a cancelled context: %v, want ErrOutcomeUnknown and context.Canceled", err)
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

// TestIngestCancelledVerdict: when the context ends during the commit and
// the verdict follows within VerdictWait, Ingest returns the verdict; a
// request whose context ends while it is still queued is withdrawn, never
// committed, and says so with a plain context error.
func TestIngestCancelledVerdict(t *testing.T) {
	st := &slowStore{Store: openFlaky(t).Store, entered: make(chan struct{}), release: make(chan struct{})}
	clk := ledgertest.NewClock(rtNow)
	l := ledger.New(st, ledger.Config{Clock: clk.Now, VerdictWait: 10 * time.Second, Logger: discardLogger})
	defer l.Close()
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() {
		_, err := l.Ingest(ctx, []ledger.Record{{Provider: marketplace.AWS, Customer: "c", Dimension: "d", Quantity: 9}})
		first <- err
	}()
	<-st.entered
	queuedCtx, cancelQueued := context.WithCancel(t.Context())
	queued := make(chan error, 1)
	go func() {
		_, err := l.Ingest(queuedCtx, []ledger.Record{{Provider: marketplace.AWS, Customer: "c", Dimension: "d", Quantity: 100}})
		queued <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it queue behind the held commit
	cancelQueued()
	if err := <-queued; !errors.Is(err, context.Canceled) || errors.Is(err, marketplace.ErrOutcomeUnknown) {
		t.Errorf("ingest cancelled while queued: %v, want context.Canceled and a known outcome", err)
	}
	cancel()
	time.Sleep(20 * time.Millisecond) // the first caller now waits for the verdict
	close(st.release)
	if err := <-first; err != nil {
		t.Errorf("ingest whose commit landed after its context ended: %v, want the verdict (success)", err)
	}
	if got := total(t, l); got != 9 {
		t.Errorf("total = %d, want 9 (the withdrawn batch is never committed)", got)
	}
}

// reopen opens a new ledger on st, closed when the test ends.
func reopen(t *testing.T, st ledger.Store, clk *ledgertest.Clock) *ledger.Ledger {
	l := ledger.New(st, ledger.Config{Clock: clk.Now, Logger: discardLogger})
	t.Cleanup(func() { l.Close() })
	return l
}

// hangingStore blocks every Append: until its context ends if honour is
// set (a database that stopped answering, behind a driver that honours
// cancellation), else until release is closed (one that does not).
type hangingStore struct {
	*sqlite.Store
	honour  bool
	entered chan struct{} // closed when the first Append starts
	release chan struct{}
	once    sync.Once
}

func (s *hangingStore) Append(ctx context.Context, b *ledger.AppendBatch) ([]bool, error) {
	s.once.Do(func() { close(s.entered) })
	if s.honour {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	<-s.release
	return s.Store.Append(ctx, b)
}

// closeWithin closes l and fails unless Close returned within its
// documented bound, CloseTimeout plus one second (plus scheduling slack).
func closeWithin(t *testing.T, l *ledger.Ledger) error {
	t.Helper()
	start := time.Now()
	err := l.Close()
	if took, bound := time.Since(start), l.Config().CloseTimeout+time.Second; took > bound+500*time.Millisecond {
		t.Errorf("Close took %v, bound %v", took, bound)
	}
	return err
}

func TestCloseHangingStore(t *testing.T) {
	for _, honour := range []bool{true, false} {
		t.Run(fmt.Sprintf("honours_context=%v", honour), func(t *testing.T) {
			st := &hangingStore{Store: openFlaky(t).Store, honour: honour, entered: make(chan struct{}), release: make(chan struct{})}
			clk := ledgertest.NewClock(rtNow)
			l := ledger.New(st, ledger.Config{Clock: clk.Now, CloseTimeout: 200 * time.Millisecond, MaxBatch: 2, Logger: discardLogger})
			r := func(id string) []ledger.Record {
				return []ledger.Record{{Provider: marketplace.AWS, Customer: "c", Dimension: "d", Quantity: 1, EventID: id}, {Provider: marketplace.AWS, Customer: "c", Dimension: "d", Quantity: 1}}
			}
			inflight := make(chan error, 1)
			go func() { _, err := l.Ingest(context.Background(), r("a")); inflight <- err }()
			<-st.entered
			queued := make(chan error, 1)
			go func() { _, err := l.Ingest(context.Background(), r("b")); queued <- err }()
			time.Sleep(20 * time.Millisecond) // let it queue behind the hung commit

			err := closeWithin(t, l)
			var ce *ledger.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("Close: %v, want a *CloseError", err)
			}
			// The queued batch never reached the store; the hung one did.
			wantDoubt := 2
			if honour {
				wantDoubt = 0 // the store answered the cancellation: not stored
			}
			if ce.Lost != 2 || ce.InDoubt != wantDoubt {
				t.Errorf("Close: %v; want 2 lost, %d in doubt", ce, wantDoubt)
			}
			if errors.Is(err, marketplace.ErrOutcomeUnknown) != (wantDoubt > 0) {
				t.Errorf("Close: %v: matches ErrOutcomeUnknown %v", err, !(wantDoubt > 0))
			}
			if err := <-queued; !errors.Is(err, ledger.ErrClosed) {
				t.Errorf("queued Ingest: %v, want ErrClosed", err)
			}
			err = <-inflight
			if honour && (err == nil || errors.Is(err, marketplace.ErrOutcomeUnknown)) {
				t.Errorf("in-flight Ingest: %v, want the store's refusal", err)
			}
			if !honour && !errors.Is(err, marketplace.ErrOutcomeUnknown) {
				t.Errorf("in-flight Ingest: %v, want ErrOutcomeUnknown", err)
			}
			if _, err := l.Ingest(t.Context(), r("c")); !errors.Is(err, ledger.ErrClosed) {
				t.Errorf("Ingest after Close: %v", err)
			}
			close(st.release) // the hung commit lands late; nothing else follows it
		})
	}
}

// TestBufferedOutage: during a store outage Buffered mode holds at most
// MaxBuffered records, then pushes back; every failed commit carries at
// most MaxBatch records (no re-copying of the growing queue), and Close,
// with the store still down, reports exactly what it could not commit.
func TestBufferedOutage(t *testing.T) {
	st := openFlaky(t)
	clk := ledgertest.NewClock(rtNow)
	const maxBatch, maxBuffered = 10, 100
	l := ledger.New(st, ledger.Config{Clock: clk.Now, Durability: ledger.Buffered, FlushInterval: 5 * time.Millisecond,
		MaxBatch: maxBatch, MaxBuffered: maxBuffered, CloseTimeout: 300 * time.Millisecond, Logger: discardLogger})
	st.down.Store(true)
	rec := ledger.Record{Provider: marketplace.Azure, Customer: "c", Dimension: "d", Quantity: 1}
	for i := range maxBuffered / 4 {
		if _, err := l.Ingest(t.Context(), []ledger.Record{rec, rec, rec, rec}); err != nil {
			t.Fatalf("ingest %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.Ingest(ctx, []ledger.Record{rec}); !errors.Is(err, ledger.ErrBufferFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ingest into a full buffer: %v, want ErrBufferFull", err)
	}
	if err := l.Flush(t.Context()); !errors.Is(err, errDown) {
		t.Errorf("Flush during the outage: %v, want the store's error", err)
	}
	if st.appends.Load() < 3 {
		t.Fatalf("only %d failed commits", st.appends.Load())
	}
	if m := st.largest.Load(); m > maxBatch {
		t.Errorf("a commit carried %d records, MaxBatch is %d", m, maxBatch)
	}
	err := closeWithin(t, l)
	var ce *ledger.CloseError
	if !errors.As(err, &ce) || ce.Lost != maxBuffered || ce.InDoubt != 0 || !errors.Is(err, errDown) {
		t.Fatalf("Close during the outage: %v; want %d lost, none in doubt, the store's error", err, maxBuffered)
	}
	st.down.Store(false)
	if got := total(t, reopen(t, st, clk)); got != 0 {
		t.Errorf("%d stored, want none", got)
	}
}

// TestBufferedOutageRecovers: what queued during an outage is committed,
// in chunks, once the store is back, with back-pressure instead of loss
// while it was down; Close then commits the rest.
func TestBufferedOutageRecovers(t *testing.T) {
	st := openFlaky(t)
	clk := ledgertest.NewClock(rtNow)
	l := ledger.New(st, ledger.Config{Clock: clk.Now, Durability: ledger.Buffered, FlushInterval: time.Hour,
		MaxBatch: 10, MaxBuffered: 50, Logger: discardLogger})
	st.down.Store(true)
	rec := ledger.Record{Provider: marketplace.GCP, Customer: "c", Dimension: "d", Quantity: 2}
	var wg sync.WaitGroup
	for range 20 { // 200 records into a queue of 50: writers wait for room
		wg.Go(func() {
			for range 10 {
				if _, err := l.Ingest(t.Context(), []ledger.Record{rec}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	if err := l.Flush(t.Context()); !errors.Is(err, errDown) {
		t.Errorf("Flush during the outage: %v", err)
	}
	st.down.Store(false)
	for range 100 { // each Flush commits what was queued before it
		if err := l.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := closeWithin(t, l); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if m := st.largest.Load(); m > 10 {
		t.Errorf("a commit carried %d records, MaxBatch is 10", m)
	}
	if got := total(t, reopen(t, st, clk)); got != 400 {
		t.Errorf("total = %d, want 400", got)
	}
}

// TestBufferedCloseCommitsQueue: Close commits what Buffered mode holds.
func TestBufferedCloseCommitsQueue(t *testing.T) {
	st := openFlaky(t)
	clk := ledgertest.NewClock(rtNow)
	l := ledger.New(st, ledger.Config{Clock: clk.Now, Durability: ledger.Buffered, FlushInterval: time.Hour, MaxBatch: 7, Logger: discardLogger})
	for range 100 {
		if _, err := l.Ingest(t.Context(), []ledger.Record{{Provider: marketplace.AWS, Customer: "c", Dimension: "d", Quantity: 3}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := closeWithin(t, l); err != nil {
		t.Fatal(err)
	}
	if got := total(t, reopen(t, st, clk)); got != 300 {
		t.Errorf("total after Close = %d, want 300", got)
	}
}
