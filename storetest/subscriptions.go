package storetest

import (
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
)

func runSubscriptions(t *testing.T, h Harness) {
	t.Run("PutGetVersions", func(t *testing.T) {
		s := h.Open(t, h.NewDB(t))
		ctx := t.Context()
		if _, err := s.GetSubscription(ctx, "aws", "sub-1"); !errors.Is(err, marketplace.ErrNotFound) {
			t.Errorf("missing subscription: %v, want ErrNotFound", err)
		}
		in := marketplace.Subscription{
			ID: "sub-1", CustomerID: "cust-1", Provider: "aws", ProductCode: "prod", Status: marketplace.StatusPending,
			Plan: "basic", Quantity: 3, Entitlements: []string{"a", "b"}, Attributes: map[string]string{"license": "arn:x"},
			CloudUpdated: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), ExpiresAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		}
		v1, err := s.PutSubscription(ctx, in)
		if err != nil || v1.Version != 1 {
			t.Fatalf("create: %+v, %v", v1, err)
		}
		got, err := s.GetSubscription(ctx, "aws", "sub-1")
		if err != nil {
			t.Fatal(err)
		}
		if got.CustomerID != in.CustomerID || got.Plan != "basic" || got.Quantity != 3 || !slices.Equal(got.Entitlements, in.Entitlements) ||
			!maps.Equal(got.Attributes, in.Attributes) || !got.CloudUpdated.Equal(in.CloudUpdated) || !got.ExpiresAt.Equal(in.ExpiresAt) || got.Version != 1 {
			t.Errorf("round trip: got %+v", got)
		}
		if _, err := s.PutSubscription(ctx, in); !errors.Is(err, marketplace.ErrVersionConflict) {
			t.Errorf("create over existing: %v, want ErrVersionConflict", err)
		}
		got.Status = marketplace.StatusActive
		v2, err := s.PutSubscription(ctx, *got)
		if err != nil || v2.Version != 2 {
			t.Fatalf("update: %+v, %v", v2, err)
		}
		if _, err := s.PutSubscription(ctx, *got); !errors.Is(err, marketplace.ErrVersionConflict) {
			t.Errorf("stale update: %v, want ErrVersionConflict", err)
		}
		f, err := s.FindSubscription(ctx, "aws", "cust-1")
		if err != nil || f.ID != "sub-1" || f.Status != marketplace.StatusActive {
			t.Errorf("find: %+v, %v", f, err)
		}
		if _, err := s.PutSubscription(ctx, marketplace.Subscription{ID: "sub-2", CustomerID: "cust-2", Provider: "azure", Status: marketplace.StatusActive}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			p      marketplace.CloudProvider
			status string
			want   []string
		}{{"", "", []string{"sub-1", "sub-2"}}, {"aws", "", []string{"sub-1"}}, {"", marketplace.StatusActive, []string{"sub-1", "sub-2"}}, {"azure", marketplace.StatusPending, nil}} {
			list, err := s.ListSubscriptions(ctx, marketplace.SubscriptionFilter{Provider: tc.p, Status: tc.status})
			var ids []string
			for _, x := range list {
				ids = append(ids, x.ID)
			}
			if err != nil || !slices.Equal(ids, tc.want) {
				t.Errorf("list(%q, %q) = %v, %v; want %v", tc.p, tc.status, ids, err, tc.want)
			}
		}
		if err := s.DeleteSubscription(ctx, "aws", "sub-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetSubscription(ctx, "aws", "sub-1"); !errors.Is(err, marketplace.ErrNotFound) {
			t.Errorf("after delete: %v", err)
		}
	})

	t.Run("ConcurrentUpdatesConflict", func(t *testing.T) {
		s := h.Open(t, h.NewDB(t))
		ctx := t.Context()
		if _, err := s.PutSubscription(ctx, marketplace.Subscription{ID: "s", Provider: "gcp", Status: marketplace.StatusActive}); err != nil {
			t.Fatal(err)
		}
		// Many writers read-modify-write with retries: every increment lands once.
		var wg sync.WaitGroup
		var conflicts atomic.Int64
		for range 8 {
			wg.Go(func() {
				for range 10 {
					for {
						cur, err := s.GetSubscription(ctx, "gcp", "s")
						if err != nil {
							t.Error(err)
							return
						}
						cur.Quantity++
						_, err = s.PutSubscription(ctx, *cur)
						if errors.Is(err, marketplace.ErrVersionConflict) {
							conflicts.Add(1)
							continue
						}
						if err != nil {
							t.Error(err)
						}
						break
					}
				}
			})
		}
		wg.Wait()
		got, err := s.GetSubscription(ctx, "gcp", "s")
		if err != nil || got.Quantity != 80 || got.Version != 81 {
			t.Errorf("after 80 increments: quantity %d version %d (%v); %d conflicts", got.Quantity, got.Version, err, conflicts.Load())
		}
	})

	t.Run("Entitlements", func(t *testing.T) {
		s := h.Open(t, h.NewDB(t))
		ctx := t.Context()
		e1, err := s.PutEntitlement(ctx, marketplace.Entitlement{Provider: "aws", CustomerID: "c", Feature: "gold", Value: "true"})
		if err != nil || e1.Version != 1 {
			t.Fatalf("put: %+v, %v", e1, err)
		}
		exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		e2, err := s.PutEntitlement(ctx, marketplace.Entitlement{Provider: "aws", CustomerID: "c", Feature: "gold", Value: "10", ExpiresAt: exp})
		if err != nil || e2.Version != 2 {
			t.Fatalf("replace: %+v, %v", e2, err)
		}
		if _, err := s.PutEntitlement(ctx, marketplace.Entitlement{Provider: "aws", CustomerID: "c", Feature: "api"}); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetEntitlement(ctx, "aws", "c", "gold")
		if err != nil || got.Value != "10" || !got.ExpiresAt.Equal(exp) || got.Version != 2 {
			t.Errorf("get: %+v, %v", got, err)
		}
		list, err := s.ListEntitlements(ctx, "aws", "c")
		if err != nil || len(list) != 2 || list[0].Feature != "api" {
			t.Errorf("list: %+v, %v", list, err)
		}
		if err := s.DeleteEntitlement(ctx, "aws", "c", "gold"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetEntitlement(ctx, "aws", "c", "gold"); !errors.Is(err, marketplace.ErrNotFound) {
			t.Errorf("after delete: %v", err)
		}
	})

	t.Run("Counts", func(t *testing.T) { runCounts(t, h) })
}

