package azure

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// ResourceID is the Entra application id of the marketplace APIs: the
// resource our tokens are for, and the appid/azp of Azure's webhook tokens.
const ResourceID = "20e940b3-4c77-4b0b-9a53-9e16a1b010a7"

// DefaultAuthority is Entra ID's authority host in Azure's public cloud.
const DefaultAuthority = "https://login.microsoftonline.com/"

// CredentialConfig selects how the publisher's app proves its identity to
// Entra ID. Exactly one of ClientSecret, Certificates, TokenFile or
// ManagedIdentity is used, in that order.
type CredentialConfig struct {
	TenantID string // the publisher's Entra tenant
	ClientID string // the publisher's app registration (or managed identity client id)
	// ClientSecret of the app registration.
	ClientSecret string
	// Certificates and Key of the app registration (azidentity.ParseCertificates reads PEM or PKCS#12).
	Certificates []*x509.Certificate
	Key          crypto.PrivateKey
	// TokenFile is a workload identity's federated token file (Kubernetes).
	TokenFile string
	// ManagedIdentity uses the Azure host's managed identity.
	ManagedIdentity bool
	// Authority is the Entra ID host; default DefaultAuthority. The
	// emulator's base URL stands in for it in tests and demos; it must be https.
	Authority string
	// HTTPClient for the token calls; default http.DefaultClient.
	HTTPClient *http.Client
}

// NewCredential returns the azidentity credential cfg describes.
func NewCredential(cfg CredentialConfig) (azcore.TokenCredential, error) {
	opts := azcore.ClientOptions{}
	authority := cfg.Authority
	if authority != "" && !strings.HasSuffix(authority, "/") {
		authority += "/"
	}
	custom := authority != "" && authority != DefaultAuthority
	if authority != "" {
		opts.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: authority, Services: map[cloud.ServiceName]cloud.ServiceConfiguration{}}
	}
	if cfg.HTTPClient != nil {
		opts.Transport = cfg.HTTPClient
	}
	switch {
	case cfg.ClientSecret != "":
		return azidentity.NewClientSecretCredential(cfg.TenantID, cfg.ClientID, cfg.ClientSecret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: custom})
	case len(cfg.Certificates) > 0:
		return azidentity.NewClientCertificateCredential(cfg.TenantID, cfg.ClientID, cfg.Certificates, cfg.Key,
			&azidentity.ClientCertificateCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: custom})
	case cfg.TokenFile != "":
		return azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions: opts, TenantID: cfg.TenantID, ClientID: cfg.ClientID, TokenFilePath: cfg.TokenFile,
			DisableInstanceDiscovery: custom})
	case cfg.ManagedIdentity:
		mo := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts}
		if cfg.ClientID != "" {
			mo.ID = azidentity.ClientID(cfg.ClientID)
		}
		return azidentity.NewManagedIdentityCredential(mo)
	}
	return nil, errors.New("azure: no credential configured (client secret, certificate, workload identity token file or managed identity)")
}

// Tokens is a TokenSource over an Entra ID credential for the marketplace
// APIs. It caches the token until shortly before it expires, so that the
// hot paths (metering, webhooks) do not wait on Entra ID.
type Tokens struct {
	cred   azcore.TokenCredential
	margin time.Duration
	now    func() time.Time
	mu     sync.Mutex
	tok    azcore.AccessToken
}

// NewTokens returns a token source; a token is renewed margin before its
// expiry (default 5 minutes).
func NewTokens(cred azcore.TokenCredential, margin time.Duration) *Tokens {
	if margin <= 0 {
		margin = 5 * time.Minute
	}
	return &Tokens{cred: cred, margin: margin, now: time.Now}
}

// Token returns a cached token, or a new one.
func (t *Tokens) Token(ctx context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tok.Token != "" && t.now().Add(t.margin).Before(t.tok.ExpiresOn) {
		return t.tok.Token, nil
	}
	tok, err := t.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{ResourceID + "/.default"}})
	if err != nil {
		return "", fmt.Errorf("azure: entra id token: %w", err)
	}
	t.tok = tok
	return tok.Token, nil
}
