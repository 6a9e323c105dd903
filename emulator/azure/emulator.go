// Package azure is an emulator of the Microsoft commercial marketplace for
// SaaS offers: the SaaS Fulfillment API v2 and the Metering Service API
// under <base>/api (api-version 2018-08-31), an Entra ID style token
// endpoint and JWKS so that real token providers and webhook validators run
// their real code against it, purchases with landing tokens, the
// subscription state machine with its operations, webhooks signed with the
// emulator's own keys, metering with Azure's dedupe and deadline rules, and
// injectable faults. It exists so that the azure package, the daemon and
// its demo can run the whole loop without a cloud account.
//
// The routes follow Microsoft's published OpenAPI files (saasapi.v2.json,
// meteringapi.v1.json). The Entra endpoints live at the root:
// /{tenant}/v2.0/.well-known/openid-configuration,
// /{tenant}/oauth2/v2.0/token (and the v1 /{tenant}/oauth2/token) and
// /{tenant}/discovery/v2.0/keys. The admin routes that all three
// emulators share (package emulator/admin, docs/emulators.md) live under
// /emulator/.
package azure

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/saasmarket/marketplace/emulator/admin"
)

// ResourceID is the Entra application id of the marketplace APIs: tokens
// for the Fulfillment and Metering APIs are issued for it, and webhook
// tokens carry it as appid/azp.
const ResourceID = "20e940b3-4c77-4b0b-9a53-9e16a1b010a7"

// APIVersion is the only api-version the APIs accept.
const APIVersion = "2018-08-31"

// Defaults of Config.
const (
	DefaultTenantID     = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	DefaultPublisherApp = "6a1e7f7c-3d8e-4b5a-9c2f-0e1d2c3b4a59"
)

// Plan is a plan of the emulated offer.
type Plan struct {
	ID          string `json:"planId"`
	DisplayName string `json:"displayName"`
	// Dimensions the plan meters; empty accepts any dimension.
	Dimensions []string `json:"dimensions,omitempty"`
}

// Config sets up an Emulator. Zero values take the defaults shown.
type Config struct {
	TenantID     string // the publisher's Entra tenant; default a fixed GUID
	PublisherApp string // the publisher's app id: webhook tokens' aud; default a fixed GUID
	PublisherID  string // default "contoso"
	OfferID      string // default "inference-api"
	Plans        []Plan // default "basic" and "pro"
	// Clients maps a client id to its secret for the token endpoint. A
	// client id mapped to "" accepts any secret or client assertion.
	// Default: PublisherApp with any credential.
	Clients map[string]string
	// WebhookURL receives the publisher's webhook calls; empty sends none.
	WebhookURL string
	// WebhookClient sends webhooks; default http.DefaultClient.
	WebhookClient *http.Client
	// OperationDelay is how long an operation the publisher started
	// (PATCH, DELETE), or a webhook operation the publisher neither
	// accepted nor rejected, takes to succeed. Default 10 s: Azure
	// auto-accepts a ChangePlan or ChangeQuantity about 10 s after
	// delivering it when the publisher does not answer (WIRE.md).
	OperationDelay time.Duration
	// PatchDelay is how long an operation stays InProgress after the
	// publisher PATCHes it with "Success" or "Failure" before it reaches
	// Succeeded or Failed and its change applies. Azure completes a
	// PATCHed operation asynchronously, so a publisher must follow the
	// operation until it is final; a delay tests that it does. Zero (the
	// default) completes it at once.
	PatchDelay time.Duration
	PageSize   int // subscriptions per list page; default 100
	Faults     Faults
	Seed       uint64 // for fault decisions
	Clock      func() time.Time
	Logger     *slog.Logger
}

// Faults are injected into calls under /api.
type Faults struct {
	ThrottleRate float64       // fraction of calls answered 429
	ThrottleTPS  float64       // calls above this rate per second answered 429; 0: no limit
	RetryAfter   time.Duration // the Retry-After of a 429; default 1 s
	ErrorRate    float64       // fraction answered 500 without applying
	DropRate     float64       // fraction applied, then the response dropped
	Latency      time.Duration // added to every call
	// MeteringOnly limits faults to the metering endpoints.
	MeteringOnly bool
}

