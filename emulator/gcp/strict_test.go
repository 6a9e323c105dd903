package gcp_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace/emulator/gcp"
)

// recorder is a Publisher that keeps what it is given.
type recorder struct {
	mu  sync.Mutex
	evs []string
}

func (r *recorder) Publish(_ context.Context, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, string(data))
	return nil
}

func (r *recorder) count(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.evs {
		if strings.Contains(ev, substr) {
			n++
		}
	}
	return n
}

// cloudcommerceprocurement-api.json, providers.accounts.reset: "Resets an
// Account and cancels all associated Entitlements."
func TestResetAccountCancelsEntitlements(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	pub := &recorder{}
	e, srv := start(t, gcp.Config{Clock: func() time.Time { return now }, Publisher: pub})
	base := srv.URL + "/v1/providers/" + e.ProviderID()
	active := e.Purchase(t.Context(), "acc-1", "prod", "plan")
	if code, _, body := post(t, base+"/entitlements/"+active+":approve", `{}`); code != 200 {
		t.Fatalf("approve: %d %s", code, body)
	}
	requested := e.Purchase(t.Context(), "acc-1", "prod", "plan2")
	other := e.Purchase(t.Context(), "acc-2", "prod", "plan")
	if code, _, body := post(t, base+"/accounts/acc-1:reset", `{}`); code != 200 {
		t.Fatalf("reset: %d %s", code, body)
	}
	tests := []struct {
		name, id, want string
	}{
		{"active entitlement of the account", active, gcp.StateCancelled},
		{"requested entitlement of the account", requested, gcp.StateCancelled},
		{"another account's entitlement", other, gcp.StateActivationRequested},
	}
	for _, tt := range tests {
		if state, _, _, _ := e.Entitlement(tt.id); state != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, state, tt.want)
		}
	}
	if n := pub.count("ENTITLEMENT_CANCELLED"); n != 2 {
		t.Errorf("%d ENTITLEMENT_CANCELLED events, want 2", n)
	}
	if got := e.AccountApproval("acc-1", gcp.SignupApproval); got != "PENDING" {
		t.Errorf("approval after reset: %s, want PENDING", got)
	}
}
