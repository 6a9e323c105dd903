package gcp

import (
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/keyset"
)

// Google's fixed key URLs and issuers.
const (
	// SignupIssuer is the iss of sign-up JWTs, and also the URL of their
	// keys (a JSON object kid → PEM certificate).
	SignupIssuer = "https://www.googleapis.com/robot/v1/metadata/x509/cloud-commerce-partner@system.gserviceaccount.com"
	// SignupKeysURL is where sign-up keys come from; nothing in a token can change it.
	SignupKeysURL = SignupIssuer
	// OIDCKeysURL serves the keys of Google-signed OIDC tokens (Pub/Sub push) in x509 form.
	OIDCKeysURL = "https://www.googleapis.com/oauth2/v1/certs"
)

// keySet holds the RSA keys published at an x509-style URL (a JSON object
// kid → PEM certificate) in a keyset.Cache: trusted for the response's
// Cache-Control max-age, refreshed outside any lock with a timeout, and
// refreshed at once (rate-limited) for an unknown kid, so a token signed
// with a newly published key is accepted promptly and forged kids cannot
// make it hammer Google.
type keySet struct {
	url   string
	cache *keyset.Cache[crypto.PublicKey]
}

// newKeySet returns a key set for url.
func newKeySet(url string, client *http.Client, clock func() time.Time) *keySet {
	return &keySet{url: url, cache: keyset.New(keyset.X509Map, keyset.Config{HTTPClient: client, Clock: clock})}
}

// key returns the key with id kid. An unknown kid wraps
// marketplace.ErrNotAuthentic; a key set that cannot be fetched is an error
// that does not.
func (k *keySet) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	key, err := k.cache.Key(ctx, k.url, kid)
	switch {
	case errors.Is(err, keyset.ErrUnknownKey):
		return nil, fmt.Errorf("%w: %w", marketplace.ErrNotAuthentic, err)
	case err != nil:
		return nil, fmt.Errorf("gcp: keys: %w", err)
	}
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: key %q is not an RSA key", marketplace.ErrNotAuthentic, kid)
	}
	return pub, nil
}

// verifier checks RS256 tokens from one key set.
type verifier struct {
	keys     *keySet
	issuers  []string
	audience string
	leeway   time.Duration
	clock    func() time.Time
}

func (v *verifier) parse(ctx context.Context, token string, claims jwt.Claims) error {
	if v.audience == "" {
		return errors.New("gcp: verifier has no audience configured")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithAudience(v.audience),
		jwt.WithLeeway(v.leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(v.clock),
	}
	_, err := jwt.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("no kid in the token header")
		}
		return v.keys.key(ctx, kid)
	}, opts...)
	var fe *keyset.FetchError
	switch {
	case errors.As(err, &fe) || errors.Is(err, keyset.ErrBadDocument):
		// Google's keys could not be had: not the token's fault.
		return err
	case err != nil:
		return fmt.Errorf("%w: %w", marketplace.ErrNotAuthentic, err)
	}
	iss, _ := claims.GetIssuer()
	for _, want := range v.issuers {
		if iss == want {
			return nil
		}
	}
	return fmt.Errorf("%w: issuer %q is not %q", marketplace.ErrNotAuthentic, iss, v.issuers[0])
}

// SignupVerifierConfig sets up a SignupVerifier.
type SignupVerifierConfig struct {
	// Audience is the product's domain, as registered in the Producer Portal.
	Audience string
	// KeysURL is for the emulator only; default SignupKeysURL.
	KeysURL string
	// Leeway for exp and iat; default 30 s.
	Leeway     time.Duration
	HTTPClient *http.Client
	Clock      func() time.Time
}

// SignupVerifier verifies Google's sign-up JWTs.
type SignupVerifier struct{ v verifier }

// NewSignupVerifier returns a verifier with its own key cache.
func NewSignupVerifier(cfg SignupVerifierConfig) *SignupVerifier {
	return &SignupVerifier{v: newVerifier(cfg.KeysURL, SignupKeysURL, []string{SignupIssuer}, cfg.Audience, cfg.Leeway, cfg.HTTPClient, cfg.Clock)}
}

func newVerifier(url, def string, issuers []string, aud string, leeway time.Duration, client *http.Client, clock func() time.Time) verifier {
	if url == "" {
		url = def
	}
	if leeway <= 0 {
		leeway = 30 * time.Second
	}
	if clock == nil {
		clock = time.Now
	}
	return verifier{keys: newKeySet(url, client, clock), issuers: issuers,
		audience: aud, leeway: leeway, clock: clock}
}

// Signup is what a verified sign-up token says.
type Signup struct {
	// AccountID is the procurement account id (the token's sub).
	AccountID string
	// UserIdentity is the buyer's obfuscated Google user id (google.user_identity).
	UserIdentity string
	// Roles are the buyer's roles (google.roles).
	Roles    []string
	IssuedAt time.Time
	Expires  time.Time
}

// maxSignupLifetime bounds exp - iat: Google's tokens live 5 minutes.
const maxSignupLifetime = time.Hour

type signupClaims struct {
	jwt.RegisteredClaims
	Google struct {
		UserIdentity string   `json:"user_identity"`
		Roles        []string `json:"roles"`
	} `json:"google"`
}

// Verify checks a sign-up token: RS256 with a key from the fixed key URL,
// exact issuer, audience, exp and iat with leeway, non-empty sub. Every
// refusal wraps marketplace.ErrNotAuthentic; keys that cannot be fetched
// are an error that does not.
func (s *SignupVerifier) Verify(ctx context.Context, token string) (*Signup, error) {
	var c signupClaims
	if err := s.v.parse(ctx, token, &c); err != nil {
		return nil, err
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: empty sub", marketplace.ErrNotAuthentic)
	}
	if c.IssuedAt == nil {
		return nil, fmt.Errorf("%w: no iat", marketplace.ErrNotAuthentic)
	}
	if c.ExpiresAt.Sub(c.IssuedAt.Time) > maxSignupLifetime {
		return nil, fmt.Errorf("%w: lifetime %v is longer than %v", marketplace.ErrNotAuthentic, c.ExpiresAt.Sub(c.IssuedAt.Time), maxSignupLifetime)
	}
	return &Signup{AccountID: c.Subject, UserIdentity: c.Google.UserIdentity, Roles: c.Google.Roles,
		IssuedAt: c.IssuedAt.Time, Expires: c.ExpiresAt.Time}, nil
}
