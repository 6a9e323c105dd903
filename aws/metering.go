package aws

import (
	"context"
	"errors"
	"fmt"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"
	"github.com/aws/smithy-go"

	"github.com/saasmarket/marketplace"
)

// MeteringAPI abstracts the AWS Marketplace Metering Service. Metering and
// the seed's MeteringClient implement it on the official SDK.
type MeteringAPI interface {
	// ResolveCustomer resolves the registration token that AWS posts to the
	// seller's landing page into the buyer's identity.
	ResolveCustomer(ctx context.Context, registrationToken string) (*ResolveCustomerOutput, error)
	// BatchMeterUsage reports usage of SaaS buyers (≤ 25 records, < 1 MB).
	BatchMeterUsage(ctx context.Context, input *BatchMeterUsageInput) (*BatchMeterUsageOutput, error)
	// MeterUsage reports one record of an AMI or container product.
	MeterUsage(ctx context.Context, input *MeterUsageInput) (*MeterUsageOutput, error)
}

// ResolveCustomerOutput is the buyer behind a registration token. Legacy
// products get a CustomerIdentifier; products created from June 2026 only
// CustomerAWSAccountId and LicenseArn.
type ResolveCustomerOutput struct {
	CustomerIdentifier   string
	ProductCode          string
	CustomerAWSAccountId string
	LicenseArn           string
}

// UsageRecord is one record of BatchMeterUsage. Identify the buyer by
// CustomerIdentifier (legacy, with the call's ProductCode) or by
// CustomerAWSAccountId and LicenseArn (no ProductCode) — never both.
type UsageRecord struct {
	CustomerIdentifier   string
	CustomerAWSAccountId string
	LicenseArn           string
	Dimension            string
	// Quantity is 0..2147483647 (AWS's int32).
	Quantity int
	// Timestamp is when the usage happened; AWS ignores minutes and seconds.
	Timestamp        time.Time
	UsageAllocations []UsageAllocation
}

// UsageAllocation splits a record's quantity among tags; the allocations
// of a record must sum to its quantity.
type UsageAllocation struct {
	AllocatedUsageQuantity int
	Tags                   map[string]string
}

// BatchMeterUsageInput is one BatchMeterUsage call. ProductCode is set for
// legacy records and empty for license records.
type BatchMeterUsageInput struct {
	ProductCode  string
	UsageRecords []UsageRecord
}

// Statuses of a processed record.
const (
	StatusSuccess               = "Success"
	StatusCustomerNotSubscribed = "CustomerNotSubscribed"
	StatusDuplicateRecord       = "DuplicateRecord"
)

// UsageRecordResult is AWS's answer for one processed record.
type UsageRecordResult struct {
	UsageRecord      UsageRecord
	MeteringRecordID string
	// MeteringStatus is one of the Status* constants.
	MeteringStatus string
}

// BatchMeterUsageOutput is AWS's answer. UnprocessedRecords were not
// applied and should be sent again.
type BatchMeterUsageOutput struct {
	Results            []UsageRecordResult
	UnprocessedRecords []UsageRecord
}

// MeterUsageInput is one MeterUsage call (AMI and container products).
type MeterUsageInput struct {
	ProductCode      string
	Dimension        string
	Quantity         int
	Timestamp        time.Time
	UsageAllocations []UsageAllocation
	DryRun           bool
	// ClientToken makes retries idempotent (1..64 characters).
	ClientToken string
}

// MeterUsageOutput is AWS's answer to MeterUsage.
type MeterUsageOutput struct {
	MeteringRecordID string
}

// RegisterUsageInput is one RegisterUsage call (paid container products).
type RegisterUsageInput struct {
	ProductCode      string
	PublicKeyVersion int
	Nonce            string
}

// RegisterUsageOutput carries AWS's signed JWT.
type RegisterUsageOutput struct {
	Signature                  string
	PublicKeyRotationTimestamp time.Time
}

// Metering implements MeteringAPI (and RegisterUsage) on the official AWS
// SDK client. Inputs are validated before anything is sent.
type Metering struct {
	client *marketplacemetering.Client
}

// NewMetering wraps an SDK client.
func NewMetering(client *marketplacemetering.Client) *Metering { return &Metering{client: client} }

