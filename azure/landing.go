package azure

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/saasmarket/marketplace"
)

// LinkFunc links a buyer who arrived on the landing page to the seller's
// own account and returns that account's id. It runs after the purchase is
// stored as pending and before it is activated; an error stops the
// landing (the buyer may reload the page to try again).
type LinkFunc func(ctx context.Context, r *http.Request, sub *marketplace.Subscription) (accountID string, err error)

// LandingConfig configures the landing page handler.
type LandingConfig struct {
	Client *Client
	Subs   marketplace.SubscriptionStore
	// Link links the buyer's account; nil links none.
	Link LinkFunc
	// Done writes the page shown after activation; nil writes a short
	// confirmation.
	Done func(w http.ResponseWriter, r *http.Request, sub *marketplace.Subscription)
	// Activated is called after activation (invalidate caches, welcome mail).
	Activated func(ctx context.Context, sub *marketplace.Subscription)
	Logger    *slog.Logger
}

// Landing is the landing page: Azure sends the buyer to
// GET <landing URL>?token=... after a purchase. It resolves the token,
// stores the subscription as pending, lets the seller link its account,
// then activates it with the plan that was resolved and stores it as
// active.
//
// It is idempotent and crash-safe: every step can be repeated. A reload (or
// a retry after a crash anywhere, even between Azure applying the
// activation and our storing it) resolves again, finds the stored copy and
// finishes the work; Azure's activate is idempotent, and the stored copy is
// changed with optimistic versions, so nothing is done twice.
type Landing struct{ cfg LandingConfig }

// NewLanding returns the landing page handler.
func NewLanding(cfg LandingConfig) *Landing {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Landing{cfg: cfg}
}

// ErrNoToken is returned for a landing request without a valid token.
var ErrNoToken = errors.New("azure: landing request without a token")

// LandingToken returns the marketplace token of a landing URL's raw query,
// percent-decoded but keeping '+' characters: Azure's tokens are base64 and
// its '+' are not spaces.
func LandingToken(rawQuery string) (string, error) {
	for part := range strings.SplitSeq(rawQuery, "&") {
		v, ok := strings.CutPrefix(part, "token=")
		if !ok {
			continue
		}
		tok, err := url.PathUnescape(v)
		if err != nil {
			return "", fmt.Errorf("azure: landing token: %w", err)
		}
		if tok == "" || len(tok) > 8192 {
			break
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] < 0x20 || tok[i] > 0x7e {
				return "", fmt.Errorf("%w: a marketplace token is printable ASCII", ErrNoToken)
			}
		}
		return tok, nil
	}
	return "", ErrNoToken
}

// ServeHTTP serves GET ?token=...: 200 with the Done page once active, 400
// for a missing or refused token, 502 when Azure or the store failed (the
// buyer may reload).
func (l *Landing) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	tok, err := LandingToken(r.URL.RawQuery)
	if err != nil {
		http.Error(w, "This page is opened from Azure Marketplace after a purchase (no valid token).", http.StatusBadRequest)
		return
	}
	sub, err := l.Complete(r.Context(), r, tok)
	if err != nil {
		l.cfg.Logger.Warn("azure landing failed", "err", err)
		var ae *APIError
		switch {
		case errors.As(err, &ae) && (ae.StatusCode == http.StatusBadRequest || ae.StatusCode == http.StatusNotFound):
			http.Error(w, "The purchase token is invalid or expired; open the page again from Azure Marketplace.", http.StatusBadRequest)
		default:
			http.Error(w, "We could not complete your subscription right now; please reload this page.", http.StatusBadGateway)
		}
		return
	}
	if l.cfg.Done != nil {
		l.cfg.Done(w, r, sub)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	doneTmpl.Execute(w, sub)
}

var doneTmpl = template.Must(template.New("done").Parse(`<!doctype html><title>Subscribed</title>
<p>Your subscription {{.ID}} (plan {{.Plan}}) is active.</p>`))

// Complete does the landing's work for a token; see Landing.
func (l *Landing) Complete(ctx context.Context, r *http.Request, token string) (*marketplace.Subscription, error) {
	res, err := l.cfg.Client.Resolve(ctx, token)
	if err != nil {
		return nil, err
	}
	ctx = WithCorrelationID(ctx, res.ID)
	res.Subscription.ID = res.ID
	if res.Subscription.PlanID == "" {
		res.Subscription.PlanID = res.PlanID
	}
	if res.Subscription.Quantity == 0 {
		res.Subscription.Quantity = res.Quantity
	}
	pending := fromAzure(&res.Subscription)
	if pending.Status == marketplace.StatusActive {
		pending.Status = marketplace.StatusPending // not active for us until we activated it
	}
	sub, err := update(ctx, l.cfg.Subs, res.ID, func() (*marketplace.Subscription, error) { return &pending, nil },
		func(*marketplace.Subscription) bool { return true })
	if err != nil {
		return nil, fmt.Errorf("azure: store pending subscription %s: %w", res.ID, err)
	}
	if sub.Status == marketplace.StatusCancelled {
		return nil, fmt.Errorf("azure: subscription %s is cancelled", res.ID)
	}
	if sub.AccountID == "" && l.cfg.Link != nil {
		acct, err := l.cfg.Link(ctx, r, sub)
		if err != nil {
			return nil, fmt.Errorf("azure: link subscription %s: %w", res.ID, err)
		}
		if sub, err = update(ctx, l.cfg.Subs, res.ID, nil, func(s *marketplace.Subscription) bool {
			if s.AccountID != "" {
				return false
			}
			s.AccountID = acct
			return true
		}); err != nil {
			return nil, fmt.Errorf("azure: store account of subscription %s: %w", res.ID, err)
		}
	}
	if sub.Status == marketplace.StatusPending {
		if err := l.cfg.Client.Activate(ctx, res.ID, res.PlanID, res.Quantity); err != nil {
			return nil, err
		}
		activated := false
		if sub, err = update(ctx, l.cfg.Subs, res.ID, nil, func(s *marketplace.Subscription) bool {
			activated = s.Status == marketplace.StatusPending
			if activated {
				s.Status = marketplace.StatusActive
			}
			return activated
		}); err != nil {
			return nil, fmt.Errorf("azure: store active subscription %s: %w", res.ID, err)
		}
		if activated && l.cfg.Activated != nil {
			l.cfg.Activated(ctx, sub)
		}
	}
	return sub, nil
}
