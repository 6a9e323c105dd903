package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/saasmarket/marketplace/emulator/admin"
)

// The reliability suite's switches. The short run (the default, and CI's)
// kills the daemon at least 50 times; -reliability.long several hundred.
var (
	reliabilityLong = flag.Bool("reliability.long", false, "run the long reliability suite (hundreds of SIGKILLs; several minutes)")
	reliabilityOff  = flag.Bool("reliability.skip", false, "skip the reliability suite (it takes about three minutes)")
	reliabilityPS   = flag.String("reliability.pubsub", "pstest", "the crash test's Pub/Sub: pstest (the Go client's fake, in the test) or gcloud (Google's emulator, which goes on leasing messages to the streams of killed subscribers: see RELIABILITY.md)")
	reliabilityKill = flag.Int("reliability.kills", 0, "SIGKILLs of the plain crash run (0: 35, or 300 with -reliability.long; the faults run has 20 or 200); the faults run has half of this")
)

// crashRun is one crash run's settings and, afterwards, its figures.
type crashRun struct {
	name   string
	kills  int          // SIGKILLs during the load
	faults admin.Faults // set on every emulator before the load

	// figures
	killed, restarts           int
	batches, records, retries  int
	events                     int
	acked, billed, lost, twice map[string]float64 // per cloud
}

// TestReliabilityCrash is the crash test of the whole daemon: the real
// `marketplaced serve` against the real `marketplaced emulate` for the
// three clouds. Clients post usage with event ids and retry each batch
// until it is acknowledged; the daemon is SIGKILLed at random moments and
// restarted with the same data folder; lifecycle notifications (subscribe,
// plan change, cancel) are delivered throughout. At the end every cloud's
// bill equals the acknowledged usage — nothing lost, nothing billed twice —
// and every subscription is in the state its last notification says. The
// second run does the same with every emulator fault on.
//
// The daemon's ledger clock runs 60 times faster than the wall (an hour
// ends, seals and is reported every minute) and hours behind it, so that
// the clouds take the hours as past; the kills land during ingest, folding,
// sealing, reporting and lifecycle processing alike.
//
// Google's notifications go through pstest, the Go client's fake Pub/Sub
// server, by default: Google's own emulator keeps leasing messages to the
// streams of killed subscribers (RELIABILITY.md), which the cloud does not;
// -reliability.pubsub gcloud runs it against that emulator all the same.
func TestReliabilityCrash(t *testing.T) {
	if *reliabilityOff || (testing.Short() && os.Getenv("CI") == "") {
		t.Skip("reliability suite skipped (-short or -reliability.skip)")
	}
	switch *reliabilityPS {
	case "pstest":
		startPstest(t)
	case "gcloud":
		startPubSub(t)
	default:
		t.Fatalf("-reliability.pubsub %q: want pstest or gcloud", *reliabilityPS)
	}
	kills := []int{35, 20}
	if *reliabilityLong {
		kills = []int{300, 200}
	}
	if *reliabilityKill > 0 {
		kills = []int{*reliabilityKill, max(1, *reliabilityKill/2)}
	}
	runs := []*crashRun{
		{name: "plain", kills: kills[0]},
		{name: "faults", kills: kills[1], faults: admin.Faults{
			ThrottleRate: 0.1, ErrorRate: 0.1, DropRate: 0.1, UnprocessedRate: 0.1,
			Latency: admin.Duration(20 * time.Millisecond), RetryAfter: admin.Duration(time.Second), Scope: admin.ScopeMetering}},
	}
	for i, r := range runs {
		t.Run(r.name, func(t *testing.T) { runCrash(t, r, i) })
		if r.killed == 0 {
			continue
		}
		t.Logf("figures %s: kills=%d restarts=%d batches=%d records=%d client_retries=%d lifecycle_events=%d",
			r.name, r.killed, r.restarts, r.batches, r.records, r.retries, r.events)
		for _, cloud := range []string{"aws", "azure", "gcp"} {
			t.Logf("figures %s %s: acked=%.0f billed=%.0f lost=%.0f billed_twice=%.0f",
				r.name, cloud, r.acked[cloud], r.billed[cloud], r.lost[cloud], r.twice[cloud])
		}
	}
}

// cloudBuyers are one cloud's buyers in a run: usage buyers stay active and
// receive usage; lifecycle buyers go through plan change and cancel.
type cloudBuyers struct {
	admin     string       // emulator base URL
	client    *http.Client // for the emulator
	usage     []string     // the daemon's customer ids
	lifecycle []admin.Buyer
	events    []string // the lifecycle buyers' events, in order
	final     string   // the daemon's status after the last event
}

