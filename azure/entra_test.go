package azure_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/saasmarket/marketplace/azure"
	emu "github.com/saasmarket/marketplace/emulator/azure"
)

// countTokens counts calls to the token endpoint.
type countTokens struct {
	next http.RoundTripper
	n    atomic.Int32
}

func (c *countTokens) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token") {
		c.n.Add(1)
	}
	return c.next.RoundTrip(r)
}

// TestCredentials gets tokens from the emulator's Entra endpoint with each
// kind of credential azidentity offers for a server (managed identity
// needs an Azure host and is not covered), and calls the API with them.
func TestCredentials(t *testing.T) {
	e := emu.New(emu.Config{Clients: map[string]string{"secret-app": "pw", "cert-app": "", "wl-app": ""}, Logger: discard})
	srv := httptest.NewTLSServer(e)
	defer srv.Close()
	tenant := e.Config().TenantID

	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "publisher"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, _ := x509.ParseCertificate(der)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3bCJ9.c2ln"), 0o600)

	cases := []struct {
		name string
		cfg  azure.CredentialConfig
	}{
		{"client secret", azure.CredentialConfig{ClientID: "secret-app", ClientSecret: "pw"}},
		{"certificate", azure.CredentialConfig{ClientID: "cert-app", Certificates: []*x509.Certificate{cert}, Key: key}},
		{"workload identity", azure.CredentialConfig{ClientID: "wl-app", TokenFile: tokenFile}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			counter := &countTokens{next: srv.Client().Transport}
			hc := &http.Client{Transport: counter}
			tc.cfg.TenantID, tc.cfg.Authority, tc.cfg.HTTPClient = tenant, srv.URL, hc
			cred, err := azure.NewCredential(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			client := azure.NewClient(azure.ClientConfig{BaseURL: srv.URL + "/api", HTTPClient: hc, Tokens: azure.NewTokens(cred, 0)})
			for range 3 {
				if _, err := client.ListSubscriptions(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			if n := counter.n.Load(); n != 1 {
				t.Errorf("%d token requests for 3 calls, want 1", n)
			}
		})
	}
	if _, err := azure.NewCredential(azure.CredentialConfig{TenantID: tenant}); err == nil {
		t.Error("no credential configured, no error")
	}
	cred, _ := azure.NewCredential(azure.CredentialConfig{TenantID: tenant, ClientID: "secret-app", ClientSecret: "wrong", Authority: srv.URL, HTTPClient: srv.Client()})
	if _, err := azure.NewTokens(cred, 0).Token(t.Context()); err == nil {
		t.Error("a wrong secret got a token")
	}
}

// fixedCred hands out tokens valid for a given time, counting requests.
type fixedCred struct {
	life time.Duration
	n    atomic.Int32
}

func (c *fixedCred) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if len(o.Scopes) != 1 || o.Scopes[0] != azure.ResourceID+"/.default" {
		return azcore.AccessToken{}, context.Canceled
	}
	n := c.n.Add(1)
	return azcore.AccessToken{Token: "t" + string(rune('0'+n)), ExpiresOn: time.Now().Add(c.life)}, nil
}

// TestTokensRenewNearExpiry: a token is reused until the margin before
// its expiry, then renewed.
func TestTokensRenewNearExpiry(t *testing.T) {
	long := &fixedCred{life: time.Hour}
	ts := azure.NewTokens(long, 5*time.Minute)
	for range 5 {
		if _, err := ts.Token(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if long.n.Load() != 1 {
		t.Errorf("%d requests for a 1 h token, want 1", long.n.Load())
	}
	short := &fixedCred{life: time.Minute} // inside the margin: renewed every time
	ts = azure.NewTokens(short, 5*time.Minute)
	for range 3 {
		ts.Token(t.Context())
	}
	if short.n.Load() != 3 {
		t.Errorf("%d requests for tokens within the margin, want 3", short.n.Load())
	}
}