// LoadMetering builds the SDK client from the default configuration
// (environment, shared config, instance role: config.LoadDefaultConfig).
// A non-empty endpoint overrides the base endpoint, e.g. the emulator's URL.
func LoadMetering(ctx context.Context, endpoint string, opts ...func(*config.LoadOptions) error) (*Metering, error) {
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws: load config: %w", err)
	}
	return NewMetering(marketplacemetering.NewFromConfig(cfg, func(o *marketplacemetering.Options) {
		if endpoint != "" {
			o.BaseEndpoint = awssdk.String(endpoint)
		}
	})), nil
}

// Client returns the SDK client.
func (m *Metering) Client() *marketplacemetering.Client { return m.client }

// ResolveCustomer implements MeteringAPI.
func (m *Metering) ResolveCustomer(ctx context.Context, registrationToken string) (*ResolveCustomerOutput, error) {
	if registrationToken == "" {
		return nil, &ValidationError{Field: "RegistrationToken", Reason: "is required"}
	}
	out, err := m.client.ResolveCustomer(ctx, &marketplacemetering.ResolveCustomerInput{RegistrationToken: &registrationToken})
	if err != nil {
		return nil, wrapAPI("ResolveCustomer", err)
	}
	return &ResolveCustomerOutput{
		CustomerIdentifier: awssdk.ToString(out.CustomerIdentifier), ProductCode: awssdk.ToString(out.ProductCode),
		CustomerAWSAccountId: awssdk.ToString(out.CustomerAWSAccountId), LicenseArn: awssdk.ToString(out.LicenseArn),
	}, nil
}

var _ MeteringAPI = (*Metering)(nil)

// BatchMeterUsage implements MeteringAPI.
func (m *Metering) BatchMeterUsage(ctx context.Context, input *BatchMeterUsageInput) (*BatchMeterUsageOutput, error) {
	return m.batchMeterUsage(ctx, input)
}

func (m *Metering) batchMeterUsage(ctx context.Context, input *BatchMeterUsageInput, optFns ...func(*marketplacemetering.Options)) (*BatchMeterUsageOutput, error) {
	if err := input.Validate(); err != nil {
		return nil, err
	}
	in := &marketplacemetering.BatchMeterUsageInput{UsageRecords: make([]types.UsageRecord, len(input.UsageRecords))}
	if input.ProductCode != "" {
		in.ProductCode = awssdk.String(input.ProductCode)
	}
	for i, r := range input.UsageRecords {
		in.UsageRecords[i] = toSDK(r)
	}
	out, err := m.client.BatchMeterUsage(ctx, in, optFns...)
	if err != nil {
		return nil, wrapAPI("BatchMeterUsage", err)
	}
	res := &BatchMeterUsageOutput{}
	for _, r := range out.Results {
		var rec UsageRecord
		if r.UsageRecord != nil {
			rec = fromSDK(*r.UsageRecord)
		}
		res.Results = append(res.Results, UsageRecordResult{UsageRecord: rec, MeteringRecordID: awssdk.ToString(r.MeteringRecordId), MeteringStatus: string(r.Status)})
	}
	for _, r := range out.UnprocessedRecords {
		res.UnprocessedRecords = append(res.UnprocessedRecords, fromSDK(r))
	}
	return res, nil
}

// MeterUsage implements MeteringAPI.
func (m *Metering) MeterUsage(ctx context.Context, input *MeterUsageInput) (*MeterUsageOutput, error) {
	if err := input.Validate(); err != nil {
		return nil, err
	}
	in := &marketplacemetering.MeterUsageInput{
		ProductCode: awssdk.String(input.ProductCode), UsageDimension: awssdk.String(input.Dimension),
		UsageQuantity: awssdk.Int32(int32(input.Quantity)), Timestamp: awssdk.Time(input.Timestamp.UTC()),
		UsageAllocations: allocsToSDK(input.UsageAllocations),
	}
	if input.DryRun {
		in.DryRun = awssdk.Bool(true)
	}
	if input.ClientToken != "" {
		in.ClientToken = awssdk.String(input.ClientToken)
	}
	out, err := m.client.MeterUsage(ctx, in)
	if err != nil {
		return nil, wrapAPI("MeterUsage", err)
	}
	return &MeterUsageOutput{MeteringRecordID: awssdk.ToString(out.MeteringRecordId)}, nil
}

