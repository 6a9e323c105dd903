// Package server is marketplaced's HTTP side: the /v1 API a seller's service
// calls in any language (usage ingest, entitlement checks, subscriptions,
// usage reports), each configured cloud's landing and notification endpoints,
// Prometheus metrics, health checks and the OpenAPI document, together with
// the background work a daemon runs (ledger maintenance, one reporter per
// cloud, each cloud's pull loop, the lifecycle worker) and its orderly stop.
//
// The configuration (flags, MARKETPLACED_* variables and the product and
// dimension catalogue) is in Config and Catalogue; cmd/marketplaced wires the
// store, the ledger and the clouds and calls Run.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
)

// Cloud is one mounted marketplace: the shape every cloud package's Provider
// has (aws, azure and gcp: NewProvider(engine, cfg)).
type Cloud interface {
	marketplace.Provider
	// LandingHandler serves the page a buyer arrives at from the
	// marketplace; mounted at /{provider}/landing.
	LandingHandler() http.Handler
	// NotificationHandler receives the cloud's lifecycle deliveries and
	// authenticates them as the cloud requires; mounted at
	// /{provider}/notifications.
	NotificationHandler() http.Handler
	// Run runs the cloud's pull loops (SQS, Pub/Sub) until ctx ends.
	Run(ctx context.Context) error
	// Target sends sealed usage to the cloud's metering API.
	Target() ledger.Target
}

// Runner is background work that runs until its context ends (the lifecycle
// engine's worker).
type Runner interface {
	Run(ctx context.Context) error
}

// Deps are the components a Server serves; the caller builds and closes them.
type Deps struct {
	Ledger        *ledger.Ledger
	Subscriptions marketplace.SubscriptionStore
	// Entitlements answers GET /v1/entitlements/check; the lifecycle engine
	// invalidates it.
	Entitlements *entitlement.Cache
	Clouds       []Cloud
	// Lifecycle, when set, is run alongside the reporters.
	Lifecycle Runner
	// Updater, when set, stores the account ids of
	// PUT /v1/subscriptions/{provider}/{customer}/account (the lifecycle
	// engine); without it that route answers 503.
	Updater SubscriptionUpdater
	// Parked, when set, counts a cloud's parked notifications for /metrics
	// (the lifecycle engine's Parked).
	Parked func(ctx context.Context, p marketplace.CloudProvider) (int, error)
	// Quarantine, when set, is the store's quarantine of rows it could not
	// read: counted for /metrics, listed on the dashboard and served at
	// /v1/quarantine (without it those routes answer 503).
	Quarantine marketplace.QuarantineStore
	Metrics    *Metrics // default: NewMetrics()
	Logger     *slog.Logger
	Clock      func() time.Time // default time.Now

	Maintain ledger.MaintainConfig
	Reporter ledger.ReporterConfig
}

// Server is a running marketplaced. Build one with New and call Run.
type Server struct {
	cfg       Config
	deps      Deps
	log       *slog.Logger
	metrics   *Metrics
	now       func() time.Time
	keys      apiKeys
	providers map[marketplace.CloudProvider]bool
	handler   http.Handler
	ingestSem chan struct{}
	reqIDs    requestIDs

	// running counts the reporters and loops that are up, for /readyz.
	running  atomic.Int32
	expected int32
	draining atomic.Bool
}

// New checks cfg and deps and builds the server's routes.
func New(cfg Config, deps Deps) (*Server, error) {
	switch {
	case cfg.Catalogue == nil:
		return nil, errors.New("server: Config.Catalogue is required")
	case len(cfg.APIKeys) == 0:
		return nil, errors.New("server: Config.APIKeys: at least one key is required")
	case deps.Ledger == nil || deps.Subscriptions == nil || deps.Entitlements == nil:
		return nil, errors.New("server: Deps.Ledger, Deps.Subscriptions and Deps.Entitlements are required")
	}
	if deps.Metrics == nil {
		deps.Metrics = NewMetrics()
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	s := &Server{
		cfg: cfg, deps: deps, log: deps.Logger, metrics: deps.Metrics, now: deps.Clock,
		keys:      newAPIKeys(cfg.APIKeys),
		providers: map[marketplace.CloudProvider]bool{},
		ingestSem: make(chan struct{}, max(cfg.MaxInFlight, 1)),
		reqIDs:    newRequestIDs(),
	}
	for _, p := range cfg.Catalogue.Providers() {
		s.providers[p] = true
	}
	seen := map[marketplace.CloudProvider]bool{}
	for _, c := range deps.Clouds {
		p := c.Name()
		if seen[p] {
			return nil, fmt.Errorf("server: cloud %s is mounted twice", p)
		}
		seen[p] = true
		if !s.providers[p] {
			return nil, fmt.Errorf("server: cloud %s is configured but the catalogue (%s) has no product for it", p, cfg.CataloguePath)
		}
	}
	// maintenance, and per cloud a reporter and its loop, and the lifecycle worker
	s.expected = 1 + 2*int32(len(deps.Clouds))
	if deps.Lifecycle != nil {
		s.expected++
	}
	s.handler = s.routes()
	return s, nil
}

// Handler returns the server's HTTP handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// Run serves on ln and runs the background work until ctx ends, then stops
// in order within Config.ShutdownTimeout: it stops accepting, lets in-flight
// requests (ingest above all) finish, then stops the reporters, pull loops and
// maintenance. It returns nil after a clean stop.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	// The background work outlives ctx: it stops only once the HTTP side
	// has drained, so that usage acknowledged there is in the ledger.
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBg()
	failed := make(chan error, 1)
	var wg sync.WaitGroup
	start := func(name string, run func(context.Context) error) {
		wg.Go(func() {
			s.running.Add(1)
			defer s.running.Add(-1)
			err := run(bgCtx)
			if err != nil && bgCtx.Err() == nil {
				s.log.Error("background work stopped", "worker", name, "err", err)
				select {
				case failed <- fmt.Errorf("%s: %w", name, err):
				default:
				}
			}
		})
	}
	start("maintain", func(ctx context.Context) error { return s.deps.Ledger.Maintain(ctx, s.deps.Maintain) })
	for _, c := range s.deps.Clouds {
		rc := s.deps.Reporter
		if rc.Replicas == 0 {
			rc.Replicas = s.cfg.Replicas
		}
		if rc.Logger == nil {
			rc.Logger = s.log.With("provider", string(c.Name()))
		}
		rep := ledger.NewReporter(s.deps.Ledger, c.Target(), rc)
		start(string(c.Name())+" reporter", rep.Run)
		start(string(c.Name())+" loop", c.Run)
	}
	if s.deps.Lifecycle != nil {
		start("lifecycle", s.deps.Lifecycle.Run)
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.log.Info("serving", "addr", ln.Addr().String(), "config", s.cfg)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-served:
		runErr = fmt.Errorf("server: %w", err)
	case err := <-failed:
		runErr = err
	}
	s.draining.Store(true)
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	s.log.Info("stopping: draining requests", "bound", s.cfg.ShutdownTimeout)
	if err := srv.Shutdown(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("server: drain: %w", err))
		srv.Close()
	}
	stopBg()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		runErr = errors.Join(runErr, fmt.Errorf("server: background work did not stop within %s", s.cfg.ShutdownTimeout))
	}
	s.log.Info("stopped", "err", runErr)
	return runErr
}
