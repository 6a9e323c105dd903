package aws_test

// The seed API, as documented by the package this project started from
// (root package marketplace and package aws; DESIGN.md, "The seed API").
// This file only compiles if every identifier, signature, field and
// constant exists with exactly the documented types, and if a user's own
// types written to the documented interfaces satisfy them. Extensions are
// allowed; a change to anything below breaks code written to the seed.
//
// The idioms: a pointer to a field or variable (&x.F assigned to *T)
// needs the exact type T; a method expression assigned to a func type needs
// the exact signature; `v := Const` then &v pins the constant's type.

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
)

// ---- Root package ----

// seedProvider is a user's own marketplace.Provider, written to the docs.
type seedProvider struct{}

func (seedProvider) SubmitUsage(ctx context.Context, records []marketplace.UsageRecord) error {
	return nil
}
func (seedProvider) ResolveSubscription(ctx context.Context, customerID string) (*marketplace.Subscription, error) {
	return &marketplace.Subscription{ID: customerID, CustomerID: customerID, Provider: marketplace.AWS, Status: "active"}, nil
}
func (seedProvider) IsActive(ctx context.Context, customerID string) (bool, error) { return true, nil }
func (seedProvider) CheckEntitlement(ctx context.Context, customerID string, feature string) error {
	return nil
}
func (seedProvider) Name() marketplace.CloudProvider { return marketplace.AWS }

var (
	_ marketplace.MeteringService     = seedProvider{}
	_ marketplace.SubscriptionManager = seedProvider{}
	_ marketplace.EntitlementChecker  = seedProvider{}
	_ marketplace.Provider            = seedProvider{}
)

var (
	_ = func(u marketplace.UsageRecord) {
		var (
			_ *string    = &u.CustomerID
			_ *string    = &u.Dimension
			_ *int64     = &u.Quantity
			_ *time.Time = &u.Timestamp
		)
	}
	_ = func(s marketplace.Subscription) {
		var (
			_ *string                    = &s.ID
			_ *string                    = &s.CustomerID
			_ *marketplace.CloudProvider = &s.Provider
			_ *string                    = &s.ProductCode
			_ *string                    = &s.Status
			_ *[]string                  = &s.Entitlements
			_ *time.Time                 = &s.ExpiresAt
		)
	}
	_ = func(c marketplace.RetryConfig) {
		var (
			_ *int           = &c.MaxAttempts
			_ *time.Duration = &c.BaseDelay
			_ *time.Duration = &c.MaxJitter
		)
	}

	_ func(...marketplace.Provider) *marketplace.MultiCloudManager                                                                = marketplace.NewMultiCloudManager
	_ func(*marketplace.MultiCloudManager, marketplace.Provider)                                                                  = (*marketplace.MultiCloudManager).Register
	_ func(*marketplace.MultiCloudManager, marketplace.CloudProvider) (marketplace.Provider, error)                               = (*marketplace.MultiCloudManager).Provider
	_ func(*marketplace.MultiCloudManager, context.Context, marketplace.CloudProvider, []marketplace.UsageRecord) error           = (*marketplace.MultiCloudManager).SubmitUsage
	_ func(*marketplace.MultiCloudManager, context.Context, marketplace.CloudProvider, string) (*marketplace.Subscription, error) = (*marketplace.MultiCloudManager).ResolveSubscription
	_ func(*marketplace.MultiCloudManager, context.Context, marketplace.CloudProvider, string) (bool, error)                      = (*marketplace.MultiCloudManager).IsActive
	_ func(*marketplace.MultiCloudManager, context.Context, marketplace.CloudProvider, string, string) error                      = (*marketplace.MultiCloudManager).CheckEntitlement

	_ func() *marketplace.UsageTracker                                                           = marketplace.NewUsageTracker
	_ func(*marketplace.UsageTracker, string, string, int64)                                     = (*marketplace.UsageTracker).Record
	_ func(*marketplace.UsageTracker) int                                                        = (*marketplace.UsageTracker).Pending
	_ func(*marketplace.UsageTracker) map[string]map[string]int64                                = (*marketplace.UsageTracker).Aggregate
	_ func(*marketplace.UsageTracker, context.Context, marketplace.MeteringService) (int, error) = (*marketplace.UsageTracker).Flush
	_ func(context.Context, marketplace.RetryConfig, string, func() error) error                 = marketplace.RetryFunc
	_ func() marketplace.RetryConfig                                                             = marketplace.DefaultRetryConfig
	_ *error                                                                                     = &marketplace.ErrProviderNotRegistered
	_ *error                                                                                     = &marketplace.ErrNoActiveSubscription
	_ *error                                                                                     = &marketplace.ErrEntitlementDenied
	_ *error                                                                                     = &marketplace.ErrMeteringFailed
)

