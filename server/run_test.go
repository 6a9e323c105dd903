package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
)

// fakeCloud is a mounted cloud: its target is a ledgertest.FakeCloud, its
// handlers answer with their names, its loop records that it ran.
type fakeCloud struct {
	marketplace.Provider // unused methods: nil, never called
	name                 marketplace.CloudProvider
	target               *ledgertest.FakeCloud
	runErr               error
	running, stopped     atomic.Bool
}

func newFakeCloud(p marketplace.CloudProvider) *fakeCloud {
	return &fakeCloud{name: p, target: ledgertest.NewFakeCloud(ledgertest.Config{Provider: p})}
}

func (c *fakeCloud) Name() marketplace.CloudProvider { return c.name }
func (c *fakeCloud) LandingHandler() http.Handler    { return text("landing " + string(c.name)) }
func (c *fakeCloud) NotificationHandler() http.Handler {
	return text("notifications " + string(c.name))
}
func (c *fakeCloud) Target() ledger.Target { return c.target }
func (c *fakeCloud) Run(ctx context.Context) error {
	if c.runErr != nil {
		return c.runErr
	}
	c.running.Store(true)
	<-ctx.Done()
	c.stopped.Store(true)
	return nil
}

func text(s string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, s) })
}

// start runs h's server (validated against the document) on loopback and
// returns its URL, the cancel that stops it and the channel Run's result
// arrives on.
func start(t *testing.T, h *harness) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	h.srv.handler = validated(t, h.srv.handler)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		done <- h.srv.Run(ctx, ln)
		close(finished)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return "http://" + ln.Addr().String(), cancel, done
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 10 s (last: %v)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunMountsCloudsReportsAndStops(t *testing.T) {
	aws, gcp := newFakeCloud(marketplace.AWS), newFakeCloud(marketplace.GCP)
	h := newHarness(t, harnessOptions{clouds: []Cloud{aws, gcp}})
	url, cancel, done := start(t, h)
	h.url = url
	waitReady(t, url)
	for path, want := range map[string]string{"/aws/landing": "landing aws", "/gcp/notifications": "notifications gcp"} {
		resp, body := h.do(t, "POST", path, nil, "")
		if resp.StatusCode != 200 || string(body) != want {
			t.Errorf("%s: %d %q, want %q", path, resp.StatusCode, body, want)
		}
	}
	if resp, _ := h.do(t, "GET", "/azure/landing", nil, ""); resp.StatusCode != 404 {
		t.Errorf("an unconfigured cloud's landing: %d, want 404", resp.StatusCode)
	}
	if !aws.running.Load() || !gcp.running.Load() {
		t.Fatal("the clouds' loops are not running")
	}
	resp, body := h.do(t, "POST", "/v1/usage", usage(
		rec{"event_id": "r1", "provider": "aws", "customer": "c1", "metric": "tokens", "quantity": 3_000_000},
		rec{"event_id": "r2", "provider": "gcp", "customer": "g1", "metric": "tokens", "quantity": 12},
	), testKey)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	// The final flush of both buyers; the reporters send the sealed hours.
	for _, k := range []struct {
		p marketplace.CloudProvider
		c string
	}{{marketplace.AWS, "c1"}, {marketplace.GCP, "g1"}} {
		if _, err := h.ledger.SealCustomer(t.Context(), k.p, k.c); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for aws.target.Bill().Sum("c1", "tokens_1m") != 3 || gcp.target.Bill().Sum("g1", "inference.endpoints.example-project.cloud.goog/tokens") != 12 {
		if time.Now().After(deadline) {
			t.Fatalf("not billed: aws %+v, gcp %+v", aws.target.Bill(), gcp.target.Bill())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v, want a clean stop", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if !aws.stopped.Load() || !gcp.stopped.Load() {
		t.Fatal("the clouds' loops were not stopped")
	}
}

// heldIngest starts a POST /v1/usage whose body is not finished, and waits
// until the handler holds it. finish completes the body; the status arrives
// on the returned channel.
func heldIngest(t *testing.T, h *harness, url string, id string) (finish func(), status <-chan int) {
	t.Helper()
	pr, pw := io.Pipe()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", url+"/v1/usage", pr)
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/json")
	st := make(chan int, 1)
	before := len(h.srv.ingestSem)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			st <- 0
			return
		}
		resp.Body.Close()
		st <- resp.StatusCode
	}()
	pw.Write([]byte(`{"records":[`))
	deadline := time.Now().Add(5 * time.Second)
	for len(h.srv.ingestSem) <= before {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the handler")
		}
		time.Sleep(time.Millisecond)
	}
	return func() {
		pw.Write([]byte(`{"event_id":"` + id + `","provider":"aws","customer":"drain","metric":"tokens","quantity":7}]}`))
		pw.Close()
	}, st
}

// TestShutdownDrainsIngest: after the stop signal, a request in flight still
// completes and is stored, new connections are refused, and Run returns nil.
func TestShutdownDrainsIngest(t *testing.T) {
	h := newHarness(t, harnessOptions{clouds: []Cloud{newFakeCloud(marketplace.AWS)}})
	h.srv.cfg.ShutdownTimeout = 10 * time.Second
	url, cancel, done := start(t, h)
	waitReady(t, url)
	finish, status := heldIngest(t, h, url, "drain-1")
	cancel()
	// Shutdown closes the listener at once: a new connection is refused.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "http://"), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections after the stop signal")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) before the in-flight request finished", err)
	case <-time.After(100 * time.Millisecond):
	}
	finish()
	if s := <-status; s != 200 {
		t.Fatalf("the in-flight ingest ended with %d, want 200", s)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v, want a clean stop", err)
	}
	if err := h.ledger.Fold(t.Context()); err != nil {
		t.Fatal(err)
	}
	bs, err := h.ledger.Buckets(t.Context(), ledger.BucketFilter{Customer: "drain"})
	if err != nil || len(bs) != 1 || bs[0].Quantity != 7 {
		t.Fatalf("drained usage not stored: %v %v", bs, err)
	}
}

