package aws

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/marketplaceentitlementservice"
	"github.com/aws/aws-sdk-go-v2/service/marketplaceentitlementservice/types"

	"github.com/saasmarket/marketplace"
)

// Entitlement is a customer's entitlement to one dimension of a product.
type Entitlement struct {
	CustomerIdentifier   string
	CustomerAWSAccountId string
	LicenseArn           string
	ProductCode          string
	Dimension            string
	// Value is the integer value (a boolean counts as 1 or 0; a double is
	// truncated). Text is the value as AWS gave it ("10", "true", "gold").
	Value int
	Text  string
	// ExpiresAt is the ExpirationDate; zero for none.
	ExpiresAt time.Time
}

// Customer is the buyer's ledger customer id: the CustomerIdentifier, or
// LicenseCustomer for license-based products.
func (e Entitlement) Customer() string {
	if e.CustomerIdentifier != "" {
		return e.CustomerIdentifier
	}
	return LicenseCustomer(e.CustomerAWSAccountId, e.LicenseArn)
}

// valid reports whether e grants its dimension at t.
func (e *Entitlement) valid(t time.Time) bool {
	if e == nil || (!e.ExpiresAt.IsZero() && !t.Before(e.ExpiresAt)) {
		return false
	}
	return e.Text != "false" && e.Text != "0" && (e.Text != "" || e.Value > 0)
}

// EntitlementFilter narrows GetEntitlements; empty fields match all.
type EntitlementFilter struct {
	CustomerIdentifier   []string
	CustomerAWSAccountId []string
	LicenseArn           []string
	Dimension            []string
}

// Entitlements reads contract entitlements with the official SDK client
// of the AWS Marketplace Entitlement Service.
type Entitlements struct {
	client *marketplaceentitlementservice.Client
}

// NewEntitlements wraps an SDK client.
func NewEntitlements(c *marketplaceentitlementservice.Client) *Entitlements {
	return &Entitlements{client: c}
}

// LoadEntitlements builds the SDK client from the default configuration
// (the service lives in us-east-1); a non-empty endpoint overrides the base
// endpoint, e.g. the emulator's URL.
func LoadEntitlements(ctx context.Context, endpoint string, opts ...func(*config.LoadOptions) error) (*Entitlements, error) {
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws: load config: %w", err)
	}
	return NewEntitlements(marketplaceentitlementservice.NewFromConfig(cfg, func(o *marketplaceentitlementservice.Options) {
		if o.Region == "" {
			o.Region = "us-east-1"
		}
		if endpoint != "" {
			o.BaseEndpoint = awssdk.String(endpoint)
		}
	})), nil
}

// maxPages stops a service that hands out NextTokens forever.
const maxPages = 10_000

// GetEntitlements returns every entitlement of productCode matching f,
// reading all pages (a page may be empty and still carry a NextToken).
//
// The pinned SDK (v1.22.0) does not decode an entitlement's
// CustomerAWSAccountId and LicenseArn: for license-based products, filter
// on exactly one license and account, and they are filled in from f.
func (x *Entitlements) GetEntitlements(ctx context.Context, productCode string, f EntitlementFilter) ([]Entitlement, error) {
	if productCode == "" {
		return nil, &ValidationError{Index: -1, Field: "ProductCode", Reason: "is required"}
	}
	filter := map[string][]string{}
	for name, vals := range map[string][]string{
		string(types.GetEntitlementFilterNameCustomerIdentifier): f.CustomerIdentifier,
		"CUSTOMER_AWS_ACCOUNT_ID":                                f.CustomerAWSAccountId, // not in SDK v1.22.0's enum
		"LICENSE_ARN":                                            f.LicenseArn,
		string(types.GetEntitlementFilterNameDimension):          f.Dimension,
	} {
		if len(vals) > 0 {
			filter[name] = vals
		}
	}
	in := &marketplaceentitlementservice.GetEntitlementsInput{ProductCode: awssdk.String(productCode), MaxResults: awssdk.Int32(25)}
	if len(filter) > 0 {
		in.Filter = filter
	}
	var out []Entitlement
	seen := map[string]bool{}
	for range maxPages {
		page, err := x.client.GetEntitlements(ctx, in)
		if err != nil {
			return nil, wrapAPI("GetEntitlements", err)
		}
		for _, e := range page.Entitlements {
			en := fromSDKEntitlement(e)
			// SDK v1.22.0 does not decode CustomerAWSAccountId and
			// LicenseArn; a filter on one license and account names them.
			if en.CustomerIdentifier == "" && len(f.LicenseArn) == 1 && len(f.CustomerAWSAccountId) == 1 {
				en.LicenseArn, en.CustomerAWSAccountId = f.LicenseArn[0], f.CustomerAWSAccountId[0]
			}
			out = append(out, en)
		}
		next := awssdk.ToString(page.NextToken)
		if next == "" {
			return out, nil
		}
		if seen[next] {
			return nil, fmt.Errorf("aws: GetEntitlements: NextToken %q repeated", next)
		}
		seen[next] = true
		in.NextToken = awssdk.String(next)
	}
	return nil, fmt.Errorf("aws: GetEntitlements: more than %d pages", maxPages)
}

