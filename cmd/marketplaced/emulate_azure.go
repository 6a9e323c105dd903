package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/saasmarket/marketplace/emulator/admin"

	emu "github.com/saasmarket/marketplace/emulator/azure"
)

// azureEmulator runs the Azure marketplace emulator (package emulator/azure).
type azureEmulator struct {
	addr, webhook, certFile, secret string
	faults                          admin.Faults
	dimensions                      catalogue
	opDelay, patchDelay             time.Duration
}

func newAzureEmulator() *azureEmulator { return &azureEmulator{} }

func (*azureEmulator) Name() string { return "azure" }

func (a *azureEmulator) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.addr, "azure-listen", "127.0.0.1:8443", "Azure emulator listen address (loopback; served over TLS)")
	fs.StringVar(&a.webhook, "azure-webhook-url", "", "publisher webhook URL the Azure emulator calls (empty: none)")
	fs.StringVar(&a.certFile, "azure-cert-file", filepath.Join(os.TempDir(), "azure-emulator-cert.pem"), "where to write the Azure emulator's self-signed TLS certificate")
	fs.StringVar(&a.secret, "azure-client-secret", "", "client secret the token endpoint requires (empty: any credential)")
	a.faults.RegisterFlags(fs, "azure")
	fs.Var(&a.dimensions, "azure-dimensions", "Azure emulator: plans and the dimensions each meters, `plan=dim,dim;plan=dim` (empty: plans basic and pro, any dimension)")
	fs.DurationVar(&a.opDelay, "azure-operation-delay", 10*time.Second, "how long an Azure operation nobody answers takes to succeed (Azure: about 10 s)")
	fs.DurationVar(&a.patchDelay, "azure-patch-delay", time.Second, "how long an Azure operation the publisher PATCHed stays InProgress before it completes (0: at once)")
}

func (a *azureEmulator) Start(ctx context.Context, logger *slog.Logger) (string, error) {
	faults, err := emu.FaultsFrom(a.faults)
	if err != nil {
		return "", fmt.Errorf("the -azure-… fault flags: %w", err)
	}
	cfg := emu.Config{WebhookURL: a.webhook, Faults: faults, OperationDelay: a.opDelay, PatchDelay: a.patchDelay, Logger: logger}
	if a.secret != "" {
		cfg.PublisherApp = emu.DefaultPublisherApp
		cfg.Clients = map[string]string{cfg.PublisherApp: a.secret}
	}
	for _, plan := range slices.Sorted(maps.Keys(a.dimensions)) {
		cfg.Plans = append(cfg.Plans, emu.Plan{ID: plan, DisplayName: plan, Dimensions: a.dimensions[plan]})
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
admin API        %s/emulator/ (docs/emulators.md): buyers, buyers/{id}/events, bill, faults
new buyer        curl --cacert %s -X POST %s/emulator/buyers -d '{"plan":"%s"}'
bill             curl --cacert %s %s/emulator/bill
faults           %s`,
		base, base, emu.APIVersion, base, c.TenantID, c.PublisherApp, c.PublisherApp, c.TenantID, base, c.TenantID,
		a.certFile, base, a.certFile, base, c.Plans[0].ID, a.certFile, base, describeFaults(a.faults)), nil
}
