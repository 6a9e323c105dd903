package gcp_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/api/cloudcommerceprocurement/v1"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
	"github.com/saasmarket/marketplace/ledger"
)

// flakyStore fails PutSubscription while fail is above zero.
type flakyStore struct {
	marketplace.SubscriptionStore
	fail atomic.Int32
	puts atomic.Int32
}

var errStoreDown = errors.New("store down")

func (f *flakyStore) PutSubscription(ctx context.Context, s marketplace.Subscription) (*marketplace.Subscription, error) {
	if f.fail.Add(-1) >= 0 {
		return nil, errStoreDown
	}
	f.puts.Add(1)
	return f.SubscriptionStore.PutSubscription(ctx, s)
}

type lifecycleEnv struct {
	*env
	pub      *recordingPublisher
	subs     *flakyStore
	lc       *gcp.Lifecycle
	provider *gcp.Provider
	deleted  atomic.Int32
}

func newLifecycleEnv(t *testing.T, next interface {
	Publish(context.Context, []byte) error
}, policy gcp.Policy) *lifecycleEnv {
	t.Helper()
	pub := &recordingPublisher{next: next}
	l := &lifecycleEnv{env: newEnv(t, emu.Config{Publisher: pub}), pub: pub}
	l.subs = &flakyStore{SubscriptionStore: l.store}
	var err error
	l.provider, err = gcp.NewProvider(gcp.ProviderConfig{Ledger: l.ledger, Subscriptions: l.subs, Entitlements: l.store,
		PlanFeatures: map[string][]string{"pro": {"gpu"}}})
	if err != nil {
		t.Fatal(err)
	}
	if policy.AccountDeleted == nil {
		policy.AccountDeleted = func(context.Context, string) error { l.deleted.Add(1); return nil }
	}
	l.lc, err = gcp.NewLifecycle(gcp.LifecycleConfig{Procurement: l.proc, Subscriptions: l.subs, Entitlements: l.store,
		Notifications: l.store, Ledger: l.ledger, Policy: policy, Invalidate: l.provider.Invalidate, Clock: l.clock.Now, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// drain delivers every event published so far, and those they cause, in order.
func (l *lifecycleEnv) drain(t *testing.T, from int) int {
	t.Helper()
	for {
		evs := l.pub.events()
		if from == len(evs) {
			return from
		}
		for ; from < len(evs); from++ {
			if err := l.lc.Handle(t.Context(), evs[from]); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func (l *lifecycleEnv) sub(t *testing.T, id string) *marketplace.Subscription {
	t.Helper()
	s, err := l.store.GetSubscription(t.Context(), marketplace.GCP, id)
	if errors.Is(err, marketplace.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLifecycleOverPubSub runs a buyer's whole life through a real Pub/Sub
// topic: pstest always, Google's emulator when gcloud is installed.
func TestLifecycleOverPubSub(t *testing.T) {
	backends := []pubsubBackend{pstestBackend()}
	if b, ok := gcloudBackend(t); ok {
		backends = append(backends, b)
	} else {
		t.Log("gcloud not on PATH: Google's Pub/Sub emulator not exercised")
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			client := b.dial(t)
			p, sub := topic(t, client, "marketplace")
			l := newLifecycleEnv(t, emu.PubSubPublisher{P: p}, gcp.Policy{})
			c := gcp.NewConsumer(sub, l.lc, gcp.ConsumerConfig{MaxOutstanding: 4, Logger: discard})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			})
			lifecycleStory(t, l, func(what string, cond func() bool) { eventually(t, what, cond) })
		})
	}
}

// lifecycleStory: purchase (approved by the default policy), a plan change
// (approved), usage, cancellation with the final flush, account deletion.
func lifecycleStory(t *testing.T, l *lifecycleEnv, wait func(string, func() bool)) {
	ctx := t.Context()
	id := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	wait("the entitlement to be approved and stored active", func() bool {
		s := l.sub(t, id)
		return s != nil && s.Status == marketplace.StatusActive
	})
	s := l.sub(t, id)
	_, _, consumer, _ := l.emu.Entitlement(id)
	if s.CustomerID != consumer || s.Attributes[gcp.AttrAccount] != "acc-1" || s.Plan != "standard" {
		t.Fatalf("stored %+v", s)
	}
	if err := l.provider.CheckEntitlement(ctx, consumer, "gpu"); !errors.Is(err, marketplace.ErrEntitlementDenied) {
		t.Fatalf("gpu on standard: %v", err)
	}
	if err := l.emu.RequestPlanChange(ctx, id, "pro"); err != nil {
		t.Fatal(err)
	}
	wait("the plan change to be approved", func() bool {
		s := l.sub(t, id)
		return s.Plan == "pro" && s.Status == marketplace.StatusActive
	})
	if err := l.provider.CheckEntitlement(ctx, consumer, "gpu"); err != nil {
		t.Fatalf("gpu on pro: %v", err)
	}
	if err := l.provider.SubmitUsage(ctx, []marketplace.UsageRecord{{CustomerID: consumer, Dimension: "requests", Quantity: 5, Timestamp: l.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	if err := l.emu.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	wait("the cancellation", func() bool { return l.sub(t, id).Status == marketplace.StatusCancelled })
	if err := l.provider.CheckEntitlement(ctx, consumer, "pro"); !errors.Is(err, marketplace.ErrNoActiveSubscription) {
		t.Fatalf("after cancellation: %v", err)
	}
	// The final flush sealed the current hour: it is reported at once.
	if open := l.buckets(t, ledger.StateOpen); len(open) != 0 {
		t.Fatalf("open buckets after the final flush: %+v", open)
	}
	l.reportAll(t, l.reporter(t))
	if got := l.emu.Total(consumer, service+"/requests"); got != 5 {
		t.Fatalf("final usage billed %d, want 5", got)
	}
	if err := l.emu.DeleteAccount(ctx, "acc-1"); err != nil {
		t.Fatal(err)
	}
	wait("the account's data to be deleted", func() bool { return l.sub(t, id) == nil && l.deleted.Load() == 1 })
}

// TestLifecycleInProcess runs the same story by handing each event to
// Handle directly.
func TestLifecycleInProcess(t *testing.T) {
	l := newLifecycleEnv(t, nil, gcp.Policy{})
	from := 0
	lifecycleStory(t, l, func(what string, cond func() bool) {
		from = l.drain(t, from)
		if !cond() {
			t.Fatalf("not true after delivering every event: %s", what)
		}
	})
}

func TestDuplicateDeliveryAppliedOnce(t *testing.T) {
	l := newLifecycleEnv(t, nil, gcp.Policy{})
	id := l.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	ev := l.pub.events()[1] // ENTITLEMENT_CREATION_REQUESTED
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if err := l.lc.Handle(t.Context(), ev); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for range 3 {
		if err := l.lc.Handle(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.emu.Calls()["entitlements.approve"]; n != 1 {
		t.Errorf("approved %d times", n)
	}
	state, _, _, _ := l.emu.Entitlement(id)
	if state != emu.StateActive {
		t.Fatalf("emulator state %s", state)
	}
	before := l.emu.Calls()["entitlements.get"]
	for range 3 {
		if err := l.lc.Handle(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	if after := l.emu.Calls()["entitlements.get"]; after != before {
		t.Errorf("a duplicate re-read the entitlement %d times", after-before)
	}
	if s := l.sub(t, id); s.Version != 1 {
		t.Errorf("stored %d times, want once", s.Version)
	}
}

func TestOutOfOrderStaleIgnored(t *testing.T) {
	l := newLifecycleEnv(t, nil, gcp.Policy{})
	ctx := t.Context()
	id := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	created := l.pub.events()[1]
	l.clock.Advance(time.Second)
	if err := l.proc.ApproveEntitlement(ctx, id); err != nil {
		t.Fatal(err)
	}
	active := l.pub.events()[2]
	// The newer event first, then the older.
	for _, ev := range [][]byte{active, created} {
		if err := l.lc.Handle(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if s := l.sub(t, id); s.Status != marketplace.StatusActive || s.Version != 1 {
		t.Fatalf("stored %+v", s)
	}
	if n := l.emu.Calls()["entitlements.get"]; n != 1 {
		t.Errorf("the stale message re-read the entitlement (%d gets)", n)
	}
	if n := l.emu.Calls()["entitlements.approve"]; n != 1 {
		t.Errorf("the stale creation request was acted on (%d approvals)", n)
	}
}

// TestShuffledHistory delivers a buyer's whole event history shuffled and
// duplicated to a fresh store: it ends in the emulator's state, each event
// applied once.
func TestShuffledHistory(t *testing.T) {
	l := newLifecycleEnv(t, nil, gcp.Policy{})
	ctx := t.Context()
	id := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	from := l.drain(t, 0)
	for _, step := range []func() error{
		func() error { return l.emu.RequestPlanChange(ctx, id, "pro") },
		func() error { return l.emu.CancelAtTermEnd(ctx, id) },
		func() error { return l.emu.RevertCancellation(ctx, id) },
		func() error { return l.emu.RequestPlanChange(ctx, id, "enterprise") },
	} {
		l.clock.Advance(time.Second)
		if err := step(); err != nil {
			t.Fatal(err)
		}
		from = l.drain(t, from)
	}
	history := l.pub.events()
	want := l.sub(t, id)
	if want.Plan != "enterprise" || want.Status != marketplace.StatusActive {
		t.Fatalf("in-order delivery stored %+v", want)
	}
	for seed := range uint64(5) {
		fresh := newLifecycleEnv(t, nil, gcp.Policy{})
		// The fresh lifecycle reads the first emulator's entitlements.
		lc, err := gcp.NewLifecycle(gcp.LifecycleConfig{Procurement: l.proc, Subscriptions: fresh.store, Notifications: fresh.store,
			Clock: l.clock.Now, Logger: discard})
		if err != nil {
			t.Fatal(err)
		}
		deliveries := append(append([][]byte{}, history...), history...)
		rand.New(rand.NewPCG(seed, 1)).Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
		for _, d := range deliveries {
			if err := lc.Handle(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		got, err := fresh.store.GetSubscription(ctx, marketplace.GCP, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Plan != want.Plan || got.Status != want.Status || !got.CloudUpdated.Equal(want.CloudUpdated) {
			t.Errorf("seed %d: stored %s/%s@%s, want %s/%s@%s", seed, got.Status, got.Plan, got.CloudUpdated, want.Status, want.Plan, want.CloudUpdated)
		}
		if got.Version > int64(len(history)) {
			t.Errorf("seed %d: %d stored versions for %d events", seed, got.Version, len(history))
		}
	}
}

// TestNotAckedUntilStored: while the store fails, Handle reports the error
// (the consumer nacks) and does not remember the event; once it recovers
// the redelivery applies it.
func TestNotAckedUntilStored(t *testing.T) {
	l := newLifecycleEnv(t, nil, gcp.Policy{})
	ctx := t.Context()
	id := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	ev := l.pub.events()[1]
	l.subs.fail.Store(2)
	for range 2 {
		if err := l.lc.Handle(ctx, ev); !errors.Is(err, errStoreDown) {
			t.Fatalf("Handle = %v, want the store's error", err)
		}
	}
	var m gcp.Message
	json.Unmarshal(ev, &m)
	if seen, _ := l.store.Processed(ctx, marketplace.GCP, m.EventID); seen {
		t.Fatal("an unapplied event was marked processed")
	}
	if err := l.lc.Handle(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if s := l.sub(t, id); s == nil {
		t.Fatal("not stored after recovery")
	}
	if seen, _ := l.store.Processed(ctx, marketplace.GCP, m.EventID); !seen {
		t.Fatal("applied event not marked processed")
	}
}

// TestNackRedeliveredOverPubSub: the consumer nacks while the store is
// down, and Pub/Sub's redelivery applies the message once it is back.
func TestNackRedeliveredOverPubSub(t *testing.T) {
	client := pstestBackend().dial(t)
	p, sub := topic(t, client, "marketplace")
	l := newLifecycleEnv(t, emu.PubSubPublisher{P: p}, gcp.Policy{})
	l.subs.fail.Store(3)
	c := gcp.NewConsumer(sub, l.lc, gcp.ConsumerConfig{Logger: discard})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	id := l.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	eventually(t, "the entitlement to be stored active", func() bool {
		s := l.sub(t, id)
		return s != nil && s.Status == marketplace.StatusActive
	})
	if l.subs.fail.Load() >= 0 {
		t.Fatal("the store never failed")
	}
}

func TestPolicyRejects(t *testing.T) {
	l := newLifecycleEnv(t, nil, gcp.Policy{
		Entitlement: func(_ context.Context, e *cloudcommerceprocurement.Entitlement) (gcp.Decision, error) {
			return gcp.Decision{Approve: e.Plan != "banned", Reason: "plan not sold"}, nil
		},
		PlanChange: func(context.Context, *cloudcommerceprocurement.Entitlement) (gcp.Decision, error) {
			return gcp.Decision{Reason: "downgrades are manual"}, nil
		},
	})
	ctx := t.Context()
	bad := l.emu.Purchase(ctx, "acc-1", "example-api", "banned")
	good := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	from := l.drain(t, 0)
	if st, _, _, _ := l.emu.Entitlement(bad); st != emu.StateCancelled {
		t.Errorf("rejected entitlement is %s", st)
	}
	if s := l.sub(t, bad); s.Status != marketplace.StatusCancelled {
		t.Errorf("rejected entitlement stored %s", s.Status)
	}
	if err := l.emu.RequestPlanChange(ctx, good, "pro"); err != nil {
		t.Fatal(err)
	}
	l.drain(t, from)
	if st, plan, _, _ := l.emu.Entitlement(good); st != emu.StateActive || plan != "standard" {
		t.Errorf("after a rejected plan change: %s %s", st, plan)
	}
	if s := l.sub(t, good); s.Plan != "standard" || s.Status != marketplace.StatusActive {
		t.Errorf("stored %s %s", s.Status, s.Plan)
	}
}

func TestUnknownAndMalformedAcknowledged(t *testing.T) {
	l := newLifecycleEnv(t, nil, gcp.Policy{})
	for _, data := range []string{
		`{"eventId":"x1","eventType":"SOMETHING_NEW","providerId":"p"}`,
		`{"eventId":"x2","eventType":"ENTITLEMENT_ACTIVE"}`,
		`not json`,
		``,
	} {
		if err := l.lc.Handle(t.Context(), []byte(data)); err != nil {
			t.Errorf("%q: %v, want acknowledged", data, err)
		}
	}
	if n := len(l.emu.Calls()); n != 0 {
		t.Errorf("calls made for unusable messages: %v", l.emu.Calls())
	}
}

func TestAccountDeletedRemovesPersonalData(t *testing.T) {
	l := newLifecycleEnv(t, nil, gcp.Policy{})
	ctx := t.Context()
	a := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	b := l.emu.Purchase(ctx, "acc-2", "example-api", "standard")
	from := l.drain(t, 0)
	_, _, consumer, _ := l.emu.Entitlement(a)
	if _, err := l.store.PutEntitlement(ctx, marketplace.Entitlement{Provider: marketplace.GCP, CustomerID: consumer, Feature: "beta"}); err != nil {
		t.Fatal(err)
	}
	if err := l.emu.DeleteAccount(ctx, "acc-1"); err != nil {
		t.Fatal(err)
	}
	l.drain(t, from)
	if l.sub(t, a) != nil {
		t.Error("the deleted account's subscription is still stored")
	}
	if ents, _ := l.store.ListEntitlements(ctx, marketplace.GCP, consumer); len(ents) != 0 {
		t.Errorf("entitlements left: %+v", ents)
	}
	if l.sub(t, b) == nil {
		t.Error("another account's subscription was deleted")
	}
	if l.deleted.Load() != 1 {
		t.Errorf("seller hook called %d times", l.deleted.Load())
	}
}

// TestLifecycleThroughProcurementFaults: the Procurement API fails, throttles
// and loses responses of applied approvals; every message is nacked until
// its change is stored, and every buyer ends in Google's state.
func TestLifecycleThroughProcurementFaults(t *testing.T) {
	client := pstestBackend().dial(t)
	p, sub := topic(t, client, "marketplace")
	l := newLifecycleEnv(t, emu.PubSubPublisher{P: p}, gcp.Policy{})
	l.emu.SetFaults(emu.Faults{Scope: "procurement", ErrorRate: 0.2, Throttle: 0.2, DropResponse: 0.3})
	c := gcp.NewConsumer(sub, l.lc, gcp.ConsumerConfig{MaxOutstanding: 3, Logger: discard})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var ids []string
	for i := range 6 {
		ids = append(ids, l.emu.Purchase(t.Context(), "acc-"+string(rune('a'+i)), "example-api", "standard"))
	}
	for i, id := range ids {
		eventually(t, "entitlement "+id+" stored active", func() bool {
			s := l.sub(t, id)
			return s != nil && s.Status == marketplace.StatusActive
		})
		if i%2 == 0 {
			if err := l.emu.Cancel(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, id := range ids {
		want := marketplace.StatusActive
		if i%2 == 0 {
			want = marketplace.StatusCancelled
		}
		eventually(t, "entitlement "+id+" stored "+want, func() bool { return l.sub(t, id).Status == want })
		if st, _, _, _ := l.emu.Entitlement(id); gcp.Status(st) != want {
			t.Errorf("%s: Google holds %s", id, st)
		}
	}
	if n := l.emu.Calls()["entitlements.approve"]; n < len(ids) {
		t.Errorf("%d approvals reached the emulator for %d entitlements", n, len(ids))
	}
}
