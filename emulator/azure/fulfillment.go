package azure

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Subscription states, as saasSubscriptionStatus.
const (
	StatusPendingFulfillmentStart = "PendingFulfillmentStart"
	StatusSubscribed              = "Subscribed"
	StatusSuspended               = "Suspended"
	StatusUnsubscribed            = "Unsubscribed"
)

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
	OpInProgress = "InProgress"
	OpSucceeded  = "Succeeded"
	OpFailed     = "Failed"
	OpConflict   = "Conflict"
)

type identity struct {
	EmailID  string `json:"emailId"`
	ObjectID string `json:"objectId"`
	TenantID string `json:"tenantId"`
	PUID     string `json:"puid"`
}

type term struct {
	TermUnit  string `json:"termUnit"`
	StartDate string `json:"startDate"`
	EndDate   string `json:"endDate"`
}

// termDate writes a term's start or end: date-time, as saasapi.v2.json
// declares (Azure sends midnight UTC).
func termDate(t time.Time) string {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
}

// subscription is the wire shape of a SaaS subscription (Subscription in
// saasapi.v2.json).
type subscription struct {
	ID                        string   `json:"id"`
	PublisherID               string   `json:"publisherId"`
	OfferID                   string   `json:"offerId"`
	Name                      string   `json:"name"`
	Status                    string   `json:"saasSubscriptionStatus"`
	Beneficiary               identity `json:"beneficiary"`
	Purchaser                 identity `json:"purchaser"`
	PlanID                    string   `json:"planId"`
	Quantity                  int64    `json:"quantity,omitempty"`
	Term                      term     `json:"term"`
	AutoRenew                 bool     `json:"autoRenew"`
	IsTest                    bool     `json:"isTest"`
	IsFreeTrial               bool     `json:"isFreeTrial"`
	AllowedCustomerOperations []string `json:"allowedCustomerOperations"`
	SandboxType               string   `json:"sandboxType"`
	Created                   string   `json:"created"`
	SessionMode               string   `json:"sessionMode"`
}

// operation is SaaSOperation in saasapi.v2.json, plus the emulator's state.
type operation struct {
	ID                     string `json:"id"`
	ActivityID             string `json:"activityId"`
	SubscriptionID         string `json:"subscriptionId"`
	OfferID                string `json:"offerId"`
	PublisherID            string `json:"publisherId"`
	PlanID                 string `json:"planId"`
	Quantity               int64  `json:"quantity,omitempty"`
	Action                 string `json:"action"`
	TimeStamp              string `json:"timeStamp"`
	Status                 string `json:"status"`
	OperationRequestSource string `json:"operationRequestSource,omitempty"`

	due     time.Time // when an InProgress operation completes by itself
	outcome string    // OpSucceeded or OpFailed once the publisher PATCHed it; due is then PatchDelay later
}

// Purchase describes a buyer's purchase for CreatePurchase.
type Purchase struct {
	PlanID   string `json:"planId"`
	Quantity int64  `json:"quantity,omitempty"`
	Email    string `json:"email,omitempty"`
	Name     string `json:"name,omitempty"`
}

// TokenLifetime is how long a landing token resolves: saasapi.v2.json,
// FulfillmentOperations_Resolve, "This token is valid for one hour only."
const TokenLifetime = time.Hour

// landingToken is a marketplace token and the subscription it resolves to.
type landingToken struct {
	sub     string
	expires time.Time
}

// PurchaseResult is what CreatePurchase returns: the new subscription and
// the token Azure would put on the landing page URL (?token=...).
type PurchaseResult struct {
	SubscriptionID string `json:"subscriptionId"`
	Token          string `json:"token"`
}