// RegisterUsage asks AWS to verify a paid container product's launch; the
// answer is a JWT signed by AWS's key.
func (m *Metering) RegisterUsage(ctx context.Context, input *RegisterUsageInput) (*RegisterUsageOutput, error) {
	if input.ProductCode == "" {
		return nil, &ValidationError{Field: "ProductCode", Reason: "is required"}
	}
	if input.PublicKeyVersion < 1 {
		return nil, &ValidationError{Field: "PublicKeyVersion", Reason: "must be at least 1"}
	}
	in := &marketplacemetering.RegisterUsageInput{ProductCode: awssdk.String(input.ProductCode), PublicKeyVersion: awssdk.Int32(int32(input.PublicKeyVersion))}
	if input.Nonce != "" {
		in.Nonce = awssdk.String(input.Nonce)
	}
	out, err := m.client.RegisterUsage(ctx, in)
	if err != nil {
		return nil, wrapAPI("RegisterUsage", err)
	}
	return &RegisterUsageOutput{Signature: awssdk.ToString(out.Signature), PublicKeyRotationTimestamp: awssdk.ToTime(out.PublicKeyRotationTimestamp)}, nil
}

func toSDK(r UsageRecord) types.UsageRecord {
	out := types.UsageRecord{Dimension: awssdk.String(r.Dimension), Quantity: awssdk.Int32(int32(r.Quantity)),
		Timestamp: awssdk.Time(r.Timestamp.UTC()), UsageAllocations: allocsToSDK(r.UsageAllocations)}
	if r.CustomerIdentifier != "" {
		out.CustomerIdentifier = awssdk.String(r.CustomerIdentifier)
	}
	if r.CustomerAWSAccountId != "" {
		out.CustomerAWSAccountId = awssdk.String(r.CustomerAWSAccountId)
	}
	if r.LicenseArn != "" {
		out.LicenseArn = awssdk.String(r.LicenseArn)
	}
	return out
}

func fromSDK(r types.UsageRecord) UsageRecord {
	out := UsageRecord{CustomerIdentifier: awssdk.ToString(r.CustomerIdentifier), CustomerAWSAccountId: awssdk.ToString(r.CustomerAWSAccountId),
		LicenseArn: awssdk.ToString(r.LicenseArn), Dimension: awssdk.ToString(r.Dimension), Quantity: int(awssdk.ToInt32(r.Quantity)),
		Timestamp: awssdk.ToTime(r.Timestamp).UTC()}
	for _, a := range r.UsageAllocations {
		ua := UsageAllocation{AllocatedUsageQuantity: int(awssdk.ToInt32(a.AllocatedUsageQuantity))}
		for _, t := range a.Tags {
			if ua.Tags == nil {
				ua.Tags = map[string]string{}
			}
			ua.Tags[awssdk.ToString(t.Key)] = awssdk.ToString(t.Value)
		}
		out.UsageAllocations = append(out.UsageAllocations, ua)
	}
	return out
}

func allocsToSDK(as []UsageAllocation) []types.UsageAllocation {
	var out []types.UsageAllocation
	for _, a := range as {
		ua := types.UsageAllocation{AllocatedUsageQuantity: awssdk.Int32(int32(a.AllocatedUsageQuantity))}
		for k, v := range a.Tags {
			ua.Tags = append(ua.Tags, types.Tag{Key: awssdk.String(k), Value: awssdk.String(v)})
		}
		out = append(out, ua)
	}
	return out
}

// ErrorCode is an AWS error code. Every error this package returns for an
// AWS error matches its code with errors.Is (errors.Is(err,
// aws.ErrThrottling)), and the SDK's typed exception with errors.As
// (var t *types.ThrottlingException; errors.As(err, &t)).
type ErrorCode string

func (c ErrorCode) Error() string { return "aws: " + string(c) }

