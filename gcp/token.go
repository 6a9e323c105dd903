package gcp

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
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

// ErrInvalidToken is wrapped by every refusal of a sign-up or push token.
var ErrInvalidToken = errors.New("gcp: invalid token")

// KeySet fetches and caches the RSA keys published at an x509-style URL. An
// unknown kid triggers a refresh, at most once per MinRefresh, so forged
// kids cannot make it hammer Google.
type KeySet struct {
	url        string
	client     *http.Client
	clock      func() time.Time
	minRefresh time.Duration

	mu      sync.Mutex
	keys    map[string]*rsa.PublicKey
	fetched time.Time
}

// KeySetConfig tunes a KeySet. Zero values take the defaults.
type KeySetConfig struct {
	HTTPClient *http.Client     // default http.DefaultClient
	Clock      func() time.Time // default time.Now
	MinRefresh time.Duration    // default 30 s
}

// NewKeySet returns a key set for url.
func NewKeySet(url string, cfg KeySetConfig) *KeySet {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.MinRefresh <= 0 {
		cfg.MinRefresh = 30 * time.Second
	}
	return &KeySet{url: url, client: cfg.HTTPClient, clock: cfg.Clock, minRefresh: cfg.MinRefresh}
}

// Key returns the key with id kid, fetching the set when kid is unknown.
func (k *KeySet) Key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if key, ok := k.keys[kid]; ok {
		return key, nil
	}
	if k.keys != nil && k.clock().Sub(k.fetched) < k.minRefresh {
		return nil, fmt.Errorf("%w: unknown key id %q", ErrInvalidToken, kid)
	}
	keys, err := k.fetch(ctx)
	if err != nil {
		return nil, err
	}
	k.keys, k.fetched = keys, k.clock()
	if key, ok := keys[kid]; ok {
		return key, nil
	}
	return nil, fmt.Errorf("%w: unknown key id %q", ErrInvalidToken, kid)
}

func (k *KeySet) fetch(ctx context.Context) (map[string]*rsa.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("gcp: keys: %w", err)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("gcp: fetch keys from %s: %w", k.url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("gcp: read keys from %s: %w", k.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("gcp: fetch keys from %s: HTTP %d", k.url, resp.StatusCode)
	}
	return parseX509Keys(body)
}

// parseX509Keys reads a JSON object kid → PEM certificate.
func parseX509Keys(body []byte) (map[string]*rsa.PublicKey, error) {
	var certs map[string]string
	if err := json.Unmarshal(body, &certs); err != nil {
		return nil, fmt.Errorf("gcp: keys: %w", err)
	}
	keys := make(map[string]*rsa.PublicKey, len(certs))
	for kid, p := range certs {
		block, _ := pem.Decode([]byte(p))
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("gcp: keys: %q is not a PEM certificate", kid)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("gcp: keys: %q: %w", kid, err)
		}
		pub, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("gcp: keys: %q is not an RSA key", kid)
		}
		keys[kid] = pub
	}
	return keys, nil
}

// verifier checks RS256 tokens from one key set.
type verifier struct {
	keys     *KeySet
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
		return v.keys.Key(ctx, kid)
	}, opts...)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	iss, _ := claims.GetIssuer()
	for _, want := range v.issuers {
		if iss == want {
			return nil
		}
	}
	return fmt.Errorf("%w: issuer %q is not %q", ErrInvalidToken, iss, v.issuers[0])
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
	return verifier{keys: NewKeySet(url, KeySetConfig{HTTPClient: client, Clock: clock}), issuers: issuers,
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
// refusal wraps ErrInvalidToken.
func (s *SignupVerifier) Verify(ctx context.Context, token string) (*Signup, error) {
	var c signupClaims
	if err := s.v.parse(ctx, token, &c); err != nil {
		return nil, err
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: empty sub", ErrInvalidToken)
	}
	if c.IssuedAt == nil {
		return nil, fmt.Errorf("%w: no iat", ErrInvalidToken)
	}
	if c.ExpiresAt.Sub(c.IssuedAt.Time) > maxSignupLifetime {
		return nil, fmt.Errorf("%w: lifetime %v is longer than %v", ErrInvalidToken, c.ExpiresAt.Sub(c.IssuedAt.Time), maxSignupLifetime)
	}
	return &Signup{AccountID: c.Subject, UserIdentity: c.Google.UserIdentity, Roles: c.Google.Roles,
		IssuedAt: c.IssuedAt.Time, Expires: c.ExpiresAt.Time}, nil
}