// CreatePurchase creates a subscription in PendingFulfillmentStart, as a
// buyer's purchase does, and mints its landing token. Tokens contain '+'
// and '/' characters, as Azure's do, to catch decoding mistakes.
func (e *Emulator) CreatePurchase(p Purchase) (PurchaseResult, error) {
	if !slices.ContainsFunc(e.cfg.Plans, func(pl Plan) bool { return pl.ID == p.PlanID }) {
		return PurchaseResult{}, fmt.Errorf("unknown plan %q", p.PlanID)
	}
	if p.Email == "" {
		p.Email = "buyer@example.com"
	}
	now := e.now()
	id := uuid.NewString()
	buyer := identity{EmailID: p.Email, ObjectID: uuid.NewString(), TenantID: uuid.NewString(), PUID: "10037FFE8000" + strings.ToUpper(id[:4])}
	s := &subscription{
		ID: id, PublisherID: e.cfg.PublisherID, OfferID: e.cfg.OfferID, Name: p.Name,
		Status: StatusPendingFulfillmentStart, Beneficiary: buyer, Purchaser: buyer,
		PlanID: p.PlanID, Quantity: p.Quantity,
		Term:      term{TermUnit: "P1M", StartDate: termDate(now), EndDate: termDate(now.AddDate(0, 1, 0))},
		AutoRenew: true, AllowedCustomerOperations: []string{"Read", "Update", "Delete"},
		SandboxType: "None", SessionMode: "None", Created: now.Format(time.RFC3339Nano),
	}
	if s.Name == "" {
		s.Name = "subscription-" + id[:8]
	}
	raw := make([]byte, 48)
	rand.Read(raw)
	token := "+" + base64.StdEncoding.EncodeToString(raw) + "/+"
	e.mu.Lock()
	defer e.mu.Unlock()
	e.subs[id] = s
	e.order = append(e.order, id)
	e.tokens[token] = landingToken{sub: id, expires: now.Add(TokenLifetime)}
	return PurchaseResult{SubscriptionID: id, Token: token}, nil
}

// Status returns a subscription's saasSubscriptionStatus, plan and
// quantity, after completing operations that are due.
func (e *Emulator) Status(id string) (status, plan string, quantity int64, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.settle()
	s := e.subs[id]
	if s == nil {
		return "", "", 0, false
	}
	return s.Status, s.PlanID, s.Quantity, true
}

// Operation returns an operation's status, after completing operations
// that are due.
func (e *Emulator) Operation(id string) (status string, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.settle()
	op := e.ops[id]
	if op == nil {
		return "", false
	}
	return op.Status, true
}

// settle completes InProgress operations whose time has come. Call with e.mu held.
func (e *Emulator) settle() {
	now := e.now()
	for _, op := range e.ops {
		if op.Status == OpInProgress && !op.due.IsZero() && !now.Before(op.due) {
			e.finish(op, op.outcome != OpFailed)
		}
	}
}

// finish completes op: success applies it. Call with e.mu held.
func (e *Emulator) finish(op *operation, success bool) {
	if !success {
		op.Status = OpFailed
		return
	}
	op.Status = OpSucceeded
	s := e.subs[op.SubscriptionID]
	if s == nil {
		return
	}
	switch op.Action {
	case ActionChangePlan:
		s.PlanID = op.PlanID
	case ActionChangeQuantity:
		s.Quantity = op.Quantity
	case ActionReinstate:
		s.Status = StatusSubscribed
	case ActionSuspend:
		s.Status = StatusSuspended
	case ActionUnsubscribe:
		s.Status = StatusUnsubscribed
	case ActionRenew:
		start := e.now()
		s.Term.StartDate, s.Term.EndDate = termDate(start), termDate(start.AddDate(0, 1, 0))
	}
}

func (e *Emulator) newOp(s *subscription, action, source string) *operation {
	op := &operation{
		ID: uuid.NewString(), ActivityID: uuid.NewString(), SubscriptionID: s.ID, OfferID: s.OfferID,
		PublisherID: s.PublisherID, PlanID: s.PlanID, Quantity: s.Quantity, Action: action,
		TimeStamp: e.now().Format(time.RFC3339Nano), Status: OpInProgress, OperationRequestSource: source,
	}
	e.ops[op.ID] = op
	return op
}

// ErrUnknown is returned for a subscription or operation the emulator does not hold.
var ErrUnknown = errors.New("azure emulator: unknown subscription or operation")

// ErrInvalidAction is returned for an action the subscription's state does not allow.
var ErrInvalidAction = errors.New("azure emulator: action not allowed in this state")

// Action is a buyer's or Microsoft's change to a subscription, which the
// emulator announces to the publisher's webhook.
type Action struct {
	Name     string `json:"action"`   // one of the Action* constants
	PlanID   string `json:"planId"`   // ChangePlan
	Quantity int64  `json:"quantity"` // ChangeQuantity
}