func fromSDKEntitlement(e types.Entitlement) Entitlement {
	out := Entitlement{CustomerIdentifier: awssdk.ToString(e.CustomerIdentifier),
		ProductCode: awssdk.ToString(e.ProductCode), Dimension: awssdk.ToString(e.Dimension),
		ExpiresAt: awssdk.ToTime(e.ExpirationDate)}
	if v := e.Value; v != nil {
		switch {
		case v.IntegerValue != nil:
			out.Value, out.Text = int(*v.IntegerValue), strconv.Itoa(int(*v.IntegerValue))
		case v.BooleanValue != nil:
			out.Text = strconv.FormatBool(*v.BooleanValue)
			if *v.BooleanValue {
				out.Value = 1
			}
		case v.DoubleValue != nil:
			out.Value, out.Text = int(*v.DoubleValue), strconv.FormatFloat(*v.DoubleValue, 'g', -1, 64)
		case v.StringValue != nil:
			out.Value, out.Text = 1, *v.StringValue
		}
	}
	return out
}

// EntitlementStore persists entitlements, keyed by customer (the ledger
// customer id) and dimension.
type EntitlementStore interface {
	Put(ctx context.Context, ent Entitlement) error
	// Get returns nil, nil when there is none.
	Get(ctx context.Context, customer, dimension string) (*Entitlement, error)
	List(ctx context.Context, customer string) ([]Entitlement, error)
	Delete(ctx context.Context, customer, dimension string) error
}

// MemoryEntitlementStore is an in-memory EntitlementStore for tests.
type MemoryEntitlementStore struct {
	mu   sync.Mutex
	ents map[[2]string]Entitlement
}

// NewMemoryEntitlementStore returns an empty store.
func NewMemoryEntitlementStore() *MemoryEntitlementStore {
	return &MemoryEntitlementStore{ents: map[[2]string]Entitlement{}}
}

// Put implements EntitlementStore.
func (s *MemoryEntitlementStore) Put(_ context.Context, ent Entitlement) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ents[[2]string{ent.Customer(), ent.Dimension}] = ent
	return nil
}

// Get implements EntitlementStore.
func (s *MemoryEntitlementStore) Get(_ context.Context, customer, dimension string) (*Entitlement, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.ents[[2]string{customer, dimension}]
	if !ok {
		return nil, nil
	}
	return &e, nil
}

// List implements EntitlementStore.
func (s *MemoryEntitlementStore) List(_ context.Context, customer string) ([]Entitlement, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Entitlement
	for k, e := range s.ents {
		if k[0] == customer {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Entitlement) int { return strings.Compare(a.Dimension, b.Dimension) })
	return out, nil
}

// Delete implements EntitlementStore.
func (s *MemoryEntitlementStore) Delete(_ context.Context, customer, dimension string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ents, [2]string{customer, dimension})
	return nil
}

// storeEntitlements adapts the shared marketplace.EntitlementStore (e.g.
// sqlite) to EntitlementStore.
type storeEntitlements struct{ s marketplace.EntitlementStore }

// NewEntitlementStore keeps AWS entitlements in a marketplace.EntitlementStore
// (provider aws, customer = the ledger customer id, feature = dimension,
// Value = the value's text).
func NewEntitlementStore(s marketplace.EntitlementStore) EntitlementStore {
	return storeEntitlements{s}
}

