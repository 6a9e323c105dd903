package aws

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/pages"
)

// TokenField is the form field AWS posts the registration token in.
const TokenField = "x-amzn-marketplace-token"

// maxForm bounds the registration form: AWS posts one short token.
const maxForm = 64 << 10

// LandingHandler serves the seller's registration URL: AWS Marketplace
// sends the buyer's browser there with a POST carrying the form field
// x-amzn-marketplace-token. The handler resolves the token with AWS
// (ResolveCustomer), stores the subscription as pending, calls Config.Link
// so the seller links it to an account of its own, then marks it active;
// every change goes through the lifecycle engine's Update. What Link writes
// (a redirect, a page, a cookie) is held until the subscription is active,
// as on every cloud; a failure shows the error page instead. An invalid or
// expired token gets a 400 that says so, and nothing is stored; a form over
// 64 KiB gets 413 before any token is looked at. A reload repeats the steps
// harmlessly.
func (p *Provider) LandingHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			p.problem(w, r, http.StatusMethodNotAllowed, "", "This page is where AWS Marketplace sends you after a purchase (a POST of the form field "+TokenField+").")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			p.problem(w, r, lifecycle.BodyStatus(err), "", "The registration form AWS Marketplace sent could not be read.")
			return
		}
		token := r.PostForm.Get(TokenField)
		if token == "" {
			p.problem(w, r, http.StatusBadRequest, "", "The registration token (the form field "+TokenField+") is missing.")
			return
		}
		ctx := r.Context()
		out, err := p.cfg.Metering.ResolveCustomer(ctx, token)
		switch {
		case errors.Is(err, ErrExpiredToken):
			p.problem(w, r, http.StatusBadRequest, "Your registration link has expired",
				"Your AWS Marketplace registration link has expired. Return to AWS Marketplace and choose “Set up your account” again.")
			return
		case errors.Is(err, ErrInvalidToken), errors.Is(err, ErrInvalidInput):
			p.problem(w, r, http.StatusBadRequest, "", "This AWS Marketplace registration token is not valid. Start again from the product page on AWS Marketplace.")
			return
		case err != nil:
			p.deps.Logger.Error("resolve AWS Marketplace registration token", "err", err)
			p.problem(w, r, http.StatusBadGateway, "", "AWS Marketplace could not be reached to confirm your registration; please try again in a minute.")
			return
		}
		if out.ProductCode != p.cfg.ProductCode {
			p.problem(w, r, http.StatusBadRequest, "", "This registration is for another product.")
			return
		}
		cust, subID, err := p.customerOf(out.CustomerIdentifier, out.CustomerAWSAccountId, out.LicenseArn)
		if err != nil {
			p.deps.Logger.Error("AWS Marketplace registration without the buyer ids this mode needs", "err", err)
			p.problem(w, r, http.StatusBadGateway, "", "AWS Marketplace answered without the buyer's identity.")
			return
		}
		sub, err := p.signUp(ctx, subID, cust, out)
		if err != nil {
			p.deps.Logger.Error("store AWS subscription", "customer", cust, "err", err)
			p.problem(w, r, http.StatusInternalServerError, "", "Your registration could not be stored; please try again.")
			return
		}
		held := lifecycle.NewHeldResponse()
		account := sub.AccountID
		if p.cfg.Link != nil {
			account, err = p.cfg.Link(ctx, held, r, sub)
			if err != nil {
				p.deps.Logger.Error("link AWS subscription to an account", "customer", cust, "err", err)
				p.problem(w, r, http.StatusInternalServerError, "", "Your account could not be linked; please try again.")
				return
			}
		}
		done, err := p.e.Update(ctx, lifecycle.Change{Provider: marketplace.AWS, ID: sub.ID, Apply: func(s *marketplace.Subscription) bool {
			if s.Status != marketplace.StatusPending && s.AccountID == account {
				return false
			}
			if s.Status == marketplace.StatusPending {
				s.Status = marketplace.StatusActive
			}
			s.AccountID = account
			return true
		}})
		if err != nil {
			p.deps.Logger.Error("activate AWS subscription", "customer", cust, "err", err)
			p.problem(w, r, http.StatusInternalServerError, "", "Your subscription could not be activated; please try again.")
			return
		}
		if !held.Release(w) { // what Link wrote goes out only once the subscription is active
			p.deps.Pages.Landing(w, r, done.Subscription)
		}
	})
}

// problem answers a failed registration with the error page.
func (p *Provider) problem(w http.ResponseWriter, r *http.Request, status int, title, detail string) {
	p.deps.Pages.Error(w, r, pages.Problem{Provider: marketplace.AWS, Status: status, Title: title, Detail: detail})
}

// signUp stores the resolved buyer's subscription as pending (once; a
// buyer who subscribed again after a cancellation is pending again), with
// the attributes notifications find it by. In license mode a subscription
// that a License event made first (under the event's form of the license
// ARN) is found by its license id and takes ResolveCustomer's identity.
func (p *Provider) signUp(ctx context.Context, subID, cust string, out *ResolveCustomerOutput) (*marketplace.Subscription, error) {
	if lid := licenseID(out.LicenseArn); p.cfg.LicenseMode && lid != "" {
		found, err := p.deps.Store.FindSubscriptionsByAttribute(ctx, marketplace.AWS, keyLicenseID, lid)
		if err != nil {
			return nil, fmt.Errorf("aws: find the subscription of license %s: %w", lid, err)
		}
		for _, s := range found {
			if s.ProductCode == p.cfg.ProductCode {
				subID = s.ID
			}
		}
	}
	attrs := buyerAttributes(out.CustomerIdentifier, out.CustomerAWSAccountId, out.LicenseArn)
	res, err := p.e.Update(ctx, lifecycle.Change{Provider: marketplace.AWS, ID: subID,
		Init: &marketplace.Subscription{CustomerID: cust, ProductCode: out.ProductCode, Status: marketplace.StatusPending},
		Apply: func(s *marketplace.Subscription) bool {
			changed := s.Version == 0
			if lifecycle.Ended(s.Status) {
				s.Status, changed = marketplace.StatusPending, true
			}
			if s.CustomerID != cust {
				s.CustomerID, changed = cust, true
			}
			return setAttributes(s, attrs) || changed
		}})
	if err != nil {
		return nil, err
	}
	return res.Subscription, nil
}
