package azure

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Time decodes the date-times of the APIs tolerantly: RFC 3339, a date-time
// without a zone (taken as UTC), or a date alone (term dates often are).
// It encodes as RFC 3339 in UTC.
type Time struct{ time.Time }

var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04", time.DateOnly}

// UnmarshalJSON accepts a string in any of the layouts above, or null.
func (t *Time) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*t = Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("azure: time: %w", err)
	}
	if s == "" {
		*t = Time{}
		return nil
	}
	for _, l := range timeLayouts {
		if v, err := time.Parse(l, s); err == nil {
			if y := v.UTC().Year(); y < 1 || y > 9999 {
				return fmt.Errorf("azure: time %q is out of range", s) // it could not be encoded again
			}
			t.Time = v.UTC()
			return nil
		}
	}
	return fmt.Errorf("azure: time %q is neither a date-time nor a date", s)
}

// MarshalJSON encodes RFC 3339 in UTC; the zero time as null.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format(time.RFC3339Nano))
}

// Subscription states (saasSubscriptionStatus).
const (
	SubNotStarted              = "NotStarted"
	SubPendingFulfillmentStart = "PendingFulfillmentStart"
	SubSubscribed              = "Subscribed"
	SubSuspended               = "Suspended"
	SubUnsubscribed            = "Unsubscribed"
)

// Identity is an AadIdentifier: the buyer's beneficiary or purchaser.
type Identity struct {
	EmailID  string `json:"emailId,omitempty"`
	ObjectID string `json:"objectId,omitempty"`
	TenantID string `json:"tenantId,omitempty"`
	PUID     string `json:"puid,omitempty"`
}

// Term is a subscription's billing term.
type Term struct {
	TermUnit       string `json:"termUnit,omitempty"`
	StartDate      Time   `json:"startDate"`
	EndDate        Time   `json:"endDate"`
	ChargeDuration string `json:"chargeDuration,omitempty"`
}

// Subscription is a SaaS subscription (Subscription in saasapi.v2.json).
// Unknown fields are ignored: Microsoft adds fields over time.
type Subscription struct {
	ID                        string   `json:"id"`
	PublisherID               string   `json:"publisherId,omitempty"`
	OfferID                   string   `json:"offerId,omitempty"`
	Name                      string   `json:"name,omitempty"`
	SaaSSubscriptionStatus    string   `json:"saasSubscriptionStatus,omitempty"`
	Beneficiary               Identity `json:"beneficiary"`
	Purchaser                 Identity `json:"purchaser"`
	PlanID                    string   `json:"planId,omitempty"`
	Quantity                  int64    `json:"quantity,omitempty"`
	Term                      Term     `json:"term"`
	AutoRenew                 bool     `json:"autoRenew"`
	IsTest                    bool     `json:"isTest"`
	IsFreeTrial               bool     `json:"isFreeTrial"`
	AllowedCustomerOperations []string `json:"allowedCustomerOperations,omitempty"`
	SandboxType               string   `json:"sandboxType,omitempty"`
	Created                   Time     `json:"created"`
	SessionMode               string   `json:"sessionMode,omitempty"`
}

// ResolvedSubscription is what Resolve returns for a landing token.
type ResolvedSubscription struct {
	ID               string       `json:"id"`
	SubscriptionName string       `json:"subscriptionName,omitempty"`
	OfferID          string       `json:"offerId,omitempty"`
	PlanID           string       `json:"planId,omitempty"`
	Quantity         int64        `json:"quantity,omitempty"`
	Subscription     Subscription `json:"subscription"`
}

// Plan is one plan a subscription can move to.
type Plan struct {
	PlanID         string `json:"planId"`
	DisplayName    string `json:"displayName,omitempty"`
	IsPrivate      bool   `json:"isPrivate"`
	Description    string `json:"description,omitempty"`
	MinQuantity    int64  `json:"minQuantity,omitempty"`
	MaxQuantity    int64  `json:"maxQuantity,omitempty"`
	HasFreeTrials  bool   `json:"hasFreeTrials"`
	IsPricePerSeat bool   `json:"isPricePerSeat"`
	IsStopSell     bool   `json:"isStopSell"`
	Market         string `json:"market,omitempty"`
	// PlanComponents are the plan's prices: its billing terms and the
	// dimensions it meters.
	PlanComponents PlanComponents `json:"planComponents"`
	SourceOffers   []SourceOffer  `json:"sourceOffers,omitempty"`
}

// PlanComponents is a plan's pricing, as saasapi.v2.json's Plan.planComponents.
type PlanComponents struct {
	RecurrentBillingTerms []RecurrentBillingTerm `json:"recurrentBillingTerms,omitempty"`
	MeteringDimensions    []MeteringDimension    `json:"meteringDimensions,omitempty"`
}

// RecurrentBillingTerm is one billing term of a plan.
type RecurrentBillingTerm struct {
	Currency                string                    `json:"currency,omitempty"`
	Price                   float64                   `json:"price"`
	TermUnit                string                    `json:"termUnit,omitempty"` // P1M, P1Y, …
	TermDescription         string                    `json:"termDescription,omitempty"`
	MeteredQuantityIncluded []MeteredQuantityIncluded `json:"meteredQuantityIncluded,omitempty"`
}