// Emulator is one emulated marketplace. It is safe for concurrent use and
// owns no goroutines: operations that take time complete when they are
// next read after their due time.
type Emulator struct {
	cfg     Config
	key     *rsa.PrivateKey
	kid     string
	mux     *http.ServeMux
	mu      sync.Mutex
	rng     *mrand.Rand
	faults  Faults
	limiter *rate.Limiter // ThrottleTPS; nil without
	subs    map[string]*subscription
	order   []string // subscription ids in creation order
	tokens  map[string]landingToken
	ops     map[string]*operation
	events  map[eventKey]*usageEvent
	evlist  []*usageEvent
	calls   map[string]int // counts of API calls by route, for tests
}

// New returns an emulator.
func New(cfg Config) *Emulator {
	if cfg.TenantID == "" {
		cfg.TenantID = DefaultTenantID
	}
	if cfg.PublisherApp == "" {
		cfg.PublisherApp = DefaultPublisherApp
	}
	if cfg.PublisherID == "" {
		cfg.PublisherID = "contoso"
	}
	if cfg.OfferID == "" {
		cfg.OfferID = "inference-api"
	}
	if len(cfg.Plans) == 0 {
		cfg.Plans = []Plan{{ID: "basic", DisplayName: "Basic"}, {ID: "pro", DisplayName: "Pro"}}
	}
	if cfg.Clients == nil {
		cfg.Clients = map[string]string{cfg.PublisherApp: ""}
	}
	if cfg.WebhookClient == nil {
		cfg.WebhookClient = http.DefaultClient
	}
	if cfg.OperationDelay <= 0 {
		cfg.OperationDelay = 10 * time.Second
	}
	if cfg.PatchDelay < 0 {
		cfg.PatchDelay = 0
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 100
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	kidb := make([]byte, 12)
	rand.Read(kidb)
	e := &Emulator{
		cfg: cfg, key: key, kid: base64.RawURLEncoding.EncodeToString(kidb),
		rng:  mrand.New(mrand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		subs: map[string]*subscription{}, tokens: map[string]landingToken{},
		ops: map[string]*operation{}, events: map[eventKey]*usageEvent{},
		calls: map[string]int{},
	}
	e.SetFaults(cfg.Faults)
	e.routes()
	return e
}

// Config returns the emulator's configuration with defaults filled in.
func (e *Emulator) Config() Config { return e.cfg }

// SetFaults replaces the faults injected from now on.
func (e *Emulator) SetFaults(f Faults) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = f
	e.limiter = nil
	if f.ThrottleTPS > 0 {
		e.limiter = rate.NewLimiter(rate.Limit(f.ThrottleTPS), max(1, int(math.Ceil(f.ThrottleTPS))))
	}
}

// Calls returns how many calls reached each API operation (by its
// OpenAPI operation id), including those answered with a fault, and how
// many faults were injected ("fault/throttle", "fault/error", "fault/drop").
func (e *Emulator) Calls() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.calls))
	for k, v := range e.calls {
		out[k] = v
	}
	return out
}

// ServeHTTP serves every route of the emulator.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) { e.mux.ServeHTTP(w, r) }

func (e *Emulator) now() time.Time { return e.cfg.Clock().UTC() }

