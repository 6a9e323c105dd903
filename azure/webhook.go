package azure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/lifecycle"
)

// WebhookPayload is the body Azure posts to the publisher's webhook.
type WebhookPayload struct {
	ID                     string        `json:"id"` // the operation id
	ActivityID             string        `json:"activityId"`
	PublisherID            string        `json:"publisherId"`
	OfferID                string        `json:"offerId"`
	PlanID                 string        `json:"planId"`
	Quantity               int64         `json:"quantity"`
	SubscriptionID         string        `json:"subscriptionId"`
	TimeStamp              Time          `json:"timeStamp"`
	Action                 string        `json:"action"`
	Status                 string        `json:"status"`
	OperationRequestSource string        `json:"operationRequestSource"`
	Subscription           *Subscription `json:"subscription"`
}

// DecodeWebhook decodes and checks a webhook body: unknown fields are
// ignored; the operation and subscription ids and the action are required.
// Its errors wrap marketplace.ErrInvalidInput and name what is wrong.
func DecodeWebhook(b []byte) (*WebhookPayload, error) {
	var p WebhookPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("azure: webhook: %w: %w", marketplace.ErrInvalidInput, err)
	}
	switch {
	case !validID(p.ID):
		return nil, fmt.Errorf("azure: webhook: %w: id must be an operation id", marketplace.ErrInvalidInput)
	case !validID(p.SubscriptionID):
		return nil, fmt.Errorf("azure: webhook: %w: subscriptionId must be a subscription id", marketplace.ErrInvalidInput)
	case !slices.Contains([]string{ActionChangePlan, ActionChangeQuantity, ActionRenew, ActionSuspend, ActionUnsubscribe, ActionReinstate}, p.Action):
		return nil, fmt.Errorf("azure: webhook: %w: unknown action %q", marketplace.ErrInvalidInput, p.Action)
	}
	return &p, nil
}

// validID accepts what can go into an API path segment.
func validID(id string) bool {
	return id != "" && len(id) <= 128 && !strings.ContainsAny(id, "/?#")
}

// authenticate checks the Authorization header of a webhook call: an RS256
// token from the tenant's key set whose aud, tid, appid/azp, issuer, exp
// and nbf are Azure's. Its errors wrap marketplace.ErrNotAuthentic.
func (p *Provider) authenticate(ctx context.Context, header string) error {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return fmt.Errorf("azure: webhook: %w: no bearer token", marketplace.ErrNotAuthentic)
	}
	claims := jwt.MapClaims{}
	if _, err := p.parser.ParseWithClaims(raw, claims, p.keys.Keyfunc(ctx, p.cfg.JWKSURL)); err != nil {
		return fmt.Errorf("azure: webhook: %w: %w", marketplace.ErrNotAuthentic, err)
	}
	str := func(k string) string { s, _ := claims[k].(string); return s }
	switch {
	case str("tid") != p.cfg.TenantID:
		return fmt.Errorf("azure: webhook: %w: tid %q", marketplace.ErrNotAuthentic, str("tid"))
	case str("appid") != ResourceID && str("azp") != ResourceID:
		return fmt.Errorf("azure: webhook: %w: appid/azp %q/%q is not the marketplace's", marketplace.ErrNotAuthentic, str("appid"), str("azp"))
	case (str("appid") != "" && str("appid") != ResourceID) || (str("azp") != "" && str("azp") != ResourceID):
		return fmt.Errorf("azure: webhook: %w: appid %q, azp %q disagree", marketplace.ErrNotAuthentic, str("appid"), str("azp"))
	case !slices.Contains(p.cfg.Issuers, str("iss")):
		return fmt.Errorf("azure: webhook: %w: issuer %q not allowed", marketplace.ErrNotAuthentic, str("iss"))
	}
	return nil
}

const maxWebhookBody = 1 << 20

// NotificationHandler is Azure's webhook. It authenticates the call (401
// "not authentic") before it reads the body, so a forged call is refused
// unread; then a body over 1 MiB answers 413. It decodes it (400 naming
// what is wrong), stores it in the lifecycle engine's inbox, deduplicated
// by operation id, and only then answers 200, at once, to a first delivery
// and a redelivery alike. It applies nothing itself: Process does, once the
// call is answered, as Microsoft expects. A store failure answers 500, and
// Azure delivers again.
func (p *Provider) NotificationHandler() http.Handler { return webhook{p} }

type webhook struct{ p *Provider }

func (h webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.p
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ctx := r.Context()
	log := p.deps.Logger
	if err := p.authenticate(ctx, r.Header.Get("Authorization")); err != nil {
		log.Warn("azure webhook refused", "err", err)
		http.Error(w, "not authentic", http.StatusUnauthorized)
		return
	}
	body, ok := lifecycle.ReadBody(w, r, maxWebhookBody)
	if !ok {
		return
	}
	wp, err := DecodeWebhook(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	payload, err := json.Marshal(wp)
	if err != nil {
		http.Error(w, "unencodable payload", http.StatusInternalServerError)
		return
	}
	first, err := p.e.Accept(ctx, marketplace.Notification{Provider: marketplace.Azure, ID: wp.ID, Kind: wp.Action,
		Subject: wp.SubscriptionID, Time: wp.TimeStamp.Time, Payload: payload})
	if err != nil {
		log.Error("azure webhook not stored; Azure will deliver it again", "operation", wp.ID, "err", err)
		if errors.Is(err, marketplace.ErrInvalidInput) {
			http.Error(w, "invalid notification", http.StatusBadRequest)
			return
		}
		http.Error(w, "try again", http.StatusInternalServerError)
		return
	}
	log.Debug("azure webhook accepted", "operation", wp.ID, "action", wp.Action, "subscription", wp.SubscriptionID, "first", first)
	w.WriteHeader(http.StatusOK)
}
