package aws

// The seed API's metering client: see the package doc. New code uses
// Metering (LoadMetering) with the SDK's own credentials and retries.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering"

	"github.com/saasmarket/marketplace"
)

var _ MeteringAPI = (*MeteringClient)(nil)

// RequestSigner signs an HTTP request with AWS credentials.
type RequestSigner interface {
	Sign(req *http.Request) error
}

// SigV4Signer signs requests for AWS Marketplace (signing name
// aws-marketplace) with the SDK's SigV4 signer.
type SigV4Signer struct {
	Credentials awssdk.CredentialsProvider
	Region      string
	// Clock is the signing time; default time.Now.
	Clock func() time.Time
}

// NewSigV4Signer returns a signer for region.
func NewSigV4Signer(creds awssdk.CredentialsProvider, region string) *SigV4Signer {
	return &SigV4Signer{Credentials: creds, Region: region}
}

// Sign implements RequestSigner. It reads the body (through GetBody when
// set) to hash it.
func (s *SigV4Signer) Sign(req *http.Request) error {
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		if req.GetBody != nil {
			rc, err2 := req.GetBody()
			if err2 != nil {
				return fmt.Errorf("aws: sign: %w", err2)
			}
			body, err = io.ReadAll(rc)
			rc.Close()
		} else {
			body, err = io.ReadAll(req.Body)
			req.Body.Close()
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
		if err != nil {
			return fmt.Errorf("aws: sign: read body: %w", err)
		}
	}
	creds, err := s.Credentials.Retrieve(req.Context())
	if err != nil {
		return fmt.Errorf("aws: sign: credentials: %w", err)
	}
	now := time.Now
	if s.Clock != nil {
		now = s.Clock
	}
	sum := sha256.Sum256(body)
	req.Header.Del("Authorization")
	if err := v4.NewSigner().SignHTTP(req.Context(), creds, req, hex.EncodeToString(sum[:]), "aws-marketplace", s.Region, now().UTC()); err != nil {
		return fmt.Errorf("aws: sign: %w", err)
	}
	return nil
}

// MeteringClient is the seed's MeteringAPI: it calls Endpoint and signs
// every request with Signer (no signature if nil). It runs on the official
// SDK client, with the SDK's own signing and retries turned off in favour
// of Signer and Retry.
type MeteringClient struct {
	// Endpoint is the Metering Service's base URL, e.g.
	// https://metering.marketplace.us-east-1.amazonaws.com.
	Endpoint string
	// Signer signs HTTP requests with AWS credentials.
	Signer RequestSigner
	// HTTPClient is the HTTP client used for API calls; default one with a
	// 30 s timeout.
	HTTPClient *http.Client
	// Retry retries throttled calls and calls without an answer, resending
	// the identical request (AWS answers an identical metering record with
	// the same outcome). The zero value makes one attempt. An error of
	// BatchMeterUsage or MeterUsage that AWS may have applied (no answer,
	// an internal error, or a refusal after an attempt without an answer)
	// wraps marketplace.ErrOutcomeUnknown; after such an attempt,
	// UnprocessedRecords of a BatchMeterUsage answer may have been applied
	// too: resend them unchanged.
	Retry marketplace.RetryConfig

	once sync.Once
	m    *Metering
}

// NewMeteringClient creates a MeteringClient with the given endpoint and
// signer, and marketplace.DefaultRetryConfig.
func NewMeteringClient(endpoint string, signer RequestSigner) *MeteringClient {
	return &MeteringClient{Endpoint: endpoint, Signer: signer, HTTPClient: &http.Client{Timeout: 30 * time.Second},
		Retry: marketplace.DefaultRetryConfig()}
}

type signingDoer struct {
	signer RequestSigner
	hc     *http.Client
}

func (d signingDoer) Do(req *http.Request) (*http.Response, error) {
	if d.signer != nil {
		if err := d.signer.Sign(req); err != nil {
			return nil, err
		}
	}
	return d.hc.Do(req)
}

func (c *MeteringClient) metering() *Metering {
	c.once.Do(func() {
		hc := c.HTTPClient
		if hc == nil {
			hc = &http.Client{Timeout: 30 * time.Second}
		}
		region := "us-east-1"
		if s, ok := c.Signer.(*SigV4Signer); ok && s.Region != "" {
			region = s.Region
		}
		c.m = NewMetering(marketplacemetering.New(marketplacemetering.Options{
			Region: region, BaseEndpoint: awssdk.String(c.Endpoint),
			Credentials: awssdk.AnonymousCredentials{}, HTTPClient: signingDoer{c.Signer, hc},
			RetryMaxAttempts: 1,
		}))
	})
	return c.m
}

// call runs fn under c.Retry. Refusals other than throttling are final.
// The errors of metering calls that may have been applied wrap
// marketplace.ErrOutcomeUnknown.
func (c *MeteringClient) call(ctx context.Context, op string, metering bool, fn func() error) error {
	unknown := false
	err := marketplace.RetryFunc(ctx, c.Retry, "aws: "+op, func() error {
		err := fn()
		switch {
		case err == nil:
			return nil
		case !refused(err):
			unknown = true
			return err
		case errors.Is(err, ErrThrottling):
			return err
		}
		return marketplace.Permanent(err)
	})
	switch {
	case err == nil || !metering || !unknown || errors.Is(err, marketplace.ErrOutcomeUnknown):
		return err
	case refused(err):
		return fmt.Errorf("%w (an earlier attempt got no answer): %w", marketplace.ErrOutcomeUnknown, err)
	}
	return fmt.Errorf("%w: %w", marketplace.ErrOutcomeUnknown, err)
}

// ResolveCustomer implements MeteringAPI.
func (c *MeteringClient) ResolveCustomer(ctx context.Context, registrationToken string) (out *ResolveCustomerOutput, err error) {
	err = c.call(ctx, "ResolveCustomer", false, func() (err error) {
		out, err = c.metering().ResolveCustomer(ctx, registrationToken)
		return err
	})
	return out, err
}

// BatchMeterUsage implements MeteringAPI.
func (c *MeteringClient) BatchMeterUsage(ctx context.Context, input *BatchMeterUsageInput) (out *BatchMeterUsageOutput, err error) {
	err = c.call(ctx, "BatchMeterUsage", true, func() (err error) {
		out, err = c.metering().BatchMeterUsage(ctx, input)
		return err
	})
	return out, err
}

// MeterUsage implements MeteringAPI.
func (c *MeteringClient) MeterUsage(ctx context.Context, input *MeterUsageInput) (out *MeterUsageOutput, err error) {
	err = c.call(ctx, "MeterUsage", true, func() (err error) {
		out, err = c.metering().MeterUsage(ctx, input)
		return err
	})
	return out, err
}

// RegisterUsage calls RegisterUsage.
func (c *MeteringClient) RegisterUsage(ctx context.Context, input *RegisterUsageInput) (out *RegisterUsageOutput, err error) {
	err = c.call(ctx, "RegisterUsage", false, func() (err error) {
		out, err = c.metering().RegisterUsage(ctx, input)
		return err
	})
	return out, err
}
