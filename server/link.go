package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/lifecycle"
)

// Link query parameters, in the order they are signed.
var linkParams = []string{"provider", "subscription", "customer", "product", "plan", "expires"}

// LinkSignaturePrefix starts the signed message; it names the scheme's
// version, so that a later scheme cannot be confused with this one.
const LinkSignaturePrefix = "marketplaced-link-v1"

// LinkHook is the daemon's lifecycle.LinkFunc (its Link method), for
// sellers whose service is not in Go and so cannot pass one: it redirects
// the buyer (303) to the seller's sign-up page, URL, with the query
// parameters provider, subscription, customer, product, plan and expires
// (Unix seconds), and signature: the lowercase hex HMAC-SHA256 under Secret
// of LinkMessage's message. The seller's page checks it and attaches its
// account later with PUT /v1/subscriptions/{provider}/{customer}/account.
//
// The subscription is activated at landing, before the seller links: the
// hook returns no account, so each cloud's landing finishes as it does
// without a hook (AWS marks the subscription active, Azure activates it,
// Google approves the account) before the buyer is redirected, and the buyer
// is entitled whether or not the seller's page ever links an account.
// Holding activation for a page the daemon cannot see finish would leave a
// buyer who closes the tab pending for ever, and Azure and Google expect
// the activation within a bounded time.
type LinkHook struct {
	URL    *url.URL
	Secret []byte
	// TTL is how long the signed parameters are valid.
	TTL    time.Duration
	Clock  func() time.Time
	Logger *slog.Logger
}

// LinkMessage is what a link's signature signs: the prefix and the values
// of the parameters in linkParams' order, joined by newlines. No value may
// hold a newline, so that the message reads back one way only.
func LinkMessage(values ...string) string {
	return LinkSignaturePrefix + "\n" + strings.Join(values, "\n")
}

// Sign returns the signature of the link parameters' values.
func (h *LinkHook) Sign(values ...string) string {
	m := hmac.New(sha256.New, h.Secret)
	m.Write([]byte(LinkMessage(values...)))
	return hex.EncodeToString(m.Sum(nil))
}

// Link implements lifecycle.LinkFunc. It redirects a buyer whose
// subscription has no account yet, and returns the account the
// subscription already has (none until the seller's PUT), so that a reload
// of a linked buyer's landing keeps it and shows the confirmation page. A
// Google account that has no entitlement stored yet has no subscription to
// name: the buyer gets the confirmation page, and the seller's page is
// reached on a later landing.
func (h *LinkHook) Link(ctx context.Context, w http.ResponseWriter, r *http.Request, sub *marketplace.Subscription) (string, error) {
	if sub.AccountID != "" {
		return sub.AccountID, nil
	}
	if sub.ID == "" || sub.CustomerID == "" {
		h.Logger.Info("link hook: no subscription to name yet; the buyer sees the confirmation page", "provider", sub.Provider)
		return "", nil
	}
	expires := strconv.FormatInt(h.Clock().Add(h.TTL).Unix(), 10)
	values := []string{string(sub.Provider), sub.ID, sub.CustomerID, sub.ProductCode, sub.Plan, expires}
	for i, v := range values {
		if strings.ContainsAny(v, "\r\n") {
			return "", fmt.Errorf("link hook: %s subscription %q: %s holds a line break, which cannot be signed", sub.Provider, sub.ID, linkParams[i])
		}
	}
	u := *h.URL
	q := u.Query()
	for i, name := range linkParams {
		q.Set(name, values[i])
	}
	q.Set("signature", h.Sign(values...))
	u.RawQuery = q.Encode()
	// The signed parameters are for this buyer only: not to be cached,
	// and not to leak onward in a Referer from the seller's page.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Location", u.String())
	w.WriteHeader(http.StatusSeeOther)
	return "", nil
}

// SubscriptionUpdater changes a stored subscription through the lifecycle
// engine (*lifecycle.Engine): the version-conflict retry, entitlement
// invalidation, the final seal of an ended subscription.
type SubscriptionUpdater interface {
	Update(ctx context.Context, c lifecycle.Change) (lifecycle.Result, error)
}

// maxAccountID bounds an account id, like an event id.
const maxAccountID = 256

// putAccount is PUT /v1/subscriptions/{provider}/{customer}/account: the
// seller's page stores its account id on the customer's subscription (the
// newest, the one GET shows). It is idempotent; a different id replaces the
// one stored.
func (s *Server) putAccount(w http.ResponseWriter, r *http.Request) {
	p, ok := s.provider(w, r, r.PathValue("provider"), true)
	if !ok {
		return
	}
	if !requireJSON(w, r) {
		return
	}
	var req struct {
		AccountID *string `json:"account_id"`
	}
	if !decodeJSON(w, r, 64<<10, &req, `{"account_id": "..."}`) {
		return
	}
	if req.AccountID == nil {
		writeError(w, r, http.StatusBadRequest, "invalid_request", "account_id: is required")
		return
	}
	account := *req.AccountID
	if msg := checkAccountID(account); msg != "" {
		writeError(w, r, http.StatusBadRequest, "invalid_request", "account_id: "+msg)
		return
	}
	if s.deps.Updater == nil {
		writeError(w, r, http.StatusServiceUnavailable, "unavailable", "this daemon has no lifecycle engine to store accounts with")
		return
	}
	customer := r.PathValue("customer")
	notFound := func() {
		writeError(w, r, http.StatusNotFound, "not_found", fmt.Sprintf("no %s subscription for customer %q", p, customer))
	}
	sub, err := s.deps.Subscriptions.FindSubscription(r.Context(), p, customer)
	switch {
	case errors.Is(err, marketplace.ErrNotFound):
		notFound()
		return
	case err != nil:
		s.unavailable(w, r, "reading a subscription", err)
		return
	}
	res, err := s.deps.Updater.Update(r.Context(), lifecycle.Change{Provider: p, ID: sub.ID, Apply: func(s *marketplace.Subscription) bool {
		if s.AccountID == account {
			return false
		}
		s.AccountID = account
		return true
	}})
	switch {
	case errors.Is(err, marketplace.ErrNotFound): // deleted meanwhile
		notFound()
		return
	case err != nil:
		s.unavailable(w, r, "storing the account", err)
		return
	}
	if res.Changed {
		s.log.Info("subscription linked to an account", "request_id", RequestID(r.Context()), "provider", p, "subscription", sub.ID)
	}
	writeJSON(w, http.StatusOK, toSubscription(res.Subscription))
}

// checkAccountID says what is wrong with an account id, or "".
func checkAccountID(v string) string {
	switch {
	case v == "":
		return "must not be empty"
	case len(v) > maxAccountID:
		return fmt.Sprintf("is longer than %d bytes", maxAccountID)
	case !utf8.ValidString(v):
		return "is not valid UTF-8"
	case strings.ContainsFunc(v, unicode.IsControl):
		return "holds a control character"
	}
	return ""
}
