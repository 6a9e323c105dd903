package azure

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/saasmarket/marketplace"
)

// DefaultBaseURL is the marketplace APIs' base in Azure's public cloud.
const DefaultBaseURL = "https://marketplaceapi.microsoft.com/api"

// APIVersion is the api-version of the Fulfillment v2 and Metering APIs.
const APIVersion = "2018-08-31"

// TokenSource returns a bearer token for the marketplace APIs (resource
// ResourceID). Tokens implements it with an Entra ID credential.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// StaticToken is a TokenSource with a fixed token, for tests and tools.
type StaticToken string

// Token returns t.
func (t StaticToken) Token(context.Context) (string, error) { return string(t), nil }

// Client calls the SaaS Fulfillment API v2 and the Metering API. It is
// written to Microsoft's published OpenAPI files, since there is no
// maintained Go client for them.
type Client struct {
	base   string
	hc     *http.Client
	tokens TokenSource
	poll   time.Duration
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// BaseURL is the APIs' base, ending in /api; default DefaultBaseURL.
	BaseURL string
	// HTTPClient; default http.DefaultClient.
	HTTPClient *http.Client
	// Tokens provides the bearer tokens (required).
	Tokens TokenSource
	// PollInterval between polls of an Operation-Location; default 1 s.
	PollInterval time.Duration
}

// NewClient returns a client.
func NewClient(cfg ClientConfig) *Client {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	return &Client{base: strings.TrimRight(cfg.BaseURL, "/"), hc: cfg.HTTPClient, tokens: cfg.Tokens, poll: cfg.PollInterval}
}

type correlationKey struct{}

// WithCorrelationID makes the client send id as x-ms-correlationid on every
// call made with the returned context, so that calls of one piece of work
// (a landing, a webhook) correlate in Microsoft's logs.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey{}, id)
}

// APIError is a non-success answer of the APIs. It carries the request and
// correlation ids, which Microsoft support asks for.
type APIError struct {
	Method, Path  string
	StatusCode    int
	Code, Message string
	RequestID     string
	CorrelationID string
	// RetryAfter is the server's Retry-After hint, if any.
	RetryAfter time.Duration
	Body       []byte
}

// Error describes the call and its ids.
func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = strings.TrimSpace(string(e.Body))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
	}
	return fmt.Sprintf("azure: %s %s: HTTP %d %s: %s (x-ms-requestid %s, x-ms-correlationid %s)",
		e.Method, e.Path, e.StatusCode, e.Code, msg, e.RequestID, e.CorrelationID)
}

// Temporary reports whether a retry may succeed (429, 5xx).
func (e *APIError) Temporary() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// Is makes a 404 match marketplace.ErrNotFound.
func (e *APIError) Is(target error) bool {
	return target == marketplace.ErrNotFound && e.StatusCode == http.StatusNotFound
}

// call is one request.
type call struct {
	method, path string
	query        url.Values
	header       http.Header
	body         any
	out          any
	// ok lists the statuses that succeed; default 200.
	ok []int
	// raw keeps a non-success body for the caller (409 of usageEvent).
	raw *[]byte
}

