package marketplace_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/sqlite"
)

func TestLookupSubscription(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, s := range []marketplace.Subscription{
		{Provider: marketplace.AWS, ID: "a", CustomerID: "active", Status: marketplace.StatusActive},
		{Provider: marketplace.AWS, ID: "b", CustomerID: "lapsed", Status: marketplace.StatusActive, ExpiresAt: now.Add(-time.Minute)},
		{Provider: marketplace.AWS, ID: "c", CustomerID: "suspended", Status: marketplace.StatusSuspended},
	} {
		if _, err := st.PutSubscription(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		customer string
		active   bool
		missing  bool
	}{{"active", true, false}, {"lapsed", false, false}, {"suspended", false, false}, {"nobody", false, true}}
	for _, tc := range tests {
		s, err := marketplace.LookupSubscription(ctx, st, marketplace.AWS, tc.customer)
		if tc.missing {
			if !errors.Is(err, marketplace.ErrNoActiveSubscription) || !errors.Is(err, marketplace.ErrNotFound) {
				t.Errorf("%s: %v, want ErrNoActiveSubscription and ErrNotFound", tc.customer, err)
			}
		} else if err != nil || s.CustomerID != tc.customer {
			t.Errorf("%s: %+v, %v", tc.customer, s, err)
		}
		active, err := marketplace.HasActiveSubscription(ctx, st, marketplace.AWS, tc.customer, now)
		if err != nil || active != tc.active {
			t.Errorf("%s: active = %v (%v), want %v", tc.customer, active, err, tc.active)
		}
	}
	// Another cloud's customer of the same id is not ours.
	if _, err := marketplace.LookupSubscription(ctx, st, marketplace.GCP, "active"); !errors.Is(err, marketplace.ErrNoActiveSubscription) {
		t.Errorf("gcp lookup of an aws customer: %v", err)
	}
}
