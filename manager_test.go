package marketplace

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// stubProvider is a Provider whose answers are set by the test. It records
// the records it was asked to submit.
type stubProvider struct {
	name CloudProvider
	// tag distinguishes two stubs for the same cloud (replacement tests).
	tag string

	submitErr      error
	resolveErr     error
	entitlementErr error
	active         bool

	mu        sync.Mutex
	submitted []UsageRecord
	calls     atomic.Int64
}

func (s *stubProvider) Name() CloudProvider { return s.name }

func (s *stubProvider) SubmitUsage(_ context.Context, records []UsageRecord) error {
	s.calls.Add(1)
	if s.submitErr != nil {
		return s.submitErr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.submitted = append(s.submitted, records...)
	return nil
}

func (s *stubProvider) ResolveSubscription(_ context.Context, customerID string) (*Subscription, error) {
	s.calls.Add(1)
	if s.resolveErr != nil {
		return nil, s.resolveErr
	}
	return &Subscription{ID: s.tag + "/" + customerID, CustomerID: customerID, Provider: s.name, Status: StatusActive}, nil
}

func (s *stubProvider) IsActive(_ context.Context, _ string) (bool, error) {
	s.calls.Add(1)
	if s.resolveErr != nil {
		return false, s.resolveErr
	}
	return s.active, nil
}

func (s *stubProvider) CheckEntitlement(_ context.Context, _, _ string) error {
	s.calls.Add(1)
	return s.entitlementErr
}

func TestMultiCloudManagerRoutesToRegisteredProvider(t *testing.T) {
	ctx := t.Context()
	stubs := map[CloudProvider]*stubProvider{}
	var ps []Provider
	for _, c := range Providers() {
		s := &stubProvider{name: c, tag: string(c), active: c == GCP}
		stubs[c] = s
		ps = append(ps, s)
	}
	m := NewMultiCloudManager(ps...)

	for _, cloud := range Providers() {
		t.Run(string(cloud), func(t *testing.T) {
			p, err := m.Provider(cloud)
			if err != nil {
				t.Fatalf("Provider(%s): %v", cloud, err)
			}
			if p != stubs[cloud] {
				t.Fatalf("Provider(%s) returned another provider's stub", cloud)
			}

			rec := []UsageRecord{{CustomerID: "c-" + string(cloud), Dimension: "d", Quantity: 7}}
			if err := m.SubmitUsage(ctx, cloud, rec); err != nil {
				t.Fatalf("SubmitUsage: %v", err)
			}
			if got := stubs[cloud].submitted; len(got) != 1 || got[0].CustomerID != "c-"+string(cloud) {
				t.Errorf("provider %s received %v, want the one record", cloud, got)
			}

			sub, err := m.ResolveSubscription(ctx, cloud, "cust")
			if err != nil {
				t.Fatalf("ResolveSubscription: %v", err)
			}
			if want := string(cloud) + "/cust"; sub.ID != want {
				t.Errorf("subscription ID = %q, want %q", sub.ID, want)
			}

			active, err := m.IsActive(ctx, cloud, "cust")
			if err != nil {
				t.Fatalf("IsActive: %v", err)
			}
			if want := cloud == GCP; active != want {
				t.Errorf("IsActive = %v, want %v", active, want)
			}

			if err := m.CheckEntitlement(ctx, cloud, "cust", "feature"); err != nil {
				t.Errorf("CheckEntitlement: %v", err)
			}
		})
	}
	// Each stub saw exactly its own four calls: nothing was routed across clouds.
	for c, s := range stubs {
		if got := s.calls.Load(); got != 4 {
			t.Errorf("provider %s got %d calls, want 4", c, got)
		}
	}
}

func TestMultiCloudManagerUnregistered(t *testing.T) {
	ctx := t.Context()
	m := NewMultiCloudManager(&stubProvider{name: AWS})
	const cloud = Azure

	calls := []struct {
		name string
		call func() error
	}{
		{"Provider", func() error { _, err := m.Provider(cloud); return err }},
		{"SubmitUsage", func() error { return m.SubmitUsage(ctx, cloud, nil) }},
		{"ResolveSubscription", func() error { _, err := m.ResolveSubscription(ctx, cloud, "c"); return err }},
		{"IsActive", func() error { _, err := m.IsActive(ctx, cloud, "c"); return err }},
		{"CheckEntitlement", func() error { return m.CheckEntitlement(ctx, cloud, "c", "f") }},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, ErrProviderNotRegistered) {
				t.Fatalf("err = %v, want one matching ErrProviderNotRegistered", err)
			}
			if !strings.Contains(err.Error(), string(cloud)) {
				t.Errorf("error %q does not name the cloud %q", err, cloud)
			}
		})
	}

	// The zero manager has nothing registered either, but must be created
	// with NewMultiCloudManager; an empty one reports every cloud missing.
	empty := NewMultiCloudManager()
	for _, c := range Providers() {
		if _, err := empty.Provider(c); !errors.Is(err, ErrProviderNotRegistered) {
			t.Errorf("empty manager: Provider(%s) err = %v, want ErrProviderNotRegistered", c, err)
		}
	}
}