// do sends c and decodes the response into c.out. It returns the response
// headers on success.
func (cl *Client) do(ctx context.Context, c call) (http.Header, error) {
	u := c.path
	if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
		u = cl.base + c.path
	}
	pu, err := url.Parse(u)
	if err != nil {
		return nil, fmt.Errorf("azure: %s %s: %w", c.method, c.path, err)
	}
	q := pu.Query()
	for k, v := range c.query {
		q[k] = v
	}
	q.Set("api-version", APIVersion)
	pu.RawQuery = q.Encode()
	var body io.Reader
	if c.body != nil {
		b, err := json.Marshal(c.body)
		if err != nil {
			return nil, fmt.Errorf("azure: %s %s: encode: %w", c.method, c.path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, pu.String(), body)
	if err != nil {
		return nil, fmt.Errorf("azure: %s %s: %w", c.method, c.path, err)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	reqID := uuid.NewString()
	corrID, _ := ctx.Value(correlationKey{}).(string)
	if corrID == "" {
		corrID = uuid.NewString()
	}
	req.Header.Set("x-ms-requestid", reqID)
	req.Header.Set("x-ms-correlationid", corrID)
	if cl.tokens == nil {
		return nil, fmt.Errorf("azure: %s %s: no token source", c.method, pu.Path)
	}
	tok, err := cl.tokens.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("azure: %s %s: token: %w", c.method, pu.Path, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := cl.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("azure: %s %s (x-ms-requestid %s, x-ms-correlationid %s): %w", c.method, pu.Path, reqID, corrID, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("azure: %s %s (x-ms-requestid %s, x-ms-correlationid %s): read: %w", c.method, pu.Path, reqID, corrID, err)
	}
	ok := c.ok
	if len(ok) == 0 {
		ok = []int{http.StatusOK}
	}
	for _, s := range ok {
		if resp.StatusCode != s {
			continue
		}
		if c.out != nil && len(bytes.TrimSpace(data)) > 0 {
			if err := json.Unmarshal(data, c.out); err != nil {
				return nil, fmt.Errorf("azure: %s %s (x-ms-requestid %s, x-ms-correlationid %s): decode: %w", c.method, pu.Path, reqID, corrID, err)
			}
		}
		return resp.Header, nil
	}
	ae := &APIError{Method: c.method, Path: pu.Path, StatusCode: resp.StatusCode, RequestID: reqID, CorrelationID: corrID, Body: data}
	var eb struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Error   *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &eb) == nil {
		ae.Code, ae.Message = eb.Code, eb.Message
		if eb.Error != nil && ae.Code == "" {
			ae.Code, ae.Message = eb.Error.Code, eb.Error.Message
		}
	}
	ae.RetryAfter = marketplace.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if c.raw != nil {
		*c.raw = data
	}
	return resp.Header, ae
}

func subPath(id string) string { return "/saas/subscriptions/" + url.PathEscape(id) }

// Resolve exchanges a landing page's marketplace token for the purchase it
// stands for. Pass the token exactly as the ?token= query parameter
// decodes ('+' characters included).
func (cl *Client) Resolve(ctx context.Context, token string) (*ResolvedSubscription, error) {
	var out ResolvedSubscription
	_, err := cl.do(ctx, call{method: http.MethodPost, path: "/saas/subscriptions/resolve",
		header: http.Header{"X-Ms-Marketplace-Token": {token}}, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Activate activates a subscription with the plan (and quantity, if
// above zero) that was purchased. Activating an active subscription again
// succeeds.
func (cl *Client) Activate(ctx context.Context, id, planID string, quantity int64) error {
	body := map[string]any{"planId": planID}
	if quantity > 0 {
		body["quantity"] = quantity
	}
	_, err := cl.do(ctx, call{method: http.MethodPost, path: subPath(id) + "/activate", body: body})
	return err
}

// GetSubscription returns one subscription.
func (cl *Client) GetSubscription(ctx context.Context, id string) (*Subscription, error) {
	var out Subscription
	if _, err := cl.do(ctx, call{method: http.MethodGet, path: subPath(id), out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListSubscriptions returns every subscription of the publisher, following
// every page. An empty answer means there are none.
func (cl *Client) ListSubscriptions(ctx context.Context) ([]Subscription, error) {
	var all []Subscription
	path, query := "/saas/subscriptions/", url.Values(nil)
	for range 100_000 {
		var page struct {
			Subscriptions     []Subscription `json:"subscriptions"`
			NextLink          string         `json:"@nextLink"`
			ContinuationToken string         `json:"continuationToken"`
		}
		if _, err := cl.do(ctx, call{method: http.MethodGet, path: path, query: query, out: &page}); err != nil {
			return nil, err
		}
		all = append(all, page.Subscriptions...)
		switch {
		case page.NextLink != "":
			path, query = page.NextLink, nil
		case page.ContinuationToken != "":
			path, query = "/saas/subscriptions/", url.Values{"continuationToken": {page.ContinuationToken}}
		default:
			return all, nil
		}
	}
	return nil, errors.New("azure: list subscriptions: too many pages")
}

// ListAvailablePlans returns the plans the subscription can move to.
func (cl *Client) ListAvailablePlans(ctx context.Context, id string) ([]Plan, error) {
	var out struct {
		Plans []Plan `json:"plans"`
	}
	if _, err := cl.do(ctx, call{method: http.MethodGet, path: subPath(id) + "/listAvailablePlans", out: &out}); err != nil {
		return nil, err
	}
	return out.Plans, nil
}

// ChangePlan asks to move a subscription to another plan and returns the
// Operation-Location to wait on (WaitOperation).
func (cl *Client) ChangePlan(ctx context.Context, id, planID string) (string, error) {
	return cl.update(ctx, id, map[string]any{"planId": planID})
}

// ChangeQuantity asks to change a subscription's seat count and returns
// the Operation-Location to wait on.
func (cl *Client) ChangeQuantity(ctx context.Context, id string, quantity int64) (string, error) {
	return cl.update(ctx, id, map[string]any{"quantity": quantity})
}

func (cl *Client) update(ctx context.Context, id string, body map[string]any) (string, error) {
	h, err := cl.do(ctx, call{method: http.MethodPatch, path: subPath(id), body: body, ok: []int{http.StatusAccepted}})
	if err != nil {
		return "", err
	}
	return h.Get("Operation-Location"), nil
}

// Delete unsubscribes a subscription and returns the Operation-Location.
func (cl *Client) Delete(ctx context.Context, id string) (string, error) {
	h, err := cl.do(ctx, call{method: http.MethodDelete, path: subPath(id), ok: []int{http.StatusAccepted}})
	if err != nil {
		return "", err
	}
	return h.Get("Operation-Location"), nil
}

// ListOperations returns the subscription's pending operations.
func (cl *Client) ListOperations(ctx context.Context, id string) ([]Operation, error) {
	var out struct {
		Operations []Operation `json:"operations"`
	}
	if _, err := cl.do(ctx, call{method: http.MethodGet, path: subPath(id) + "/operations", out: &out}); err != nil {
		return nil, err
	}
	return out.Operations, nil
}

// GetOperation returns one operation of a subscription.
func (cl *Client) GetOperation(ctx context.Context, subID, opID string) (*Operation, error) {
	var out Operation
	if _, err := cl.do(ctx, call{method: http.MethodGet, path: subPath(subID) + "/operations/" + url.PathEscape(opID), out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateOperation accepts (success true: "Success") or rejects ("Failure")
// an operation Azure waits on, such as a buyer's plan change.
func (cl *Client) UpdateOperation(ctx context.Context, subID, opID string, success bool) error {
	status := "Failure"
	if success {
		status = "Success"
	}
	_, err := cl.do(ctx, call{method: http.MethodPatch, path: subPath(subID) + "/operations/" + url.PathEscape(opID),
		body: map[string]string{"status": status}})
	return err
}

// WaitOperation polls an Operation-Location until the operation is done
// and returns it; a Failed or Conflict operation is returned without error.
func (cl *Client) WaitOperation(ctx context.Context, location string) (*Operation, error) {
	t := time.NewTicker(cl.poll)
	defer t.Stop()
	for {
		var op Operation
		if _, err := cl.do(ctx, call{method: http.MethodGet, path: location, out: &op}); err != nil {
			return nil, err
		}
		if op.Done() {
			return &op, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("azure: wait for operation %s: %w", op.ID, ctx.Err())
		case <-t.C:
		}
	}
}

// PostUsageEvent sends one usage event. A duplicate answers HTTP 409:
// the result then has Status Duplicate and its Error carries the event
// accepted first; err is nil.
func (cl *Client) PostUsageEvent(ctx context.Context, ev UsageEvent) (*UsageEventResult, error) {
	var out UsageEventResult
	var raw []byte
	_, err := cl.do(ctx, call{method: http.MethodPost, path: "/usageEvent", body: ev, out: &out, raw: &raw})
	var ae *APIError
	if errors.As(err, &ae) && ae.StatusCode == http.StatusConflict {
		var c UsageConflict
		if json.Unmarshal(raw, &c) == nil {
			return &UsageEventResult{Status: UsageDuplicate, ResourceID: ev.ResourceID, Quantity: ev.Quantity,
				Dimension: ev.Dimension, EffectiveStartTime: ev.EffectiveStartTime, PlanID: ev.PlanID, Error: &c}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// PostBatchUsageEvent sends up to 25 usage events in one call; the result
// holds a status per event, in order.
func (cl *Client) PostBatchUsageEvent(ctx context.Context, evs []UsageEvent) (*BatchResult, error) {
	var out BatchResult
	if _, err := cl.do(ctx, call{method: http.MethodPost, path: "/batchUsageEvent", body: map[string]any{"request": evs}, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// UsageQuery filters GetUsageEvents; Start is required.
type UsageQuery struct {
	Start, End                 time.Time
	OfferID, PlanID, Dimension string
}

// GetUsageEvents returns the usage Azure recorded, for reconciliation.
func (cl *Client) GetUsageEvents(ctx context.Context, q UsageQuery) ([]UsageRecord, error) {
	v := url.Values{"usageStartDate": {q.Start.UTC().Format(time.RFC3339)}}
	if !q.End.IsZero() {
		v.Set("UsageEndDate", q.End.UTC().Format(time.RFC3339))
	}
	for k, s := range map[string]string{"offerId": q.OfferID, "planId": q.PlanID, "dimension": q.Dimension} {
		if s != "" {
			v.Set(k, s)
		}
	}
	var out []UsageRecord
	if _, err := cl.do(ctx, call{method: http.MethodGet, path: "/usageEvents", query: v, out: &out}); err != nil {
		return nil, err
	}
	return out, nil
}