// Drive applies a buyer's or Microsoft's action as Azure does and calls the
// publisher's webhook once, in the caller's goroutine. Notify-only actions
// (Suspend, Renew, Unsubscribe) are applied at once and announced as
// Succeeded; ChangePlan, ChangeQuantity and Reinstate are announced
// InProgress and wait for the publisher: a 4xx answer fails them, a PATCH
// of the operation decides them, and otherwise they succeed after
// OperationDelay. It returns the operation id and the webhook's HTTP
// status (0 when no webhook URL is set or the call failed; err says why).
func (e *Emulator) Drive(ctx context.Context, subID string, a Action) (opID string, status int, err error) {
	e.mu.Lock()
	e.settle()
	s := e.subs[subID]
	if s == nil {
		e.mu.Unlock()
		return "", 0, ErrUnknown
	}
	allowed := map[string][]string{
		ActionChangePlan: {StatusSubscribed}, ActionChangeQuantity: {StatusSubscribed},
		ActionSuspend: {StatusSubscribed}, ActionReinstate: {StatusSuspended},
		ActionRenew: {StatusSubscribed}, ActionUnsubscribe: {StatusSubscribed, StatusSuspended, StatusPendingFulfillmentStart},
	}[a.Name]
	if !slices.Contains(allowed, s.Status) {
		e.mu.Unlock()
		return "", 0, fmt.Errorf("%w: %s on a %s subscription", ErrInvalidAction, a.Name, s.Status)
	}
	op := e.newOp(s, a.Name, "Azure")
	switch a.Name {
	case ActionChangePlan:
		op.PlanID = a.PlanID
	case ActionChangeQuantity:
		op.Quantity = a.Quantity
	}
	switch a.Name {
	case ActionChangePlan, ActionChangeQuantity, ActionReinstate:
		op.due = e.now().Add(e.cfg.OperationDelay)
	default:
		e.finish(op, true)
	}
	e.mu.Unlock()
	status, err = e.Deliver(ctx, op.ID)
	return op.ID, status, err
}

// Deliver (re)sends the webhook call of an operation, as Azure's retries
// do. A 4xx answer to an InProgress operation fails it.
func (e *Emulator) Deliver(ctx context.Context, opID string) (int, error) {
	if e.cfg.WebhookURL == "" {
		return 0, nil
	}
	e.mu.Lock()
	op := e.ops[opID]
	if op == nil {
		e.mu.Unlock()
		return 0, ErrUnknown
	}
	body, err := json.Marshal(e.webhookPayload(op))
	e.mu.Unlock()
	if err != nil {
		return 0, err
	}
	tok, err := e.sign(e.WebhookClaims())
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.cfg.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := e.cfg.WebhookClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("azure emulator: webhook: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		e.mu.Lock()
		if op.Status == OpInProgress && op.outcome == "" {
			e.finish(op, false)
		}
		e.mu.Unlock()
	}
	return resp.StatusCode, nil
}

// webhookPayload is the body Azure posts to the webhook. Call with e.mu held.
func (e *Emulator) webhookPayload(op *operation) map[string]any {
	status := op.Status
	if status == OpSucceeded && (op.Action == ActionChangePlan || op.Action == ActionChangeQuantity || op.Action == ActionReinstate) {
		status = OpInProgress // it was announced while in progress
	}
	p := map[string]any{
		"id": op.ID, "activityId": op.ActivityID, "publisherId": op.PublisherID, "offerId": op.OfferID,
		"planId": op.PlanID, "quantity": op.Quantity, "subscriptionId": op.SubscriptionID,
		"timeStamp": op.TimeStamp, "action": op.Action, "status": status,
		"operationRequestSource": op.OperationRequestSource, "purchaseToken": nil,
	}
	if s := e.subs[op.SubscriptionID]; s != nil {
		p["subscription"] = s
	}
	return p
}

func (e *Emulator) sub(w http.ResponseWriter, r *http.Request) *subscription {
	e.settle()
	s := e.subs[r.PathValue("id")]
	if s == nil {
		writeError(w, http.StatusNotFound, "EntityNotFound", "subscription "+quote(r.PathValue("id"))+" not found")
	}
	return s
}

