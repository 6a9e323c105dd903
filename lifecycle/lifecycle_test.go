package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/sqlite"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	path  string
	store *sqlite.Store
	led   *ledger.Ledger
	cache *entitlement.Cache
	clk   *clock
	eng   *lifecycle.Engine
	loads atomic.Int64
}

func newEnv(t *testing.T, cfg lifecycle.Config) *env {
	t.Helper()
	e := &env{path: filepath.Join(t.TempDir(), "lc.db"), clk: &clock{t: time.Date(2026, 5, 4, 10, 30, 0, 0, time.UTC)}}
	e.open(t, cfg)
	return e
}

// open (re)opens the store, ledger and engine on e.path: a restart.
func (e *env) open(t *testing.T, cfg lifecycle.Config) {
	t.Helper()
	store, err := sqlite.Open(t.Context(), e.path)
	if err != nil {
		t.Fatal(err)
	}
	e.store = store
	e.led = ledger.New(store, ledger.Config{Clock: e.clk.Now})
	t.Cleanup(func() { e.led.Close(); store.Close() })
	loader := entitlement.StoreLoader{Subscriptions: store, Entitlements: store, Clock: e.clk.Now}
	e.cache = entitlement.New(func(ctx context.Context, k entitlement.Key) (entitlement.Decision, error) {
		e.loads.Add(1)
		return loader.Load(ctx, k)
	}, entitlement.Config{Clock: e.clk.Now, TTL: time.Hour})
	t.Cleanup(e.cache.Close)
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = time.Second
	}
	e.eng, err = lifecycle.New(lifecycle.Deps{Store: store, Ledger: e.led, Entitlements: e.cache,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: e.clk.Now}, cfg)
	if err != nil {
		t.Fatal(err)
	}
}

// handlerFunc adapts a function to lifecycle.Handler.
type handlerFunc func(ctx context.Context, n *marketplace.Notification) error

func (f handlerFunc) Process(ctx context.Context, n *marketplace.Notification) error {
	return f(ctx, n)
}

// statusHandler applies "status" notifications: Kind is the new status,
// Subject the subscription id (and customer).
func statusHandler(e *env) lifecycle.Handler {
	return handlerFunc(func(ctx context.Context, n *marketplace.Notification) error {
		_, err := e.eng.Update(ctx, lifecycle.Change{Provider: n.Provider, ID: n.Subject, CloudTime: n.Time,
			Init: &marketplace.Subscription{CustomerID: n.Subject, Status: marketplace.StatusPending},
			Apply: func(s *marketplace.Subscription) bool {
				changed := s.Status != n.Kind
				s.Status = n.Kind
				return changed
			}})
		return err
	})
}

func (e *env) accept(t *testing.T, n marketplace.Notification) bool {
	t.Helper()
	first, err := e.eng.Accept(t.Context(), n)
	if err != nil {
		t.Fatal(err)
	}
	return first
}

func (e *env) status(t *testing.T, p marketplace.CloudProvider, id string) string {
	t.Helper()
	s, err := e.store.GetSubscription(t.Context(), p, id)
	if errors.Is(err, marketplace.ErrNotFound) {
		return "(none)"
	}
	if err != nil {
		t.Fatal(err)
	}
	return s.Status
}

