package gcp_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
)

func TestStatusMapsEveryState(t *testing.T) {
	cases := map[string]string{
		gcp.StateActivationRequested:       marketplace.StatusPending,
		gcp.StateActive:                    marketplace.StatusActive,
		gcp.StatePendingCancellation:       marketplace.StatusActive,
		gcp.StatePendingPlanChange:         marketplace.StatusActive,
		gcp.StatePendingPlanChangeApproval: marketplace.StatusActive,
		gcp.StateSuspended:                 marketplace.StatusSuspended,
		gcp.StateCancelled:                 marketplace.StatusCancelled,
		"ENTITLEMENT_STATE_UNSPECIFIED":    marketplace.StatusPending,
		"SOMETHING_NEW":                    marketplace.StatusPending,
	}
	for state, want := range cases {
		if got := gcp.Status(state); got != want {
			t.Errorf("Status(%s) = %s, want %s", state, got, want)
		}
	}
	// Every state the spec lists is mapped on purpose.
	for _, s := range specEnum(t, "cloudcommerceprocurement-api.json", "Entitlement", "state") {
		if _, ok := cases[s]; !ok {
			t.Errorf("state %s of the spec has no test case", s)
		}
	}
}

func TestAccounts(t *testing.T) {
	e := newEnv(t, emu.Config{})
	ctx := t.Context()
	for i := range 7 {
		e.emu.Purchase(ctx, fmt.Sprintf("acc-%d", i), "example-api", "standard")
	}
	// list, every page (the emulator pages by 50; ask for small pages via many accounts)
	accs, err := e.proc.Accounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(accs) != 7 {
		t.Fatalf("listed %d accounts, want 7", len(accs))
	}
	a, err := e.proc.Account(ctx, "acc-3")
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "providers/"+e.emu.ProviderID()+"/accounts/acc-3" || a.State != "ACCOUNT_ACTIVE" || len(a.Approvals) != 1 || a.Approvals[0].State != "PENDING" {
		t.Fatalf("account = %+v", a)
	}
	steps := []struct {
		do   func() error
		want string
	}{
		{func() error { return e.proc.ApproveAccount(ctx, "acc-3", gcp.SignupApproval, "signed up") }, "APPROVED"},
		{func() error { return e.proc.ResetAccount(ctx, "acc-3") }, "PENDING"},
		{func() error { return e.proc.RejectAccount(ctx, "acc-3", gcp.SignupApproval, "no") }, "REJECTED"},
		{func() error { return e.proc.ApproveAccount(ctx, "acc-3", "", "") }, "APPROVED"}, // the only approval
	}
	for i, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		a, err := e.proc.Account(ctx, "acc-3")
		if err != nil {
			t.Fatal(err)
		}
		if a.Approvals[0].State != s.want {
			t.Fatalf("step %d: approval %s, want %s", i, a.Approvals[0].State, s.want)
		}
	}
	if err := e.proc.ApproveAccount(ctx, "acc-3", "no-such-approval", ""); err == nil {
		t.Error("approving an unknown approval succeeded")
	}
	if _, err := e.proc.Account(ctx, "nobody"); !errors.Is(err, marketplace.ErrNotFound) {
		t.Errorf("missing account: %v, want ErrNotFound", err)
	}
}