func (e *Emulator) serveResolve(w http.ResponseWriter, r *http.Request) bool {
	tok := r.Header.Get("x-ms-marketplace-token")
	e.mu.Lock()
	defer e.mu.Unlock()
	lt, ok := e.tokens[tok]
	if tok == "" || !ok || !e.now().Before(lt.expires) {
		writeError(w, http.StatusBadRequest, "BadArgument", "x-ms-marketplace-token is missing, malformed, or expired")
		return false
	}
	s := e.subs[lt.sub]
	writeJSON(w, http.StatusOK, map[string]any{
		"id": s.ID, "subscriptionName": s.Name, "offerId": s.OfferID, "planId": s.PlanID,
		"quantity": s.Quantity, "subscription": s,
	})
	return false
}

func (e *Emulator) serveActivate(w http.ResponseWriter, r *http.Request) bool {
	var body struct {
		PlanID   string `json:"planId"`
		Quantity int64  `json:"quantity"`
	}
	if !decodeBody(w, r, &body) {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.sub(w, r)
	if s == nil {
		return false
	}
	switch {
	case body.PlanID != s.PlanID:
		writeError(w, http.StatusBadRequest, "BadArgument", "planId "+quote(body.PlanID)+" is not the purchased plan")
		return false
	case s.Status == StatusUnsubscribed:
		writeError(w, http.StatusBadRequest, "BadArgument", "the subscription is unsubscribed")
		return false
	case s.Status == StatusPendingFulfillmentStart:
		s.Status = StatusSubscribed
		if body.Quantity > 0 {
			s.Quantity = body.Quantity
		}
	}
	w.WriteHeader(http.StatusOK)
	return true
}

func (e *Emulator) serveGet(w http.ResponseWriter, r *http.Request) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.sub(w, r); s != nil {
		writeJSON(w, http.StatusOK, s)
	}
	return false
}

func (e *Emulator) serveList(w http.ResponseWriter, r *http.Request) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.settle()
	start := 0
	if ct := r.URL.Query().Get("continuationToken"); ct != "" {
		i := slices.Index(e.order, ct)
		if i < 0 {
			writeError(w, http.StatusBadRequest, "BadArgument", "invalid continuationToken")
			return false
		}
		start = i
	}
	end := min(start+e.cfg.PageSize, len(e.order))
	page := map[string]any{}
	subs := make([]*subscription, 0, end-start)
	for _, id := range e.order[start:end] {
		subs = append(subs, e.subs[id])
	}
	page["subscriptions"] = subs
	if end < len(e.order) {
		q := url.Values{"api-version": {APIVersion}, "continuationToken": {e.order[end]}}
		page["@nextLink"] = e.baseOf(r) + "/api/saas/subscriptions/?" + q.Encode()
	}
	writeJSON(w, http.StatusOK, page)
	return false
}

func (e *Emulator) servePlans(w http.ResponseWriter, r *http.Request) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.sub(w, r); s == nil {
		return false
	}
	var plans []map[string]any
	for _, p := range e.cfg.Plans {
		if f := r.URL.Query().Get("planId"); f != "" && f != p.ID {
			continue
		}
		dims := []map[string]any{}
		for _, d := range p.Dimensions {
			dims = append(dims, map[string]any{"id": d, "currency": "USD", "pricePerUnit": 0.01, "unitOfMeasure": "unit", "displayName": d})
		}
		plans = append(plans, map[string]any{"planId": p.ID, "displayName": p.DisplayName, "isPrivate": false,
			"description": p.DisplayName + " plan", "hasFreeTrials": false, "isPricePerSeat": false, "isStopSell": false, "market": "US",
			"planComponents": map[string]any{
				"recurrentBillingTerms": []map[string]any{{"currency": "USD", "price": 100, "termUnit": "P1M", "termDescription": "monthly",
					"meteredQuantityIncluded": []map[string]any{}}},
				"meteringDimensions": dims,
			},
			"sourceOffers": []map[string]any{}})
	}
	writeJSON(w, http.StatusOK, map[string]any{"plans": plans})
	return false
}

func (e *Emulator) opLocation(r *http.Request, op *operation) string {
	return e.baseOf(r) + "/api/saas/subscriptions/" + op.SubscriptionID + "/operations/" + op.ID + "?api-version=" + APIVersion
}

