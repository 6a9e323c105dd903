// Package gcp emulates Google Cloud Marketplace for a SaaS seller: the
// Partner Procurement API v1 (accounts and entitlements with their state
// transitions, filters and paging), Service Control v1 (check and report,
// deduplicated by operationId, only for consumers of an active
// entitlement), the sign-up JWT with its signing keys published at an
// x509-style URL, and lifecycle events published to a Pub/Sub topic.
//
// The JSON shapes are those of the discovery documents the official Go
// clients (google.golang.org/api/cloudcommerceprocurement/v1 and
// google.golang.org/api/servicecontrol/v1) are generated from, so those
// clients work against it unchanged: point them at the emulator's URL with
// option.WithEndpoint and option.WithoutAuthentication.
//
// Faults (throttling, error rates, latency and "apply the request, then
// drop the response") let tests prove that a client bills exactly once. The
// usage the emulator accepted is "the bill", served as JSON at /emulator/bill.
//
// Besides the Google APIs, the emulator serves the admin routes that all
// three emulators share (package emulator/admin, docs/emulators.md) under
// /emulator/: they play the buyer and Google's side (purchase, plan change
// request, cancellation, account deletion) and show the bill.
package gcp

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Publisher sends one lifecycle event's JSON to the provider's Pub/Sub
// topic. See PubSubPublisher.
type Publisher interface {
	Publish(ctx context.Context, data []byte) error
}

// Config sets up an Emulator. The zero value works: provider "demo-provider",
// service "demo.endpoints.demo-project.cloud.goog", time.Now.
type Config struct {
	// ProviderID is the seller's provider id (providers/{ProviderID}/...).
	ProviderID string
	// ServiceName is the Service Control service of the product; metric
	// names must start with it and a slash.
	ServiceName string
	// Metrics, when set, lists the metric names (without the service
	// prefix) that reports may use; any other is refused.
	Metrics []string
	// Audience is the aud of minted sign-up tokens (the product's domain).
	Audience string
	// Publisher receives lifecycle events; nil drops them.
	Publisher Publisher
	// Faults to inject from the start; see SetFaults.
	Faults Faults
	// Seed seeds the fault source, for reproducible runs.
	Seed uint64
	// ActivationDelay is how long an approved entitlement stays
	// ENTITLEMENT_ACTIVATION_REQUESTED before it becomes ENTITLEMENT_ACTIVE
	// (and ENTITLEMENT_ACTIVE is published): Google activates it "after
	// a short processing delay". 0 activates it at once (Go tests, unless
	// they set it); marketplaced emulate waits 2 s. A served emulator
	// (Start) activates due entitlements by itself; one served through
	// Handler does so on its next request or Settle.
	ActivationDelay time.Duration
	// Clock returns the current time; default time.Now.
	Clock func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Emulator is the fake Google Cloud Marketplace. It is safe for concurrent use.
type Emulator struct {
	cfg  Config
	key  *rsa.PrivateKey
	kid  string
	cert []byte // PEM
	mux  http.Handler

	mu       sync.Mutex
	rng      *rand.Rand
	faults   Faults
	limiter  *rate.Limiter // Faults.ThrottleTPS; nil without
	accounts map[string]*account
	ents     map[string]*entitlement
	entOrder []string
	pending  []string             // ids of approved entitlements waiting for activateAt
	ops      map[string]*opRecord // accepted usage by operationId
	opOrder  []string
	checkErr map[string]string // consumerId → check error code
	nextID   int
	events   int
	instance string         // prefix of event ids, unique per emulator, so a restart reuses none
	calls    map[string]int // by method, for tests
}

type account struct {
	Name       string            `json:"name"`
	Provider   string            `json:"provider"`
	State      string            `json:"state"`
	Approvals  []approval        `json:"approvals,omitempty"`
	Properties map[string]string `json:"-"`
	CreateTime string            `json:"createTime"`
	UpdateTime string            `json:"updateTime"`
}

type approval struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Reason     string `json:"reason,omitempty"`
	UpdateTime string `json:"updateTime,omitempty"`
}

type entitlement struct {
	Name               string `json:"name"`
	Account            string `json:"account"`
	Provider           string `json:"provider"`
	Product            string `json:"product"`
	ProductExternal    string `json:"productExternalName,omitempty"`
	Plan               string `json:"plan,omitempty"`
	NewPendingPlan     string `json:"newPendingPlan,omitempty"`
	Offer              string `json:"offer,omitempty"`
	State              string `json:"state"`
	UsageReportingID   string `json:"usageReportingId,omitempty"`
	MessageToUser      string `json:"messageToUser,omitempty"`
	CancellationReason string `json:"cancellationReason,omitempty"`
	CreateTime         string `json:"createTime"`
	UpdateTime         string `json:"updateTime"`
	// SubscriptionEndTime is when a pending cancellation takes effect.
	SubscriptionEndTime string            `json:"subscriptionEndTime,omitempty"`
	Properties          map[string]string `json:"-"`
	created             time.Time
	cancelledAt         time.Time
	activateAt          time.Time // approved, becoming active then (Config.ActivationDelay)
}

