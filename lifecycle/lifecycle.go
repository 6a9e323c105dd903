// Package lifecycle is the one engine that every cloud's subscription
// lifecycle goes through: notifications (AWS EventBridge, SNS or SQS; Azure
// webhooks; Google Pub/Sub) and sign-ups from the landing pages.
//
// A cloud adapter authenticates and decodes a delivery and hands it to
// Accept, which stores it durably in the inbox (deduplicated by the cloud's
// id) before the delivery is answered. A worker (Run) then applies it
// through the adapter's Handler, which re-reads the cloud's current state
// where the cloud offers a read and answers the cloud where it asks for an
// answer, and through Update, which every subscription change takes: the
// version-conflict retry, the stale check against the stored cloud time,
// entitlement invalidation, and the final usage seal when a subscription
// ends. A notification whose processing fails is retried with backoff and
// survives restarts; one that can never apply is parked with its reason,
// counted and listable (Parked), never dropped in silence.
package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/pages"
)

// Store is what the engine keeps: subscriptions, entitlements and the
// notification inbox. *sqlite.Store implements it.
type Store interface {
	marketplace.SubscriptionStore
	marketplace.EntitlementStore
	marketplace.NotificationInbox
}

// Deps are the dependencies shared by the engine and every cloud adapter;
// adapters take them from Engine.Deps, so each is configured once.
type Deps struct {
	Store Store
	// Ledger receives the final usage seal when a subscription ends.
	Ledger *ledger.Ledger
	// Entitlements answers entitlement checks for every cloud; it is
	// invalidated for a customer whenever one of its subscriptions changes.
	// Nil: New makes one on Store with entitlement.StoreLoader's rules and
	// the default cache settings; it reads Clock on every check, so it runs
	// no clock goroutine and needs no Close. A cache passed here stays its
	// maker's to close (entitlement.Cache.Close), after the engine's last use.
	Entitlements *entitlement.Cache
	Logger       *slog.Logger
	Clock        func() time.Time
	// Pages renders the landing pages' HTML (confirmation and errors).
	// Nil: New uses the embedded defaults (pages.New(nil, Logger)).
	Pages *pages.Pages
}

// Config tunes the engine; zero values take the defaults.
type Config struct {
	// Window is how long an applied notification's id is remembered, so
	// that a redelivery is not applied twice; default 7 days (the longest
	// any of the clouds redelivers).
	Window time.Duration
	// MaxAttempts is how many failed attempts park a notification;
	// default 30 (with the default backoff, about four days).
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait after a failed attempt,
	// which doubles from MinBackoff; defaults 1 s and 15 min.
	MinBackoff, MaxBackoff time.Duration
	// Lease is how long a worker holds a claimed notification, and bounds
	// one attempt; default 2 min. A worker that dies leaves its
	// notifications to others once the lease runs out.
	Lease time.Duration
	// Poll is how often an idle worker looks for due work; default 1 s.
	// Accept wakes it at once.
	Poll time.Duration
	// Batch is how many notifications one claim takes; default 16.
	Batch int
	// Owner names this worker in leases; default a random id.
	Owner string
}

// Handler is what a cloud adapter supplies: how to apply one of its stored
// notifications. Process re-reads the cloud's state where it can, answers
// the cloud where it asks, and changes subscriptions through
// Engine.Update. It may record steps already taken in n.Progress, which is
// kept across retries.
//
// Its error decides what happens next: nil, or one wrapping
// marketplace.ErrUnrelated, settles the notification; one marked with
// marketplace.Permanent (or wrapping marketplace.ErrInvalidInput) parks it
// with the error as its reason; any other is retried with backoff, not
// before the error's marketplace.RetryAfter hint.
type Handler interface {
	Process(ctx context.Context, n *marketplace.Notification) error
}

// LinkFunc is the seller's hook on a landing page, the same for every
// cloud: it links the buyer's subscription to an account of the seller's
// own (by session, sign-up form, ...) and returns that account's id. It may
// write the response (a redirect, a page); if it writes nothing, the
// landing handler answers with a short confirmation. An error fails the
// sign-up with 500 and leaves the subscription unlinked.
type LinkFunc func(ctx context.Context, w http.ResponseWriter, r *http.Request, sub *marketplace.Subscription) (accountID string, err error)