func TestMultiCloudManagerRegisterReplaces(t *testing.T) {
	ctx := t.Context()
	first := &stubProvider{name: AWS, tag: "first"}
	second := &stubProvider{name: AWS, tag: "second"}
	m := NewMultiCloudManager(first)

	m.Register(second)
	p, err := m.Provider(AWS)
	if err != nil {
		t.Fatal(err)
	}
	if p != second {
		t.Fatalf("after Register, Provider(AWS) = %v, want the replacement", p.(*stubProvider).tag)
	}
	sub, err := m.ResolveSubscription(ctx, AWS, "c")
	if err != nil {
		t.Fatal(err)
	}
	if sub.ID != "second/c" {
		t.Errorf("routed to %q, want the replacement", sub.ID)
	}
	if n := first.calls.Load(); n != 0 {
		t.Errorf("replaced provider got %d calls, want 0", n)
	}

	// A later provider for the same cloud in the constructor wins too.
	m2 := NewMultiCloudManager(first, second)
	if p, _ := m2.Provider(AWS); p != second {
		t.Errorf("NewMultiCloudManager(first, second): got %q, want second", p.(*stubProvider).tag)
	}
}

func TestMultiCloudManagerRegisterNilPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Register(nil) did not panic")
		}
	}()
	NewMultiCloudManager().Register(nil)
}

func TestMultiCloudManagerErrorsPassThrough(t *testing.T) {
	ctx := t.Context()
	partial := &SubmitError{Failed: []UsageRecord{{CustomerID: "c", Dimension: "d", Quantity: 1}}, Err: errors.New("throttled")}

	tests := []struct {
		name string
		stub *stubProvider
		call func(m *MultiCloudManager) error
		want error
	}{
		{
			name: "entitlement denied",
			stub: &stubProvider{name: GCP, entitlementErr: fmt.Errorf("plan basic: %w", ErrEntitlementDenied)},
			call: func(m *MultiCloudManager) error { return m.CheckEntitlement(ctx, GCP, "c", "gpu") },
			want: ErrEntitlementDenied,
		},
		{
			name: "no active subscription",
			stub: &stubProvider{name: GCP, entitlementErr: ErrNoActiveSubscription},
			call: func(m *MultiCloudManager) error { return m.CheckEntitlement(ctx, GCP, "c", "gpu") },
			want: ErrNoActiveSubscription,
		},
		{
			name: "resolve not found",
			stub: &stubProvider{name: Azure, resolveErr: ErrNotFound},
			call: func(m *MultiCloudManager) error { _, err := m.ResolveSubscription(ctx, Azure, "c"); return err },
			want: ErrNotFound,
		},
		{
			name: "is active not found",
			stub: &stubProvider{name: Azure, resolveErr: ErrNotFound},
			call: func(m *MultiCloudManager) error { _, err := m.IsActive(ctx, Azure, "c"); return err },
			want: ErrNotFound,
		},
		{
			name: "partial submit",
			stub: &stubProvider{name: AWS, submitErr: partial},
			call: func(m *MultiCloudManager) error { return m.SubmitUsage(ctx, AWS, partial.Failed) },
			want: ErrMeteringFailed,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(NewMultiCloudManager(tc.stub))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want one matching %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), string(tc.stub.name)) {
				t.Errorf("error %q does not name the cloud %q", err, tc.stub.name)
			}
			if errors.Is(err, ErrProviderNotRegistered) {
				t.Errorf("provider error %v also matches ErrProviderNotRegistered", err)
			}
		})
	}

	// The partial failure must still be reachable with errors.As, so a
	// caller can re-queue exactly the failed records.
	err := NewMultiCloudManager(&stubProvider{name: AWS, submitErr: partial}).SubmitUsage(ctx, AWS, partial.Failed)
	var se *SubmitError
	if !errors.As(err, &se) || se != partial {
		t.Errorf("errors.As(%v, *SubmitError) did not find the provider's SubmitError", err)
	}
}

// TestMultiCloudManagerConcurrent registers, replaces and looks up providers
// from many goroutines; run with -race it proves the manager's locking.
func TestMultiCloudManagerConcurrent(t *testing.T) {
	ctx := t.Context()
	m := NewMultiCloudManager(&stubProvider{name: AWS, entitlementErr: ErrEntitlementDenied})
	const writers, readers, rounds = 4, 8, 500

	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range rounds {
				c := Providers()[(w+i)%3]
				m.Register(&stubProvider{name: c, tag: fmt.Sprint(w, "-", i), entitlementErr: ErrEntitlementDenied})
			}
		})
	}
	var unexpected atomic.Int64
	for r := range readers {
		wg.Go(func() {
			for i := range rounds {
				c := Providers()[(r+i)%3]
				err := m.CheckEntitlement(ctx, c, "c", "f")
				// AWS is always registered; the others may not be yet.
				switch {
				case errors.Is(err, ErrEntitlementDenied):
				case c != AWS && errors.Is(err, ErrProviderNotRegistered):
				default:
					unexpected.Add(1)
				}
				if p, err := m.Provider(c); err == nil && p.Name() != c {
					unexpected.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := unexpected.Load(); n != 0 {
		t.Errorf("%d lookups returned an unexpected result", n)
	}
	for _, c := range Providers() {
		if _, err := m.Provider(c); err != nil {
			t.Errorf("after all writers finished, Provider(%s): %v", c, err)
		}
	}
}