// FinalReportGrace is how long after a cancellation the emulator still
// accepts usage of the entitlement's consumer for hours that began before
// it: the buyer's final usage report.
const FinalReportGrace = time.Hour

// New returns an emulator; serve it with Handler.
func New(cfg Config) (*Emulator, error) {
	if cfg.ProviderID == "" {
		cfg.ProviderID = "demo-provider"
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "demo.endpoints.demo-project.cloud.goog"
	}
	if cfg.Audience == "" {
		cfg.Audience = "saas.example.com"
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Emulator{
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		accounts: map[string]*account{},
		ents:     map[string]*entitlement{},
		ops:      map[string]*opRecord{},
		checkErr: map[string]string{},
		calls:    map[string]int{},
	}
	e.SetFaults(cfg.Faults)
	e.instance = fmt.Sprintf("emu-%08x", rand.Uint32())
	if err := e.newKey(); err != nil {
		return nil, err
	}
	e.routes()
	return e, nil
}

// ProviderID returns the provider id the emulator serves.
func (e *Emulator) ProviderID() string { return e.cfg.ProviderID }

// ServiceName returns the Service Control service name it serves.
func (e *Emulator) ServiceName() string { return e.cfg.ServiceName }

// Handler returns the emulator's HTTP handler. Routes:
//
//	/v1/providers/{p}/accounts[/{id}[:verb]]       Procurement API accounts
//	/v1/providers/{p}/entitlements[/{id}[:verb]]   Procurement API entitlements
//	/v1/services/{service}:check, :report          Service Control
//	/x509                                          sign-up token keys (kid → PEM certificate)
//	/emulator/bill                                 accepted usage, JSON
//	/emulator/...                                  buyer and Google actions (see routes)
func (e *Emulator) Handler() http.Handler { return e.mux }

func (e *Emulator) now() time.Time { return e.cfg.Clock().UTC() }

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// Calls returns how many requests reached each API method (after faults
// that refuse a call before applying it), keyed like "entitlements.get".
func (e *Emulator) Calls() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.calls))
	for k, v := range e.calls {
		out[k] = v
	}
	return out
}

// googleError is the JSON error body of Google's APIs.
type googleError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, code int, status, format string, args ...any) {
	var ge googleError
	ge.Error.Code = code
	ge.Error.Status = status
	ge.Error.Message = fmt.Sprintf(format, args...)
	writeJSON(w, code, ge)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// BillLine is one accepted Service Control operation: the usage Google
// would bill.
type BillLine struct {
	OperationID string    `json:"operationId"`
	ConsumerID  string    `json:"consumerId"`
	MetricName  string    `json:"metricName"`
	StartTime   time.Time `json:"startTime"`
	EndTime     time.Time `json:"endTime"`
	Value       int64     `json:"int64Value,string"`
}

// Bill returns the accepted usage, in the order it was accepted.
func (e *Emulator) Bill() []BillLine {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]BillLine, 0, len(e.opOrder))
	for _, id := range e.opOrder {
		out = append(out, e.ops[id].lines...)
	}
	return out
}

// Total sums the bill of one consumer and metric (full metric name).
func (e *Emulator) Total(consumerID, metricName string) int64 {
	var n int64
	for _, l := range e.Bill() {
		if l.ConsumerID == consumerID && l.MetricName == metricName {
			n += l.Value
		}
	}
	return n
}

// SetCheckError makes services.check answer code (for example
// "BILLING_DISABLED") for consumerID, and services.report refuse its
// operations; an empty code clears it.
func (e *Emulator) SetCheckError(consumerID, code string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if code == "" {
		delete(e.checkErr, consumerID)
		return
	}
	e.checkErr[consumerID] = code
}

func (e *Emulator) newIDLocked(prefix string) string {
	e.nextID++
	return prefix + strconv.Itoa(e.nextID)
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Start serves the emulator on addr, which must be a loopback address
// ("127.0.0.1:0" picks a port), until ctx is done, and returns its base
// URL. The server is shut down when ctx ends, and with it the loop that
// activates approved entitlements (Config.ActivationDelay).
func (e *Emulator) Start(ctx context.Context, addr string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("emulator/gcp: listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", fmt.Errorf("emulator/gcp: listen address %q is not a loopback address", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("emulator/gcp: %w", err)
	}
	srv := &http.Server{Handler: e.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.cfg.Logger.Error("gcp emulator stopped", "err", err)
		}
	}()
	if e.cfg.ActivationDelay > 0 {
		// Approved entitlements become active when their time comes,
		// whether or not anybody asks: Google publishes
		// ENTITLEMENT_ACTIVE by itself.
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					e.Settle(ctx)
				}
			}
		}()
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return "http://" + l.Addr().String(), nil
}