func runCrash(t *testing.T, r *crashRun, seq int) {
	startTime := time.Now()
	const (
		secret      = "eventbridge-secret-for-the-crash-test"
		azureSecret = "azure-client-secret-for-the-crash-test"
		service     = "inference.endpoints.e2e-project.cloud.goog"
		audience    = "saas.example.com"
	)
	topic := fmt.Sprintf("lifecycle-%s", r.name)
	daemonAddr := freeAddr(t)
	dir := t.TempDir()
	certFile := filepath.Join(dir, "azure-cert.pem")
	emu := startEmulate(t, "-aws-listen", "127.0.0.1:0", "-azure-listen", "127.0.0.1:0", "-gcp-listen", "127.0.0.1:0",
		"-aws-eventbridge-endpoint", "http://"+daemonAddr+"/aws/notifications", "-aws-eventbridge-secret", secret,
		"-azure-cert-file", certFile, "-azure-client-secret", azureSecret, "-azure-webhook-url", "http://"+daemonAddr+"/azure/notifications",
		"-gcp-service", service, "-gcp-metrics", "tokens", "-gcp-audience", audience, "-gcp-pubsub-project", e2eProject, "-gcp-pubsub-topic", topic)
	plain := &http.Client{Timeout: 15 * time.Second}
	azClient := emulatorClient(t, certFile)

	ps, err := pubsub.NewClient(t.Context(), e2eProject)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	subName := "projects/" + e2eProject + "/subscriptions/marketplaced-" + r.name
	if _, err := ps.TopicAdminClient.CreateTopic(t.Context(), &pubsubpb.Topic{Name: "projects/" + e2eProject + "/topics/" + topic}); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
		t.Fatal(err)
	}
	if _, err := ps.SubscriptionAdminClient.CreateSubscription(t.Context(), &pubsubpb.Subscription{
		Name: subName, Topic: "projects/" + e2eProject + "/topics/" + topic, AckDeadlineSeconds: 10}); err != nil {
		t.Fatal(err)
	}

	// An audit subscription on the same topic sees every lifecycle
	// message the emulator published, to tell, when a notification is
	// missing, whether Pub/Sub had it.
	auditName := "projects/" + e2eProject + "/subscriptions/audit-" + r.name
	if _, err := ps.SubscriptionAdminClient.CreateSubscription(t.Context(), &pubsubpb.Subscription{
		Name: auditName, Topic: "projects/" + e2eProject + "/topics/" + topic, AckDeadlineSeconds: 10}); err != nil {
		t.Fatal(err)
	}

	cat := filepath.Join(dir, "catalogue.json")
	if err := os.WriteFile(cat, []byte(`{"products":[
		{"provider":"aws","product":"prod-rel","metrics":{"tokens":{"dimension":"tokens"}}},
		{"provider":"azure","product":"inference-offer","metrics":{"tokens":{"dimension":"tokens"}}},
		{"provider":"gcp","product":"`+service+`","metrics":{"tokens":{"dimension":"`+service+`/tokens"}}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// The ledger's clock: 60 times the wall's pace, from 20 hours ago
	// (each run its own stretch of hours, all inside the clouds' 24-hour
	// window). Every restart gets the same anchor, so the clock never
	// goes back.
	anchor := time.Now().UTC().Truncate(time.Second)
	offset := -20*time.Hour + time.Duration(seq)*8*time.Hour
	p := newReplica(t, "daemon", []string{"-catalogue", cat, "-log-level", "debug", "-seal-every", "1s", "-lifecycle-lease", "25s",
		"-clock-rate", "60", "-clock-anchor", anchor.Format(time.RFC3339),
		"-aws-product-code", "prod-rel", "-aws-region", "us-east-1",
		"-azure-tenant-id", "72f988bf-86f1-41af-91ab-2d7cd011db47", "-azure-app-id", "6a1e7f7c-3d8e-4b5a-9c2f-0e1d2c3b4a59",
		"-azure-emulator-url", emu["azure"], "-azure-emulator-ca-file", certFile,
		"-gcp-service", service, "-gcp-provider-id", "demo-provider", "-gcp-signup-audience", audience,
		"-gcp-pubsub-subscription", subName, "-gcp-emulator-url", emu["gcp"]},
		[]string{"AWS_ENDPOINT_URL_MARKETPLACE_METERING=" + emu["aws"], "AWS_ACCESS_KEY_ID=AKIDEMULATOR", "AWS_SECRET_ACCESS_KEY=emulator-secret",
			"MARKETPLACED_AWS_EVENTBRIDGE_SECRET=" + secret, "MARKETPLACED_AZURE_CLIENT_SECRET=" + azureSecret})
	p.addr = daemonAddr // the emulators' notification URLs name it
	// A failed run keeps the daemon's log (all its lives) with the
	// test's artifacts (go test -artifacts).
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(p.log.Name()); err == nil {
				os.WriteFile(filepath.Join(t.ArtifactDir(), "daemon.log"), b, 0o600)
			}
		}
	})
	// up is held for writing while the daemon is killed and restarted:
	// the lifecycle events are sent while it is up.
	var up sync.RWMutex
	clockArg := func(extra time.Duration) string { return "-clock-offset=" + (offset + extra).String() }
	p.start(t, clockArg(0))
	base := p.url()

	must := func(c *http.Client, method, u, body string, out any, want int) {
		t.Helper()
		if st, err := call(t.Context(), c, method, u, body, out); err != nil || st != want {
			t.Fatalf("%s %s: %d %v, want %d\n%s", method, u, st, err, want, p.logs())
		}
	}
	// activeCustomers is empty while the daemon is down.
	activeCustomers := func(cloud string) map[string]string {
		m, _ := subscriptionStates(t.Context(), plain, base, cloud)
		return m
	}

	// The buyers, landed while the daemon is up.
	clouds := map[string]*cloudBuyers{
		// AWS: Purchase Agreement Ended keeps the state and seals the
		// buyer's usage (docs/aws.md); the cancellation comes as
		// unsubscribe-success over SNS.
		"aws": {admin: emu["aws"], client: plain, final: "active",
			events: []string{"Purchase Agreement Created - Manufacturer", "Purchase Agreement Amended - Manufacturer", "Purchase Agreement Ended - Manufacturer"}},
		"azure": {admin: emu["azure"], client: azClient, final: "cancelled", events: []string{"ChangePlan", "Unsubscribe"}},
		"gcp":   {admin: emu["gcp"], client: plain, final: "cancelled", events: []string{"changePlan", "cancel"}},
	}
	const usageBuyers, lifecycleBuyers = 2, 2
	land := func(cloud string, b admin.Buyer) {
		t.Helper()
		var st int
		var err error
		switch cloud {
		case "aws":
			st, err = call(t.Context(), plain, "POST", base+"/aws/landing", "x-amzn-marketplace-token="+url.QueryEscape(b.Token), nil)
		case "azure":
			st, err = call(t.Context(), plain, "GET", base+"/azure/landing?token="+url.QueryEscape(b.Token), "", nil)
		case "gcp":
			st, err = call(t.Context(), plain, "POST", base+"/gcp/landing", "x-gcp-marketplace-token="+url.QueryEscape(b.Token), nil)
		}
		if err != nil || st >= 300 {
			t.Fatalf("%s landing: %d %v\n%s", cloud, st, err, p.logs())
		}
	}
	for _, cloud := range []string{"aws", "azure", "gcp"} {
		cb := clouds[cloud]
		req := map[string]string{"aws": `{"product":"prod-rel"}`, "azure": `{"plan":"basic"}`, "gcp": `{"product":"demo","plan":"standard"}`}[cloud]
		for i := range usageBuyers + lifecycleBuyers {
			before := activeCustomers(cloud)
			var b admin.Buyer
			must(cb.client, "POST", cb.admin+"/emulator/buyers", req, &b, 201)
			land(cloud, b)
			// Google approves through Pub/Sub: wait for the new customer.
			var customer string
			for deadline := time.Now().Add(60 * time.Second); customer == ""; {
				for c, s := range activeCustomers(cloud) {
					if _, ok := before[c]; !ok && s == "active" {
						customer = c
					}
				}
				if customer == "" {
					if time.Now().After(deadline) {
						t.Fatalf("%s buyer %s not active 60 s after landing\n%s", cloud, b.ID, p.logs())
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			if i < usageBuyers {
				cb.usage = append(cb.usage, customer)
			} else {
				b.Account = customer // the daemon's id, for the final check
				cb.lifecycle = append(cb.lifecycle, b)
			}
		}
		if r.faults != (admin.Faults{}) {
			f := r.faults
			if cloud == "aws" {
				f.RetryAfter = 0
			} else {
				f.UnprocessedRate = 0
			}
			body, _ := json.Marshal(f)
			must(cb.client, "PUT", cb.admin+"/emulator/faults", string(body), nil, 200)
		}
	}

	setupDone := time.Now()
	t.Logf("%s: setup (emulators, daemon, %d buyers) took %s", r.name, 3*(usageBuyers+lifecycleBuyers), setupDone.Sub(startTime).Round(time.Millisecond))

	// The load: clients, lifecycle events and the killer.
	ctx, stop := context.WithCancel(t.Context())
	var (
		wg    sync.WaitGroup // the clients
		lc    sync.WaitGroup // the lifecycle events
		figMu sync.Mutex
		// cloud → customer → quantity; every cloud's map is made before the
		// clients start, which read acked under figMu.
		acked = map[string]map[string]float64{"aws": {}, "azure": {}, "gcp": {}}
	)
	r.acked, r.billed, r.lost, r.twice = map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, cloud := range []string{"aws", "azure", "gcp"} {
		cb := clouds[cloud]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(seq), uint64(len(cloud))))
			for n := 0; ctx.Err() == nil; n++ {
				var recs []usageRecord
				sum := map[string]float64{}
				for i := range 1 + rng.IntN(20) {
					c := cb.usage[rng.IntN(len(cb.usage))]
					q := 1 + rng.Int64N(1000)
					recs = append(recs, usageRecord{EventID: fmt.Sprintf("%s-%s-%d-%d", r.name, cloud, n, i), Provider: cloud, Customer: c, Metric: "tokens", Quantity: q})
					sum[c] += float64(q)
				}
				// Retry until acknowledged, whatever the daemon is doing.
				tries, err := ingestUntilAcked(t.Context(), plain, func(int) string { return base }, "", usageBody(recs), 0)
				if err != nil {
					if t.Context().Err() == nil {
						t.Errorf("%s usage: %v\n%s", cloud, err, p.logs())
					}
					return
				}
				figMu.Lock()
				r.retries += tries
				r.batches++
				r.records += len(recs)
				for c, q := range sum {
					acked[cloud][c] += q
				}
				figMu.Unlock()
				time.Sleep(time.Duration(20+rng.IntN(60)) * time.Millisecond)
			}
		})
		// Lifecycle: each event is sent while the daemon is up (the
		// emulators cannot redeliver what a dead daemon missed, as the
		// clouds would); the daemon may die the moment after it answers.
		lc.Go(func() {
			for _, ev := range cb.events {
				for _, b := range cb.lifecycle {
					select {
					case <-t.Context().Done():
						return
					case <-time.After(time.Duration(300+rand.IntN(1000)) * time.Millisecond):
					}
					body := `{"event":"` + ev + `"}`
					if ev == "ChangePlan" {
						body = `{"event":"ChangePlan","plan":"pro"}`
					} else if ev == "changePlan" {
						body = `{"event":"changePlan","plan":"premium"}`
					}
					up.RLock()
					var res admin.EventResult
					st, err := call(t.Context(), cb.client, "POST", cb.admin+"/emulator/buyers/"+url.PathEscape(b.ID)+"/events", body, &res)
					up.RUnlock()
					if err != nil || st != 200 {
						t.Errorf("%s %s for %s: %d %v", cloud, ev, b.ID, st, err)
						continue
					}
					for _, d := range res.Deliveries {
						if d.Error != "" || (d.Status != 0 && d.Status/100 != 2) { // Pub/Sub has no status
							t.Errorf("%s %s for %s: delivery %+v\n%s", cloud, ev, b.ID, d, p.logs())
						}
					}
					figMu.Lock()
					r.events++
					figMu.Unlock()
				}
			}
		})
	}
	// The killer: SIGKILL at a random moment of each life, then restart.
	lcDone := make(chan struct{})
	go func() { lc.Wait(); close(lcDone) }()
	lifecycleDone := func() bool {
		select {
		case <-lcDone:
			return true
		default:
			return false
		}
	}
	rng := rand.New(rand.NewPCG(uint64(seq)+7, 11))
	for (r.killed < r.kills || !lifecycleDone()) && !t.Failed() {
		time.Sleep(time.Duration(100+rng.IntN(1200)) * time.Millisecond)
		up.Lock()
		p.kill()
		r.killed++
		p.start(t, clockArg(0))
		r.restarts++
		up.Unlock()
	}
	stop()
	wg.Wait()
	<-lcDone
	if t.Failed() {
		return
	}

	t.Logf("%s: load with %d kills took %s", r.name, r.killed, time.Since(setupDone).Round(time.Millisecond))
	drainStart := time.Now()

	// One more kill, and a restart two hours later by the ledger's clock:
	// every hour of the load has ended, seals and is reported.
	p.kill()
	r.killed++
	p.start(t, clockArg(2*time.Hour))
	r.restarts++

	clients := map[string]*http.Client{}
	for cloud, cb := range clouds {
		clients[cloud] = cb.client
	}
	bills := settledBills(t, emu, clients, acked, 120*time.Second)
	t.Logf("%s: bills settled %s after the last restart (3 s of it waiting for more)", r.name, time.Since(drainStart).Round(time.Millisecond))
	defer func() {
		if !t.Failed() {
			return
		}
		// Diagnosis: what Pub/Sub still holds for the daemon.
		p.kill()
		rctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		var held []string
		var hmu sync.Mutex
		ps.Subscriber(subName).Receive(rctx, func(_ context.Context, m *pubsub.Message) {
			hmu.Lock()
			held = append(held, string(m.Data))
			hmu.Unlock()
			m.Nack()
		})
		t.Logf("Pub/Sub still holds %d messages for the daemon: %q", len(held), held)
		actx, acancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer acancel()
		var published []string
		ps.Subscriber(auditName).Receive(actx, func(_ context.Context, m *pubsub.Message) {
			hmu.Lock()
			published = append(published, string(m.Data))
			hmu.Unlock()
			m.Ack()
		})
		t.Logf("the emulator published %d lifecycle messages: %q", len(published), published)
		for _, f := range []string{"marketplace.db", "marketplace.db-wal"} {
			if b, err := os.ReadFile(filepath.Join(p.data(), f)); err == nil {
				os.WriteFile(filepath.Join(t.ArtifactDir(), f), b, 0o600)
			}
		}
		// The daemon's whole log, all its lives, at debug: every Pub/Sub
		// ack is in it with its ids.
		if b, err := os.ReadFile(p.log.Name()); err == nil {
			os.WriteFile(filepath.Join(t.ArtifactDir(), "daemon.log"), b, 0o600)
		}
	}()
	for _, cloud := range []string{"aws", "azure", "gcp"} {
		got, want := perBuyer(bills[cloud]), acked[cloud]
		r.acked[cloud], r.billed[cloud] = total(want), total(got)
		if d := r.acked[cloud] - r.billed[cloud]; d > 0 {
			r.lost[cloud] = d
		} else if d < 0 {
			r.twice[cloud] = -d
		}
		if r.acked[cloud] == 0 {
			t.Errorf("%s: no usage was acknowledged: the test did nothing", cloud)
		}
		if r.lost[cloud] != 0 || r.twice[cloud] != 0 {
			var usage bytes.Buffer
			for _, c := range clouds[cloud].usage {
				var u any
				call(t.Context(), plain, "GET", base+"/v1/usage?provider="+cloud+"&customer="+url.QueryEscape(c), "", &u)
				fmt.Fprintf(&usage, "%s: %v\n", c, u)
			}
			t.Errorf("%s: acknowledged %.0f, billed %.0f (lost %.0f, billed twice %.0f)\nacked %v\nbill %v\n%s\n%s",
				cloud, r.acked[cloud], r.billed[cloud], r.lost[cloud], r.twice[cloud], want, got, usage.String(), p.logs())
		}
		// AWS and Azure bill the daemon's customer: per buyer too.
		if cloud != "gcp" {
			for c, q := range want {
				if got[c] != q {
					t.Errorf("%s %s: acknowledged %.0f, billed %.0f", cloud, c, q, got[c])
				}
			}
		}
		// Every subscription in the state its last notification says
		// (the last ones may still be in the daemon's inbox: wait).
		states := activeCustomers(cloud)
		// Google's notifications that a killed daemon had pulled come
		// back once Pub/Sub's ack deadline (10 s) runs out.
		for settled, until := false, drainStart.Add(150*time.Second); !settled && time.Now().Before(until); {
			settled = true
			for _, b := range clouds[cloud].lifecycle {
				settled = settled && states[b.Account] == clouds[cloud].final
			}
			if !settled {
				time.Sleep(500 * time.Millisecond)
				states = activeCustomers(cloud)
			}
		}
		for _, c := range clouds[cloud].usage {
			if states[c] != "active" {
				t.Errorf("%s usage buyer %s is %q, want active", cloud, c, states[c])
			}
		}
		t.Logf("%s: %s subscriptions settled %s after the last restart", r.name, cloud, time.Since(drainStart).Round(time.Millisecond))
		for _, b := range clouds[cloud].lifecycle {
			if want := clouds[cloud].final; states[b.Account] != want {
				t.Errorf("%s lifecycle buyer %s (%s) is %q after %v, want %q\n%s", cloud, b.Account, b.ID, states[b.Account], clouds[cloud].events, want, p.logs())
			}
		}
	}
}
