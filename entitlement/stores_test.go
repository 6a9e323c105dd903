package entitlement_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/sqlite"
)

func TestStoreLoader(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "e.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	put := func(s marketplace.Subscription) {
		if _, err := st.PutSubscription(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	put(marketplace.Subscription{Provider: "azure", ID: "s1", CustomerID: "c-active", Status: marketplace.StatusActive, Plan: "gold", Entitlements: []string{"sso"}})
	put(marketplace.Subscription{Provider: "azure", ID: "s2", CustomerID: "c-suspended", Status: marketplace.StatusSuspended, Plan: "gold"})
	put(marketplace.Subscription{Provider: "azure", ID: "s3", CustomerID: "c-expired", Status: marketplace.StatusActive, Plan: "gold", ExpiresAt: now.Add(-time.Hour)})
	if _, err := st.PutEntitlement(ctx, marketplace.Entitlement{Provider: "azure", CustomerID: "c-active", Feature: "seats", Value: "10", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutEntitlement(ctx, marketplace.Entitlement{Provider: "azure", CustomerID: "c-active", Feature: "beta", Value: "false"}); err != nil {
		t.Fatal(err)
	}
	l := entitlement.StoreLoader{Subscriptions: st, Entitlements: st, PlanFeatures: map[string][]string{"gold": {"api"}}, Clock: func() time.Time { return now }}
	tests := []struct {
		customer, feature string
		want              error
		until             time.Time
	}{
		{"c-active", "", nil, time.Time{}}, // only an active subscription
		{"c-suspended", "", marketplace.ErrNoActiveSubscription, time.Time{}},
		{"c-active", "gold", nil, time.Time{}},                              // the plan
		{"c-active", "sso", nil, time.Time{}},                               // listed on the subscription
		{"c-active", "api", nil, time.Time{}},                               // included in the plan
		{"c-active", "seats", nil, now.Add(time.Hour)},                      // a stored entitlement, with its expiry
		{"c-active", "beta", marketplace.ErrEntitlementDenied, time.Time{}}, // stored as false
		{"c-active", "other", marketplace.ErrEntitlementDenied, time.Time{}},
		{"c-suspended", "gold", marketplace.ErrNoActiveSubscription, time.Time{}},
		{"c-expired", "gold", marketplace.ErrNoActiveSubscription, time.Time{}},
		{"nobody", "gold", marketplace.ErrNoActiveSubscription, time.Time{}},
	}
	for _, tc := range tests {
		d, err := l.Load(ctx, entitlement.Key{Provider: "azure", Customer: tc.customer, Feature: tc.feature})
		if err != nil {
			t.Fatalf("%s/%s: %v", tc.customer, tc.feature, err)
		}
		if (tc.want == nil) != (d.Err == nil) || (tc.want != nil && !errors.Is(d.Err, tc.want)) || !d.Until.Equal(tc.until) {
			t.Errorf("%s/%s: %+v, want %v until %v", tc.customer, tc.feature, d, tc.want, tc.until)
		}
	}
}