// TestShutdownIsBounded: a request that never finishes does not hold the
// daemon: Run returns within ShutdownTimeout, with an error saying so.
func TestShutdownIsBounded(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.srv.cfg.ShutdownTimeout = 300 * time.Millisecond
	url, cancel, done := start(t, h)
	waitReady(t, url)
	finish, _ := heldIngest(t, h, url, "never")
	defer finish()
	began := time.Now()
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "drain") {
			t.Fatalf("Run: %v, want an error about the drain", err)
		}
		if d := time.Since(began); d > 2*time.Second {
			t.Fatalf("Run took %v to give up, bound 300ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within its bound")
	}
}

// TestBackgroundFailureStopsTheDaemon: a cloud loop that fails (a bad queue
// URL, say) stops the daemon with its error rather than running half-alive.
func TestBackgroundFailureStopsTheDaemon(t *testing.T) {
	bad := newFakeCloud(marketplace.Azure)
	bad.runErr = errors.New("queue unreachable")
	h := newHarness(t, harnessOptions{clouds: []Cloud{bad}})
	_, _, done := start(t, h)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "azure loop: queue unreachable") {
			t.Fatalf("Run: %v, want the loop's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept going after a loop failed")
	}
}

type lifecycleRunner struct{ ran atomic.Bool }

func (l *lifecycleRunner) Run(ctx context.Context) error {
	l.ran.Store(true)
	<-ctx.Done()
	return nil
}

func TestReadyzCountsWorkers(t *testing.T) {
	lc := &lifecycleRunner{}
	h := newHarness(t, harnessOptions{clouds: []Cloud{newFakeCloud(marketplace.AWS)}, lifecycle: lc})
	url, _, _ := start(t, h)
	h.url = url
	waitReady(t, url)
	_, body := h.do(t, "GET", "/readyz", nil, "")
	if r := decode[map[string]string](t, body); r["workers"] != "4/4 running" || r["store"] != "ok" || !lc.ran.Load() {
		t.Fatalf("/readyz: %s (lifecycle ran: %v)", body, lc.ran.Load())
	}
	// The store goes away: not ready.
	h.store.Close()
	resp, body := h.do(t, "GET", "/readyz", nil, "")
	if resp.StatusCode != 503 || !strings.Contains(string(body), `"status":"unavailable"`) {
		t.Fatalf("/readyz with the store closed: %d %s", resp.StatusCode, body)
	}
}

func TestNewRefusesMismatchedClouds(t *testing.T) {
	cfg := testConfig(t)
	cat, err := ParseCatalogue([]byte(`{"products":[{"provider":"aws","product":"p","metrics":{"tokens":{"dimension":"tokens"}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Catalogue = cat
	h := newHarness(t, harnessOptions{})
	deps := h.srv.deps
	deps.Clouds = []Cloud{newFakeCloud(marketplace.GCP)}
	if _, err := New(cfg, deps); err == nil || !strings.Contains(err.Error(), "cloud gcp is configured but the catalogue") {
		t.Fatalf("a cloud without products: %v", err)
	}
	deps.Clouds = []Cloud{newFakeCloud(marketplace.AWS), newFakeCloud(marketplace.AWS)}
	if _, err := New(cfg, deps); err == nil || !strings.Contains(err.Error(), "mounted twice") {
		t.Fatalf("a cloud mounted twice: %v", err)
	}
}

// TestMetricsCountParkedNotifications: /metrics asks the lifecycle engine
// for each mounted cloud's parked notifications at scrape time.
func TestMetricsCountParkedNotifications(t *testing.T) {
	h := newHarness(t, harnessOptions{clouds: []Cloud{newFakeCloud(marketplace.AWS), newFakeCloud(marketplace.GCP)}})
	parked := map[marketplace.CloudProvider]int{marketplace.AWS: 3}
	h.srv.deps.Parked = func(ctx context.Context, p marketplace.CloudProvider) (int, error) {
		if p == marketplace.GCP {
			return 0, errors.New("inbox unavailable")
		}
		return parked[p], nil
	}
	h.srv.handler = h.srv.routes()
	h.url = httptestURL(t, h)
	_, body := h.do(t, "GET", "/metrics", nil, "")
	if !strings.Contains(string(body), `marketplaced_notifications_parked{provider="aws"} 3`) {
		t.Fatalf("/metrics lacks the parked count:\n%s", body)
	}
	if !strings.Contains(h.logs.String(), "counting parked notifications") {
		t.Fatal("the failed count was not logged")
	}
	parked[marketplace.AWS] = 0
	_, body = h.do(t, "GET", "/metrics", nil, "")
	if !strings.Contains(string(body), `marketplaced_notifications_parked{provider="aws"} 0`) {
		t.Fatal("the parked count was not refreshed")
	}
}

func httptestURL(t *testing.T, h *harness) string {
	ts := httptest.NewServer(validated(t, h.srv.handler))
	t.Cleanup(ts.Close)
	return ts.URL
}
