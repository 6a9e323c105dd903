package aws

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Causes of refused signatures; serveAPI answers each with AWS's code.
var (
	errSignature  = errors.New("signature")                                             // InvalidSignatureException
	errUnknownKey = errors.New("the security token included in the request is invalid") // UnrecognizedClientException
	errExpired    = errors.New("signature expired")                                     // InvalidSignatureException, AWS's wording
	errNoAuth     = errors.New("missing authentication token")                          // MissingAuthenticationTokenException
)

// verifySigV4 checks r's AWS SigV4 Authorization header by signing the
// same request again with the SDK's signer and comparing.
func verifySigV4(r *http.Request, body []byte, creds []Credentials, now time.Time) error {
	auth := r.Header.Get("Authorization")
	const algo = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, algo) {
		return fmt.Errorf("%w: no AWS4-HMAC-SHA256 Authorization header", errNoAuth)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(auth[len(algo):], ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/") // AKID/date/region/service/aws4_request
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return fmt.Errorf("%w: malformed Credential", errSignature)
	}
	if scope[3] != "aws-marketplace" && scope[3] != "sqs" {
		return fmt.Errorf("%w: signing name %q, want aws-marketplace (or sqs)", errSignature, scope[3])
	}
	var secret string
	for _, c := range creds {
		if c.AccessKeyID == scope[0] {
			secret = c.SecretAccessKey
		}
	}
	if secret == "" {
		return fmt.Errorf("%w (unknown access key %q)", errUnknownKey, scope[0])
	}
	at, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return fmt.Errorf("%w: bad X-Amz-Date", errSignature)
	}
	// AWS's wording, which people and tools search for.
	const stamp = "20060102T150405Z"
	if now.Sub(at) > 15*time.Minute {
		return fmt.Errorf("%w: Signature expired: %s is now earlier than %s (%s - 15 min.)", errExpired,
			at.Format(stamp), now.Add(-15*time.Minute).UTC().Format(stamp), now.UTC().Format(stamp))
	}
	if at.Sub(now) > 15*time.Minute {
		return fmt.Errorf("%w: Signature not yet current: %s is still later than %s (%s + 15 min.)", errExpired,
			at.Format(stamp), now.Add(15*time.Minute).UTC().Format(stamp), now.UTC().Format(stamp))
	}
	// Rebuild the request with only the signed headers, and sign it.
	cp, err := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", errSignature, err)
	}
	cp.Header = http.Header{}
	cp.ContentLength = -1
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		switch h {
		case "host":
		case "content-length":
			cp.ContentLength = r.ContentLength
		default:
			for _, v := range r.Header.Values(h) {
				cp.Header.Add(h, v)
			}
		}
	}
	if !strings.Contains(";"+fields["SignedHeaders"]+";", ";content-length;") {
		cp.ContentLength = 0
	}
	sum := sha256.Sum256(body)
	cp.Header.Del("Authorization")
	err = v4.NewSigner().SignHTTP(r.Context(), awssdk.Credentials{AccessKeyID: scope[0], SecretAccessKey: secret, SessionToken: r.Header.Get("X-Amz-Security-Token")},
		cp, hex.EncodeToString(sum[:]), scope[3], scope[2], at)
	if err != nil {
		return fmt.Errorf("%w: %v", errSignature, err)
	}
	want := sigOf(cp.Header.Get("Authorization"))
	if subtle.ConstantTimeCompare([]byte(want), []byte(fields["Signature"])) != 1 {
		return fmt.Errorf("%w: does not match", errSignature)
	}
	return nil
}

func sigOf(auth string) string {
	_, sig, _ := strings.Cut(auth, "Signature=")
	return sig
}
