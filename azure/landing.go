package azure

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/pages"
)

// LandingToken returns the marketplace token of a landing URL's raw query,
// percent-decoded but keeping '+' characters: Azure's tokens are base64 and
// its '+' are not spaces. Its errors wrap marketplace.ErrInvalidInput.
func LandingToken(rawQuery string) (string, error) {
	for part := range strings.SplitSeq(rawQuery, "&") {
		v, ok := strings.CutPrefix(part, "token=")
		if !ok {
			continue
		}
		tok, err := url.PathUnescape(v)
		if err != nil {
			return "", fmt.Errorf("azure: landing: %w: token: %w", marketplace.ErrInvalidInput, err)
		}
		if tok == "" || len(tok) > 8192 {
			break
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] < 0x20 || tok[i] > 0x7e {
				return "", fmt.Errorf("azure: landing: %w: a marketplace token is printable ASCII", marketplace.ErrInvalidInput)
			}
		}
		return tok, nil
	}
	return "", fmt.Errorf("azure: landing: %w: no marketplace token (?token=)", marketplace.ErrInvalidInput)
}

// LandingHandler is the landing page: Azure sends the buyer to
// GET <landing URL>?token=... after a purchase. It resolves the token,
// stores the subscription as pending, lets Config.Link link the buyer's
// account, activates the subscription with the plan that was resolved and
// stores it as active; every change goes through the engine's Update.
//
// It answers 200 with Link's response, or else the confirmation page of
// the engine's Deps.Pages; failures get its error page: 400 for a missing,
// refused or expired token or a cancelled subscription, 500 when Link
// failed, and 502 when Azure or the store failed (the buyer may reload). Every step can be repeated: a reload, or a retry after a crash
// anywhere (even between Azure applying the activation and our storing
// it), resolves again, finds the stored copy and finishes the work; Azure's
// activate is idempotent, Link runs until an account is stored, and
// nothing is done twice.
func (p *Provider) LandingHandler() http.Handler { return landing{p} }

type landing struct{ p *Provider }

// errCancelled refuses a landing of a subscription that has ended.
var errCancelled = errors.New("azure: the subscription is cancelled")

// linkError is a failure of the seller's Link hook.
type linkError struct{ err error }

func (e linkError) Error() string { return "azure: link account: " + e.err.Error() }
func (e linkError) Unwrap() error { return e.err }

func (l landing) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := l.p
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		p.problem(w, r, http.StatusMethodNotAllowed, "This page is where Azure Marketplace sends you after a purchase (with its token).")
		return
	}
	tok, err := LandingToken(r.URL.RawQuery)
	if err != nil {
		p.problem(w, r, http.StatusBadRequest, "This page opens from Azure Marketplace after a purchase, with a token; this link has none that is valid.")
		return
	}
	held := lifecycle.NewHeldResponse()
	sub, err := p.signUp(r.Context(), held, r, tok)
	if err != nil {
		p.deps.Logger.Warn("azure landing failed", "err", err)
		var ae *APIError
		var le linkError
		switch {
		case errors.As(err, &ae) && (ae.StatusCode == http.StatusBadRequest || ae.StatusCode == http.StatusNotFound):
			p.problem(w, r, http.StatusBadRequest, "The purchase token is invalid or has expired.")
		case errors.Is(err, errCancelled):
			p.problem(w, r, http.StatusBadRequest, "This subscription has been cancelled.")
		case errors.As(err, &le):
			p.problem(w, r, http.StatusInternalServerError, "Your account could not be set up; please reload this page.")
		default:
			p.problem(w, r, http.StatusBadGateway, "We could not complete your subscription with Azure right now; please reload this page.")
		}
		return
	}
	if held.Release(w) { // with a cookie Link set, say
		return
	}
	p.deps.Pages.Landing(w, r, sub)
}

// problem answers a failed sign-up with the error page.
func (p *Provider) problem(w http.ResponseWriter, r *http.Request, status int, detail string) {
	p.deps.Pages.Error(w, r, pages.Problem{Provider: marketplace.Azure, Status: status, Detail: detail})
}

// signUp does the landing's work for a token; see LandingHandler.
func (p *Provider) signUp(ctx context.Context, w http.ResponseWriter, r *http.Request, token string) (*marketplace.Subscription, error) {
	res, err := p.cfg.Client.Resolve(ctx, token)
	if err != nil {
		return nil, err
	}
	if !validID(res.ID) {
		return nil, fmt.Errorf("azure: resolve answered subscription id %q", res.ID)
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
	change := func(apply func(s *marketplace.Subscription) bool) (*marketplace.Subscription, error) {
		out, err := p.e.Update(ctx, lifecycle.Change{Provider: marketplace.Azure, ID: res.ID, Init: &pending, Apply: apply})
		if err != nil {
			return nil, fmt.Errorf("azure: store subscription %s: %w", res.ID, err)
		}
		return out.Subscription, nil
	}
	sub, err := change(func(s *marketplace.Subscription) bool { return s.Version == 0 }) // stored once, as pending
	if err != nil {
		return nil, err
	}
	if sub.Status == marketplace.StatusCancelled {
		return nil, fmt.Errorf("%w: %s", errCancelled, res.ID)
	}
	if sub.AccountID == "" && p.cfg.Link != nil {
		acct, err := p.cfg.Link(ctx, w, r, sub)
		if err != nil {
			return nil, linkError{fmt.Errorf("subscription %s: %w", res.ID, err)}
		}
		if acct != "" {
			if sub, err = change(func(s *marketplace.Subscription) bool {
				if s.AccountID != "" {
					return false
				}
				s.AccountID = acct
				return true
			}); err != nil {
				return nil, err
			}
		}
	}
	if sub.Status == marketplace.StatusPending {
		if err := p.cfg.Client.Activate(ctx, res.ID, res.PlanID, res.Quantity); err != nil {
			return nil, err
		}
		if sub, err = change(func(s *marketplace.Subscription) bool {
			if s.Status != marketplace.StatusPending {
				return false
			}
			s.Status = marketplace.StatusActive
			return true
		}); err != nil {
			return nil, err
		}
	}
	return sub, nil
}
