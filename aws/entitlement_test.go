package aws_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/ledger"
)

func TestGetEntitlementsPages(t *testing.T) {
	e := newEnv(t, emu.Config{EmptyPages: true})
	x := aws.NewEntitlements(e.ent)
	var want int
	for i := range 12 {
		b := e.emu.AddBuyer(emu.Buyer{ProductCode: "contract"})
		var ents []emu.Entitlement
		for d := range 5 {
			n := int64(d + i)
			exp := e.clock.Now().Add(time.Duration(d+1) * time.Hour)
			ents = append(ents, emu.Entitlement{Dimension: fmt.Sprintf("dim%d", d), IntegerValue: &n, ExpirationDate: &exp})
			want++
		}
		if err := e.emu.SetEntitlements(b.Key(), ents); err != nil {
			t.Fatal(err)
		}
	}
	all, err := x.GetEntitlements(t.Context(), "contract", aws.EntitlementFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != want {
		t.Fatalf("%d entitlements over the pages, want %d", len(all), want)
	}
	if all[0].ExpiresAt.IsZero() || all[0].Text == "" || all[0].CustomerIdentifier == "" {
		t.Errorf("entitlement not mapped: %+v", all[0])
	}
	some, err := x.GetEntitlements(t.Context(), "contract", aws.EntitlementFilter{CustomerIdentifier: []string{all[0].CustomerIdentifier}, Dimension: []string{"dim1", "dim2"}})
	if err != nil || len(some) != 2 {
		t.Errorf("filtered: %d, %v", len(some), err)
	}
	if _, err := x.GetEntitlements(t.Context(), "", aws.EntitlementFilter{}); !errors.Is(err, aws.ErrInvalidInput) {
		t.Errorf("no product code: %v", err)
	}
}

func TestMultiCloudManagerRoutes(t *testing.T) {
	e := newEnv(t, emu.Config{})
	a := codeApp(t, e)
	m := marketplace.NewMultiCloudManager(a.Provider)
	if err := m.SubmitUsage(t.Context(), marketplace.AWS, []marketplace.UsageRecord{{CustomerID: "c", Dimension: "d", Quantity: 1, Timestamp: e.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	if err := m.CheckEntitlement(t.Context(), marketplace.AWS, "c", ""); !errors.Is(err, marketplace.ErrNoActiveSubscription) {
		t.Errorf("unknown customer: %v", err)
	}
	if err := e.ledger.Fold(t.Context()); err != nil {
		t.Fatal(err)
	}
	bs, _ := e.ledger.Buckets(t.Context(), ledger.BucketFilter{Customer: "c"})
	if len(bs) != 1 {
		t.Errorf("usage through the manager made %d buckets", len(bs))
	}
}
