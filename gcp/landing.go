package gcp

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/pages"
)

// SignupField is the form field Google posts the sign-up JWT in.
const SignupField = "x-gcp-marketplace-token"

// maxForm bounds the sign-up form: Google posts one JWT.
const maxForm = 64 << 10

type signupKey struct{}

// SignupFromContext returns the verified sign-up token of a request that
// LandingHandler passes to Config.Link: the buyer's procurement account,
// obfuscated user id and roles.
func SignupFromContext(ctx context.Context) (*Signup, bool) {
	s, ok := ctx.Value(signupKey{}).(*Signup)
	return s, ok
}

// LandingHandler serves the sign-up URL: Google's POST with the form field
// x-gcp-marketplace-token, a JWT naming the buyer's procurement account.
//
// A form over 64 KiB answers 413 before the token (which is in the form)
// is looked at. It verifies the token, or answers 401 with one error page that says the
// token is not authentic (the detail is logged; 503 when Google's keys
// cannot be fetched now), and changes nothing. It finds the account's stored subscriptions from the store's
// index (reading the account's entitlements from the Procurement API, and
// storing them, when none is stored yet). Unless one of them is linked
// already, it calls Config.Link with the newest of them (or, for an
// account without any entitlement, a Subscription carrying only its
// AttrAccount) and the request, whose context holds the token
// (SignupFromContext), and stores the seller's account id on all of them
// through the engine's Update. Only then does it approve the account's
// "signup" approval, and answer with what Link wrote (held until now), or
// the confirmation page (lifecycle.Deps.Pages). A failed Link answers 500,
// a failed store or Procurement call 502 (error pages), and nothing is
// approved; a reload repeats the steps harmlessly.
func (p *Provider) LandingHandler() http.Handler { return landing{p} }

type landing struct{ p *Provider }

// linkError is a failure of the seller's Link hook.
type linkError struct{ err error }

func (e linkError) Error() string { return "gcp: link account: " + e.err.Error() }
func (e linkError) Unwrap() error { return e.err }

func (l landing) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := l.p
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		p.problem(w, r, http.StatusMethodNotAllowed, "This page is where Google Cloud Marketplace sends you after a purchase (a POST of the form field "+SignupField+").")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		p.problem(w, r, lifecycle.BodyStatus(err), "The sign-up form Google Cloud Marketplace sent could not be read.")
		return
	}
	token := r.PostForm.Get(SignupField)
	if token == "" {
		p.problem(w, r, http.StatusBadRequest, "The sign-up token (the form field "+SignupField+") is missing.")
		return
	}
	su, err := p.signup.Verify(r.Context(), token)
	switch {
	case errors.Is(err, marketplace.ErrNotAuthentic):
		p.deps.Logger.Warn("Google sign-up token refused", "err", err)
		// The same page for every refusal: it says nothing of our checks.
		p.problem(w, r, http.StatusUnauthorized, "The sign-up token is not authentic, or no longer valid.")
		return
	case err != nil:
		p.deps.Logger.Error("verify Google sign-up token", "err", err)
		p.problem(w, r, http.StatusServiceUnavailable, "We could not verify your sign-up right now; please try again.")
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), signupKey{}, su))
	held := lifecycle.NewHeldResponse()
	sub, err := p.signUp(r.Context(), held, r, su.AccountID)
	if err != nil {
		p.deps.Logger.Error("Google sign-up failed", "account", su.AccountID, "err", err)
		var le linkError
		if errors.As(err, &le) {
			p.problem(w, r, http.StatusInternalServerError, "We could not set up your account; please try again.")
		} else {
			p.problem(w, r, http.StatusBadGateway, "We could not complete your sign-up with Google right now; please try again.")
		}
		return
	}
	p.deps.Logger.Info("Google sign-up complete", "account", su.AccountID)
	if held.Release(w) { // with a cookie Link set, say
		return
	}
	p.deps.Pages.Landing(w, r, sub)
}

// problem answers a failed sign-up with the error page.
func (p *Provider) problem(w http.ResponseWriter, r *http.Request, status int, detail string) {
	p.deps.Pages.Error(w, r, pages.Problem{Provider: marketplace.GCP, Status: status, Detail: detail})
}

// signUp links a procurement account's subscriptions and approves the
// account, and returns the subscription the buyer is shown; see
// LandingHandler.
func (p *Provider) signUp(ctx context.Context, w http.ResponseWriter, r *http.Request, account string) (*marketplace.Subscription, error) {
	subs, err := p.accountSubscriptions(ctx, account)
	if err != nil {
		return nil, err
	}
	linked := ""
	for _, s := range subs {
		if s.AccountID != "" {
			linked = s.AccountID
		}
	}
	sub := &marketplace.Subscription{Provider: marketplace.GCP, Attributes: map[string]string{AttrAccount: account}}
	for i := range subs {
		if i == 0 || subs[i].CloudUpdated.After(sub.CloudUpdated) {
			sub = &subs[i]
		}
	}
	if linked == "" && p.cfg.Link != nil {
		if linked, err = p.cfg.Link(ctx, w, r, sub); err != nil {
			return nil, linkError{fmt.Errorf("account %s: %w", account, err)}
		}
	}
	if linked != "" {
		for _, s := range subs {
			_, err := p.e.Update(ctx, lifecycle.Change{Provider: marketplace.GCP, ID: s.ID, Apply: func(s *marketplace.Subscription) bool {
				if s.AccountID != "" {
					return false
				}
				s.AccountID = linked
				return true
			}})
			if err != nil && !errors.Is(err, marketplace.ErrNotFound) {
				return nil, fmt.Errorf("gcp: link subscription %s: %w", s.ID, err)
			}
		}
	}
	if err := p.cfg.Procurement.ApproveAccount(ctx, account, SignupApproval, "signed up"); err != nil {
		return nil, err
	}
	shown := *sub
	if linked != "" {
		shown.AccountID = linked
	}
	if shown.CustomerID == "" {
		shown.CustomerID = "account:" + account
	}
	return &shown, nil
}

// accountSubscriptions returns the stored subscriptions of a procurement
// account, from the store's index; when none is stored yet (the sign-up
// came before the lifecycle messages were applied) it reads the account's
// entitlements from the Procurement API and stores them.
func (p *Provider) accountSubscriptions(ctx context.Context, account string) ([]marketplace.Subscription, error) {
	subs, err := p.deps.Store.FindSubscriptionsByAttribute(ctx, marketplace.GCP, AttrAccount, account)
	if err != nil || len(subs) > 0 {
		return subs, err
	}
	ents, err := p.cfg.Procurement.Entitlements(ctx, "account="+account)
	if err != nil {
		return nil, err
	}
	for _, ent := range ents {
		res, err := p.storeEntitlement(ctx, nil, ent)
		if err != nil {
			return nil, err
		}
		if res.Subscription != nil {
			subs = append(subs, *res.Subscription)
		}
	}
	return subs, nil
}
