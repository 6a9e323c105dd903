package gcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/golang-jwt/jwt/v5"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/lifecycle"
)

// maxPush bounds a push delivery's body.
const maxPush = 1 << 20

// pushVerifier verifies the OIDC token of a Pub/Sub push delivery.
type pushVerifier struct {
	v     verifier
	email string
}

// newPushVerifier returns a verifier of tokens for audience of the service
// account email, with its own key cache (keysURL "": OIDCKeysURL).
func newPushVerifier(audience, email, keysURL string, leeway time.Duration, client *http.Client, clock func() time.Time) *pushVerifier {
	return &pushVerifier{
		v: newVerifier(keysURL, OIDCKeysURL, []string{"https://accounts.google.com", "accounts.google.com"},
			audience, leeway, client, clock),
		email: email,
	}
}

type oidcClaims struct {
	jwt.RegisteredClaims
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
}

// verify checks the bearer token of a push request: RS256 with one of
// Google's OIDC keys, Google's issuer, the audience, exp and iat, and the
// verified email of the configured service account. Every refusal wraps
// marketplace.ErrNotAuthentic; keys that cannot be fetched are an error
// that does not.
func (p *pushVerifier) verify(ctx context.Context, token string) error {
	if p.email == "" {
		return fmt.Errorf("gcp: push: %w: no service account is configured (Config.PushServiceAccount)", marketplace.ErrNotAuthentic)
	}
	var c oidcClaims
	if err := p.v.parse(ctx, token, &c); err != nil {
		return err
	}
	if c.Email != p.email || !c.EmailVerified {
		return fmt.Errorf("%w: token of %q (verified %v), want %q", marketplace.ErrNotAuthentic, c.Email, c.EmailVerified, p.email)
	}
	return nil
}

// pushBody is the JSON of a push delivery.
type pushBody struct {
	Message *struct {
		Data      []byte            `json:"data"` // base64 on the wire
		MessageID string            `json:"messageId"`
		Attrs     map[string]string `json:"attributes"`
	} `json:"message"`
	Subscription string `json:"subscription"`
}

// decodePush reads a push delivery's body and the lifecycle message it
// carries. Its errors wrap marketplace.ErrInvalidInput.
func decodePush(body []byte) (*Message, error) {
	var b pushBody
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("gcp: %w: push body: %w", marketplace.ErrInvalidInput, err)
	}
	if b.Message == nil {
		return nil, fmt.Errorf("gcp: %w: push body without message", marketplace.ErrInvalidInput)
	}
	return DecodeMessage(b.Message.Data)
}

// NotificationHandler is the endpoint of a Pub/Sub push subscription on
// Google's lifecycle topic.
//
// It authenticates each delivery, or answers 401 "not authentic" (the
// detail is logged): the bearer token must be a Google-signed OIDC token
// for Config.PushAudience of Config.PushServiceAccount (verified email).
// Only then is the body read: a forged delivery is refused unread, and a
// body over 1 MiB answers 413. It decodes the message (400 naming what is
// wrong), stores it in the lifecycle engine's inbox, deduplicated by
// eventId, and only then answers
// 204, to a first delivery and a redelivery alike. It applies nothing
// itself: Process does. A store failure answers 500, and keys that cannot
// be fetched now 503: Pub/Sub delivers again.
func (p *Provider) NotificationHandler() http.Handler { return pushHandler{p} }

type pushHandler struct{ p *Provider }

func (h pushHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.p
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST Pub/Sub push deliveries here", http.StatusMethodNotAllowed)
		return
	}
	ctx := r.Context()
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	err := fmt.Errorf("gcp: push: %w: no bearer token", marketplace.ErrNotAuthentic)
	if ok && token != "" {
		err = p.push.verify(ctx, token)
	}
	switch {
	case errors.Is(err, marketplace.ErrNotAuthentic):
		p.deps.Logger.Warn("Google push delivery refused", "err", err)
		http.Error(w, "not authentic", http.StatusUnauthorized)
		return
	case err != nil:
		p.deps.Logger.Error("verify Google push token", "err", err)
		http.Error(w, "could not verify the delivery now; send it again", http.StatusServiceUnavailable)
		return
	}
	body, ok := lifecycle.ReadBody(w, r, maxPush)
	if !ok {
		return
	}
	m, err := decodePush(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	first, err := p.e.Accept(ctx, m.notification())
	switch {
	case errors.Is(err, marketplace.ErrInvalidInput):
		http.Error(w, err.Error(), http.StatusBadRequest)
	case err != nil:
		p.deps.Logger.Error("Google notification not stored; Pub/Sub will deliver it again", "event", m.EventID, "err", err)
		http.Error(w, "could not store the notification; send it again", http.StatusInternalServerError)
	default:
		p.deps.Logger.Debug("Google notification accepted", "event", m.EventID, "type", m.EventType, "first", first)
		w.WriteHeader(http.StatusNoContent)
	}
}

// LeaseExtension is what marketplaced serve sets as its Subscriber's
// ReceiveSettings.MaxDurationPerAckExtension: storing a message in the
// inbox takes milliseconds, so it is leased 10 s at a time rather than the
// client's default of up to a minute and more, and the messages a killed
// process held come back soon.
const LeaseExtension = 10 * time.Second

// Run is the pull loop: with Config.Subscriber set, it receives Google's
// lifecycle messages until ctx ends, stores each in the lifecycle engine's
// inbox and acknowledges it only once stored; one that could not be stored
// is nacked, and Pub/Sub delivers it again. A malformed message is
// acknowledged without being stored (a redelivery cannot mend it) and
// logged. Without a subscriber it waits for ctx. It returns nil when ctx
// ends, or the receive error. It does not apply what it stores: the
// engine's worker (lifecycle.Engine.Run) does.
func (p *Provider) Run(ctx context.Context) error {
	if p.cfg.Subscriber == nil {
		<-ctx.Done()
		return nil
	}
	err := p.cfg.Subscriber.Receive(ctx, func(ctx context.Context, msg *pubsub.Message) {
		m, err := DecodeMessage(msg.Data)
		first := false
		if err == nil {
			first, err = p.e.Accept(ctx, m.notification())
		}
		switch {
		case errors.Is(err, marketplace.ErrInvalidInput):
			p.deps.Logger.Warn("Pub/Sub message dropped: not a Google Marketplace lifecycle message", "message", msg.ID, "err", err)
		case err != nil:
			p.deps.Logger.Error("Google notification not stored; Pub/Sub will deliver it again", "message", msg.ID, "err", err)
			msg.Nack()
			return
		case err == nil:
			// Every ack with its ids: what a lost notification is traced by.
			p.deps.Logger.Debug("Google notification stored; acknowledging", "message", msg.ID, "event", m.EventID, "type", m.EventType, "first", first)
		}
		msg.Ack()
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("gcp: receive lifecycle messages: %w", err)
	}
	return nil
}
