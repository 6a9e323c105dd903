package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/saasmarket/marketplace/emulator/admin"
	awsemu "github.com/saasmarket/marketplace/emulator/aws"
)

// awsEmulator runs the AWS marketplace emulator (package emulator/aws).
type awsEmulator struct {
	listen               string
	accessKey, secretKey string
	faults               admin.Faults
	products             catalogue
	ebEndpoint, ebHeader string
	ebSecret             string
	snsEndpoint, topic   string
}

func newAWSEmulator() *awsEmulator { return &awsEmulator{} }

func (*awsEmulator) Name() string { return "aws" }

func (a *awsEmulator) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.listen, "aws-listen", "127.0.0.1:8471", "AWS emulator: loopback `address` to listen on")
	fs.StringVar(&a.accessKey, "aws-access-key", "AKIDEMULATOR", "AWS emulator: access key id whose SigV4 signatures it accepts (empty: no signature check)")
	fs.StringVar(&a.secretKey, "aws-secret-key", "emulator-secret", "AWS emulator: the secret access key of -aws-access-key")
	a.faults.RegisterFlags(fs, "aws")
	fs.Var(&a.products, "aws-dimensions", "AWS emulator: the dimension catalogue, `product=dim,dim;product=dim` (empty: any product code and dimension)")
	fs.StringVar(&a.ebEndpoint, "aws-eventbridge-endpoint", "", "AWS emulator: `URL` that receives EventBridge events (POST /emulator/buyers/{id}/events)")
	fs.StringVar(&a.ebHeader, "aws-eventbridge-header", "X-Marketplace-Secret", "AWS emulator: header carrying the EventBridge API destination secret")
	fs.StringVar(&a.ebSecret, "aws-eventbridge-secret", "", "AWS emulator: the EventBridge API destination secret")
	fs.StringVar(&a.snsEndpoint, "aws-sns-endpoint", "", "AWS emulator: `URL` that receives signed SNS messages")
	fs.StringVar(&a.topic, "aws-sns-topic", "arn:aws:sns:us-east-1:287250355862:aws-mp-subscription-notification-emulator", "AWS emulator: SNS topic ARN of its messages")
}

func (a *awsEmulator) Start(ctx context.Context, logger *slog.Logger) (string, error) {
	host, _, err := net.SplitHostPort(a.listen)
	if err != nil {
		return "", fmt.Errorf("-aws-listen: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", errors.New("-aws-listen must be a loopback address: the emulator has no real security")
	}
	ln, err := net.Listen("tcp", a.listen)
	if err != nil {
		return "", err
	}
	base := "http://" + ln.Addr().String()
	faults, err := awsemu.FaultsFrom(a.faults)
	if err != nil {
		return "", fmt.Errorf("the -aws-… fault flags: %w", err)
	}
	cfg := awsemu.Config{Faults: faults, Products: a.products, Logger: logger, Notify: awsemu.NotifyConfig{
		EventBridgeEndpoint: a.ebEndpoint, EventBridgeHeader: a.ebHeader, EventBridgeSecret: a.ebSecret,
		SNSEndpoint: a.snsEndpoint, SNSTopicArn: a.topic, SNSCertURL: base + awsemu.SNSCertPath,
	}}
	if a.accessKey != "" {
		cfg.Credentials = []awsemu.Credentials{{AccessKeyID: a.accessKey, SecretAccessKey: a.secretKey}}
	}
	srv := &http.Server{Handler: awsemu.New(cfg), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("AWS emulator stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	var b strings.Builder
	fmt.Fprintf(&b, "base URL          %s (Metering, Entitlement and SQS JSON APIs at POST /)\n", base)
	fmt.Fprintf(&b, "official clients  export AWS_ENDPOINT_URL_MARKETPLACE_METERING=%s AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE=%s AWS_REGION=us-east-1\n", base, base)
	if a.accessKey != "" {
		fmt.Fprintf(&b, "                  export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s   # SigV4 is checked\n", a.accessKey, a.secretKey)
	}
	fmt.Fprintf(&b, "                  or in Go: o.BaseEndpoint = aws.String(%q)\n", base)
	fmt.Fprintf(&b, "admin API         %s/emulator/ (docs/emulators.md): buyers, buyers/{id}/events, bill, faults\n", base)
	fmt.Fprintf(&b, "new buyer         curl -X POST %s/emulator/buyers -d '{\"product\":\"prod-demo\"}'\n", base)
	fmt.Fprintf(&b, "bill              curl %s/emulator/bill\n", base)
	fmt.Fprintf(&b, "faults            %s", describeFaults(a.faults))
	return b.String(), nil
}