// The AWS Marketplace error codes.
const (
	ErrThrottling                ErrorCode = "ThrottlingException"
	ErrTimestampOutOfBounds      ErrorCode = "TimestampOutOfBoundsException"
	ErrInvalidToken              ErrorCode = "InvalidTokenException"
	ErrExpiredToken              ErrorCode = "ExpiredTokenException"
	ErrDuplicateRequest          ErrorCode = "DuplicateRequestException"
	ErrIdempotencyConflict       ErrorCode = "IdempotencyConflictException"
	ErrInvalidCustomerIdentifier ErrorCode = "InvalidCustomerIdentifierException"
	ErrInvalidProductCode        ErrorCode = "InvalidProductCodeException"
	ErrInvalidLicense            ErrorCode = "InvalidLicenseException"
	ErrInvalidUsageDimension     ErrorCode = "InvalidUsageDimensionException"
	ErrInvalidUsageAllocations   ErrorCode = "InvalidUsageAllocationsException"
	ErrInvalidTag                ErrorCode = "InvalidTagException"
	ErrCustomerNotEntitled       ErrorCode = "CustomerNotEntitledException"
	ErrInvalidPublicKeyVersion   ErrorCode = "InvalidPublicKeyVersionException"
	ErrInvalidRegion             ErrorCode = "InvalidRegionException"
	ErrInvalidEndpointRegion     ErrorCode = "InvalidEndpointRegionException"
	ErrDisabledAPI               ErrorCode = "DisabledApiException"
	ErrPlatformNotSupported      ErrorCode = "PlatformNotSupportedException"
	ErrInternalServiceError      ErrorCode = "InternalServiceErrorException"
	ErrInvalidParameter          ErrorCode = "InvalidParameterException"
	ErrValidation                ErrorCode = "ValidationException"
)

// APIError is an error answered by AWS.
type APIError struct {
	Op   string
	Code string
	Err  error // the SDK's error
}

func (e *APIError) Error() string { return fmt.Sprintf("aws: %s: %v", e.Op, e.Err) }

// Unwrap returns the SDK's error, so its typed exception matches errors.As.
func (e *APIError) Unwrap() error { return e.Err }

// Is matches the ErrorCode of the answer.
func (e *APIError) Is(target error) bool {
	c, ok := target.(ErrorCode)
	return ok && string(c) == e.Code
}

// wrapAPI wraps an SDK error; transport failures (no AWS answer) are
// wrapped plainly.
func wrapAPI(op string, err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return &APIError{Op: op, Code: ae.ErrorCode(), Err: err}
	}
	return fmt.Errorf("aws: %s: %w", op, err)
}

// ErrInvalidInput is marketplace.ErrInvalidInput, the one name for bad
// input on every cloud; every ValidationError wraps it.
var ErrInvalidInput = marketplace.ErrInvalidInput

// ValidationError says which field of an input breaks which rule; nothing
// was sent.
type ValidationError struct {
	Index  int // record index, or -1
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Index >= 0 && e.Field != "UsageRecords" && e.Field != "ProductCode" {
		return fmt.Sprintf("aws: invalid input: UsageRecords[%d].%s %s", e.Index, e.Field, e.Reason)
	}
	return fmt.Sprintf("aws: invalid input: %s %s", e.Field, e.Reason)
}

// Unwrap returns ErrInvalidInput.
func (e *ValidationError) Unwrap() error { return ErrInvalidInput }

const maxQuantity = 1<<31 - 1

// MaxRequestBytes is AWS's limit on one request.
const MaxRequestBytes = 1 << 20

// Validate checks the rules AWS applies to a BatchMeterUsage call.
func (in *BatchMeterUsageInput) Validate() error {
	if in == nil || len(in.UsageRecords) == 0 {
		return &ValidationError{Index: -1, Field: "UsageRecords", Reason: "must hold at least one record"}
	}
	if len(in.UsageRecords) > 25 {
		return &ValidationError{Index: -1, Field: "UsageRecords", Reason: fmt.Sprintf("must hold at most 25 records, not %d", len(in.UsageRecords))}
	}
	if len(in.ProductCode) > 255 {
		return &ValidationError{Index: -1, Field: "ProductCode", Reason: "must be at most 255 characters"}
	}
	size := 64 + len(in.ProductCode)
	for i, r := range in.UsageRecords {
		if err := r.validate(i, in.ProductCode); err != nil {
			return err
		}
		size += recordSize(r)
	}
	if size >= MaxRequestBytes {
		return &ValidationError{Index: -1, Field: "UsageRecords", Reason: fmt.Sprintf("make a request of about %d bytes; it must stay under 1 MB", size)}
	}
	return nil
}