func (e *env) notification(t *testing.T, p marketplace.CloudProvider, id string) *marketplace.Notification {
	t.Helper()
	n, err := e.store.GetNotification(t.Context(), p, id)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDuplicateAndOutOfOrder(t *testing.T) {
	e := newEnv(t, lifecycle.Config{})
	e.eng.Register(marketplace.Azure, statusHandler(e))
	t0 := e.clk.Now()
	sub := marketplace.Notification{Provider: marketplace.Azure, ID: "op-1", Kind: marketplace.StatusActive, Subject: "s1", Time: t0.Add(-2 * time.Minute)}
	cancel := marketplace.Notification{Provider: marketplace.Azure, ID: "op-2", Kind: marketplace.StatusCancelled, Subject: "s1", Time: t0.Add(-time.Minute)}
	// The cancellation arrives first, then the older subscribe, then both again.
	if !e.accept(t, cancel) {
		t.Fatal("first delivery reported as duplicate")
	}
	if err := e.eng.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !e.accept(t, sub) || e.accept(t, cancel) || e.accept(t, cancel) {
		t.Fatal("dedupe: a redelivery was stored again, or a new one was not")
	}
	if err := e.eng.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if e.accept(t, sub) {
		t.Error("redelivery after apply stored again")
	}
	if err := e.eng.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := e.status(t, marketplace.Azure, "s1"); got != marketplace.StatusCancelled {
		t.Errorf("status = %s; the older subscribe must not undo the newer cancel", got)
	}
	for _, id := range []string{"op-1", "op-2"} {
		if n := e.notification(t, marketplace.Azure, id); n.State != marketplace.NotificationDone {
			t.Errorf("%s: state %s", id, n.State)
		}
	}
}

// TestCloudReadFailsThenSucceeds: a notification whose cloud read fails is
// retried with growing backoff and applies once the read works.
func TestCloudReadFailsThenSucceeds(t *testing.T) {
	e := newEnv(t, lifecycle.Config{MinBackoff: time.Second})
	var calls atomic.Int64
	inner := statusHandler(e)
	e.eng.Register(marketplace.GCP, handlerFunc(func(ctx context.Context, n *marketplace.Notification) error {
		if calls.Add(1) <= 3 {
			n.Progress = fmt.Sprintf("tried %d", calls.Load())
			return errors.New("procurement: 503 Service Unavailable")
		}
		if n.Progress != "tried 3" {
			t.Errorf("progress not kept across retries: %q", n.Progress)
		}
		return inner.Process(ctx, n)
	}))
	e.accept(t, marketplace.Notification{Provider: marketplace.GCP, ID: "ev-1", Kind: marketplace.StatusActive, Subject: "ent-1"})
	waits := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}
	for i, w := range waits {
		if err := e.eng.Drain(t.Context()); err != nil {
			t.Fatal(err)
		}
		n := e.notification(t, marketplace.GCP, "ev-1")
		if n.State != marketplace.NotificationPending || n.Attempts != i+1 || !n.NextAttempt.Equal(e.clk.Now().Add(w)) {
			t.Fatalf("after failure %d: %+v", i+1, n)
		}
		// Not retried before it is due.
		e.clk.Add(w - time.Millisecond)
		if err := e.eng.Drain(t.Context()); err != nil {
			t.Fatal(err)
		}
		if calls.Load() != int64(i+1) {
			t.Fatalf("retried before its backoff ran out (%d calls)", calls.Load())
		}
		e.clk.Add(time.Millisecond)
	}
	if err := e.eng.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := e.status(t, marketplace.GCP, "ent-1"); got != marketplace.StatusActive {
		t.Errorf("status = %s after the read recovered", got)
	}
}