// ---- Package aws ----

// seedMetering is a user's own aws.MeteringAPI, written to the docs.
type seedMetering struct{}

func (seedMetering) ResolveCustomer(ctx context.Context, registrationToken string) (*aws.ResolveCustomerOutput, error) {
	return &aws.ResolveCustomerOutput{CustomerIdentifier: "cust-1", ProductCode: "prod"}, nil
}
func (seedMetering) BatchMeterUsage(ctx context.Context, input *aws.BatchMeterUsageInput) (*aws.BatchMeterUsageOutput, error) {
	out := &aws.BatchMeterUsageOutput{}
	for _, r := range input.UsageRecords {
		out.Results = append(out.Results, aws.UsageRecordResult{UsageRecord: r, MeteringStatus: "Success"})
	}
	return out, nil
}
func (seedMetering) MeterUsage(ctx context.Context, input *aws.MeterUsageInput) (*aws.MeterUsageOutput, error) {
	return &aws.MeterUsageOutput{MeteringRecordID: "r"}, nil
}

// seedSubscriptions is a user's own aws.SubscriptionStore.
type seedSubscriptions struct{ m map[string]aws.Subscription }

func (s seedSubscriptions) Put(ctx context.Context, sub aws.Subscription) error {
	s.m[sub.CustomerIdentifier] = sub
	return nil
}
func (s seedSubscriptions) Get(ctx context.Context, customerIdentifier string) (*aws.Subscription, error) {
	if sub, ok := s.m[customerIdentifier]; ok {
		return &sub, nil
	}
	return nil, nil
}
func (s seedSubscriptions) List(ctx context.Context, status aws.SubscriptionStatus) ([]aws.Subscription, error) {
	var out []aws.Subscription
	for _, sub := range s.m {
		if sub.Status == status {
			out = append(out, sub)
		}
	}
	return out, nil
}
func (s seedSubscriptions) Delete(ctx context.Context, customerIdentifier string) error {
	delete(s.m, customerIdentifier)
	return nil
}

// seedEntitlements is a user's own aws.EntitlementStore.
type seedEntitlements struct{}

func (seedEntitlements) Put(ctx context.Context, ent aws.Entitlement) error { return nil }
func (seedEntitlements) Get(ctx context.Context, customerIdentifier, dimension string) (*aws.Entitlement, error) {
	return nil, nil
}
func (seedEntitlements) List(ctx context.Context, customerIdentifier string) ([]aws.Entitlement, error) {
	return nil, nil
}
func (seedEntitlements) Delete(ctx context.Context, customerIdentifier, dimension string) error {
	return nil
}

// seedSigner is a user's own aws.RequestSigner.
type seedSigner struct{}

func (seedSigner) Sign(req *http.Request) error { return nil }

var (
	_ aws.MeteringAPI       = seedMetering{}
	_ aws.MeteringAPI       = (*aws.MeteringClient)(nil)
	_ aws.SubscriptionStore = seedSubscriptions{}
	_ aws.SubscriptionStore = (*aws.MemorySubscriptionStore)(nil)
	_ aws.EntitlementStore  = seedEntitlements{}
	_ aws.EntitlementStore  = (*aws.MemoryEntitlementStore)(nil)
	_ aws.RequestSigner     = seedSigner{}
)

