package aws_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
)

// TestSubscriptionManagerSeedAPI: Subscribe resolves the token through the
// official SDK against the emulator; Unsubscribe stores the seed's
// "unsubscribed", which List finds.
func TestSubscriptionManagerSeedAPI(t *testing.T) {
	e := newEnv(t, emu.Config{})
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: "p"})
	tok, _ := e.emu.MintToken(b.Key(), time.Hour)
	store := aws.NewMemorySubscriptionStore()
	m := aws.NewSubscriptionManager(store, e.meter)
	m.Clock = e.clock.Now
	ctx := t.Context()
	sub, err := m.Subscribe(ctx, tok)
	if err != nil || sub.CustomerIdentifier != b.CustomerIdentifier || sub.ProductCode != "p" || sub.Status != aws.SubscriptionActive ||
		!sub.SubscribedAt.Equal(testNow) || sub.UnsubscribedAt != nil {
		t.Fatalf("Subscribe: %+v %v", sub, err)
	}
	if ok, _ := m.IsActive(ctx, b.CustomerIdentifier); !ok {
		t.Error("not active after Subscribe")
	}
	if _, err := m.Subscribe(ctx, "forged"); !errors.Is(err, aws.ErrInvalidToken) {
		t.Errorf("forged token: %v", err)
	}
	e.clock.Advance(time.Hour)
	if err := m.Unsubscribe(ctx, b.CustomerIdentifier); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.IsActive(ctx, b.CustomerIdentifier); ok {
		t.Error("active after Unsubscribe")
	}
	gone, err := store.List(ctx, aws.SubscriptionUnsubscribed)
	if err != nil || len(gone) != 1 || gone[0].CustomerIdentifier != b.CustomerIdentifier || gone[0].UnsubscribedAt == nil ||
		!gone[0].UnsubscribedAt.Equal(testNow.Add(time.Hour)) {
		t.Errorf("List(unsubscribed) = %+v, %v; want the buyer, stamped", gone, err)
	}
	if active, _ := store.List(ctx, aws.SubscriptionActive); len(active) != 0 {
		t.Errorf("List(active) = %+v after Unsubscribe", active)
	}
	if err := m.Unsubscribe(ctx, "nobody"); !errors.Is(err, marketplace.ErrNotFound) {
		t.Errorf("unknown customer: %v", err)
	}
}

// TestSubscriptionManagerLicenseMode: a license-based buyer (no
// CustomerIdentifier) is keyed by LicenseCustomer.
func TestSubscriptionManagerLicenseMode(t *testing.T) {
	e := newEnv(t, emu.Config{})
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: "p", LicenseArn: "new"})
	tok, _ := e.emu.MintToken(b.Key(), time.Hour)
	m := aws.NewSubscriptionManager(aws.NewMemorySubscriptionStore(), e.meter)
	sub, err := m.Subscribe(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if want := aws.LicenseCustomer(b.CustomerAWSAccountId, b.LicenseArn); sub.CustomerIdentifier != want {
		t.Errorf("customer %q, want %q", sub.CustomerIdentifier, want)
	}
	if ok, _ := m.IsActive(t.Context(), sub.CustomerIdentifier); !ok {
		t.Error("not active")
	}
}

func TestMemorySubscriptionStore(t *testing.T) {
	s := aws.NewMemorySubscriptionStore()
	ctx := t.Context()
	for _, sub := range []aws.Subscription{
		{CustomerIdentifier: "b", Status: aws.SubscriptionActive},
		{CustomerIdentifier: "a", Status: aws.SubscriptionActive},
		{CustomerIdentifier: "c", Status: aws.SubscriptionExpired},
		{CustomerIdentifier: "d", Status: aws.SubscriptionPending},
	} {
		if err := s.Put(ctx, sub); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		status aws.SubscriptionStatus
		want   []string
	}{
		{aws.SubscriptionActive, []string{"a", "b"}},
		{aws.SubscriptionExpired, []string{"c"}},
		{aws.SubscriptionPending, []string{"d"}},
		{aws.SubscriptionUnsubscribed, nil},
		{"", []string{"a", "b", "c", "d"}},
	}
	for _, tc := range tests {
		got, err := s.List(ctx, tc.status)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, sub := range got {
			ids = append(ids, sub.CustomerIdentifier)
		}
		if !slices.Equal(ids, tc.want) {
			t.Errorf("List(%q) = %v, want %v", tc.status, ids, tc.want)
		}
	}
	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if sub, err := s.Get(ctx, "a"); sub != nil || err != nil {
		t.Errorf("Get after Delete: %+v %v", sub, err)
	}
	if err := s.Delete(ctx, "a"); err != nil {
		t.Errorf("deleting a missing one: %v", err)
	}
}