// runCounts checks CountSubscriptions: per status, linked of any status,
// one cloud only, and a cloud with none.
func runCounts(t *testing.T, h Harness) {
	s := h.Open(t, h.NewDB(t))
	ctx := t.Context()
	for _, sub := range []marketplace.Subscription{
		{Provider: "aws", ID: "a1", CustomerID: "c1", Status: marketplace.StatusActive, AccountID: "acct-1"},
		{Provider: "aws", ID: "a2", CustomerID: "c2", Status: marketplace.StatusActive},
		{Provider: "aws", ID: "a3", CustomerID: "c3", Status: marketplace.StatusActive, AccountID: "acct-3"},
		{Provider: "aws", ID: "a4", CustomerID: "c4", Status: marketplace.StatusPending},
		{Provider: "aws", ID: "a5", CustomerID: "c5", Status: marketplace.StatusCancelled, AccountID: "acct-5"},
		// Another cloud's, with a status and links AWS has too: not counted for AWS.
		{Provider: "azure", ID: "z1", CustomerID: "c1", Status: marketplace.StatusActive, AccountID: "acct-1"},
		{Provider: "azure", ID: "z2", CustomerID: "c2", Status: marketplace.StatusSuspended},
	} {
		if _, err := s.PutSubscription(ctx, sub); err != nil {
			t.Fatal(err)
		}
	}
	// An update counts once, under its new status.
	a2, err := s.GetSubscription(ctx, "aws", "a2")
	if err != nil {
		t.Fatal(err)
	}
	a2.Status, a2.AccountID = marketplace.StatusSuspended, "acct-2"
	if _, err := s.PutSubscription(ctx, *a2); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		p      marketplace.CloudProvider
		want   map[string]int
		linked int
	}{
		{"aws", map[string]int{marketplace.StatusActive: 2, marketplace.StatusSuspended: 1, marketplace.StatusPending: 1, marketplace.StatusCancelled: 1}, 4},
		{"azure", map[string]int{marketplace.StatusActive: 1, marketplace.StatusSuspended: 1}, 1},
		{"gcp", map[string]int{}, 0},
	} {
		got, err := s.CountSubscriptions(ctx, tc.p)
		if err != nil {
			t.Fatalf("CountSubscriptions(%s): %v", tc.p, err)
		}
		if got.ByStatus == nil || !maps.Equal(got.ByStatus, tc.want) || got.Linked != tc.linked {
			t.Errorf("CountSubscriptions(%s) = %v linked %d; want %v linked %d", tc.p, got.ByStatus, got.Linked, tc.want, tc.linked)
		}
	}
}