var (
	_ = func(o aws.ResolveCustomerOutput) {
		var (
			_ *string = &o.CustomerIdentifier
			_ *string = &o.ProductCode
		)
	}
	_ = func(r aws.UsageRecord) {
		var (
			_ *string    = &r.CustomerIdentifier
			_ *string    = &r.Dimension
			_ *int       = &r.Quantity
			_ *time.Time = &r.Timestamp
		)
	}
	_ = func(in aws.BatchMeterUsageInput) {
		var (
			_ *string            = &in.ProductCode
			_ *[]aws.UsageRecord = &in.UsageRecords
		)
	}
	_ = func(r aws.UsageRecordResult) {
		var (
			_ *aws.UsageRecord = &r.UsageRecord
			_ *string          = &r.MeteringStatus
		)
	}
	_ = func(o aws.BatchMeterUsageOutput) {
		var (
			_ *[]aws.UsageRecordResult = &o.Results
			_ *[]aws.UsageRecord       = &o.UnprocessedRecords
		)
	}
	_ = func(in aws.MeterUsageInput) {
		var (
			_ *string                = &in.ProductCode
			_ *string                = &in.Dimension
			_ *int                   = &in.Quantity
			_ *time.Time             = &in.Timestamp
			_ *[]aws.UsageAllocation = &in.UsageAllocations
		)
	}
	_ = func(a aws.UsageAllocation) {
		var (
			_ *int               = &a.AllocatedUsageQuantity
			_ *map[string]string = &a.Tags
		)
	}
	_ = func(o aws.MeterUsageOutput) { var _ *string = &o.MeteringRecordID }
	_ = func(c *aws.MeteringClient) {
		var (
			_ *string                  = &c.Endpoint
			_ *aws.RequestSigner       = &c.Signer
			_ **http.Client            = &c.HTTPClient
			_ *marketplace.RetryConfig = &c.Retry
		)
	}
	_ func(string, aws.RequestSigner) *aws.MeteringClient = aws.NewMeteringClient

	_ = func(s aws.Subscription) {
		var (
			_ *string                 = &s.CustomerIdentifier
			_ *string                 = &s.ProductCode
			_ *aws.SubscriptionStatus = &s.Status
			_ *time.Time              = &s.SubscribedAt
			_ **time.Time             = &s.UnsubscribedAt
		)
	}
	_ func() *aws.MemorySubscriptionStore                                                                     = aws.NewMemorySubscriptionStore
	_ func(aws.SubscriptionStore, aws.MeteringAPI) *aws.SubscriptionManager                                   = aws.NewSubscriptionManager
	_ func(*aws.SubscriptionManager, context.Context, string) (*aws.Subscription, error)                      = (*aws.SubscriptionManager).Subscribe
	_ func(*aws.SubscriptionManager, context.Context, string) error                                           = (*aws.SubscriptionManager).Unsubscribe
	_ func(*aws.SubscriptionManager, context.Context, string) (bool, error)                                   = (*aws.SubscriptionManager).IsActive
	_ func(*aws.MemorySubscriptionStore, context.Context, aws.SubscriptionStatus) ([]aws.Subscription, error) = (*aws.MemorySubscriptionStore).List

	_ = func(e aws.Entitlement) {
		var (
			_ *string    = &e.CustomerIdentifier
			_ *string    = &e.ProductCode
			_ *string    = &e.Dimension
			_ *int       = &e.Value
			_ *time.Time = &e.ExpiresAt
		)
	}
	_ func() *aws.MemoryEntitlementStore                                           = aws.NewMemoryEntitlementStore
	_ func(aws.EntitlementStore, time.Duration) *aws.EntitlementChecker            = aws.NewEntitlementChecker
	_ func(*aws.EntitlementChecker, context.Context, string, string) (bool, error) = (*aws.EntitlementChecker).IsEntitled
	_ func(*aws.EntitlementChecker, string, string)                                = (*aws.EntitlementChecker).Invalidate
	_ func(*aws.EntitlementChecker, context.Context, aws.Entitlement) error        = (*aws.EntitlementChecker).GrantEntitlement
	_ func(*aws.EntitlementChecker, context.Context, string, string) error         = (*aws.EntitlementChecker).RevokeEntitlement

	_ = func(r aws.TokenUsageRecord) {
		var (
			_ *string    = &r.CustomerIdentifier
			_ *int64     = &r.InputTokens
			_ *int64     = &r.OutputTokens
			_ *int64     = &r.TotalTokens
			_ *time.Time = &r.Timestamp
		)
	}
	_ func(string, aws.MeteringAPI) *aws.TokenBillingTracker                              = aws.NewTokenBillingTracker
	_ func(*aws.TokenBillingTracker, string, int64, int64)                                = (*aws.TokenBillingTracker).RecordUsage
	_ func(*aws.TokenBillingTracker) []aws.TokenUsageRecord                               = (*aws.TokenBillingTracker).Snapshot
	_ func(*aws.TokenBillingTracker, context.Context) (*aws.BatchMeterUsageOutput, error) = (*aws.TokenBillingTracker).Flush
)

