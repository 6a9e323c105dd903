package azure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/saasmarket/marketplace"
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

// ErrBadPayload is wrapped by DecodeWebhook's errors.
var ErrBadPayload = errors.New("azure: bad webhook payload")

// DecodeWebhook decodes and checks a webhook body: unknown fields are
// ignored; the operation and subscription ids and the action are required.
func DecodeWebhook(b []byte) (*WebhookPayload, error) {
	var p WebhookPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPayload, err)
	}
	switch {
	case p.ID == "" || len(p.ID) > 128:
		return nil, fmt.Errorf("%w: id must be an operation id", ErrBadPayload)
	case p.SubscriptionID == "" || len(p.SubscriptionID) > 128 || strings.ContainsAny(p.SubscriptionID, "/?#"):
		return nil, fmt.Errorf("%w: subscriptionId must be a subscription id", ErrBadPayload)
	case !slices.Contains([]string{ActionChangePlan, ActionChangeQuantity, ActionRenew, ActionSuspend, ActionUnsubscribe, ActionReinstate}, p.Action):
		return nil, fmt.Errorf("%w: unknown action %q", ErrBadPayload, p.Action)
	}
	return &p, nil
}

// DecideFunc lets the seller accept (true) or reject (false) a buyer's
// plan or quantity change, or a reinstatement, before Azure applies it.
type DecideFunc func(ctx context.Context, sub *marketplace.Subscription, op *Operation) (bool, error)

// WebhookConfig configures the webhook handler.
type WebhookConfig struct {
	Client *Client
	Subs   marketplace.SubscriptionStore
	Log    marketplace.NotificationLog
	// Seal is the buyer's final usage flush on Unsubscribe (ledger.Ledger's
	// SealCustomer); nil skips it.
	Seal func(ctx context.Context, p marketplace.CloudProvider, customer string) (int, error)
	// Changed is called after a stored change (invalidate entitlement caches).
	Changed func(ctx context.Context, sub *marketplace.Subscription)
	// Decide; nil accepts every change.
	Decide DecideFunc

	TenantID string // the publisher's Entra tenant: tokens' tid
	AppID    string // the publisher's app id: tokens' aud
	// JWKSURL is the tenant's key set; default
	// https://login.microsoftonline.com/{TenantID}/discovery/v2.0/keys.
	JWKSURL string
	// Issuers allowed; default https://login.microsoftonline.com/{tid}/v2.0
	// and https://sts.windows.net/{tid}/.
	Issuers []string
	// HTTPClient fetches the key set; default http.DefaultClient.
	HTTPClient *http.Client
	Leeway     time.Duration // for exp/nbf; default 1 minute
	// KeyRefresh is the minimum time between key set refreshes caused by an
	// unknown kid; default 5 minutes.
	KeyRefresh time.Duration
	// Remember is how long operation ids are remembered; default 7 days.
	Remember time.Duration
	Clock    func() time.Time
	Logger   *slog.Logger
}

// Webhook is the handler of Azure's webhook calls. It authenticates the
// bearer token (RS256 from the tenant's key set; aud, tid, appid/azp,
// issuer, exp/nbf), confirms the operation with Get Operation, dedupes by
// operation id, accepts or rejects plan and quantity changes, applies the
// change to the stored subscription and answers 200 to every genuine call,
// including repeats, since Azure retries for hours.
type Webhook struct {
	cfg    WebhookConfig
	keys   keyfunc.Keyfunc
	parser *jwt.Parser
}

// NewWebhook returns the handler. ctx owns the key set's refresh
// goroutine: cancel it to stop the handler's background work.
func NewWebhook(ctx context.Context, cfg WebhookConfig) (*Webhook, error) {
	if cfg.TenantID == "" || cfg.AppID == "" {
		return nil, errors.New("azure: webhook needs the publisher's tenant and app id")
	}
	if cfg.JWKSURL == "" {
		cfg.JWKSURL = "https://login.microsoftonline.com/" + cfg.TenantID + "/discovery/v2.0/keys"
	}
	if len(cfg.Issuers) == 0 {
		cfg.Issuers = []string{"https://login.microsoftonline.com/" + cfg.TenantID + "/v2.0", "https://sts.windows.net/" + cfg.TenantID + "/"}
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = time.Minute
	}
	if cfg.KeyRefresh <= 0 {
		cfg.KeyRefresh = 5 * time.Minute
	}
	if cfg.Remember <= 0 {
		cfg.Remember = 7 * 24 * time.Hour
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	no := false
	ov := keyfunc.Override{Client: cfg.HTTPClient, HTTPTimeout: 10 * time.Second, NoErrorReturnFirstHTTPReq: &no,
		RateLimitWaitMax: time.Second, RefreshUnknownKID: rate.NewLimiter(rate.Every(cfg.KeyRefresh), 1),
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				cfg.Logger.Warn("azure webhook: key set refresh failed", "url", u, "err", err)
			}
		}}
	keys, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, ov)
	if err != nil {
		return nil, fmt.Errorf("azure: webhook key set: %w", err)
	}
	p := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(cfg.AppID),
		jwt.WithLeeway(cfg.Leeway), jwt.WithExpirationRequired(), jwt.WithTimeFunc(cfg.Clock))
	return &Webhook{cfg: cfg, keys: keys, parser: p}, nil
}

// ErrUnauthenticated is wrapped by Authenticate's errors.
var ErrUnauthenticated = errors.New("azure: webhook call not authenticated")