// MeteredQuantityIncluded is usage of a dimension that a term's price includes.
type MeteredQuantityIncluded struct {
	DimensionID string `json:"dimensionId"`
	Units       string `json:"units"`
}

// MeteringDimension is a custom meter of a plan.
type MeteringDimension struct {
	ID            string  `json:"id"`
	Currency      string  `json:"currency,omitempty"`
	PricePerUnit  float64 `json:"pricePerUnit"`
	UnitOfMeasure string  `json:"unitOfMeasure,omitempty"`
	DisplayName   string  `json:"displayName,omitempty"`
}

// SourceOffer names an offer a plan comes from.
type SourceOffer struct {
	ExternalID string `json:"externalId"`
}

// Operation actions.
const (
	ActionChangePlan     = "ChangePlan"
	ActionChangeQuantity = "ChangeQuantity"
	ActionSuspend        = "Suspend"
	ActionReinstate      = "Reinstate"
	ActionRenew          = "Renew"
	ActionUnsubscribe    = "Unsubscribe"
)

// Operation statuses.
const (
	OpNotStarted = "NotStarted"
	OpInProgress = "InProgress"
	OpSucceeded  = "Succeeded"
	OpFailed     = "Failed"
	OpConflict   = "Conflict"
)

// Operation is a SaaSOperation: a change to a subscription.
type Operation struct {
	ID             string `json:"id"`
	ActivityID     string `json:"activityId,omitempty"`
	SubscriptionID string `json:"subscriptionId"`
	OfferID        string `json:"offerId,omitempty"`
	PublisherID    string `json:"publisherId,omitempty"`
	PlanID         string `json:"planId,omitempty"`
	Quantity       int64  `json:"quantity,omitempty"`
	Action         string `json:"action"`
	TimeStamp      Time   `json:"timeStamp"`
	Status         string `json:"status"`
}

// Done reports whether the operation reached a final status.
func (o *Operation) Done() bool {
	return o.Status == OpSucceeded || o.Status == OpFailed || o.Status == OpConflict
}

// Usage event statuses (StatusEnum in meteringapi.v1.json).
const (
	UsageAccepted              = "Accepted"
	UsageExpired               = "Expired"
	UsageDuplicate             = "Duplicate"
	UsageError                 = "Error"
	UsageResourceNotFound      = "ResourceNotFound"
	UsageResourceNotAuthorized = "ResourceNotAuthorized"
	UsageResourceNotActive     = "ResourceNotActive"
	UsageInvalidDimension      = "InvalidDimension"
	UsageInvalidQuantity       = "InvalidQuantity"
	UsageBadArgument           = "BadArgument"
)

// UsageEvent is one usage event sent to the Metering API.
type UsageEvent struct {
	ResourceID         string  `json:"resourceId"`
	Quantity           float64 `json:"quantity"`
	Dimension          string  `json:"dimension"`
	EffectiveStartTime Time    `json:"effectiveStartTime"`
	PlanID             string  `json:"planId"`
}

// UsageEventResult is the Metering API's answer for one event
// (UsageEventOkResponse, UsageBatchEventOkMessage).
type UsageEventResult struct {
	UsageEventID       string         `json:"usageEventId,omitempty"`
	Status             string         `json:"status"`
	MessageTime        Time           `json:"messageTime"`
	ResourceID         string         `json:"resourceId,omitempty"`
	ResourceURI        string         `json:"resourceUri,omitempty"`
	Quantity           float64        `json:"quantity"`
	Dimension          string         `json:"dimension,omitempty"`
	EffectiveStartTime Time           `json:"effectiveStartTime"`
	PlanID             string         `json:"planId,omitempty"`
	Error              *UsageConflict `json:"error,omitempty"`
}

// UsageConflict is UsageEventConflictResponse: for a duplicate it carries
// the event Azure accepted first.
type UsageConflict struct {
	AdditionalInfo *struct {
		AcceptedMessage *UsageEventResult `json:"acceptedMessage,omitempty"`
	} `json:"additionalInfo,omitempty"`
	Message string `json:"message,omitempty"`
	Code    string `json:"code,omitempty"`
}

// Accepted returns the first accepted event a duplicate refers to, if any.
func (c *UsageConflict) Accepted() *UsageEventResult {
	if c == nil || c.AdditionalInfo == nil {
		return nil
	}
	return c.AdditionalInfo.AcceptedMessage
}

// BatchResult is the answer of batchUsageEvent.
type BatchResult struct {
	Result []UsageEventResult `json:"result"`
	Count  int                `json:"count"`
}

// UsageRecord is one line of GET usageEvents (GetUsageEvent).
type UsageRecord struct {
	UsageDate           Time    `json:"usageDate"`
	UsageResourceID     string  `json:"usageResourceId"`
	Dimension           string  `json:"dimension"`
	PlanID              string  `json:"planId"`
	PlanName            string  `json:"planName,omitempty"`
	OfferID             string  `json:"offerId"`
	OfferName           string  `json:"offerName,omitempty"`
	OfferType           string  `json:"offerType,omitempty"`
	AzureSubscriptionID string  `json:"azureSubscriptionId,omitempty"`
	ReconStatus         string  `json:"reconStatus,omitempty"`
	SubmittedQuantity   float64 `json:"submittedQuantity"`
	ProcessedQuantity   float64 `json:"processedQuantity"`
	SubmittedCount      float64 `json:"submittedCount"`
}