func (r UsageRecord) validate(i int, productCode string) error {
	bad := func(field, reason string) error { return &ValidationError{Index: i, Field: field, Reason: reason} }
	switch {
	case r.Timestamp.IsZero():
		return bad("Timestamp", "is required")
	case r.Dimension == "" || len(r.Dimension) > 255:
		return bad("Dimension", "must be 1..255 characters")
	case r.Quantity < 0 || r.Quantity > maxQuantity:
		return bad("Quantity", "must be 0..2147483647")
	case r.CustomerIdentifier != "" && r.CustomerAWSAccountId != "":
		return bad("CustomerIdentifier", "and CustomerAWSAccountId must not both be set")
	case r.CustomerIdentifier == "" && r.CustomerAWSAccountId == "":
		return bad("CustomerIdentifier", "or CustomerAWSAccountId is required")
	case r.CustomerIdentifier != "" && (productCode == "" || r.LicenseArn != ""):
		return bad("CustomerIdentifier", "needs the call's ProductCode and no LicenseArn")
	case r.CustomerAWSAccountId != "" && (r.LicenseArn == "" || productCode != ""):
		return bad("CustomerAWSAccountId", "needs a LicenseArn and a call without ProductCode")
	case len(r.CustomerIdentifier) > 255 || len(r.CustomerAWSAccountId) > 255:
		return bad("CustomerIdentifier", "must be at most 255 characters")
	}
	if r.CustomerAWSAccountId != "" {
		for _, c := range r.CustomerAWSAccountId {
			if c < '0' || c > '9' {
				return bad("CustomerAWSAccountId", "must be digits")
			}
		}
	}
	return validateAllocations(r.UsageAllocations, r.Quantity, bad)
}

func validateAllocations(as []UsageAllocation, qty int, bad func(field, reason string) error) error {
	if as == nil {
		return nil
	}
	if len(as) > 2500 {
		return bad("UsageAllocations", "must hold at most 2500 allocations")
	}
	sum := 0
	for _, a := range as {
		if a.AllocatedUsageQuantity < 0 || a.AllocatedUsageQuantity > maxQuantity {
			return bad("UsageAllocations", "quantities must be 0..2147483647")
		}
		if len(a.Tags) > 5 {
			return bad("UsageAllocations", "may carry at most 5 tags each")
		}
		sum += a.AllocatedUsageQuantity
	}
	if sum != qty {
		return bad("UsageAllocations", fmt.Sprintf("sum to %d, not to the quantity %d", sum, qty))
	}
	return nil
}

// Validate checks the rules AWS applies to a MeterUsage call.
func (in *MeterUsageInput) Validate() error {
	bad := func(field, reason string) error { return &ValidationError{Index: -1, Field: field, Reason: reason} }
	switch {
	case in == nil || in.ProductCode == "":
		return bad("ProductCode", "is required")
	case in.Timestamp.IsZero():
		return bad("Timestamp", "is required")
	case in.Dimension == "" || len(in.Dimension) > 255:
		return bad("Dimension", "must be 1..255 characters")
	case in.Quantity < 0 || in.Quantity > maxQuantity:
		return bad("Quantity", "must be 0..2147483647")
	case len(in.ClientToken) > 64:
		return bad("ClientToken", "must be at most 64 characters")
	}
	return validateAllocations(in.UsageAllocations, in.Quantity, bad)
}

// recordSize estimates a record's share of the JSON request.
func recordSize(r UsageRecord) int {
	n := 120 + len(r.CustomerIdentifier) + len(r.CustomerAWSAccountId) + len(r.LicenseArn) + len(r.Dimension)
	for _, a := range r.UsageAllocations {
		n += 48
		for k, v := range a.Tags {
			n += 24 + len(k) + len(v)
		}
	}
	return n
}
