package azure

import (
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

func (e *Emulator) baseOf(r *http.Request) string {
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	return scheme + "://" + r.Host
}

func (e *Emulator) serveOpenID(w http.ResponseWriter, r *http.Request) {
	base := e.baseOf(r)
	t := r.PathValue("tenant")
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                base + "/" + t + "/v2.0",
		"authorization_endpoint":                base + "/" + t + "/oauth2/v2.0/authorize",
		"token_endpoint":                        base + "/" + t + "/oauth2/v2.0/token",
		"jwks_uri":                              base + "/" + t + "/discovery/v2.0/keys",
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt"},
	})
}

// serveToken is the client-credentials grant: a client secret or a client
// assertion (certificate, workload identity). Assertions are not verified.
func (e *Emulator) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": err.Error()})
		return
	}
	bad := func(code, desc string) {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": code, "error_description": desc, "error_codes": []int{7000215}})
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		bad("unsupported_grant_type", "only client_credentials is supported")
		return
	}
	id := r.PostForm.Get("client_id")
	secret, known := e.cfg.Clients[id]
	if !known {
		bad("unauthorized_client", "unknown client "+quote(id))
		return
	}
	got, assertion := r.PostForm.Get("client_secret"), r.PostForm.Get("client_assertion")
	if secret != "" && got != secret {
		bad("invalid_client", "invalid client secret")
		return
	}
	if secret == "" && got == "" && assertion == "" {
		bad("invalid_client", "no client credential")
		return
	}
	scope, resource := r.PostForm.Get("scope"), r.PostForm.Get("resource")
	if resource == "" {
		for _, s := range strings.Fields(scope) {
			if r, ok := strings.CutSuffix(s, "/.default"); ok {
				resource = r
			}
		}
	}
	if resource != ResourceID {
		bad("invalid_resource", "the emulator issues tokens for "+ResourceID+" only, asked for "+quote(resource))
		return
	}
	now := e.now()
	tok, err := e.sign(jwt.MapClaims{
		"aud": ResourceID, "iss": "https://sts.windows.net/" + r.PathValue("tenant") + "/",
		"tid": r.PathValue("tenant"), "appid": id, "azp": id, "sub": id,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": tok})
}

func (e *Emulator) sign(c jwt.MapClaims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	t.Header["kid"] = e.kid
	return t.SignedString(e.key)
}

// JWKS is the emulator's key set, as /{tenant}/discovery/v2.0/keys serves it.
func (e *Emulator) JWKS() map[string]any {
	pub := e.key.PublicKey
	return map[string]any{"keys": []map[string]any{{
		"kty": "RSA", "use": "sig", "kid": e.kid, "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}}
}

// PublicKey returns the key that verifies the emulator's tokens.
func (e *Emulator) PublicKey() *rsa.PublicKey { return &e.key.PublicKey }

// KeyID returns the kid of the emulator's signing key.
func (e *Emulator) KeyID() string { return e.kid }

func (e *Emulator) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, e.JWKS())
}

// checkBearer accepts an access token the emulator issued for the APIs.
func (e *Emulator) checkBearer(r *http.Request) error {
	h := r.Header.Get("Authorization")
	raw, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return errors.New("no bearer token")
	}
	_, err := jwt.Parse(raw, func(*jwt.Token) (any, error) { return &e.key.PublicKey, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(ResourceID),
		jwt.WithTimeFunc(e.now), jwt.WithExpirationRequired())
	if err != nil {
		return fmt.Errorf("invalid bearer token: %w", err)
	}
	return nil
}

// WebhookClaims returns the claims of a genuine webhook token: what Azure
// puts in the token it sends to the publisher's webhook.
func (e *Emulator) WebhookClaims() jwt.MapClaims {
	now := e.now()
	return jwt.MapClaims{
		"aud": e.cfg.PublisherApp, "iss": "https://login.microsoftonline.com/" + e.cfg.TenantID + "/v2.0",
		"tid": e.cfg.TenantID, "appid": ResourceID, "azp": ResourceID, "ver": "2.0",
		"sub": uuid.NewString(), "oid": uuid.NewString(),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

// SignToken signs claims with the emulator's key (RS256, with its kid),
// for tests that forge variants of a genuine webhook token.
func (e *Emulator) SignToken(c jwt.MapClaims) (string, error) { return e.sign(c) }