func TestEntitlementMethods(t *testing.T) {
	e := newEnv(t, emu.Config{})
	ctx := t.Context()
	id := e.emu.Purchase(ctx, "acc", "example-api", "standard")
	ent, err := e.proc.Entitlement(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if ent.State != gcp.StateActivationRequested || ent.Plan != "standard" || ent.UsageReportingId == "" || ent.Account != "providers/"+e.emu.ProviderID()+"/accounts/acc" {
		t.Fatalf("entitlement = %+v", ent)
	}
	p, err := e.proc.SetMessageToUser(ctx, id, "provisioning, about 2 minutes")
	if err != nil || p.MessageToUser != "provisioning, about 2 minutes" {
		t.Fatalf("patch: %+v, %v", p, err)
	}
	if err := e.proc.ApprovePlanChange(ctx, id, "pro"); err == nil {
		t.Error("approvePlanChange before activation succeeded")
	}
	state := func(want, plan string) {
		t.Helper()
		ent, err := e.proc.Entitlement(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if ent.State != want || ent.Plan != plan {
			t.Fatalf("entitlement %s/%s, want %s/%s", ent.State, ent.Plan, want, plan)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.proc.ApproveEntitlement(ctx, id))
	state(gcp.StateActive, "standard")
	must(e.emu.RequestPlanChange(ctx, id, "pro"))
	state(gcp.StatePendingPlanChangeApproval, "standard")
	if err := e.proc.ApprovePlanChange(ctx, id, "enterprise"); err == nil {
		t.Error("approving another plan than the pending one succeeded")
	}
	must(e.proc.RejectPlanChange(ctx, id, "pro", "not available"))
	state(gcp.StateActive, "standard")
	must(e.emu.RequestPlanChange(ctx, id, "pro"))
	must(e.proc.ApprovePlanChange(ctx, id, "pro"))
	state(gcp.StateActive, "pro")
	must(e.proc.SuspendEntitlement(ctx, id, "abuse"))
	state(gcp.StateSuspended, "pro")

	other := e.emu.Purchase(ctx, "acc", "example-api", "standard")
	must(e.proc.RejectEntitlement(ctx, other, "region not served"))
	if ent, _ := e.proc.Entitlement(ctx, other); ent.State != gcp.StateCancelled {
		t.Errorf("rejected entitlement is %s", ent.State)
	}
	if _, err := e.proc.Entitlement(ctx, "nope"); !errors.Is(err, marketplace.ErrNotFound) {
		t.Errorf("missing entitlement: %v, want ErrNotFound", err)
	}
}

// TestEntitlementsFilterAndPages lists more entitlements than one page
// holds, with filters.
func TestEntitlementsFilterAndPages(t *testing.T) {
	e := newEnv(t, emu.Config{})
	ctx := t.Context()
	var active []string
	for i := range 120 {
		id := e.emu.Purchase(ctx, fmt.Sprintf("acc-%d", i%3), "example-api", []string{"standard", "pro"}[i%2])
		if i%4 == 0 {
			if err := e.proc.ApproveEntitlement(ctx, id); err != nil {
				t.Fatal(err)
			}
			active = append(active, id)
		}
	}
	cases := []struct {
		filter string
		want   int
	}{
		{"", 120},
		{"state=active", 30},
		{"state=ENTITLEMENT_ACTIVE", 30},
		{"state=activation_requested", 90},
		{"account=acc-1", 40},
		{"account=acc-1 AND plan=pro", 20},
		{"plan!=pro", 60},
		{`product_external_name="example-api" state=active`, 30},
	}
	for _, tc := range cases {
		got, err := e.proc.Entitlements(ctx, tc.filter)
		if err != nil {
			t.Fatalf("%q: %v", tc.filter, err)
		}
		if len(got) != tc.want {
			t.Errorf("%q: %d entitlements, want %d", tc.filter, len(got), tc.want)
		}
		seen := map[string]bool{}
		for _, ent := range got {
			if seen[ent.Name] {
				t.Errorf("%q: %s listed twice", tc.filter, ent.Name)
			}
			seen[ent.Name] = true
		}
	}
	got, _ := e.proc.Entitlements(ctx, "state=active")
	var ids []string
	for _, ent := range got {
		ids = append(ids, strings.TrimPrefix(ent.Name, "providers/"+e.emu.ProviderID()+"/entitlements/"))
	}
	if !slices.Equal(ids, active) {
		t.Errorf("active = %v, want %v", ids, active)
	}
	if e.emu.Calls()["entitlements.list"] < 3 {
		t.Errorf("120 entitlements came in %d pages", e.emu.Calls()["entitlements.list"])
	}
	if _, err := e.proc.Entitlements(ctx, "state=active colour=blue"); err == nil {
		t.Error("a filter on an unknown attribute was accepted")
	}
}
