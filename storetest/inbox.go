package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
)

func runLookups(t *testing.T, h Harness) {
	t.Run("AttributeIndexAndPaging", func(t *testing.T) {
		s := h.Open(t, h.NewDB(t))
		ctx := t.Context()
		put := func(sub marketplace.Subscription) *marketplace.Subscription {
			t.Helper()
			got, err := s.PutSubscription(ctx, sub)
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		for i := range 5 {
			put(marketplace.Subscription{Provider: "aws", ID: fmt.Sprintf("s%d", i), CustomerID: fmt.Sprintf("c%d", i), Status: marketplace.StatusActive,
				Attributes: map[string]string{"account": fmt.Sprintf("acct-%d", i%2), "license": fmt.Sprintf("l-%d", i)}})
		}
		put(marketplace.Subscription{Provider: "gcp", ID: "s0", CustomerID: "c0", Status: marketplace.StatusActive, Attributes: map[string]string{"account": "acct-0"}})
		ids := func(subs []marketplace.Subscription) []string {
			var out []string
			for _, x := range subs {
				out = append(out, string(x.Provider)+"/"+x.ID)
			}
			return out
		}
		for _, tc := range []struct {
			p           marketplace.CloudProvider
			name, value string
			want        []string
		}{
			{"aws", "account", "acct-0", []string{"aws/s0", "aws/s2", "aws/s4"}},
			{"aws", "license", "l-3", []string{"aws/s3"}},
			{"gcp", "account", "acct-0", []string{"gcp/s0"}},
			{"azure", "account", "acct-0", nil},
			{"aws", "license", "l-9", nil},
		} {
			got, err := s.FindSubscriptionsByAttribute(ctx, tc.p, tc.name, tc.value)
			if err != nil || !slices.Equal(ids(got), tc.want) {
				t.Errorf("find %s %s=%s: %v, %v; want %v", tc.p, tc.name, tc.value, ids(got), err, tc.want)
			}
		}
		// A changed attribute moves in the index; a deleted subscription leaves it.
		s3, err := s.GetSubscription(ctx, "aws", "s3")
		if err != nil {
			t.Fatal(err)
		}
		s3.Attributes["license"] = "l-33"
		put(*s3)
		if got, _ := s.FindSubscriptionsByAttribute(ctx, "aws", "license", "l-3"); len(got) != 0 {
			t.Errorf("old attribute still indexed: %v", ids(got))
		}
		if got, _ := s.FindSubscriptionsByAttribute(ctx, "aws", "license", "l-33"); !slices.Equal(ids(got), []string{"aws/s3"}) {
			t.Errorf("new attribute: %v", ids(got))
		}
		if err := s.DeleteSubscription(ctx, "aws", "s4"); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.FindSubscriptionsByAttribute(ctx, "aws", "account", "acct-0"); !slices.Equal(ids(got), []string{"aws/s0", "aws/s2"}) {
			t.Errorf("after delete: %v", ids(got))
		}
		// Paging walks everything once, in order.
		var walked []string
		f := marketplace.SubscriptionFilter{Limit: 2}
		for range 10 {
			page, err := s.ListSubscriptions(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > 2 {
				t.Fatalf("page of %d, limit 2", len(page))
			}
			walked = append(walked, ids(page)...)
			if len(page) < 2 {
				break
			}
			last := page[len(page)-1]
			f.AfterProvider, f.AfterID = last.Provider, last.ID
		}
		if want := []string{"aws/s0", "aws/s1", "aws/s2", "aws/s3", "gcp/s0"}; !slices.Equal(walked, want) {
			t.Errorf("paged walk = %v, want %v", walked, want)
		}
	})
}

func runInbox(t *testing.T, h Harness) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	add := func(t *testing.T, s Store, n marketplace.Notification) bool {
		t.Helper()
		first, err := s.AddNotification(t.Context(), n)
		if err != nil {
			t.Fatal(err)
		}
		return first
	}
	t.Run("DedupeClaimSettle", func(t *testing.T) {
		s := h.Open(t, h.NewDB(t))
		ctx := t.Context()
		n := marketplace.Notification{Provider: "azure", ID: "op-1", Kind: "ChangePlan", Subject: "sub-1", Time: t0.Add(-time.Minute),
			Payload: []byte(`{"a":1}`), Received: t0, Expires: t0.Add(7 * 24 * time.Hour)}
		if !add(t, s, n) {
			t.Fatal("first add reported as a duplicate")
		}
		if add(t, s, n) {
			t.Error("second add of the same id reported as first")
		}
		if !add(t, s, marketplace.Notification{Provider: "gcp", ID: "op-1", Received: t0}) {
			t.Error("the same id on another cloud is another notification")
		}
		if !add(t, s, marketplace.Notification{Provider: "aws", ID: "ev-0", Time: t0.Add(-time.Hour), Received: t0.Add(time.Second)}) {
			t.Fatal("add ev-0")
		}
		got, err := s.ClaimNotifications(ctx, marketplace.NotificationClaim{Owner: "w1", Now: t0.Add(time.Second), Lease: time.Minute, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		var order []string
		for _, x := range got {
			order = append(order, string(x.Provider)+"/"+x.ID)
		}
		// Oldest event time first; a zero time sorts first.
		if want := []string{"gcp/op-1", "aws/ev-0", "azure/op-1"}; !slices.Equal(order, want) {
			t.Fatalf("claim order = %v, want %v", order, want)
		}
		for _, x := range got {
			if x.Provider == "azure" && (x.Kind != "ChangePlan" || x.Subject != "sub-1" || string(x.Payload) != `{"a":1}` || !x.Time.Equal(n.Time) || x.State != marketplace.NotificationPending) {
				t.Errorf("round trip: %+v", x)
			}
		}
		if again, _ := s.ClaimNotifications(ctx, marketplace.NotificationClaim{Owner: "w2", Now: t0.Add(2 * time.Second), Lease: time.Minute, Limit: 10}); len(again) != 0 {
			t.Errorf("leased notifications claimed by another owner: %d", len(again))
		}
		az := got[2]
		az.State, az.Attempts, az.NextAttempt, az.Progress, az.Reason = marketplace.NotificationPending, 1, t0.Add(time.Hour), "answered", "operation in progress"
		if err := s.SettleNotification(ctx, "w2", az); !errors.Is(err, marketplace.ErrVersionConflict) {
			t.Errorf("settle by a non-owner: %v, want ErrVersionConflict", err)
		}
		if err := s.SettleNotification(ctx, "w1", az); err != nil {
			t.Fatal(err)
		}
		stored, err := s.GetNotification(ctx, "azure", "op-1")
		if err != nil || stored.Attempts != 1 || stored.Progress != "answered" || stored.Reason != "operation in progress" || !stored.NextAttempt.Equal(t0.Add(time.Hour)) {
			t.Errorf("after retry settle: %+v, %v", stored, err)
		}
		// Not due before its NextAttempt, even once its lease has run out.
		early, err := s.ClaimNotifications(ctx, marketplace.NotificationClaim{Owner: "w2", Now: t0.Add(30 * time.Minute), Lease: time.Minute, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range early {
			if x.Provider == "azure" {
				t.Errorf("claimed before its NextAttempt: %+v", x)
			}
		}
		c, err := s.ClaimNotifications(ctx, marketplace.NotificationClaim{Owner: "w3", Now: t0.Add(2 * time.Hour), Lease: time.Minute, Limit: 10})
		if err != nil || len(c) == 0 {
			t.Fatalf("claim after expiry: %v, %v", c, err)
		}
		for _, x := range c {
			x.State, x.Expires = marketplace.NotificationDone, t0.Add(time.Hour)
			if x.Provider == "gcp" {
				x.State, x.Reason = marketplace.NotificationParked, "entitlement unknown to Procurement"
			}
			if err := s.SettleNotification(ctx, "w3", x); err != nil {
				t.Fatal(err)
			}
		}
		parked, err := s.ListNotifications(ctx, "", marketplace.NotificationParked, 0)
		if err != nil || len(parked) != 1 || parked[0].Provider != "gcp" || parked[0].Reason == "" {
			t.Fatalf("parked: %+v, %v", parked, err)
		}
		if c, _ := s.ClaimNotifications(ctx, marketplace.NotificationClaim{Owner: "w3", Now: t0.Add(3 * time.Hour), Lease: time.Minute, Limit: 10}); len(c) != 0 {
			t.Errorf("done or parked notifications claimed: %+v", c)
		}
		// A done notification still dedupes until it is purged.
		if add(t, s, n) {
			t.Error("redelivery of a done notification stored again")
		}
		if err := s.RequeueNotification(ctx, "gcp", "op-1", t0.Add(3*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := s.RequeueNotification(ctx, "azure", "op-1", t0); !errors.Is(err, marketplace.ErrNotFound) {
			t.Errorf("requeue of a done notification: %v, want ErrNotFound", err)
		}
		if c, _ := s.ClaimNotifications(ctx, marketplace.NotificationClaim{Owner: "w4", Now: t0.Add(3 * time.Hour), Lease: time.Minute, Limit: 10}); len(c) != 1 || c[0].Attempts != 0 {
			t.Errorf("requeued: %+v", c)
		}
		purged, err := s.PurgeNotifications(ctx, t0.Add(2*time.Hour))
		if err != nil || purged != 2 {
			t.Errorf("purge = %d, %v; want the 2 done ones", purged, err)
		}
		if !add(t, s, n) {
			t.Error("a purged notification is new again")
		}
	})
	t.Run("ConcurrentClaimsAcrossHandles", func(t *testing.T) {
		db := h.NewDB(t)
		a, b := h.Open(t, db), h.Open(t, db)
		ctx := t.Context()
		const total = 60
		for i := range total {
			add(t, a, marketplace.Notification{Provider: "aws", ID: fmt.Sprintf("ev-%02d", i), Received: t0})
		}
		var mu sync.Mutex
		seen := map[string]string{}
		var wg sync.WaitGroup
		for w, s := range []Store{a, b, a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				owner := fmt.Sprintf("w%d", w)
				for {
					c, err := s.ClaimNotifications(ctx, marketplace.NotificationClaim{Owner: owner, Now: t0, Lease: time.Hour, Limit: 3})
					if err != nil {
						t.Error(err)
						return
					}
					if len(c) == 0 {
						return
					}
					for _, x := range c {
						mu.Lock()
						if prev, dup := seen[x.ID]; dup {
							t.Errorf("%s claimed by %s and %s", x.ID, prev, owner)
						}
						seen[x.ID] = owner
						mu.Unlock()
						x.State = marketplace.NotificationDone
						if err := s.SettleNotification(ctx, owner, x); err != nil {
							t.Error(err)
						}
					}
				}
			}()
		}
		wg.Wait()
		if len(seen) != total {
			t.Errorf("%d of %d notifications processed", len(seen), total)
		}
	})
}
