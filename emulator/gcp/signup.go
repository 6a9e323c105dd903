package gcp

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// SignupIssuer is the iss of Google's sign-up JWTs.
const SignupIssuer = "https://www.googleapis.com/robot/v1/metadata/x509/cloud-commerce-partner@system.gserviceaccount.com"

// PushIssuer is the iss of the OIDC tokens Pub/Sub push deliveries carry.
const PushIssuer = "https://accounts.google.com"

// newKey makes a fresh signing key and its self-signed certificate. The
// previous key's certificate is no longer published.
func (e *Emulator) newKey() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("emulator/gcp: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return fmt.Errorf("emulator/gcp: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "cloud-commerce-partner.emulator"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("emulator/gcp: certificate: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.key = key
	e.kid = fmt.Sprintf("emu-%x", serial)
	e.cert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return nil
}

// RotateKey replaces the signing key: tokens minted afterwards carry a kid
// that verifiers have not cached yet.
func (e *Emulator) RotateKey() error { return e.newKey() }

// serveKeys is the x509-style key URL: a JSON object kid → PEM certificate.
func (e *Emulator) serveKeys(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	keys := map[string]string{e.kid: string(e.cert)}
	e.mu.Unlock()
	w.Header().Set("Cache-Control", "public, max-age=3600")
	writeJSON(w, http.StatusOK, keys)
}

// TokenOptions change a minted token, mostly to forge a bad one in tests.
// Zero values take the real ones.
type TokenOptions struct {
	Issuer   string
	Audience string
	Subject  *string // nil: the account id
	IssuedAt time.Time
	Expiry   time.Duration // after IssuedAt; default 5 minutes
	Extra    map[string]any
}

// MintSignupToken returns the sign-up JWT Google would post for accountID:
// RS256 with the current kid, iss SignupIssuer, aud the configured
// audience, sub the account id, exp 5 minutes after iat, and the
// google.user_identity and google.roles claims.
func (e *Emulator) MintSignupToken(accountID string, o TokenOptions) (string, error) {
	if o.Issuer == "" {
		o.Issuer = SignupIssuer
	}
	if o.Audience == "" {
		o.Audience = e.cfg.Audience
	}
	sub := accountID
	if o.Subject != nil {
		sub = *o.Subject
	}
	claims := jwt.MapClaims{
		"google": map[string]any{"user_identity": "emulated-user-" + accountID, "roles": []string{"account_admin"}},
	}
	for k, v := range o.Extra {
		claims[k] = v
	}
	return e.sign(claims, o, sub)
}

// MintPushToken returns an OIDC token like the one Pub/Sub push attaches
// (iss PushIssuer, the push subscription's audience and service account).
func (e *Emulator) MintPushToken(audience, email string, o TokenOptions) (string, error) {
	if o.Issuer == "" {
		o.Issuer = PushIssuer
	}
	o.Audience = audience
	claims := jwt.MapClaims{"email": email, "email_verified": true}
	for k, v := range o.Extra {
		claims[k] = v
	}
	sub := "1234567890"
	if o.Subject != nil {
		sub = *o.Subject
	}
	return e.sign(claims, o, sub)
}

func (e *Emulator) sign(claims jwt.MapClaims, o TokenOptions, sub string) (string, error) {
	iat := o.IssuedAt
	if iat.IsZero() {
		iat = e.now()
	}
	if o.Expiry == 0 {
		o.Expiry = 5 * time.Minute
	}
	claims["iss"] = o.Issuer
	claims["aud"] = o.Audience
	claims["sub"] = sub
	claims["iat"] = iat.Unix()
	claims["exp"] = iat.Add(o.Expiry).Unix()
	e.mu.Lock()
	key, kid := e.key, e.kid
	e.mu.Unlock()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("emulator/gcp: sign token: %w", err)
	}
	return s, nil
}