func (e *Emulator) serveUpdate(w http.ResponseWriter, r *http.Request) bool {
	var body struct {
		PlanID   string `json:"planId"`
		Quantity int64  `json:"quantity"`
	}
	if !decodeBody(w, r, &body) {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.sub(w, r)
	if s == nil {
		return false
	}
	if (body.PlanID == "") == (body.Quantity == 0) {
		writeError(w, http.StatusBadRequest, "BadArgument", "change either planId or quantity, one per call")
		return false
	}
	if s.Status != StatusSubscribed {
		writeError(w, http.StatusBadRequest, "BadArgument", "the subscription is "+s.Status)
		return false
	}
	action := ActionChangeQuantity
	if body.PlanID != "" {
		if !slices.ContainsFunc(e.cfg.Plans, func(p Plan) bool { return p.ID == body.PlanID }) {
			writeError(w, http.StatusBadRequest, "BadArgument", "unknown plan "+quote(body.PlanID))
			return false
		}
		action = ActionChangePlan
	}
	op := e.newOp(s, action, "Partner")
	if body.PlanID != "" {
		op.PlanID = body.PlanID
	} else {
		op.Quantity = body.Quantity
	}
	op.due = e.now().Add(e.cfg.OperationDelay)
	w.Header().Set("Operation-Location", e.opLocation(r, op))
	w.WriteHeader(http.StatusAccepted)
	return true
}

func (e *Emulator) serveDelete(w http.ResponseWriter, r *http.Request) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.sub(w, r)
	if s == nil {
		return false
	}
	if s.Status == StatusUnsubscribed {
		writeError(w, http.StatusBadRequest, "BadArgument", "the subscription is already unsubscribed")
		return false
	}
	op := e.newOp(s, ActionUnsubscribe, "Partner")
	op.due = e.now().Add(e.cfg.OperationDelay)
	w.Header().Set("Operation-Location", e.opLocation(r, op))
	w.WriteHeader(http.StatusAccepted)
	return true
}

func (e *Emulator) serveListOps(w http.ResponseWriter, r *http.Request) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.sub(w, r)
	if s == nil {
		return false
	}
	ops := []*operation{}
	for _, op := range e.ops {
		if op.SubscriptionID == s.ID && op.Status == OpInProgress {
			ops = append(ops, op)
		}
	}
	slices.SortFunc(ops, func(a, b *operation) int { return strings.Compare(a.TimeStamp, b.TimeStamp) })
	writeJSON(w, http.StatusOK, map[string]any{"operations": ops})
	return false
}

func (e *Emulator) op(w http.ResponseWriter, r *http.Request) *operation {
	s := e.sub(w, r)
	if s == nil {
		return nil
	}
	op := e.ops[r.PathValue("op")]
	if op == nil || op.SubscriptionID != s.ID {
		writeError(w, http.StatusNotFound, "EntityNotFound", "operation "+quote(r.PathValue("op"))+" not found")
		return nil
	}
	return op
}

func (e *Emulator) serveGetOp(w http.ResponseWriter, r *http.Request) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if op := e.op(w, r); op != nil {
		writeJSON(w, http.StatusOK, op)
	}
	return false
}

func (e *Emulator) servePatchOp(w http.ResponseWriter, r *http.Request) bool {
	var body struct {
		Status string `json:"status"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || (body.Status != "Success" && body.Status != "Failure") {
		writeError(w, http.StatusBadRequest, "BadArgument", `status must be "Success" or "Failure"`)
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	op := e.op(w, r)
	if op == nil {
		return false
	}
	want := map[string]string{"Success": OpSucceeded, "Failure": OpFailed}[body.Status]
	switch {
	case op.Status == OpInProgress && op.outcome == "":
		op.outcome = want
		if e.cfg.PatchDelay == 0 {
			e.finish(op, want == OpSucceeded)
		} else {
			op.due = e.now().Add(e.cfg.PatchDelay) // Azure completes it later
		}
	case op.Status == want, op.Status == OpInProgress && op.outcome == want:
		// the same answer again: nothing to do
	case op.Status == OpInProgress:
		writeError(w, http.StatusConflict, "Conflict", "the operation was already PATCHed with the other status")
		return false
	default:
		writeError(w, http.StatusConflict, "Conflict", "the operation is already "+op.Status)
		return false
	}
	w.WriteHeader(http.StatusOK)
	return true
}

// decodeBody decodes the JSON request body into v, or answers 400
// BadArgument and reports false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "BadArgument", "invalid body: "+err.Error())
		return false
	}
	return true
}
