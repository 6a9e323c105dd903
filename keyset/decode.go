package keyset

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
)

// X509Map decodes Google's x509 key documents: a JSON object of key id →
// PEM certificate. It returns each certificate's public key.
func X509Map(body []byte) (map[string]crypto.PublicKey, error) {
	var certs map[string]string
	if err := json.Unmarshal(body, &certs); err != nil {
		return nil, fmt.Errorf("not a JSON object of certificates: %w", err)
	}
	keys := make(map[string]crypto.PublicKey, len(certs))
	for kid, p := range certs {
		cert, err := parsePEMCertificate([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", kid, err)
		}
		keys[kid] = cert.PublicKey
	}
	return keys, nil
}

// PEMCertificate decodes a document that is one PEM certificate (an SNS
// signing certificate), under the key id "".
func PEMCertificate(body []byte) (map[string]*x509.Certificate, error) {
	cert, err := parsePEMCertificate(body)
	if err != nil {
		return nil, err
	}
	return map[string]*x509.Certificate{"": cert}, nil
}

func parsePEMCertificate(p []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(p)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	// ParseCertificate accepts a key of an algorithm it does not know and
	// leaves PublicKey nil: such a certificate can verify nothing.
	switch cert.PublicKey.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("certificate with an unsupported public key (%v)", cert.PublicKeyAlgorithm)
	}
	return cert, nil
}

// jwk is the part of a JSON Web Key (RFC 7517, 7518) that verification needs.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// JWKS decodes a JSON Web Key Set (Entra ID's keys): RSA keys as
// *rsa.PublicKey and EC keys as *ecdsa.PublicKey, by kid. Keys for
// encryption, without a kid or of another type are left out; a malformed
// signing key fails the document.
func JWKS(body []byte) (map[string]crypto.PublicKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	keys := make(map[string]crypto.PublicKey, len(set.Keys))
	for _, k := range set.Keys {
		if k.Kid == "" || (k.Use != "" && k.Use != "sig") {
			continue
		}
		var (
			pub crypto.PublicKey
			err error
		)
		switch k.Kty {
		case "RSA":
			pub, err = k.rsa()
		case "EC":
			pub, err = k.ec()
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k.Kid, err)
		}
		if _, dup := keys[k.Kid]; !dup {
			keys[k.Kid] = pub
		}
	}
	return keys, nil
}

func (k jwk) rsa() (*rsa.PublicKey, error) {
	n, err := base64.RawURLEncoding.DecodeString(k.N)
	if err != nil || len(n) == 0 {
		return nil, errors.New("RSA modulus n is not base64url")
	}
	e, err := base64.RawURLEncoding.DecodeString(k.E)
	if err != nil || len(e) == 0 || len(e) > 4 {
		return nil, errors.New("RSA exponent e is not a base64url integer of at most 4 bytes")
	}
	exp := int(new(big.Int).SetBytes(e).Int64())
	if exp < 3 || exp%2 == 0 {
		return nil, fmt.Errorf("RSA exponent %d is not an odd number of at least 3", exp)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	if pub.N.BitLen() < 2048 {
		return nil, fmt.Errorf("RSA modulus of %d bits is shorter than 2048", pub.N.BitLen())
	}
	return pub, nil
}

func (k jwk) ec() (*ecdsa.PublicKey, error) {
	var curve elliptic.Curve
	switch k.Crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("EC curve %q is not P-256, P-384 or P-521", k.Crv)
	}
	size := (curve.Params().BitSize + 7) / 8
	x, errX := base64.RawURLEncoding.DecodeString(k.X)
	y, errY := base64.RawURLEncoding.DecodeString(k.Y)
	if errX != nil || errY != nil || len(x) != size || len(y) != size {
		return nil, fmt.Errorf("EC coordinates are not base64url of %d bytes", size)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, fmt.Errorf("EC key: %w", err)
	}
	return pub, nil
}