// Engine is the lifecycle engine. Create it with New, register each
// cloud's Handler, and run its worker with Run.
type Engine struct {
	deps Deps
	cfg  Config

	mu       sync.RWMutex
	handlers map[marketplace.CloudProvider]Handler

	wake chan struct{}
}

// New checks deps and returns an engine.
func New(deps Deps, cfg Config) (*Engine, error) {
	if deps.Store == nil {
		return nil, errors.New("lifecycle: Deps.Store is required")
	}
	if deps.Ledger == nil {
		return nil, errors.New("lifecycle: Deps.Ledger is required (ended subscriptions seal their usage)")
	}
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Entitlements == nil {
		loader := entitlement.StoreLoader{Subscriptions: deps.Store, Entitlements: deps.Store, Clock: deps.Clock}
		deps.Entitlements = entitlement.New(loader.Load, entitlement.Config{Clock: deps.Clock})
	}
	if deps.Pages == nil {
		p, err := pages.New(nil, deps.Logger)
		if err != nil {
			return nil, fmt.Errorf("lifecycle: default pages: %w", err)
		}
		deps.Pages = p
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Window, 7*24*time.Hour)
	def(&cfg.MinBackoff, time.Second)
	def(&cfg.MaxBackoff, 15*time.Minute)
	def(&cfg.Lease, 2*time.Minute)
	def(&cfg.Poll, time.Second)
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 30
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 16
	}
	if cfg.Owner == "" {
		b := make([]byte, 8)
		rand.Read(b)
		cfg.Owner = "lifecycle-" + hex.EncodeToString(b)
	}
	return &Engine{deps: deps, cfg: cfg, handlers: map[marketplace.CloudProvider]Handler{}, wake: make(chan struct{}, 1)}, nil
}

// Deps returns the shared dependencies (with defaults filled in).
func (e *Engine) Deps() Deps { return e.deps }

// Config returns the engine's configuration (with defaults filled in).
func (e *Engine) Config() Config { return e.cfg }

// Register makes h the handler of p's notifications. A cloud adapter's
// constructor registers itself; registering p twice is an error.
func (e *Engine) Register(p marketplace.CloudProvider, h Handler) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, dup := e.handlers[p]; dup {
		return fmt.Errorf("lifecycle: a handler for %s is already registered", p)
	}
	e.handlers[p] = h
	return nil
}

func (e *Engine) handler(p marketplace.CloudProvider) Handler {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.handlers[p]
}

