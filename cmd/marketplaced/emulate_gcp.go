package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/saasmarket/marketplace/emulator/admin"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
)

// gcpEmulator runs the GCP marketplace emulator (package emulator/gcp).
type gcpEmulator struct {
	addr, provider, service, metrics, audience string
	pubsubProject, pubsubTopic                 string
	activationDelay                            time.Duration
	faults                                     admin.Faults
}

func newGCPEmulator() *gcpEmulator { return &gcpEmulator{} }

func (*gcpEmulator) Name() string { return "gcp" }

func (g *gcpEmulator) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "gcp-listen", "127.0.0.1:8086", "GCP emulator listen address (loopback)")
	fs.StringVar(&g.provider, "gcp-provider", "demo-provider", "GCP provider id (providers/{id}/...)")
	fs.StringVar(&g.service, "gcp-service", "demo.endpoints.demo-project.cloud.goog", "GCP Service Control service name of the product")
	fs.StringVar(&g.metrics, "gcp-metrics", "", "comma-separated metric names the GCP service defines (empty: any)")
	fs.StringVar(&g.audience, "gcp-audience", "saas.example.com", "aud of the GCP sign-up tokens (the product's domain)")
	fs.StringVar(&g.pubsubProject, "gcp-pubsub-project", "demo-project", "project of the GCP lifecycle topic")
	fs.StringVar(&g.pubsubTopic, "gcp-pubsub-topic", "", "GCP lifecycle topic to publish to, through PUBSUB_EMULATOR_HOST (empty: none)")
	fs.DurationVar(&g.activationDelay, "gcp-activation-delay", 2*time.Second, "how long an approved GCP entitlement takes to become active (Google: \"a short processing delay\")")
	g.faults.RegisterFlags(fs, "gcp")
}

func (g *gcpEmulator) Start(ctx context.Context, logger *slog.Logger) (string, error) {
	faults, err := emu.FaultsFrom(g.faults)
	if err != nil {
		return "", fmt.Errorf("the -gcp-… fault flags: %w", err)
	}
	cfg := emu.Config{ProviderID: g.provider, ServiceName: g.service, Audience: g.audience, Faults: faults,
		ActivationDelay: g.activationDelay, Logger: logger}
	if g.metrics != "" {
		cfg.Metrics = strings.Split(g.metrics, ",")
	}
	topicInfo := "none (set -gcp-pubsub-topic and PUBSUB_EMULATOR_HOST to publish lifecycle events)"
	if g.pubsubTopic != "" {
		pub, err := g.publisher(ctx)
		if err != nil {
			return "", err
		}
		cfg.Publisher = pub
		topicInfo = fmt.Sprintf("projects/%s/topics/%s on the Pub/Sub emulator at %s", g.pubsubProject, g.pubsubTopic, os.Getenv("PUBSUB_EMULATOR_HOST"))
	}
	e, err := emu.New(cfg)
	if err != nil {
		return "", err
	}
	base, err := e.Start(ctx, g.addr)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`base URL          %s
official clients  cloudcommerceprocurement.NewService / servicecontrol.NewService(ctx,
                    option.WithEndpoint(%q), option.WithoutAuthentication())
provider          providers/%s; service %s
sign-up keys      %s/x509 (gcp.SignupVerifierConfig{KeysURL: ..., Audience: %q})
lifecycle topic   %s
admin API         %s/emulator/ (docs/emulators.md): buyers, buyers/{id}/events, bill, faults
new buyer         curl -X POST %s/emulator/buyers -d '{"product":"demo","plan":"standard"}'
bill              curl %s/emulator/bill
faults            %s`,
		base, base+"/", g.provider, g.service, base, g.audience, topicInfo, base, base, base, describeFaults(g.faults)), nil
}

// publisher connects to the Pub/Sub emulator and creates the topic if it
// is missing. The client closes when ctx ends.
func (g *gcpEmulator) publisher(ctx context.Context) (emu.Publisher, error) {
	if os.Getenv("PUBSUB_EMULATOR_HOST") == "" {
		return nil, errors.New("-gcp-pubsub-topic needs PUBSUB_EMULATOR_HOST (start one: gcloud beta emulators pubsub start --host-port=127.0.0.1:8085)")
	}
	c, err := pubsub.NewClient(ctx, g.pubsubProject)
	if err != nil {
		return nil, fmt.Errorf("pubsub client: %w", err)
	}
	name := fmt.Sprintf("projects/%s/topics/%s", g.pubsubProject, g.pubsubTopic)
	if _, err := c.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: name}); err != nil && status.Code(err) != codes.AlreadyExists {
		c.Close()
		return nil, fmt.Errorf("create topic %s: %w", name, err)
	}
	p := c.Publisher(name)
	go func() {
		<-ctx.Done()
		p.Stop()
		c.Close()
	}()
	return emu.PubSubPublisher{P: p}, nil
}
