package keyset

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

// certPEM returns a self-signed PEM certificate for the i-th test key.
func certPEM(t testing.TB, i int) string {
	k := rsaKey(t, i)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestX509Map(t *testing.T) {
	body, _ := json.Marshal(map[string]string{"k0": certPEM(t, 0), "k1": certPEM(t, 1)})
	keys, err := X509Map(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !rsaKey(t, 1).PublicKey.Equal(keys["k1"]) {
		t.Fatalf("keys %v", keys)
	}
	for _, bad := range []string{`[]`, `{"k": "not pem"}`, `{"k": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}`} {
		if _, err := X509Map([]byte(bad)); err == nil {
			t.Errorf("X509Map(%q) accepted", bad)
		}
	}
}

func TestPEMCertificate(t *testing.T) {
	certs, err := PEMCertificate([]byte(certPEM(t, 2)))
	if err != nil {
		t.Fatal(err)
	}
	if c := certs[""]; c == nil || !rsaKey(t, 2).PublicKey.Equal(c.PublicKey) {
		t.Fatalf("certs %v", certs)
	}
	if _, err := PEMCertificate([]byte("<html>")); err == nil {
		t.Error("HTML accepted as a certificate")
	}
}

func TestJWKS(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecBytes, _ := ec.PublicKey.Bytes()
	b64 := base64.RawURLEncoding.EncodeToString
	ecX, ecY := b64(ecBytes[1:33]), b64(ecBytes[33:])
	rsaN := b64(rsaKey(t, 0).N.Bytes())
	tests := []struct {
		name, body string
		kids       []string // kids decoded; nil with wantErr
		wantErr    string
	}{
		{"rsa and ec", `{"keys":[{"kty":"RSA","kid":"r","use":"sig","n":"` + rsaN + `","e":"AQAB"},{"kty":"EC","kid":"e","crv":"P-256","x":"` + ecX + `","y":"` + ecY + `"}]}`, []string{"r", "e"}, ""},
		{"encryption key, no kid, other kty: left out", `{"keys":[{"kty":"RSA","kid":"enc","use":"enc","n":"` + rsaN + `","e":"AQAB"},{"kty":"RSA","n":"` + rsaN + `","e":"AQAB"},{"kty":"OKP","kid":"o"}]}`, []string{}, ""},
		{"empty set", `{"keys":[]}`, []string{}, ""},
		{"not json", `<html>`, nil, "not a JWKS"},
		{"bad modulus", `{"keys":[{"kty":"RSA","kid":"r","n":"!!","e":"AQAB"}]}`, nil, "modulus"},
		{"short modulus", `{"keys":[{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"}]}`, nil, "shorter than 2048"},
		{"even exponent", `{"keys":[{"kty":"RSA","kid":"r","n":"` + rsaN + `","e":"Ag"}]}`, nil, "exponent"},
		{"point off the curve", `{"keys":[{"kty":"EC","kid":"e","crv":"P-256","x":"` + ecX + `","y":"` + ecX + `"}]}`, nil, "EC key"},
		{"unknown curve", `{"keys":[{"kty":"EC","kid":"e","crv":"P-192","x":"` + ecX + `","y":"` + ecY + `"}]}`, nil, "curve"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := JWKS([]byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != len(tc.kids) {
				t.Fatalf("kids %v, want %v", keys, tc.kids)
			}
			for _, kid := range tc.kids {
				if keys[kid] == nil {
					t.Fatalf("kid %q missing", kid)
				}
			}
			if k, ok := keys["r"].(*rsa.PublicKey); ok && !rsaKey(t, 0).PublicKey.Equal(k) {
				t.Fatal("RSA key decoded wrong")
			}
			if k, ok := keys["e"].(*ecdsa.PublicKey); ok && !ec.PublicKey.Equal(k) {
				t.Fatal("EC key decoded wrong")
			}
		})
	}
}

// Fuzz the decoders of what a publisher's URL (or a man in the middle of
// it) serves: they must not panic, and what they accept must be usable.
func FuzzJWKS(f *testing.F) {
	f.Add(jwksOf(f, "A", "B"))
	f.Add([]byte(`{"keys":[{"kty":"EC","kid":"e","crv":"P-521","x":"AA","y":"AA"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"r","n":"AQAB","e":"AAAAAAE"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		keys, err := JWKS(body)
		if err != nil {
			return
		}
		for kid, k := range keys {
			if k == nil || kid == "" {
				t.Fatalf("JWKS accepted an empty key or kid: %q %v", kid, k)
			}
		}
	})
}

func FuzzX509Map(f *testing.F) {
	body, _ := json.Marshal(map[string]string{"k0": certPEM(f, 0)})
	f.Add(body)
	f.Add([]byte(certPEM(f, 1)))
	f.Fuzz(func(t *testing.T, body []byte) {
		if keys, err := X509Map(body); err == nil {
			for kid, k := range keys {
				if k == nil {
					t.Fatalf("nil key for %q", kid)
				}
			}
		}
		if certs, err := PEMCertificate(body); err == nil && certs[""] == nil {
			t.Fatal("PEMCertificate accepted no certificate")
		}
	})
}