// TestSeedAPIConstants pins the constants' types and values, and runs a
// program written to the seed's documentation against the user's own
// types above.
func TestSeedAPIConstants(t *testing.T) {
	dim := aws.DimensionTokens
	var _ *string = &dim
	active, pending, unsubscribed, expired := aws.SubscriptionActive, aws.SubscriptionPending, aws.SubscriptionUnsubscribed, aws.SubscriptionExpired
	for _, p := range []*aws.SubscriptionStatus{&active, &pending, &unsubscribed, &expired} {
		_ = p
	}
	cloud := marketplace.AWS
	var _ *marketplace.CloudProvider = &cloud
	for got, want := range map[string]string{
		dim: "tokens_1m", string(active): "active", string(pending): "pending", string(unsubscribed): "unsubscribed",
		string(expired): "expired", string(marketplace.AWS): "aws", string(marketplace.GCP): "gcp", string(marketplace.Azure): "azure",
	} {
		if got != want {
			t.Errorf("%q, documented as %q", got, want)
		}
	}
	if c := marketplace.DefaultRetryConfig(); c.MaxAttempts != 3 || c.BaseDelay != time.Second || c.MaxJitter != 500*time.Millisecond {
		t.Errorf("DefaultRetryConfig = %+v, documented as 3 attempts, 1 s, 500 ms", c)
	}

	ctx := t.Context()
	mgr := aws.NewSubscriptionManager(seedSubscriptions{m: map[string]aws.Subscription{}}, seedMetering{})
	if _, err := mgr.Subscribe(ctx, "token"); err != nil {
		t.Fatal(err)
	}
	if err := mgr.Unsubscribe(ctx, "cust-1"); err != nil {
		t.Fatal(err)
	}
	tr := aws.NewTokenBillingTracker("prod", seedMetering{})
	tr.RecordUsage("cust-1", 2_000_000, 500_000)
	out, err := tr.Flush(ctx)
	if err != nil || len(out.Results) != 1 || out.Results[0].UsageRecord.Quantity != 2 || tr.Snapshot()[0].TotalTokens != 500_000 {
		t.Errorf("Flush through the user's MeteringAPI: %+v %v", out, err)
	}
	chk := aws.NewEntitlementChecker(seedEntitlements{}, time.Minute)
	t.Cleanup(chk.Close)
	if ok, err := chk.IsEntitled(ctx, "cust-1", aws.DimensionTokens); ok || err != nil {
		t.Errorf("IsEntitled on an empty store: %v %v", ok, err)
	}
	m := marketplace.NewMultiCloudManager(seedProvider{})
	if err := m.CheckEntitlement(ctx, marketplace.AWS, "c", "f"); err != nil {
		t.Error(err)
	}
}