func TestParkAndRequeue(t *testing.T) {
	e := newEnv(t, lifecycle.Config{MaxAttempts: 3})
	fail := atomic.Bool{}
	fail.Store(true)
	inner := statusHandler(e)
	e.eng.Register(marketplace.AWS, handlerFunc(func(ctx context.Context, n *marketplace.Notification) error {
		switch n.ID {
		case "perm":
			if fail.Load() {
				return marketplace.Permanent(errors.New("license unknown to AWS"))
			}
		case "panic":
			panic("bad payload")
		case "flaky":
			return errors.New("timeout")
		case "unrelated":
			return fmt.Errorf("%w: product other", marketplace.ErrUnrelated)
		}
		return inner.Process(ctx, n)
	}))
	for _, id := range []string{"perm", "panic", "flaky", "unrelated"} {
		e.accept(t, marketplace.Notification{Provider: marketplace.AWS, ID: id, Kind: marketplace.StatusActive, Subject: "c-" + id})
	}
	e.accept(t, marketplace.Notification{Provider: marketplace.Azure, ID: "nobody", Subject: "x"}) // no Azure handler
	for range 5 {
		if err := e.eng.Drain(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.clk.Add(time.Hour)
	}
	parked, err := e.eng.Parked(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for _, n := range parked {
		reasons[n.ID] = n.Reason
	}
	for id, want := range map[string]string{"perm": "license unknown", "panic": "panicked", "flaky": "gave up after 3 attempts", "nobody": "no integration for azure"} {
		if r, ok := reasons[id]; !ok || !strings.Contains(r, want) {
			t.Errorf("%s: parked=%v reason %q, want it to mention %q", id, ok, r, want)
		}
	}
	if n := e.notification(t, marketplace.AWS, "unrelated"); n.State != marketplace.NotificationDone {
		t.Errorf("unrelated notification: %s, want done", n.State)
	}
	fail.Store(false)
	if err := e.eng.Requeue(t.Context(), marketplace.AWS, "perm"); err != nil {
		t.Fatal(err)
	}
	if err := e.eng.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := e.status(t, marketplace.AWS, "c-perm"); got != marketplace.StatusActive {
		t.Errorf("requeued notification not applied: %s", got)
	}
}

// TestCrashBetweenStoreAndApply: a notification stored by a process that
// dies before applying it (or while applying it) is applied after a
// restart, once its lease has run out.
func TestCrashBetweenStoreAndApply(t *testing.T) {
	e := newEnv(t, lifecycle.Config{Lease: time.Minute})
	e.eng.Register(marketplace.GCP, statusHandler(e))
	e.accept(t, marketplace.Notification{Provider: marketplace.GCP, ID: "stored-only", Kind: marketplace.StatusActive, Subject: "e1", Time: e.clk.Now().Add(2 * time.Second)})
	// A second one is claimed by a worker that dies mid-apply: its context
	// ends inside the handler.
	e.accept(t, marketplace.Notification{Provider: marketplace.GCP, ID: "mid-apply", Kind: marketplace.StatusActive, Subject: "e2", Time: e.clk.Now().Add(time.Second)})
	dying, err := lifecycle.New(e.eng.Deps(), lifecycle.Config{Owner: "dying", Lease: time.Minute, Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, kill := context.WithCancel(t.Context())
	dying.Register(marketplace.GCP, handlerFunc(func(context.Context, *marketplace.Notification) error {
		kill()
		return errors.New("killed")
	}))
	if err := dying.Drain(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("dying worker: %v", err)
	}
	// Restart: a new store handle and engine on the same file.
	e.open(t, lifecycle.Config{Lease: time.Minute})
	e.eng.Register(marketplace.GCP, statusHandler(e))
	if err := e.eng.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := e.status(t, marketplace.GCP, "e1"); got != marketplace.StatusActive {
		t.Errorf("stored-only notification after restart: %s", got)
	}
	if got := e.status(t, marketplace.GCP, "e2"); got != "(none)" {
		t.Errorf("leased notification applied before its lease ran out: %s", got)
	}
	e.clk.Add(time.Minute)
	if err := e.eng.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := e.status(t, marketplace.GCP, "e2"); got != marketplace.StatusActive {
		t.Errorf("notification of the dead worker after its lease: %s", got)
	}
}

// TestUpdate covers the shared update path: version-conflict retry under
// concurrency, the stale check, entitlement invalidation and the final seal.
func TestUpdate(t *testing.T) {
	e := newEnv(t, lifecycle.Config{})
	ctx := t.Context()
	t0 := e.clk.Now()
	init := &marketplace.Subscription{CustomerID: "cust", Status: marketplace.StatusActive, Entitlements: []string{"gold"}}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.eng.Update(ctx, lifecycle.Change{Provider: marketplace.AWS, ID: "s", Init: init,
				Apply: func(s *marketplace.Subscription) bool { s.Quantity++; return true }}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s, err := e.store.GetSubscription(ctx, marketplace.AWS, "s")
	if err != nil || s.Quantity != 8 {
		t.Fatalf("concurrent updates: %+v, %v; want quantity 8", s, err)
	}
	// Entitlement answers are cached, then invalidated by a change.
	key := entitlement.Key{Provider: marketplace.AWS, Customer: "cust", Feature: "gold"}
	if err := e.cache.Check(ctx, key); err != nil {
		t.Fatal(err)
	}
	loads := e.loads.Load()
	e.cache.Check(ctx, key)
	if e.loads.Load() != loads {
		t.Fatal("second check not cached")
	}
	// Usage to seal on cancellation.
	if err := e.led.Record(ctx, ledger.Record{Provider: marketplace.AWS, Customer: "cust", Dimension: "d", Quantity: 5, Time: t0}); err != nil {
		t.Fatal(err)
	}
	res, err := e.eng.Update(ctx, lifecycle.Change{Provider: marketplace.AWS, ID: "s", CloudTime: t0,
		Apply: func(s *marketplace.Subscription) bool { s.Status = marketplace.StatusCancelled; return true }})
	if err != nil || !res.Changed || res.Sealed != 1 {
		t.Fatalf("cancel: %+v, %v; want changed and 1 bucket sealed", res, err)
	}
	if err := e.cache.Check(ctx, key); !errors.Is(err, marketplace.ErrNoActiveSubscription) {
		t.Errorf("check after cancel: %v; the cached grant was not invalidated", err)
	}
	// Older than the stored state: ignored, Apply not called.
	res, err = e.eng.Update(ctx, lifecycle.Change{Provider: marketplace.AWS, ID: "s", CloudTime: t0.Add(-time.Second),
		Apply: func(s *marketplace.Subscription) bool { t.Error("Apply called for a stale change"); return true }})
	if err != nil || !res.Stale || res.Changed {
		t.Errorf("stale: %+v, %v", res, err)
	}
	// Missing without Init.
	if _, err := e.eng.Update(ctx, lifecycle.Change{Provider: marketplace.AWS, ID: "nope", Apply: func(*marketplace.Subscription) bool { return true }}); !errors.Is(err, marketplace.ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
	bs, err := e.led.Buckets(ctx, ledger.BucketFilter{Provider: marketplace.AWS, Customer: "cust"})
	if err != nil || len(bs) != 1 || bs[0].State != ledger.StateSealed {
		t.Errorf("buckets after cancel: %v, %v", bs, err)
	}
}

// TestRunWakesOnAccept: the worker applies an accepted notification
// without waiting for its poll interval.
func TestRunWakesOnAccept(t *testing.T) {
	e := newEnv(t, lifecycle.Config{Poll: time.Hour})
	done := make(chan struct{})
	inner := statusHandler(e)
	e.eng.Register(marketplace.Azure, handlerFunc(func(ctx context.Context, n *marketplace.Notification) error {
		defer close(done)
		return inner.Process(ctx, n)
	}))
	ctx, stop := context.WithCancel(t.Context())
	ran := make(chan error)
	go func() { ran <- e.eng.Run(ctx) }()
	e.accept(t, marketplace.Notification{Provider: marketplace.Azure, ID: "op", Kind: marketplace.StatusActive, Subject: "s"})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not wake on Accept")
	}
	stop()
	if err := <-ran; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestAcceptRefusesBadInput(t *testing.T) {
	e := newEnv(t, lifecycle.Config{})
	for _, n := range []marketplace.Notification{{Provider: "ibm", ID: "x"}, {Provider: marketplace.AWS}} {
		if _, err := e.eng.Accept(t.Context(), n); !errors.Is(err, marketplace.ErrInvalidInput) {
			t.Errorf("Accept(%+v) = %v, want ErrInvalidInput", n, err)
		}
	}
}