// Accept stores a delivered notification durably, deduplicated by its
// provider and ID, and wakes the worker. Answer the cloud's delivery only
// after it returns nil; first is false for a redelivery (already stored),
// which needs nothing more than the same answer.
func (e *Engine) Accept(ctx context.Context, n marketplace.Notification) (first bool, err error) {
	if !n.Provider.Valid() {
		return false, fmt.Errorf("lifecycle: accept: %w: provider %q", marketplace.ErrInvalidInput, n.Provider)
	}
	if n.ID == "" {
		return false, fmt.Errorf("lifecycle: accept %s notification: %w: it has no id", n.Provider, marketplace.ErrInvalidInput)
	}
	now := e.deps.Clock()
	n.State, n.Attempts, n.NextAttempt, n.Progress, n.Reason = marketplace.NotificationPending, 0, now, "", ""
	n.Received, n.Expires = now, now.Add(e.cfg.Window)
	first, err = e.deps.Store.AddNotification(ctx, n)
	if err != nil {
		return false, fmt.Errorf("lifecycle: store %s notification %s: %w", n.Provider, n.ID, err)
	}
	if first {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
	return first, nil
}

// Run is the worker: it applies due notifications until ctx ends, then
// returns nil. Several workers (in one process or many, on one store) may
// run at once: leases keep them off each other's notifications.
func (e *Engine) Run(ctx context.Context) error {
	poll := time.NewTicker(e.cfg.Poll)
	defer poll.Stop()
	purge := time.NewTicker(time.Hour)
	defer purge.Stop()
	for {
		n, err := e.step(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			e.deps.Logger.Error("lifecycle worker", "err", err)
		}
		if n > 0 && err == nil {
			continue // more may be due
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.wake:
		case <-poll.C:
		case <-purge.C:
			if k, err := e.deps.Store.PurgeNotifications(ctx, e.deps.Clock()); err != nil {
				e.deps.Logger.Error("purge remembered notifications", "err", err)
			} else if k > 0 {
				e.deps.Logger.Debug("purged remembered notifications", "count", k)
			}
		}
	}
}

// Drain applies every notification that is due now, until none is left
// (those that fail again are left for their next attempt). Tests use it in
// place of Run; a daemon may call it before it stops.
func (e *Engine) Drain(ctx context.Context) error {
	for {
		n, err := e.step(ctx)
		if err != nil || n == 0 {
			return err
		}
	}
}

// step claims one batch of due notifications and applies it; it returns
// how many it claimed.
func (e *Engine) step(ctx context.Context) (int, error) {
	claimed, err := e.deps.Store.ClaimNotifications(ctx, marketplace.NotificationClaim{
		Owner: e.cfg.Owner, Now: e.deps.Clock(), Lease: e.cfg.Lease, Limit: e.cfg.Batch})
	if err != nil {
		return 0, fmt.Errorf("lifecycle: claim notifications: %w", err)
	}
	for i := range claimed {
		if err := e.apply(ctx, &claimed[i]); err != nil {
			return len(claimed), err
		}
	}
	return len(claimed), nil
}

// apply runs one claimed notification through its handler and settles it.
func (e *Engine) apply(ctx context.Context, n *marketplace.Notification) error {
	log := e.deps.Logger.With("provider", n.Provider, "notification", n.ID, "kind", n.Kind)
	var err error
	if h := e.handler(n.Provider); h == nil {
		err = marketplace.Permanent(fmt.Errorf("no integration for %s is configured", n.Provider))
	} else {
		actx, cancel := context.WithTimeout(ctx, e.cfg.Lease-e.cfg.Lease/8)
		err = safeProcess(actx, h, n)
		cancel()
	}
	if ctx.Err() != nil {
		return ctx.Err() // stopping: the lease runs out and the attempt is made again
	}
	now := e.deps.Clock()
	switch {
	case err == nil || errors.Is(err, marketplace.ErrUnrelated):
		if err != nil {
			log.Info("notification acknowledged, nothing to apply", "reason", err)
		}
		n.State, n.Reason, n.Expires = marketplace.NotificationDone, "", now.Add(e.cfg.Window)
	case marketplace.IsPermanent(err) || errors.Is(err, marketplace.ErrInvalidInput):
		log.Error("notification parked: it cannot apply", "err", err)
		n.State, n.Reason = marketplace.NotificationParked, err.Error()
	default:
		n.Attempts++
		n.Reason = err.Error()
		if n.Attempts >= e.cfg.MaxAttempts {
			log.Error("notification parked after repeated failures", "attempts", n.Attempts, "err", err)
			n.State, n.Reason = marketplace.NotificationParked, fmt.Sprintf("gave up after %d attempts: %v", n.Attempts, err)
			break
		}
		wait := e.backoff(n.Attempts)
		if after, ok := marketplace.RetryAfter(err); ok && after > wait {
			wait = after
		}
		log.Warn("notification failed; it will be retried", "attempt", n.Attempts, "retry_in", wait, "err", err)
		n.State, n.NextAttempt = marketplace.NotificationPending, now.Add(wait)
	}
	if err := e.deps.Store.SettleNotification(ctx, e.cfg.Owner, *n); err != nil {
		return fmt.Errorf("lifecycle: settle %s notification %s: %w", n.Provider, n.ID, err)
	}
	return nil
}

// safeProcess turns a handler's panic into an error, so that one bad
// notification cannot stop the worker for everyone else.
func safeProcess(ctx context.Context, h Handler, n *marketplace.Notification) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = marketplace.Permanent(fmt.Errorf("handler panicked: %v", r))
		}
	}()
	return h.Process(ctx, n)
}

func (e *Engine) backoff(attempts int) time.Duration {
	d := e.cfg.MinBackoff
	for i := 1; i < attempts && d < e.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, e.cfg.MaxBackoff)
}

// Parked lists the parked notifications of p (all clouds if empty).
func (e *Engine) Parked(ctx context.Context, p marketplace.CloudProvider) ([]marketplace.Notification, error) {
	return e.deps.Store.ListNotifications(ctx, p, marketplace.NotificationParked, 0)
}

// Requeue makes a parked notification due again (its cause was mended).
func (e *Engine) Requeue(ctx context.Context, p marketplace.CloudProvider, id string) error {
	if err := e.deps.Store.RequeueNotification(ctx, p, id, e.deps.Clock()); err != nil {
		return err
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return nil
}
