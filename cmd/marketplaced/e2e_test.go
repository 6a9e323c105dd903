package main

import (
	"bufio"
	"cloud.google.com/go/pubsub/v2/pstest"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/saasmarket/marketplace/emulator/admin"
)

// TestServeAgainstEmulatorAWS runs the real binary twice, as `emulate` and as
// `serve`: a buyer subscribes through the AWS landing path (registration
// token → ResolveCustomer), usage goes in through POST /v1/usage, the buyer
// unsubscribes (EventBridge → the lifecycle engine seals the usage), and the
// emulator's bill shows it exactly once.
func TestServeAgainstEmulatorAWS(t *testing.T) {
	const secret = "eventbridge-secret-for-the-test"
	daemonAddr := freeAddr(t)
	emu := startEmulate(t, "-clouds", "aws", "-aws-listen", "127.0.0.1:0",
		"-aws-eventbridge-endpoint", "http://"+daemonAddr+"/aws/notifications", "-aws-eventbridge-secret", secret,
		"-aws-dimensions", "prod-demo=tokens_1m")
	awsURL := emu["aws"]
	if awsURL == "" {
		t.Fatalf("no AWS emulator URL: %v", emu)
	}

	cat := filepath.Join(t.TempDir(), "catalogue.json")
	if err := os.WriteFile(cat, []byte(`{"products":[{"provider":"aws","product":"prod-demo","metrics":{"tokens":{"dimension":"tokens_1m","unit":1000000}}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ENDPOINT_URL_MARKETPLACE_METERING", awsURL)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEMULATOR")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "emulator-secret")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("MARKETPLACED_AWS_EVENTBRIDGE_SECRET", secret)
	d := startServe(t, "-addr", daemonAddr, "-catalogue", cat, "-aws-product-code", "prod-demo", "-log-level", "debug")

	// A buyer subscribes on AWS and lands on the seller's registration URL.
	buyer := landBuyer(t, "aws", awsURL, `{"product":"prod-demo"}`, d)
	var sub map[string]any
	if st := getJSON(t, "GET", d.url+"/v1/subscriptions/aws/"+url.PathEscape(buyer.ID), "", &sub); st != 200 || sub["status"] != "active" {
		t.Fatalf("subscription after landing: %d %v", st, sub)
	}
	var ent map[string]any
	getJSON(t, "GET", d.url+"/v1/entitlements/check?provider=aws&customer="+url.QueryEscape(buyer.ID), "", &ent)
	if ent["entitled"] != true {
		t.Fatalf("entitlement after landing: %v", ent)
	}

	// Usage in the seller's names, sent twice (a client retry).
	batch := `{"records":[{"event_id":"e2e-1","provider":"aws","customer":"` + buyer.ID + `","metric":"tokens","quantity":2000000},
		{"event_id":"e2e-2","provider":"aws","customer":"` + buyer.ID + `","metric":"tokens","quantity":1500000}]}`
	for range 2 {
		var res map[string]any
		if st := getJSON(t, "POST", d.url+"/v1/usage", batch, &res); st != 200 {
			t.Fatalf("usage: %d %v", st, res)
		}
	}

	// The buyer's agreement ends: EventBridge delivers it to the daemon,
	// metering stays open for the final hour, and the daemon seals the
	// buyer's usage and reports it.
	var ev admin.EventResult
	if st := getJSON(t, "POST", awsURL+"/emulator/buyers/"+url.PathEscape(buyer.ID)+"/events", `{"event":"Purchase Agreement Ended - Manufacturer"}`, &ev); st != 200 ||
		len(ev.Deliveries) != 1 || ev.Deliveries[0].Status/100 != 2 {
		t.Fatalf("agreement ended: %d %+v\n%s", st, ev, d.logs())
	}
	deadline := time.Now().Add(20 * time.Second)
	var bill admin.Bill
	for {
		getJSON(t, "GET", awsURL+"/emulator/bill", "", &bill)
		if bill.Totals[buyer.ID]["tokens_1m"] > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// 3.5 M tokens: 3 whole units; the half unit is forgiven at the end (SettleDrop).
	if got := bill.Totals[buyer.ID]["tokens_1m"]; got != 3 || len(bill.Lines) != 1 {
		t.Fatalf("bill: %+v, want one line of 3 tokens_1m for %s\n%s", bill, buyer.ID, d.logs())
	}
	// Exactly once: nothing more arrives.
	time.Sleep(2 * time.Second)
	getJSON(t, "GET", awsURL+"/emulator/bill", "", &bill)
	if got := bill.Totals[buyer.ID]["tokens_1m"]; got != 3 || len(bill.Lines) != 1 {
		t.Fatalf("bill later: %+v, want still one line of 3", bill)
	}
	var usage struct {
		Buckets []struct {
			State    string `json:"state"`
			RecordID string `json:"record_id"`
		} `json:"buckets"`
	}
	getJSON(t, "GET", d.url+"/v1/usage?provider=aws&customer="+url.QueryEscape(buyer.ID), "", &usage)
	if len(usage.Buckets) == 0 || usage.Buckets[0].State != "reported" || usage.Buckets[0].RecordID == "" {
		t.Fatalf("usage report: %+v", usage)
	}
	if err := d.stop(t, 20*time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.logs())
	}
}

// startPubSub starts Google's Pub/Sub emulator (gcloud) on a free loopback
// port and sets PUBSUB_EMULATOR_HOST for this test and the processes it
// starts. Without gcloud the test skips, except under CI, where it fails.
func startPubSub(t *testing.T) string {
	t.Helper()
	gcloud, err := exec.LookPath("gcloud")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but gcloud (with the pubsub-emulator component) is not on PATH")
		}
		t.Skip("gcloud not installed: no Pub/Sub emulator")
	}
	addr := freeAddr(t)
	cmd := exec.Command(gcloud, "beta", "emulators", "pubsub", "start", "--host-port="+addr, "--project="+e2eProject, "--quiet")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // gcloud's python and the emulator's java, stopped together
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		started := false
		for sc.Scan() {
			if !started && strings.Contains(sc.Text(), "Server started") {
				started = true
				close(ready)
			}
		}
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	select {
	case <-ready:
	case <-time.After(90 * time.Second):
		t.Fatal("the Pub/Sub emulator did not start within 90 s")
	}
	t.Setenv("PUBSUB_EMULATOR_HOST", addr)
	return addr
}

// startPstest starts the Go Pub/Sub client's own fake server (pstest) in
// the test process and sets PUBSUB_EMULATOR_HOST for this test and the
// processes it starts. The crash test uses it: like the cloud, it stops
// leasing messages to a stream whose subscriber died, and what that
// subscriber held comes back at its ack deadline. Google's emulator keeps
// serving a killed subscriber's stream (RELIABILITY.md), so across many
// SIGKILLs it hands messages to the dead far longer than the cloud would.
func startPstest(t *testing.T) string {
	t.Helper()
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	t.Setenv("PUBSUB_EMULATOR_HOST", srv.Addr)
	return srv.Addr
}

const e2eProject = "e2e-project"

// TestServeAgainstEmulatorGCP: a buyer signs up through Google's real
// landing path (a signed sign-up JWT, the account approved through
// Procurement), the entitlement is approved through the Pub/Sub lifecycle,
// usage goes in through POST /v1/usage, the buyer cancels, and the Service
// Control bill shows the usage exactly once.
func TestServeAgainstEmulatorGCP(t *testing.T) {
	const (
		service  = "inference.endpoints.e2e-project.cloud.goog"
		audience = "saas.example.com"
		topic    = "marketplace-lifecycle"
	)
	startPubSub(t)
	emu := startEmulate(t, "-clouds", "gcp", "-gcp-listen", "127.0.0.1:0", "-gcp-service", service, "-gcp-metrics", "tokens",
		"-gcp-audience", audience, "-gcp-pubsub-project", e2eProject, "-gcp-pubsub-topic", topic)
	gcpURL := emu["gcp"]
	if gcpURL == "" {
		t.Fatalf("no Google emulator URL: %v", emu)
	}
	// The seller's pull subscription on the lifecycle topic.
	ps, err := pubsub.NewClient(t.Context(), e2eProject)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	subName := "projects/" + e2eProject + "/subscriptions/marketplaced"
	if _, err := ps.SubscriptionAdminClient.CreateSubscription(t.Context(), &pubsubpb.Subscription{
		Name: subName, Topic: "projects/" + e2eProject + "/topics/" + topic, AckDeadlineSeconds: 30}); err != nil {
		t.Fatal(err)
	}

	cat := filepath.Join(t.TempDir(), "catalogue.json")
	if err := os.WriteFile(cat, []byte(`{"products":[{"provider":"gcp","product":"`+service+`","metrics":{"tokens":{"dimension":"`+service+`/tokens"}}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startServe(t, "-catalogue", cat, "-log-level", "debug", "-gcp-service", service, "-gcp-provider-id", "demo-provider",
		"-gcp-signup-audience", audience, "-gcp-pubsub-subscription", subName, "-gcp-emulator-url", gcpURL)

	buyer := landBuyer(t, "gcp", gcpURL, `{"product":"demo","plan":"standard"}`, d)
	// The entitlement's approval goes through Pub/Sub: wait until active.
	var customer string
	deadline := time.Now().Add(60 * time.Second)
	for customer == "" {
		var page struct {
			Subscriptions []struct {
				Customer string `json:"customer"`
				Status   string `json:"status"`
			} `json:"subscriptions"`
		}
		getJSON(t, "GET", d.url+"/v1/subscriptions?provider=gcp&state=active", "", &page)
		if len(page.Subscriptions) == 1 {
			customer = page.Subscriptions[0].Customer
			break
		}
		if time.Now().After(deadline) {
			var all any
			getJSON(t, "GET", d.url+"/v1/subscriptions?provider=gcp", "", &all)
			t.Fatalf("no active Google subscription after 60 s: %v\n%s", all, d.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}

	batch := `{"records":[{"event_id":"g-1","provider":"gcp","customer":"` + customer + `","metric":"tokens","quantity":1234},
		{"event_id":"g-2","provider":"gcp","customer":"` + customer + `","metric":"tokens","quantity":766}]}`
	for range 2 {
		if st := getJSON(t, "POST", d.url+"/v1/usage", batch, nil); st != 200 {
			t.Fatalf("usage: %d", st)
		}
	}
	var ev admin.EventResult
	if st := getJSON(t, "POST", gcpURL+"/emulator/buyers/"+url.PathEscape(buyer.ID)+"/events", `{"event":"cancel"}`, &ev); st != 200 {
		t.Fatalf("cancel: %d %+v", st, ev)
	}
	var bill admin.Bill
	deadline = time.Now().Add(60 * time.Second)
	for {
		getJSON(t, "GET", gcpURL+"/emulator/bill", "", &bill)
		if len(bill.Lines) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	total := func() float64 {
		var n float64
		for _, l := range bill.Lines {
			n += l.Quantity
		}
		return n
	}
	if total() != 2000 {
		t.Fatalf("bill: %+v, want 2000 tokens for %s\n%s", bill, customer, d.logs())
	}
	time.Sleep(2 * time.Second)
	getJSON(t, "GET", gcpURL+"/emulator/bill", "", &bill)
	if total() != 2000 {
		t.Fatalf("bill later: %+v, want still 2000", bill)
	}
	if err := d.stop(t, 20*time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.logs())
	}
}

// TestServeAgainstEmulatorAzure: a buyer purchases on Azure and lands with
// the marketplace token (resolve, activate), usage of an ended hour goes in
// through POST /v1/usage (twice), the emulator's bill shows it once, and
// Azure's webhook (authenticated with an Entra token) suspends the
// subscription, which the API and the entitlement check show. (Usage of the
// current hour is billed once the hour ends; a cancellation comes too late
// for Azure, which refuses usage after it: docs/azure.md.)
func TestServeAgainstEmulatorAzure(t *testing.T) {
	const secret = "azure-client-secret-for-the-test"
	daemonAddr := freeAddr(t)
	certFile := filepath.Join(t.TempDir(), "azure-cert.pem")
	emu := startEmulate(t, "-clouds", "azure", "-azure-listen", "127.0.0.1:0", "-azure-cert-file", certFile,
		"-azure-client-secret", secret, "-azure-webhook-url", "http://"+daemonAddr+"/azure/notifications")
	azURL := emu["azure"]
	if azURL == "" {
		t.Fatalf("no Azure emulator URL: %v", emu)
	}
	cat := filepath.Join(t.TempDir(), "catalogue.json")
	if err := os.WriteFile(cat, []byte(`{"products":[{"provider":"azure","product":"inference-offer","metrics":{"tokens":{"dimension":"tokens_1m","unit":1000000}}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MARKETPLACED_AZURE_CLIENT_SECRET", secret)
	d := startServe(t, "-addr", daemonAddr, "-catalogue", cat, "-log-level", "debug",
		"-azure-tenant-id", "72f988bf-86f1-41af-91ab-2d7cd011db47", "-azure-app-id", "6a1e7f7c-3d8e-4b5a-9c2f-0e1d2c3b4a59",
		"-azure-emulator-url", azURL, "-azure-emulator-ca-file", certFile)
	if strings.Contains(d.logs(), secret) {
		t.Fatal("the client secret is in the logs")
	}

	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	emuClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	emuCall := func(method, path, body string, out any) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, azURL+path, strings.NewReader(body))
		resp, err := emuClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %d: %v", method, path, resp.StatusCode, err)
		}
		return resp.StatusCode
	}
	var buyer admin.Buyer
	if st := emuCall("POST", "/emulator/buyers", `{"plan":"basic"}`, &buyer); st != 201 || buyer.Token == "" {
		t.Fatalf("new buyer: %d %+v", st, buyer)
	}
	resp, err := http.Get(d.url + "/azure/landing?token=" + url.QueryEscape(buyer.Token))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("landing: %d %s\n%s", resp.StatusCode, body, d.logs())
	}
	var page struct {
		Subscriptions []struct {
			Customer string `json:"customer"`
			Status   string `json:"status"`
		} `json:"subscriptions"`
	}
	getJSON(t, "GET", d.url+"/v1/subscriptions?provider=azure", "", &page)
	if len(page.Subscriptions) != 1 || page.Subscriptions[0].Status != "active" {
		t.Fatalf("subscriptions after landing: %+v\n%s", page, d.logs())
	}
	customer := page.Subscriptions[0].Customer
	var ent map[string]any
	getJSON(t, "GET", d.url+"/v1/entitlements/check?provider=azure&customer="+url.QueryEscape(customer), "", &ent)
	if ent["entitled"] != true {
		t.Fatalf("entitlement after landing: %v", ent)
	}
	// Usage of an hour that has ended (two hours ago, so that its grace
	// is over too): the ledger seals it and the reporter sends it, as it
	// does every hour.
	last := time.Now().UTC().Add(-2 * time.Hour).Format(time.RFC3339)
	var res map[string]any
	batch := `{"records":[{"event_id":"az-1","provider":"azure","customer":"` + customer + `","metric":"tokens","quantity":2500000,"time":"` + last + `"}]}`
	for range 2 { // a client retry: counted once
		if st := getJSON(t, "POST", d.url+"/v1/usage", batch, &res); st != 200 {
			t.Fatalf("usage: %d %v", st, res)
		}
	}
	var usage struct {
		Buckets []struct {
			Dimension string `json:"dimension"`
			Quantity  int64  `json:"quantity"`
		} `json:"buckets"`
	}
	getJSON(t, "GET", d.url+"/v1/usage?provider=azure&customer="+url.QueryEscape(customer), "", &usage)
	if len(usage.Buckets) != 1 || usage.Buckets[0].Dimension != "tokens_1m" || usage.Buckets[0].Quantity != 2500000 {
		t.Fatalf("usage report: %+v", usage)
	}

	var bill admin.Bill
	deadline := time.Now().Add(60 * time.Second)
	for len(bill.Lines) == 0 && time.Now().Before(deadline) {
		emuCall("GET", "/emulator/bill", "", &bill)
		time.Sleep(200 * time.Millisecond)
	}
	if len(bill.Lines) != 1 || bill.Lines[0].Quantity != 2 || bill.Lines[0].Dimension != "tokens_1m" {
		t.Fatalf("bill: %+v, want one line of 2 tokens_1m\n%s", bill, d.logs())
	}

	// Azure suspends the subscription and calls the webhook.
	var ev admin.EventResult
	if st := emuCall("POST", "/emulator/buyers/"+url.PathEscape(buyer.ID)+"/events", `{"event":"Suspend"}`, &ev); st != 200 {
		t.Fatalf("suspend: %d %+v", st, ev)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		getJSON(t, "GET", d.url+"/v1/entitlements/check?provider=azure&customer="+url.QueryEscape(customer), "", &ent)
		if ent["entitled"] == false {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still entitled 30 s after Suspend: %v (deliveries %+v)\n%s", ent, ev.Deliveries, d.logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var sub map[string]any
	if st := getJSON(t, "GET", d.url+"/v1/subscriptions/azure/"+url.PathEscape(customer), "", &sub); st != 200 || sub["status"] != "suspended" {
		t.Fatalf("subscription after Suspend: %d %v", st, sub)
	}
	if err := d.stop(t, 20*time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.logs())
	}
}
