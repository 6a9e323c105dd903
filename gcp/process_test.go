package gcp_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/api/cloudcommerceprocurement/v1"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/sqlite"
)

// runBoth runs the provider's pull loop and the engine's worker until the
// test ends.
func runBoth(t *testing.T, a *app) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{a.p.Run, a.eng.Run} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// TestLifecycleOverPubSub runs a buyer's whole life through a real Pub/Sub
// topic and Run: pstest always, and Google's own emulator when gcloud is
// installed (required when CI is set).
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
			l := newLifecycleEnv(t, emu.PubSubPublisher{P: p}, func(c *gcp.Config) { c.Subscriber = sub })
			runBoth(t, l)
			lifecycleStory(t, l, func(what string, cond func() bool) { eventually(t, what, cond) })
		})
	}
}

// lifecycleStory: purchase (approved by default), a plan change
// (approved), usage, cancellation with the final flush, account deletion.
func lifecycleStory(t *testing.T, l *app, wait func(string, func() bool)) {
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
	if err := l.p.CheckEntitlement(ctx, consumer, "gpu"); !errors.Is(err, marketplace.ErrEntitlementDenied) {
		t.Fatalf("gpu on standard: %v", err)
	}
	if err := l.emu.RequestPlanChange(ctx, id, "pro"); err != nil {
		t.Fatal(err)
	}
	wait("the plan change to be approved", func() bool {
		s := l.sub(t, id)
		return s.Plan == "pro" && s.Status == marketplace.StatusActive
	})
	if err := l.p.CheckEntitlement(ctx, consumer, "gpu"); err != nil {
		t.Fatalf("gpu on pro (the engine invalidated the cache): %v", err)
	}
	if err := l.p.SubmitUsage(ctx, []marketplace.UsageRecord{{CustomerID: consumer, Dimension: "requests", Quantity: 5, Timestamp: l.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	if err := l.emu.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	wait("the cancellation", func() bool { return l.sub(t, id).Status == marketplace.StatusCancelled })
	if err := l.p.CheckEntitlement(ctx, consumer, "pro"); !errors.Is(err, marketplace.ErrNoActiveSubscription) {
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

// TestLifecycleInProcess runs the same story through NotificationHandler
// (push) and the engine's Drain; then with Google activating an approved
// entitlement only after a processing delay, as it does: the subscription
// stays pending until ENTITLEMENT_ACTIVE arrives.
func TestLifecycleInProcess(t *testing.T) {
	const delay = 5 * time.Second
	for _, d := range []time.Duration{0, delay} {
		t.Run("activation delay "+d.String(), func(t *testing.T) {
			l := newLifecycleEnvOf(t, emu.Config{ActivationDelay: d}, nil, nil)
			from := 0
			lifecycleStory(t, l, func(what string, cond func() bool) {
				from = l.drain(t, from)
				if d > 0 && !cond() {
					l.clock.Advance(d)
					l.emu.Settle(t.Context())
					from = l.drain(t, from)
				}
				if !cond() {
					t.Fatalf("not true after delivering every event: %s", what)
				}
			})
		})
	}
}

// TestApprovedEntitlementPendingUntilActive: while Google processes an
// approval, the subscription stays pending (not entitled), and
// ENTITLEMENT_ACTIVE makes it active.
func TestApprovedEntitlementPendingUntilActive(t *testing.T) {
	l := newLifecycleEnvOf(t, emu.Config{ActivationDelay: 10 * time.Second}, nil, nil)
	ctx := t.Context()
	id := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	from := l.drain(t, 0)
	if n := l.emu.Calls()["entitlements.approve"]; n != 1 {
		t.Fatalf("approved %d times", n)
	}
	s := l.sub(t, id)
	if state, _, _, _ := l.emu.Entitlement(id); state != emu.StateActivationRequested || s == nil || s.Status != marketplace.StatusPending {
		t.Fatalf("while Google activates: emulator %s, stored %+v; want ACTIVATION_REQUESTED and pending", state, s)
	}
	if err := l.p.CheckEntitlement(ctx, s.CustomerID, "standard"); !errors.Is(err, marketplace.ErrNoActiveSubscription) {
		t.Fatalf("entitled before Google activated: %v", err)
	}
	l.clock.Advance(10 * time.Second)
	l.emu.Settle(ctx)
	l.drain(t, from)
	if s := l.sub(t, id); s.Status != marketplace.StatusActive {
		t.Fatalf("after ENTITLEMENT_ACTIVE: %+v", s)
	}
	if err := l.p.CheckEntitlement(ctx, s.CustomerID, "standard"); err != nil {
		t.Fatalf("not entitled once active: %v", err)
	}
}

func TestDuplicateDeliveryAppliedOnce(t *testing.T) {
	l := newLifecycleEnv(t, nil, nil)
	id := l.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	ev := l.pub.events()[1] // ENTITLEMENT_CREATION_REQUESTED
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if w := l.push(t, pushBody(ev, "m"), l.bearer(t)); w.Code != http.StatusNoContent {
				t.Errorf("delivery: %d %s", w.Code, w.Body)
			}
		})
	}
	wg.Wait()
	l.apply(t)
	for range 3 {
		l.deliver(t, ev)
	}
	l.apply(t)
	if n := l.emu.Calls()["entitlements.approve"]; n != 1 {
		t.Errorf("approved %d times", n)
	}
	if n := l.emu.Calls()["entitlements.get"]; n != 1 {
		t.Errorf("the entitlement was read %d times for one event", n)
	}
	if state, _, _, _ := l.emu.Entitlement(id); state != emu.StateActive {
		t.Fatalf("emulator state %s", state)
	}
	if s := l.sub(t, id); s.Version != 1 {
		t.Errorf("stored %d times, want once", s.Version)
	}
}

// TestDeliveredTwiceOutOfOrder: the newer event arrives first, then the
// older one, then both again: the older changes nothing (not even a read
// of the entitlement or an approval), and the redeliveries nothing at all.
func TestDeliveredTwiceOutOfOrder(t *testing.T) {
	l := newLifecycleEnv(t, nil, nil)
	ctx := t.Context()
	id := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	created := l.pub.events()[1]
	l.clock.Advance(time.Second)
	if err := l.proc.ApproveEntitlement(ctx, id); err != nil {
		t.Fatal(err)
	}
	active := l.pub.events()[2]
	for _, ev := range [][]byte{active, created, active, created} {
		l.deliver(t, ev)
		l.apply(t)
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
	for _, ev := range [][]byte{active, created} {
		if n := l.notification(t, ev); n.State != marketplace.NotificationDone {
			t.Errorf("notification %s is %s", n.ID, n.State)
		}
	}
}

// TestShuffledHistory delivers a buyer's whole event history shuffled and
// duplicated to a fresh store: it ends in the emulator's state, each event
// applied once.
func TestShuffledHistory(t *testing.T) {
	l := newLifecycleEnv(t, nil, nil)
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
		// A fresh store and engine, reading the first emulator's entitlements.
		fresh := newEnv(t, emu.Config{})
		cfg := baseConfig(fresh)
		cfg.Procurement = l.proc
		f := newApp(t, fresh, cfg)
		deliveries := append(append([][]byte{}, history...), history...)
		rand.New(rand.NewPCG(seed, 1)).Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
		for _, d := range deliveries {
			f.deliver(t, d)
			f.apply(t)
		}
		got := f.sub(t, id)
		if got.Plan != want.Plan || got.Status != want.Status || !got.CloudUpdated.Equal(want.CloudUpdated) {
			t.Errorf("seed %d: stored %s/%s@%s, want %s/%s@%s", seed, got.Status, got.Plan, got.CloudUpdated, want.Status, want.Plan, want.CloudUpdated)
		}
		if got.Version > int64(len(history)) {
			t.Errorf("seed %d: %d stored versions for %d events", seed, got.Version, len(history))
		}
	}
}

// TestRetriedUntilStored: while the store fails, the notification stays
// pending with its reason and is retried after a backoff; once the store
// is back, the retry applies it.
func TestRetriedUntilStored(t *testing.T) {
	l := newLifecycleEnv(t, nil, nil)
	ctx := t.Context()
	id := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	ev := l.pub.events()[1]
	l.store.failPut.Store(2)
	l.deliver(t, ev)
	l.apply(t)
	n := l.notification(t, ev)
	if n.State != marketplace.NotificationPending || n.Attempts != 1 || !strings.Contains(n.Reason, errStoreDown.Error()) {
		t.Fatalf("after a failed store: %+v", n)
	}
	if l.sub(t, id) != nil {
		t.Fatal("stored while the store failed")
	}
	l.apply(t) // not due yet
	if n := l.notification(t, ev); n.Attempts != 1 {
		t.Fatalf("retried before its backoff: %+v", n)
	}
	for range 2 {
		l.clock.Advance(time.Minute)
		l.apply(t)
	}
	if s := l.sub(t, id); s == nil {
		t.Fatal("not stored after recovery")
	}
	if n := l.notification(t, ev); n.State != marketplace.NotificationDone {
		t.Fatalf("after recovery: %+v", n)
	}
	if n := l.emu.Calls()["entitlements.approve"]; n < 1 {
		t.Fatal("never approved")
	}
}

// TestCloudReadFailsThenSucceeds: the Procurement API fails the first
// three reads of the entitlement; the notification is retried with
// backoff and applied by the fourth attempt. A throttled read waits at
// least Google's Retry-After.
func TestCloudReadFailsThenSucceeds(t *testing.T) {
	pub := &recordingPublisher{}
	e := newEnv(t, emu.Config{Publisher: pub})
	rt := &failN{next: e.srv.Client().Transport, suffix: "/entitlements/ent-1"}
	rt.n.Store(3)
	cfg := baseConfig(e)
	cfg.Procurement = e.procurementVia(t, rt)
	l := newApp(t, e, cfg)
	l.pub = pub
	id := l.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	if id != "ent-1" {
		t.Fatalf("entitlement %s", id)
	}
	ev := pub.events()[1]
	l.deliver(t, ev)
	for attempt := 1; attempt <= 3; attempt++ {
		l.apply(t)
		n := l.notification(t, ev)
		if n.State != marketplace.NotificationPending || n.Attempts != attempt || !strings.Contains(n.Reason, "503") {
			t.Fatalf("attempt %d: %+v", attempt, n)
		}
		l.clock.Advance(n.NextAttempt.Sub(l.clock.Now()))
	}
	l.apply(t)
	if s := l.sub(t, id); s == nil || s.Status != marketplace.StatusPending {
		t.Fatalf("after the read succeeded: %+v", s)
	}
	if got := rt.seen.Load(); got != 4 {
		t.Errorf("%d reads, want 4", got)
	}

	// Throttled: the retry waits for Retry-After (1 minute), not the 1 s backoff.
	l.emu.SetFaults(emu.Faults{Scope: "procurement", Throttle: 1, RetryAfter: time.Minute})
	if err := l.emu.Cancel(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	cancelled := pub.events()[len(pub.events())-1]
	l.deliver(t, cancelled)
	l.apply(t)
	n := l.notification(t, cancelled)
	if wait := n.NextAttempt.Sub(l.clock.Now()); n.State != marketplace.NotificationPending || wait < time.Minute {
		t.Fatalf("throttled: next attempt in %v, want at least Retry-After: %+v", wait, n)
	}
	l.emu.SetFaults(emu.Faults{})
	l.clock.Advance(time.Minute)
	l.apply(t)
	if s := l.sub(t, id); s.Status != marketplace.StatusCancelled {
		t.Fatalf("after the throttling ended: %s", s.Status)
	}
}

// TestCrashBetweenAcceptAndApply: a delivery is accepted and the process
// dies before applying it; a new engine on the same store file applies it.
func TestCrashBetweenAcceptAndApply(t *testing.T) {
	l := newLifecycleEnv(t, nil, nil)
	ctx := t.Context()
	id := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	l.deliver(t, l.pub.events()[1])
	if l.sub(t, id) != nil {
		t.Fatal("applied before the worker ran")
	}
	// The restart: a new store handle, ledger, engine and provider.
	store, err := sqlite.Open(ctx, l.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	led := ledger.New(store, ledger.Config{Clock: l.clock.Now, Logger: discard})
	t.Cleanup(func() { led.Close() })
	eng, err := lifecycle.New(lifecycle.Deps{Store: store, Ledger: led, Logger: discard, Clock: l.clock.Now}, lifecycle.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gcp.NewProvider(eng, baseConfig(l.env)); err != nil {
		t.Fatal(err)
	}
	if err := eng.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if s := l.sub(t, id); s == nil || s.Attributes[gcp.AttrAccount] != "acc-1" {
		t.Fatalf("after the restart: %+v", s)
	}
	if n := l.emu.Calls()["entitlements.approve"]; n != 1 {
		t.Errorf("%d approvals", n)
	}
}

// TestNackRedeliveredOverPubSub: Run nacks while the inbox cannot store,
// and Pub/Sub's redelivery is stored and applied once it is back.
func TestNackRedeliveredOverPubSub(t *testing.T) {
	client := pstestBackend().dial(t)
	p, sub := topic(t, client, "marketplace")
	l := newLifecycleEnv(t, emu.PubSubPublisher{P: p}, func(c *gcp.Config) { c.Subscriber = sub })
	l.store.failAdd.Store(3)
	runBoth(t, l)
	id := l.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	eventually(t, "the entitlement to be stored active", func() bool {
		s := l.sub(t, id)
		return s != nil && s.Status == marketplace.StatusActive
	})
	if l.store.failAdd.Load() >= 0 {
		t.Fatal("the inbox never failed")
	}
}

func TestDecideRejects(t *testing.T) {
	var asked []string
	var mu sync.Mutex
	l := newLifecycleEnv(t, nil, func(c *gcp.Config) {
		c.Decide = func(_ context.Context, _ *marketplace.Subscription, e *cloudcommerceprocurement.Entitlement) (gcp.Decision, error) {
			mu.Lock()
			asked = append(asked, e.State)
			mu.Unlock()
			if e.State == gcp.StatePendingPlanChangeApproval {
				return gcp.Decision{Reason: "downgrades are manual"}, nil
			}
			return gcp.Decision{Approve: e.Plan != "banned", Reason: "plan not sold"}, nil
		}
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
	if len(asked) != 3 {
		t.Errorf("Decide asked about %v, want two entitlements and one plan change", asked)
	}
}

// TestDecideAskedOnceAcrossRetries: the approval call fails twice; the
// retries approve without asking the seller again.
func TestDecideAskedOnceAcrossRetries(t *testing.T) {
	pub := &recordingPublisher{}
	e := newEnv(t, emu.Config{Publisher: pub})
	rt := &failN{next: e.srv.Client().Transport, suffix: ":approve"}
	rt.n.Store(2)
	cfg := baseConfig(e)
	cfg.Procurement = e.procurementVia(t, rt)
	var asked int
	cfg.Decide = func(context.Context, *marketplace.Subscription, *cloudcommerceprocurement.Entitlement) (gcp.Decision, error) {
		asked++
		return gcp.Decision{Approve: true}, nil
	}
	l := newApp(t, e, cfg)
	l.pub = pub
	id := l.emu.Purchase(t.Context(), "acc-1", "example-api", "standard")
	l.deliver(t, pub.events()[1])
	for range 3 {
		l.apply(t)
		l.clock.Advance(time.Minute)
	}
	if st, _, _, _ := l.emu.Entitlement(id); st != emu.StateActive || asked != 1 || rt.seen.Load() != 3 {
		t.Fatalf("state %s, Decide asked %d times, %d approve calls; want active, once, 3", st, asked, rt.seen.Load())
	}
}

// TestUnknownAndMalformed: a malformed push is refused with 400 and not
// stored; an unknown event type, or one of another provider, is stored
// and settled without a call to Google.
func TestUnknownAndMalformed(t *testing.T) {
	l := newLifecycleEnv(t, nil, nil)
	for _, tc := range []struct {
		data, want string
	}{
		{`{"eventId":"x2","eventType":"ENTITLEMENT_ACTIVE"}`, "without entitlement.id"},
		{`not json`, "lifecycle message"},
		{``, "lifecycle message"},
		{`{"eventId":"x3","eventType":"ENTITLEMENT_ACTIVE","entitlement":{"id":"e","updateTime":"yesterday"}}`, "updateTime"},
	} {
		w := l.push(t, pushBody([]byte(tc.data), "m"), l.bearer(t))
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), tc.want) {
			t.Errorf("%q: %d %q, want 400 naming %q", tc.data, w.Code, w.Body, tc.want)
		}
	}
	if w := l.push(t, []byte(`{"subscription":"x"}`), l.bearer(t)); w.Code != http.StatusBadRequest {
		t.Errorf("push body without message: %d", w.Code)
	}
	for _, data := range []string{
		`{"eventId":"x1","eventType":"SOMETHING_NEW","providerId":"p"}`,
		`{"eventId":"x4","eventType":"ENTITLEMENT_ACTIVE","providerId":"someone-else","entitlement":{"id":"e"}}`,
		`{"eventId":"x5","eventType":"ACCOUNT_ACTIVE","account":{"id":"acc-9"}}`,
	} {
		l.deliver(t, []byte(data))
	}
	l.apply(t)
	for _, data := range []string{
		`{"eventId":"x1","eventType":"SOMETHING_NEW"}`,
		`{"eventId":"x4","eventType":"ENTITLEMENT_ACTIVE","entitlement":{"id":"e"}}`,
		`{"eventId":"x5","eventType":"ACCOUNT_ACTIVE","account":{"id":"acc-9"}}`,
	} {
		if n := l.notification(t, []byte(data)); n.State != marketplace.NotificationDone {
			t.Errorf("%s: %s (%s)", n.ID, n.State, n.Reason)
		}
	}
	if n := len(l.emu.Calls()); n != 0 {
		t.Errorf("calls made for unrelated messages: %v", l.emu.Calls())
	}
}

func TestAccountDeletedRemovesPersonalData(t *testing.T) {
	l := newLifecycleEnv(t, nil, nil)
	ctx := t.Context()
	a := l.emu.Purchase(ctx, "acc-1", "example-api", "standard")
	b := l.emu.Purchase(ctx, "acc-2", "example-api", "standard")
	from := l.drain(t, 0)
	_, _, consumer, _ := l.emu.Entitlement(a)
	if _, err := l.env.store.PutEntitlement(ctx, marketplace.Entitlement{Provider: marketplace.GCP, CustomerID: consumer, Feature: "beta"}); err != nil {
		t.Fatal(err)
	}
	if err := l.emu.DeleteAccount(ctx, "acc-1"); err != nil {
		t.Fatal(err)
	}
	l.drain(t, from)
	if l.sub(t, a) != nil {
		t.Error("the deleted account's subscription is still stored")
	}
	if ents, _ := l.env.store.ListEntitlements(ctx, marketplace.GCP, consumer); len(ents) != 0 {
		t.Errorf("entitlements left: %+v", ents)
	}
	if l.sub(t, b) == nil {
		t.Error("another account's subscription was deleted")
	}
	if l.deleted.Load() != 1 {
		t.Errorf("seller hook called %d times", l.deleted.Load())
	}
	// A deletion the API does not show yet deletes nothing and is retried.
	l.deliver(t, []byte(`{"eventId":"early","eventType":"ACCOUNT_DELETED","account":{"id":"acc-2"}}`))
	l.apply(t)
	if n := l.notification(t, []byte(`{"eventId":"early","eventType":"ACCOUNT_DELETED","account":{"id":"acc-2"}}`)); n.State != marketplace.NotificationPending || l.sub(t, b) == nil {
		t.Errorf("an account Google still has: %s, subscription kept %v", n.State, l.sub(t, b) != nil)
	}
}

// TestLifecycleThroughProcurementFaults: the Procurement API fails,
// throttles and loses responses of applied approvals; every notification
// is retried until its change is stored, and every buyer ends in Google's
// state.
func TestLifecycleThroughProcurementFaults(t *testing.T) {
	client := pstestBackend().dial(t)
	p, sub := topic(t, client, "marketplace")
	l := newLifecycleEnv(t, emu.PubSubPublisher{P: p}, func(c *gcp.Config) { c.Subscriber = sub })
	l.emu.SetFaults(emu.Faults{Scope: "procurement", ErrorRate: 0.2, Throttle: 0.2, DropResponse: 0.3, RetryAfter: time.Second})
	runBoth(t, l)
	// Backoffs run on the test clock: move it along while waiting.
	wait := func(what string, cond func() bool) {
		eventually(t, what, func() bool { l.clock.Advance(2 * time.Second); return cond() })
	}
	var ids []string
	for i := range 6 {
		ids = append(ids, l.emu.Purchase(t.Context(), "acc-"+string(rune('a'+i)), "example-api", "standard"))
	}
	for i, id := range ids {
		wait("entitlement "+id+" stored active", func() bool {
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
		wait("entitlement "+id+" stored "+want, func() bool { return l.sub(t, id).Status == want })
		if st, _, _, _ := l.emu.Entitlement(id); gcp.Status(st) != want {
			t.Errorf("%s: Google holds %s", id, st)
		}
	}
	if n := l.emu.Calls()["entitlements.approve"]; n < len(ids) {
		t.Errorf("%d approvals reached the emulator for %d entitlements", n, len(ids))
	}
}