// Authenticate checks the Authorization header of a webhook call.
func (h *Webhook) Authenticate(ctx context.Context, header string) error {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	claims := jwt.MapClaims{}
	if _, err := h.parser.ParseWithClaims(raw, claims, h.keys.KeyfuncCtx(ctx)); err != nil {
		return fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	str := func(k string) string { s, _ := claims[k].(string); return s }
	switch {
	case str("tid") != h.cfg.TenantID:
		return fmt.Errorf("%w: tid %q", ErrUnauthenticated, str("tid"))
	case str("appid") != ResourceID && str("azp") != ResourceID:
		return fmt.Errorf("%w: appid/azp %q/%q is not the marketplace's", ErrUnauthenticated, str("appid"), str("azp"))
	case (str("appid") != "" && str("appid") != ResourceID) || (str("azp") != "" && str("azp") != ResourceID):
		return fmt.Errorf("%w: appid %q, azp %q disagree", ErrUnauthenticated, str("appid"), str("azp"))
	case !slices.Contains(h.cfg.Issuers, str("iss")):
		return fmt.Errorf("%w: issuer %q not allowed", ErrUnauthenticated, str("iss"))
	}
	return nil
}

const maxWebhookBody = 1 << 20

// ServeHTTP answers 401 to an unauthenticated call or one for an operation
// Azure does not know, 400 to a malformed body, 500 when applying failed
// (Azure retries), and 200 otherwise.
func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ctx := r.Context()
	if err := h.Authenticate(ctx, r.Header.Get("Authorization")); err != nil {
		h.cfg.Logger.Warn("azure webhook refused", "err", err)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxWebhookBody+1))
	if err != nil || len(body) > maxWebhookBody {
		http.Error(w, "body unreadable or too large", http.StatusBadRequest)
		return
	}
	p, err := DecodeWebhook(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	switch err := h.Handle(ctx, p); {
	case errors.Is(err, errUnknownOperation):
		h.cfg.Logger.Warn("azure webhook for an operation Azure does not know", "operation", p.ID, "subscription", p.SubscriptionID)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	case err != nil:
		h.cfg.Logger.Error("azure webhook failed; Azure will retry", "operation", p.ID, "err", err)
		http.Error(w, "try again", http.StatusInternalServerError)
	default:
		w.WriteHeader(http.StatusOK)
	}
}

var errUnknownOperation = errors.New("azure: operation unknown to Azure")

// Handle applies an authenticated webhook call.
func (h *Webhook) Handle(ctx context.Context, p *WebhookPayload) error {
	ctx = WithCorrelationID(ctx, p.ActivityID)
	// Remembered per subscription and operation, so that a mismatched
	// pair is never taken for a call already applied.
	seen := p.SubscriptionID + "/" + p.ID
	done, err := h.cfg.Log.Processed(ctx, marketplace.Azure, seen)
	if err != nil {
		return err
	}
	if done {
		return nil // a redelivery of what we applied
	}
	// The payload is a hint: Azure's Get Operation is the truth.
	op, err := h.cfg.Client.GetOperation(ctx, p.SubscriptionID, p.ID)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: %w", errUnknownOperation, err)
	}
	if err != nil {
		return err
	}
	if op.SubscriptionID != "" && op.SubscriptionID != p.SubscriptionID {
		return fmt.Errorf("%w: operation belongs to %s", errUnknownOperation, op.SubscriptionID)
	}
	base := func() (*marketplace.Subscription, error) {
		s, err := h.cfg.Client.GetSubscription(ctx, p.SubscriptionID)
		if err != nil {
			return nil, err
		}
		out := fromAzure(s)
		return &out, nil
	}
	sub, err := update(ctx, h.cfg.Subs, p.SubscriptionID, base, func(*marketplace.Subscription) bool { return false })
	if err != nil {
		return err
	}
	if op.Status == OpInProgress {
		ok := true
		if h.cfg.Decide != nil {
			if ok, err = h.cfg.Decide(ctx, sub, op); err != nil {
				return err
			}
		}
		if err := h.cfg.Client.UpdateOperation(ctx, p.SubscriptionID, p.ID, ok); err != nil {
			var ae *APIError
			if !errors.As(err, &ae) || ae.StatusCode != http.StatusConflict {
				return err
			}
		}
		if op, err = h.cfg.Client.GetOperation(ctx, p.SubscriptionID, p.ID); err != nil {
			return err
		}
	}
	if op.Status == OpSucceeded {
		stamp := op.TimeStamp.Time
		sub, err = update(ctx, h.cfg.Subs, p.SubscriptionID, base, func(s *marketplace.Subscription) bool {
			if !stamp.IsZero() && !s.CloudUpdated.IsZero() && stamp.Before(s.CloudUpdated) {
				return false // older than what we hold
			}
			switch op.Action {
			case ActionChangePlan:
				s.Plan = op.PlanID
				s.Entitlements = []string{op.PlanID}
			case ActionChangeQuantity:
				s.Quantity = op.Quantity
			case ActionSuspend:
				s.Status = marketplace.StatusSuspended
			case ActionReinstate, ActionRenew:
				if s.Status != marketplace.StatusCancelled {
					s.Status = marketplace.StatusActive
				}
			case ActionUnsubscribe:
				s.Status = marketplace.StatusCancelled
			}
			if !stamp.IsZero() {
				s.CloudUpdated = stamp
			}
			return true
		})
		if err != nil {
			return err
		}
		if op.Action == ActionUnsubscribe && h.cfg.Seal != nil {
			if _, err := h.cfg.Seal(ctx, marketplace.Azure, sub.CustomerID); err != nil {
				return fmt.Errorf("azure: final usage flush of %s: %w", sub.CustomerID, err)
			}
		}
		if h.cfg.Changed != nil {
			h.cfg.Changed(ctx, sub)
		}
	}
	_, err = h.cfg.Log.MarkProcessed(ctx, marketplace.Azure, seen, h.cfg.Clock().Add(h.cfg.Remember))
	return err
}