func (a storeEntitlements) Put(ctx context.Context, e Entitlement) error {
	_, err := a.s.PutEntitlement(ctx, marketplace.Entitlement{Provider: marketplace.AWS, CustomerID: e.Customer(), Feature: e.Dimension,
		Value: cmpOr(e.Text, strconv.Itoa(e.Value)), ExpiresAt: e.ExpiresAt})
	return err
}

func (a storeEntitlements) Get(ctx context.Context, customer, dimension string) (*Entitlement, error) {
	e, err := a.s.GetEntitlement(ctx, marketplace.AWS, customer, dimension)
	if errors.Is(err, marketplace.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := toAWSEntitlement(*e)
	return &out, nil
}

func (a storeEntitlements) List(ctx context.Context, customer string) ([]Entitlement, error) {
	es, err := a.s.ListEntitlements(ctx, marketplace.AWS, customer)
	if err != nil {
		return nil, err
	}
	out := make([]Entitlement, len(es))
	for i, e := range es {
		out[i] = toAWSEntitlement(e)
	}
	return out, nil
}

func (a storeEntitlements) Delete(ctx context.Context, customer, dimension string) error {
	return a.s.DeleteEntitlement(ctx, marketplace.AWS, customer, dimension)
}

func toAWSEntitlement(e marketplace.Entitlement) Entitlement {
	out := Entitlement{Dimension: e.Feature, Text: e.Value, ExpiresAt: e.ExpiresAt}
	if acct, lic, err := ParseLicenseCustomer(e.CustomerID); err == nil {
		out.CustomerAWSAccountId, out.LicenseArn = acct, lic
	} else {
		out.CustomerIdentifier = e.CustomerID
	}
	out.Value, _ = strconv.Atoi(e.Value)
	if e.Value == "true" || (out.Value == 0 && e.Value != "0" && e.Value != "false" && e.Value != "") {
		out.Value = 1
	}
	return out
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Refresh replaces the stored entitlements of the customers f names (all
// of productCode's when it names none) with what AWS says now, and drops
// their cached answers.
func (c *EntitlementChecker) Refresh(ctx context.Context, x *Entitlements, productCode string, f EntitlementFilter) error {
	customers, err := replaceEntitlements(ctx, c.store, x, productCode, f)
	for _, cust := range customers {
		c.cache.Invalidate(marketplace.AWS, cust)
	}
	return err
}

// replaceEntitlements replaces the stored entitlements of the customers f
// names (all of productCode's when it names none) with what GetEntitlements
// says now. It returns the customers whose stored entitlements it may have
// changed, also when it fails part way: their cached answers must go.
func replaceEntitlements(ctx context.Context, store EntitlementStore, x *Entitlements, productCode string, f EntitlementFilter) ([]string, error) {
	ents, err := x.GetEntitlements(ctx, productCode, f)
	if err != nil {
		return nil, err
	}
	byCustomer := map[string][]Entitlement{}
	for _, e := range ents {
		byCustomer[e.Customer()] = append(byCustomer[e.Customer()], e)
	}
	// Customers named by the filter but holding nothing any more.
	for _, id := range f.CustomerIdentifier {
		if _, ok := byCustomer[id]; !ok {
			byCustomer[id] = nil
		}
	}
	if len(f.LicenseArn) == 1 && len(f.CustomerAWSAccountId) == 1 {
		if id := LicenseCustomer(f.CustomerAWSAccountId[0], f.LicenseArn[0]); byCustomer[id] == nil {
			byCustomer[id] = nil
		}
	}
	var touched []string
	for cust, es := range byCustomer {
		touched = append(touched, cust)
		old, err := store.List(ctx, cust)
		if err != nil {
			return touched, fmt.Errorf("aws: refresh entitlements: %w", err)
		}
		for _, o := range old {
			if !slices.ContainsFunc(es, func(e Entitlement) bool { return e.Dimension == o.Dimension }) {
				if err := store.Delete(ctx, cust, o.Dimension); err != nil {
					return touched, fmt.Errorf("aws: refresh entitlements: %w", err)
				}
			}
		}
		for _, e := range es {
			if err := store.Put(ctx, e); err != nil {
				return touched, fmt.Errorf("aws: refresh entitlements: %w", err)
			}
		}
	}
	return touched, nil
}
