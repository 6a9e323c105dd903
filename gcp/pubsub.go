package gcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/golang-jwt/jwt/v5"
)

// ConsumerConfig tunes a Consumer.
type ConsumerConfig struct {
	// MaxOutstanding is the flow control limit of messages being handled
	// at once; default 10.
	MaxOutstanding int
	// MaxOutstandingBytes; default 10 MB.
	MaxOutstandingBytes int
	Logger              *slog.Logger
}

// Consumer pulls lifecycle messages from the seller's Pub/Sub subscription
// and hands them to a Lifecycle. A message is acknowledged only after
// Handle stored its change (or found nothing to do); otherwise it is
// nacked and Pub/Sub delivers it again.
type Consumer struct {
	sub *pubsub.Subscriber
	lc  *Lifecycle
	log *slog.Logger
}

// NewConsumer sets sub's flow control and returns a consumer.
func NewConsumer(sub *pubsub.Subscriber, lc *Lifecycle, cfg ConsumerConfig) *Consumer {
	if cfg.MaxOutstanding <= 0 {
		cfg.MaxOutstanding = 10
	}
	if cfg.MaxOutstandingBytes <= 0 {
		cfg.MaxOutstandingBytes = 10 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	sub.ReceiveSettings.MaxOutstandingMessages = cfg.MaxOutstanding
	sub.ReceiveSettings.MaxOutstandingBytes = cfg.MaxOutstandingBytes
	return &Consumer{sub: sub, lc: lc, log: cfg.Logger}
}

// Run receives until ctx is done, then returns nil; or the receive error.
func (c *Consumer) Run(ctx context.Context) error {
	err := c.sub.Receive(ctx, func(ctx context.Context, m *pubsub.Message) {
		if err := c.lc.Handle(ctx, m.Data); err != nil {
			c.log.Warn("gcp lifecycle message not applied; it will be redelivered", "message", m.ID, "err", err)
			m.Nack()
			return
		}
		m.Ack()
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("gcp: receive lifecycle messages: %w", err)
	}
	return nil
}

// PushVerifierConfig sets up a PushVerifier.
type PushVerifierConfig struct {
	// Audience configured on the push subscription (default: the push URL).
	Audience string
	// ServiceAccountEmail the push subscription authenticates as.
	ServiceAccountEmail string
	// KeysURL is for the emulator only; default OIDCKeysURL.
	KeysURL    string
	Leeway     time.Duration
	HTTPClient *http.Client
	Clock      func() time.Time
}

// PushVerifier verifies the OIDC token of a Pub/Sub push delivery.
type PushVerifier struct {
	v     verifier
	email string
}

// NewPushVerifier returns a verifier with its own key cache.
func NewPushVerifier(cfg PushVerifierConfig) *PushVerifier {
	return &PushVerifier{
		v: newVerifier(cfg.KeysURL, OIDCKeysURL, []string{"https://accounts.google.com", "accounts.google.com"},
			cfg.Audience, cfg.Leeway, cfg.HTTPClient, cfg.Clock),
		email: cfg.ServiceAccountEmail,
	}
}

type oidcClaims struct {
	jwt.RegisteredClaims
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
}

// Verify checks the bearer token of a push request.
func (p *PushVerifier) Verify(ctx context.Context, token string) error {
	if p.email == "" {
		return errors.New("gcp: PushVerifier has no service account email configured")
	}
	var c oidcClaims
	if err := p.v.parse(ctx, token, &c); err != nil {
		return err
	}
	if c.Email != p.email || !c.EmailVerified {
		return fmt.Errorf("%w: token of %q (verified %v), want %q", ErrInvalidToken, c.Email, c.EmailVerified, p.email)
	}
	return nil
}

// PushHandler is the endpoint of a Pub/Sub push subscription: it verifies
// the OIDC token, then applies the message. 204 acknowledges; any error
// status makes Pub/Sub deliver it again.
type PushHandler struct {
	Verifier  *PushVerifier
	Lifecycle *Lifecycle
	Logger    *slog.Logger
}

// pushBody is the JSON of a push delivery.
type pushBody struct {
	Message struct {
		Data      []byte            `json:"data"` // base64 on the wire
		MessageID string            `json:"messageId"`
		Attrs     map[string]string `json:"attributes"`
	} `json:"message"`
	Subscription string `json:"subscription"`
}

// ServeHTTP verifies the bearer token, then hands the message to the Lifecycle.
func (h *PushHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := h.Logger
	if log == nil {
		log = slog.Default()
	}
	if r.Method != http.MethodPost {
		http.Error(w, "push expects POST", http.StatusMethodNotAllowed)
		return
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		http.Error(w, "missing bearer token", http.StatusUnauthorized)
		return
	}
	if err := h.Verifier.Verify(r.Context(), token); err != nil {
		log.Warn("gcp push: token refused", "err", err)
		// The log keeps the reason; the caller learns nothing about our checks.
		if errors.Is(err, ErrInvalidToken) {
			http.Error(w, "the push token is not authentic", http.StatusUnauthorized)
		} else {
			http.Error(w, "cannot verify the push token now", http.StatusServiceUnavailable)
		}
		return
	}
	var body pushBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil {
		// Redelivering cannot fix it: acknowledge with a log line.
		log.Error("gcp push: malformed body acknowledged", "err", err)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err := h.Lifecycle.Handle(r.Context(), body.Message.Data); err != nil {
		log.Warn("gcp push: message not applied; Pub/Sub will redeliver", "message", body.Message.MessageID, "err", err)
		http.Error(w, "not applied", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
