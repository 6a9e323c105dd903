package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	emu "github.com/saasmarket/marketplace/emulator/azure"
)

// azureEmulator runs the Azure marketplace emulator (package emulator/azure).
type azureEmulator struct {
	addr, webhook, certFile, secret string
	faults                          emu.Faults
	opDelay, patchDelay             time.Duration
}

func newAzureEmulator() *azureEmulator { return &azureEmulator{} }

func (*azureEmulator) Name() string { return "azure" }

func (a *azureEmulator) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.addr, "azure-listen", "127.0.0.1:8443", "Azure emulator listen address (loopback; served over TLS)")
	fs.StringVar(&a.webhook, "azure-webhook-url", "", "publisher webhook URL the Azure emulator calls (empty: none)")
	fs.StringVar(&a.certFile, "azure-cert-file", filepath.Join(os.TempDir(), "azure-emulator-cert.pem"), "where to write the Azure emulator's self-signed TLS certificate")
	fs.StringVar(&a.secret, "azure-client-secret", "", "client secret the token endpoint requires (empty: any credential)")
	fs.Float64Var(&a.faults.ThrottleRate, "azure-throttle-rate", 0, "fraction of Azure API calls answered 429")
	fs.DurationVar(&a.faults.RetryAfter, "azure-retry-after", time.Second, "Retry-After of the Azure emulator's 429 answers")
	fs.Float64Var(&a.faults.ErrorRate, "azure-error-rate", 0, "fraction of Azure API calls answered 500")
	fs.Float64Var(&a.faults.DropRate, "azure-drop-rate", 0, "fraction of Azure API calls applied, then their response dropped")
	fs.DurationVar(&a.faults.Latency, "azure-latency", 0, "latency added to every Azure API call")
	fs.BoolVar(&a.faults.MeteringOnly, "azure-faults-metering-only", true, "inject the Azure faults into the Metering API only")
	fs.DurationVar(&a.opDelay, "azure-operation-delay", 2*time.Second, "how long an Azure operation nobody answers takes to succeed")
	fs.DurationVar(&a.patchDelay, "azure-patch-delay", time.Second, "how long an Azure operation the publisher PATCHed stays InProgress before it completes (0: at once)")
}

func (a *azureEmulator) Start(ctx context.Context, logger *slog.Logger) (string, error) {
	cfg := emu.Config{WebhookURL: a.webhook, Faults: a.faults, OperationDelay: a.opDelay, PatchDelay: a.patchDelay, Logger: logger}
	if a.secret != "" {
		cfg.PublisherApp = emu.DefaultPublisherApp
		cfg.Clients = map[string]string{cfg.PublisherApp: a.secret}
	}
	e := emu.New(cfg)
	base, certPEM, err := e.Start(ctx, a.addr)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(a.certFile, certPEM, 0o644); err != nil {
		return "", fmt.Errorf("write certificate: %w", err)
	}
	c := e.Config()
	return fmt.Sprintf(`base URL         %s
APIs             %s/api (api-version %s)
Entra authority  %s (tenant %s, client id %s)
webhook tokens   aud %s, tid %s, keys %s/%s/discovery/v2.0/keys
TLS certificate  %s (trust it: azure.CredentialConfig.HTTPClient / SSL_CERT_FILE)
purchase         curl --cacert %s -X POST %s/emulator/purchases -d '{"planId":"basic"}'
bill             curl --cacert %s %s/emulator/bill`,
		base, base, emu.APIVersion, base, c.TenantID, c.PublisherApp, c.PublisherApp, c.TenantID, base, c.TenantID,
		a.certFile, a.certFile, base, a.certFile, base), nil
}