func (e *Emulator) routes() {
	m := http.NewServeMux()
	e.mux = m
	// Entra ID.
	m.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", e.serveOpenID)
	m.HandleFunc("POST /{tenant}/oauth2/v2.0/token", e.serveToken)
	m.HandleFunc("POST /{tenant}/oauth2/token", e.serveToken)
	m.HandleFunc("GET /{tenant}/discovery/v2.0/keys", e.serveJWKS)
	m.HandleFunc("GET /common/discovery/keys", e.serveJWKS)
	// Fulfillment API v2.
	api := func(pattern, op string, metering bool, h func(http.ResponseWriter, *http.Request) bool) {
		m.Handle(pattern, e.apiHandler(op, metering, h))
	}
	api("POST /api/saas/subscriptions/resolve", "FulfillmentOperations_Resolve", false, e.serveResolve)
	api("GET /api/saas/subscriptions/{$}", "FulfillmentOperations_ListSubscriptions", false, e.serveList)
	api("GET /api/saas/subscriptions", "FulfillmentOperations_ListSubscriptions", false, e.serveList)
	api("GET /api/saas/subscriptions/{id}", "FulfillmentOperations_GetSubscription", false, e.serveGet)
	api("PATCH /api/saas/subscriptions/{id}", "FulfillmentOperations_UpdateSubscription", false, e.serveUpdate)
	api("DELETE /api/saas/subscriptions/{id}", "FulfillmentOperations_DeleteSubscription", false, e.serveDelete)
	api("GET /api/saas/subscriptions/{id}/listAvailablePlans", "FulfillmentOperations_ListAvailablePlans", false, e.servePlans)
	api("POST /api/saas/subscriptions/{id}/activate", "FulfillmentOperations_ActivateSubscription", false, e.serveActivate)
	api("GET /api/saas/subscriptions/{id}/operations", "SubscriptionOperations_ListOperations", false, e.serveListOps)
	api("GET /api/saas/subscriptions/{id}/operations/{op}", "SubscriptionOperations_GetOperationStatus", false, e.serveGetOp)
	api("PATCH /api/saas/subscriptions/{id}/operations/{op}", "SubscriptionOperations_UpdateOperationStatus", false, e.servePatchOp)
	// Metering API.
	api("POST /api/usageEvent", "MeteringOperations_PostUsageEvent", true, e.serveUsageEvent)
	api("POST /api/batchUsageEvent", "MeteringOperations_PostBatchUsageEvent", true, e.serveBatch)
	api("GET /api/usageEvents", "MeteringOperations_GetUsageEvent", true, e.serveGetUsage)
	// Emulator controls.
	admin.Register(m, e.Admin())
}

// apiHandler wraps an API route with the api-version check, the bearer
// token check and the faults. h returns whether it applied a change, so
// that a "drop" fault only drops responses of calls that did something.
func (e *Emulator) apiHandler(op string, metering bool, h func(http.ResponseWriter, *http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.calls[op]++
		f := e.faults
		var throttle, fail, drop bool
		if metering || !f.MeteringOnly {
			throttle = f.ThrottleRate > 0 && e.rng.Float64() < f.ThrottleRate || e.limiter != nil && !e.limiter.Allow()
			fail = f.ErrorRate > 0 && e.rng.Float64() < f.ErrorRate
			drop = f.DropRate > 0 && e.rng.Float64() < f.DropRate
			for kind, on := range map[string]bool{"throttle": throttle, "error": fail && !throttle, "drop": drop && !throttle && !fail} {
				if on {
					e.calls["fault/"+kind]++
				}
			}
		} else {
			f = Faults{}
		}
		e.mu.Unlock()
		// Azure echoes the caller's ids, and makes them up when it sent none.
		for _, h := range []string{"x-ms-requestid", "x-ms-correlationid"} {
			id := r.Header.Get(h)
			if id == "" {
				id = uuid.NewString()
			}
			w.Header().Set(h, id)
		}
		if f.Latency > 0 {
			select {
			case <-time.After(f.Latency):
			case <-r.Context().Done():
				return
			}
		}
		if v := r.URL.Query().Get("api-version"); v != APIVersion {
			writeError(w, http.StatusBadRequest, "BadArgument", "api-version must be "+APIVersion+", got "+quote(v))
			return
		}
		if err := e.checkBearer(r); err != nil {
			writeError(w, http.StatusForbidden, "Forbidden", err.Error())
			return
		}
		switch {
		case throttle:
			ra := f.RetryAfter
			if ra <= 0 {
				ra = time.Second
			}
			w.Header().Set("Retry-After", itoa(int64((ra+time.Second-1)/time.Second)))
			writeError(w, http.StatusTooManyRequests, "TooManyRequests", "throttled (injected fault)")
			return
		case fail:
			writeError(w, http.StatusInternalServerError, "InternalServerError", "injected fault")
			return
		}
		if drop {
			h(discardWriter{}, r)
			panic(http.ErrAbortHandler) // applied; the response is lost
		}
		h(w, r)
	})
}

// discardWriter swallows a response that a fault drops.
type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}

// Start serves the emulator on a TLS listener at addr (such as
// "127.0.0.1:0") until ctx is done, and returns its base URL. The Entra
// token endpoint must be https for the Azure SDK, so the emulator always
// serves TLS, with a self-signed certificate that CertPEM returns.
func (e *Emulator) Start(ctx context.Context, addr string) (baseURL string, certPEM []byte, err error) {
	return e.start(ctx, addr)
}
