package gcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/saasmarket/marketplace"
)

// SignupField is the form field Google posts the sign-up JWT in.
const SignupField = "x-gcp-marketplace-token"

// LinkFunc is the seller's hook: it creates or finds the seller's own
// account for the buyer (typically after the buyer logged in) and returns
// that account's id and, optionally, where to send the browser next. An
// error stops the sign-up before anything is approved.
type LinkFunc func(ctx context.Context, s *Signup) (accountID, redirect string, err error)

// SignupConfig sets up a SignupHandler.
type SignupConfig struct {
	Verifier    *SignupVerifier
	Procurement *Procurement
	Link        LinkFunc
	// Subscriptions, when set, receive the seller's account id on the
	// buyer's stored entitlements (Subscription.AccountID).
	Subscriptions marketplace.SubscriptionStore
	Logger        *slog.Logger
}

// SignupHandler serves the sign-up URL: Google's POST with the form field
// x-gcp-marketplace-token. It verifies the JWT, runs the seller's Link
// hook, and only then approves the account's "signup" approval. A forged,
// expired or foreign token is answered 401 and changes nothing.
type SignupHandler struct{ cfg SignupConfig }

// NewSignupHandler returns the handler; Verifier, Procurement and Link are required.
func NewSignupHandler(cfg SignupConfig) (*SignupHandler, error) {
	if cfg.Verifier == nil || cfg.Procurement == nil || cfg.Link == nil {
		return nil, errors.New("gcp: SignupConfig needs Verifier, Procurement and Link")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &SignupHandler{cfg: cfg}, nil
}

// ServeHTTP handles Google's sign-up POST: verify, link, approve.
func (h *SignupHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "sign-up expects a POST from Google Cloud Marketplace", http.StatusMethodNotAllowed)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	token := r.PostFormValue(SignupField)
	if token == "" {
		http.Error(w, "missing form field "+SignupField, http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	s, err := h.cfg.Verifier.Verify(ctx, token)
	if err != nil {
		h.cfg.Logger.Warn("gcp sign-up token refused", "err", err)
		if errors.Is(err, ErrInvalidToken) {
			// The log keeps the reason; the caller learns nothing about our checks.
			http.Error(w, "the sign-up token is not authentic", http.StatusUnauthorized)
			return
		}
		http.Error(w, "cannot verify the sign-up token now; try again", http.StatusServiceUnavailable)
		return
	}
	accountID, redirect, err := h.cfg.Link(ctx, s)
	if err != nil {
		h.cfg.Logger.Error("gcp sign-up: linking the account failed", "account", s.AccountID, "err", err)
		http.Error(w, "sign-up could not be completed: "+err.Error(), http.StatusBadGateway)
		return
	}
	if err := h.link(ctx, s.AccountID, accountID); err != nil {
		h.cfg.Logger.Error("gcp sign-up: storing the link failed", "account", s.AccountID, "err", err)
		http.Error(w, "sign-up could not be stored; try again", http.StatusServiceUnavailable)
		return
	}
	if err := h.cfg.Procurement.ApproveAccount(ctx, s.AccountID, SignupApproval, "signed up"); err != nil {
		h.cfg.Logger.Error("gcp sign-up: approving the account failed", "account", s.AccountID, "err", err)
		http.Error(w, "sign-up could not be confirmed with Google; try again", http.StatusBadGateway)
		return
	}
	h.cfg.Logger.Info("gcp sign-up complete", "account", s.AccountID, "seller_account", accountID)
	if redirect != "" {
		http.Redirect(w, r, redirect, http.StatusSeeOther)
		return
	}
	fmt.Fprintln(w, "Your Google Cloud Marketplace sign-up is complete.")
}

// link records the seller's account on the buyer's stored entitlements.
func (h *SignupHandler) link(ctx context.Context, procurementAccount, sellerAccount string) error {
	if h.cfg.Subscriptions == nil || sellerAccount == "" {
		return nil
	}
	return linkAccount(ctx, h.cfg.Subscriptions, procurementAccount, sellerAccount)
}

// linkAccount sets AccountID on every stored subscription of a procurement account.
func linkAccount(ctx context.Context, store marketplace.SubscriptionStore, procurementAccount, sellerAccount string) error {
	subs, err := store.ListSubscriptions(ctx, marketplace.SubscriptionFilter{Provider: marketplace.GCP})
	if err != nil {
		return fmt.Errorf("gcp: list subscriptions: %w", err)
	}
	for _, s := range subs {
		if s.Attributes[AttrAccount] != procurementAccount || s.AccountID == sellerAccount {
			continue
		}
		for {
			s.AccountID = sellerAccount
			if _, err := store.PutSubscription(ctx, s); err == nil {
				break
			} else if !errors.Is(err, marketplace.ErrVersionConflict) {
				return fmt.Errorf("gcp: link %s: %w", s.ID, err)
			}
			cur, err := store.GetSubscription(ctx, marketplace.GCP, s.ID)
			if err != nil {
				return fmt.Errorf("gcp: link %s: %w", s.ID, err)
			}
			s = *cur
		}
	}
	return nil
}
