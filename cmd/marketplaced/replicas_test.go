package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/saasmarket/marketplace/emulator/admin"
	"github.com/saasmarket/marketplace/postgres/pgtest"
)

// pgDatabase returns a fresh database for t on the test server
// (MARKETPLACE_TEST_POSTGRES, or a throwaway cluster; see pgtest), or
// skips t without one (fails it under CI).
func pgDatabase(t testing.TB) string {
	t.Helper()
	pg := pgtest.Start(t.Context())
	t.Cleanup(func() { pg.Close() })
	return pg.NewDB(t)
}

// withPassword returns dbURL with password set on its user: the servers
// the tests use trust loopback connections, so any password connects.
func withPassword(t *testing.T, dbURL, password string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

// TestServeStorePostgres: marketplaced serve on PostgreSQL (-store, and
// MARKETPLACED_STORE) ingests and answers from the database, and its
// password shows nowhere: not when the database cannot be reached (the
// error names the database redacted), not in the start-up log, not in -h.
func TestServeStorePostgres(t *testing.T) {
	const password = "pw-Never-Shown-7f3a9c"
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	cat := filepath.Join("..", "..", "server", "testdata", "catalogue.json")

	// A database that does not answer: the daemon stops, naming it
	// without the password.
	for _, how := range []string{"flag", "env"} {
		bad := "postgres://marketplace:" + password + "@127.0.0.1:1/marketplace?sslmode=disable"
		args := []string{"serve", "-addr", "127.0.0.1:0", "-data", t.TempDir(), "-catalogue", cat}
		env := append(os.Environ(), "MARKETPLACED_API_KEYS="+serveKey)
		if how == "flag" {
			args = append(args, "-store", bad)
		} else {
			env = append(env, "MARKETPLACED_STORE="+bad)
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("%s: exit %v, want status 2\n%s%s", how, err, stdout.String(), stderr.String())
		}
		out := stdout.String() + stderr.String()
		if strings.Contains(out, password) {
			t.Fatalf("%s: the password is in the output:\n%s", how, out)
		}
		if want := "setting -store: postgres: connect to postgres://marketplace:xxxxx@127.0.0.1:1/marketplace"; !strings.Contains(out, want) {
			t.Errorf("%s: output lacks %q:\n%s", how, want, out)
		}
	}
	if help, _ := exec.Command(bin, "serve", "-h").CombinedOutput(); !strings.Contains(string(help), "MARKETPLACED_STORE") || !strings.Contains(string(help), "-replicas") {
		t.Errorf("serve -h does not show -store and -replicas:\n%s", help)
	}

	// A real database, its URL with a password: ingest, read back, stop.
	dbURL := withPassword(t, pgDatabase(t), password)
	r := newReplica(t, "pg", []string{"-catalogue", cat, "-log-level", "debug"}, []string{"MARKETPLACED_STORE=" + dbURL})
	r.start(t)
	st, _, err := post(t.Context(), http.DefaultClient, r.url(), "", usageBody([]usageRecord{{EventID: "pg-1", Provider: "aws", Customer: "c1", Metric: "tokens", Quantity: 7}}))
	if err != nil || st != 200 {
		t.Fatalf("POST /v1/usage: %d %v\n%s", st, err, r.logs())
	}
	var usage struct {
		Buckets []struct {
			Quantity int64 `json:"quantity"`
		} `json:"buckets"`
	}
	if st := getJSON(t, "GET", r.url()+"/v1/usage?provider=aws&customer=c1", "", &usage); st != 200 || len(usage.Buckets) != 1 || usage.Buckets[0].Quantity != 7 {
		t.Fatalf("GET /v1/usage: %d %+v", st, usage)
	}
	// The record is in PostgreSQL (not in a SQLite file): read it there.
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM events WHERE id LIKE '%pg-1'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("event id in PostgreSQL: %d rows, %v", n, err)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, r.logs())
	}
	logs, _ := os.ReadFile(r.log.Name())
	if bytes.Contains(logs, []byte(password)) {
		t.Fatalf("the password is in the logs:\n%s", logs)
	}
	u, _ := url.Parse(dbURL)
	u.User = url.UserPassword(u.User.Username(), "xxxxx")
	redacted, _ := json.Marshal(u.String())
	if !bytes.Contains(logs, []byte(`"store":`+string(redacted))) {
		t.Errorf("the start-up log does not name the store %s:\n%s", redacted, logs)
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(logs)), "\n") {
		if !json.Valid([]byte(line)) {
			t.Fatalf("log line is not JSON: %s", line)
		}
	}
}

// usageTotal sums the quantities GET /v1/usage shows for customer.
func usageTotal(t *testing.T, base, provider, customer string) int64 {
	t.Helper()
	var usage struct {
		Buckets []struct {
			Quantity int64 `json:"quantity"`
		} `json:"buckets"`
	}
	if st, err := call(t.Context(), http.DefaultClient, "GET", base+"/v1/usage?provider="+provider+"&customer="+url.QueryEscape(customer), "", &usage); err != nil || st != 200 {
		t.Fatalf("GET /v1/usage for %s: %d %v", customer, st, err)
	}
	var n int64
	for _, b := range usage.Buckets {
		n += b.Quantity
	}
	return n
}

// TestServePostgresOutage: PostgreSQL restarts (pg_ctl stop, two seconds
// down, start) while clients ingest. Ingest answers 503 with Retry-After
// while it is down — never a success that was not committed — the clients
// retry the same batches (event ids), and the daemon recovers by itself:
// every acknowledged record is stored exactly once, and the daemon never
// exited. The cluster is the test's own (pgtest.StartCluster), since
// restarting a server other tests share would break them.
func TestServePostgresOutage(t *testing.T) {
	pg := pgtest.StartCluster(t.Context())
	t.Cleanup(func() { pg.Close() })
	const password = "outage-pw-Not-In-Logs"
	dbURL := withPassword(t, pg.NewDB(t), password)
	r := newReplica(t, "outage", []string{"-catalogue", filepath.Join("..", "..", "server", "testdata", "catalogue.json")},
		[]string{"MARKETPLACED_STORE=" + dbURL})
	r.start(t)

	const writers, customers = 4, 3
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	var (
		wg                   sync.WaitGroup
		mu                   sync.Mutex
		acked                = map[string]int64{}
		unavailable, batches int
	)
	client := &http.Client{Timeout: 20 * time.Second}
	for w := range writers {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				var recs []usageRecord
				sum := map[string]int64{}
				for i := range 10 {
					c := fmt.Sprint("outage-", (n+i)%customers)
					q := int64(1 + (w*7+n+i)%13)
					recs = append(recs, usageRecord{EventID: fmt.Sprintf("o-%d-%d-%d", w, n, i), Provider: "aws", Customer: c, Metric: "tokens", Quantity: q})
					sum[c] += q
				}
				body := usageBody(recs)
				// Retry until acknowledged; a batch begun is finished
				// even after the load stops, so that every batch sent is
				// settled.
				for deadline := time.Now().Add(60 * time.Second); ; {
					st, retryAfter, err := post(t.Context(), client, r.url(), "", body)
					if err != nil {
						t.Errorf("writer %d: the daemon did not answer: %v", w, err)
						return
					}
					if st == 200 {
						break
					}
					if st != 503 || retryAfter == "" {
						t.Errorf("writer %d: %d (Retry-After %q), want 200 or 503 with Retry-After", w, st, retryAfter)
						return
					}
					mu.Lock()
					unavailable++
					mu.Unlock()
					if time.Now().After(deadline) {
						t.Errorf("writer %d: still 503 a minute after the database went down: the daemon did not recover\n%s", w, r.logs())
						return
					}
					time.Sleep(200 * time.Millisecond)
				}
				mu.Lock()
				batches++
				for c, q := range sum {
					acked[c] += q
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	time.Sleep(1500 * time.Millisecond)
	mu.Lock()
	before := batches
	mu.Unlock()
	began := time.Now()
	if err := pg.Restart(t.Context(), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL restarted in %v", time.Since(began))
	time.Sleep(3 * time.Second) // ingest goes on after the restart
	stop()
	wg.Wait()
	if t.Failed() {
		t.Fatal(r.logs())
	}
	t.Logf("batches acknowledged: %d before the restart, %d in all; 503 answers: %d", before, batches, unavailable)
	if before == 0 || batches <= before {
		t.Fatalf("batches acknowledged: %d before the restart, %d in all: the test did not ingest across the outage", before, batches)
	}
	if unavailable == 0 {
		t.Fatalf("no 503 while PostgreSQL was down: the test did not hit the outage")
	}
	select {
	case err := <-r.done:
		t.Fatalf("the daemon exited: %v\n%s", err, r.logs())
	default:
	}
	for c, want := range acked {
		if got := usageTotal(t, r.url(), "aws", c); got != want {
			t.Errorf("%s: stored %d, acknowledged %d", c, got, want)
		}
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, r.logs())
	}
	// The errors logged while the database was down name it without
	// its password.
	logs, _ := os.ReadFile(r.log.Name())
	if bytes.Contains(logs, []byte(password)) {
		t.Fatalf("the password is in the logs:\n%s", logs)
	}
	if !bytes.Contains(logs, []byte(`"msg":"ingest failed"`)) {
		t.Errorf("no ingest failure logged during the outage:\n%s", r.logs())
	}
}

// meteringLog is a proxy in front of the AWS emulator's metering endpoint
// that records each BatchMeterUsage call: when it came and whether AWS
// throttled it. It watches the daemons from outside, as AWS would.
type meteringLog struct {
	mu        sync.Mutex
	calls     []time.Time
	throttled int
	inflight  atomic.Int32 // calls sent and not yet answered
	sent      []sentCall
}

// sentCall is a BatchMeterUsage call as the proxy saw it: when it came,
// its records (customer, dimension, hour), and whether it was answered.
type sentCall struct {
	at       time.Time
	records  []string
	answered bool
}

// recordKeys lists the records of a BatchMeterUsage request body.
func recordKeys(body []byte) []string {
	var req struct {
		UsageRecords []struct {
			CustomerIdentifier, Dimension string
			Timestamp                     json.Number
		}
	}
	json.Unmarshal(body, &req)
	var keys []string
	for _, r := range req.UsageRecords {
		keys = append(keys, r.CustomerIdentifier+" "+r.Dimension+" "+r.Timestamp.String())
	}
	return keys
}

func newMeteringLog(t *testing.T, target string) (*meteringLog, string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	m := &meteringLog{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.Header.Get("X-Amz-Target"), ".BatchMeterUsage") {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		m.mu.Lock()
		defer m.mu.Unlock()
		m.calls = append(m.calls, time.Now())
		if bytes.Contains(body, []byte("ThrottlingException")) {
			m.throttled++
		}
		return err
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".BatchMeterUsage") {
			proxy.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		m.mu.Lock()
		i := len(m.sent)
		m.sent = append(m.sent, sentCall{at: time.Now(), records: recordKeys(body)})
		m.mu.Unlock()
		m.inflight.Add(1)
		defer m.inflight.Add(-1)
		proxy.ServeHTTP(w, r)
		if r.Context().Err() == nil {
			m.mu.Lock()
			m.sent[i].answered = true
			m.mu.Unlock()
		}
	}))
	t.Cleanup(srv.Close)
	return m, srv.URL
}

// busiest returns the most calls that fell in any window of length d.
func (m *meteringLog) busiest(d time.Duration) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	best, lo := 0, 0
	for hi, c := range m.calls {
		for c.Sub(m.calls[lo]) >= d {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// TestReplicasShareAWSRate: AWS's BatchMeterUsage quota (10 calls per
// second) is the seller's, whichever daemon calls. Three daemons on one
// database, started with -replicas 3, report a backlog of thousands of
// sealed hours to the AWS emulator, which throttles above 10 calls per
// second: no call is throttled, and in their busiest 10 seconds together
// they make at least 95 % of the 100 calls the quota allows. (Without
// -replicas each would call at 10 per second, and AWS would throttle.)
func TestReplicasShareAWSRate(t *testing.T) {
	const (
		replicas  = 3
		customers = 40
		metrics   = 6
		hours     = 20 // from 2 to 21 hours ago: sealed at once, inside AWS's 24 hours
		quota     = 10.0
		window    = 10 * time.Second
	)
	dbURL := pgDatabase(t)
	emu := startEmulate(t, "-clouds", "aws", "-aws-listen", "127.0.0.1:0", "-aws-throttle-tps", fmt.Sprint(quota))
	calls, endpoint := newMeteringLog(t, emu["aws"])

	var cat strings.Builder
	cat.WriteString(`{"products":[{"provider":"aws","product":"prod-rate","metrics":{`)
	for m := range metrics {
		if m > 0 {
			cat.WriteString(",")
		}
		fmt.Fprintf(&cat, `"m%d":{"dimension":"d%d"}`, m, m)
	}
	cat.WriteString(`}}]}`)
	catFile := filepath.Join(t.TempDir(), "catalogue.json")
	if err := os.WriteFile(catFile, []byte(cat.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var buyers []string
	for range customers {
		var b admin.Buyer
		if st := getJSON(t, "POST", emu["aws"]+"/emulator/buyers", `{"product":"prod-rate"}`, &b); st != 201 {
			t.Fatalf("new buyer: %d", st)
		}
		buyers = append(buyers, b.ID)
	}
	var rs []*replica
	for i := range replicas {
		r := newReplica(t, fmt.Sprint("rate-", i), []string{"-catalogue", catFile, "-aws-product-code", "prod-rate", "-aws-region", "us-east-1",
			"-replicas", fmt.Sprint(replicas), "-seal-every", "1s"},
			[]string{"MARKETPLACED_STORE=" + dbURL, "AWS_ENDPOINT_URL_MARKETPLACE_METERING=" + endpoint,
				"AWS_ACCESS_KEY_ID=AKIDEMULATOR", "AWS_SECRET_ACCESS_KEY=emulator-secret"})
		r.start(t)
		rs = append(rs, r)
	}

	// The backlog: each customer's every metric and hour in one batch, so
	// that each series is whole before it seals.
	now := time.Now().UTC().Truncate(time.Hour)
	var want int64
	for i, c := range buyers {
		var recs []usageRecord
		for m := range metrics {
			for h := range hours {
				q := int64(1 + (i+m+h)%9)
				recs = append(recs, usageRecord{Provider: "aws", Customer: c, Metric: fmt.Sprint("m", m), Quantity: q,
					Time: now.Add(-time.Duration(2+h) * time.Hour).Format(time.RFC3339)})
				want += q
			}
		}
		r := rs[i%replicas]
		if st, _, err := post(t.Context(), http.DefaultClient, r.url(), fmt.Sprint("rate-", i), usageBody(recs)); err != nil || st != 200 {
			t.Fatalf("POST /v1/usage to %s: %d %v\n%s", r.name, st, err, r.logs())
		}
	}

	buckets := customers * metrics * hours
	var bill admin.Bill
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		getJSON(t, "GET", emu["aws"]+"/emulator/bill", "", &bill)
		if len(bill.Lines) >= buckets {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 90 s the bill has %d of %d hours\n%s\n%s\n%s", len(bill.Lines), buckets, rs[0].logs(), rs[1].logs(), rs[2].logs())
		}
	}
	var got int64
	for _, l := range bill.Lines {
		got += int64(l.Quantity)
	}
	calls.mu.Lock()
	n, throttled, first, last := len(calls.calls), calls.throttled, calls.calls[0], calls.calls[len(calls.calls)-1]
	calls.mu.Unlock()
	busiest := calls.busiest(window)
	t.Logf("%d BatchMeterUsage calls in %v (%.1f/s), %d throttled; busiest %v: %d calls (%.1f/s, %.0f%% of the quota); billed %d of %d",
		n, last.Sub(first).Round(time.Millisecond), float64(n-1)/last.Sub(first).Seconds(), throttled, window, busiest,
		float64(busiest)/window.Seconds(), 100*float64(busiest)/(quota*window.Seconds()), got, want)
	if throttled > 0 {
		t.Errorf("%d calls were throttled: the replicas together went over AWS's %g calls per second", throttled, quota)
	}
	if min := 0.95 * quota * window.Seconds(); float64(busiest) < min {
		t.Errorf("busiest %v: %d calls, want at least %.0f (95%% of the quota)", window, busiest, min)
	}
	if got != want || len(bill.Lines) != buckets {
		t.Errorf("billed %d in %d lines, want %d in %d", got, len(bill.Lines), want, buckets)
	}
}

// TestReplicasKillOne: three daemons (separate processes) on one
// PostgreSQL database ingest concurrently and report to the emulators of
// all three clouds. Clients send batches to their own replica and, when it
// does not acknowledge, retry the same batch on the next one: AWS and
// Google usage with event ids, Azure usage as Idempotency-Key batches.
// While a replica has an AWS call in flight (each metering call takes a
// second) it is SIGKILLed, and restarted two seconds later. At the end each
// emulator's bill equals the acknowledged usage exactly, no hour is billed
// twice, and every bucket is reported with no lease left: the dead
// replica's leases expired and were taken over.
//
// The daemons' ledger clock runs 120 times the wall's pace, 20 hours
// behind it (the clouds take the hours as past): an hour ends, seals and is
// reported every 30 seconds, so the load spans two hours and the kill
// lands while the first is being reported.
func TestReplicasKillOne(t *testing.T) {
	const (
		replicas    = 3
		azureSecret = "azure-client-secret-for-the-replica-test"
		service     = "inference.endpoints.e2e-project.cloud.goog"
		audience    = "saas.example.com"
		rate        = 120
		perCloud    = 2 // buyers with usage, per cloud
	)
	dbURL := pgDatabase(t)
	dir := t.TempDir()
	certFile := filepath.Join(dir, "azure-cert.pem")
	// Azure's webhook goes to one replica; the others apply what it stores.
	webhookAddr := freeAddr(t)
	emu := startEmulate(t, "-aws-listen", "127.0.0.1:0", "-azure-listen", "127.0.0.1:0", "-gcp-listen", "127.0.0.1:0",
		"-aws-latency", "1s", "-azure-cert-file", certFile, "-azure-client-secret", azureSecret,
		"-azure-webhook-url", "http://"+webhookAddr+"/azure/notifications",
		"-gcp-service", service, "-gcp-metrics", "tokens", "-gcp-audience", audience)
	azClient := emulatorClient(t, certFile)
	plain := &http.Client{Timeout: 20 * time.Second}
	cat := filepath.Join(dir, "catalogue.json")
	if err := os.WriteFile(cat, []byte(`{"products":[
		{"provider":"aws","product":"prod-rep","metrics":{"tokens":{"dimension":"tokens"}}},
		{"provider":"azure","product":"inference-offer","metrics":{"tokens":{"dimension":"tokens"}}},
		{"provider":"gcp","product":"`+service+`","metrics":{"tokens":{"dimension":"`+service+`/tokens"}}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}

	// The ledger's clock: at the anchor it reads H:30, H twenty hours ago.
	anchor := time.Now().UTC().Truncate(time.Second)
	hour := anchor.Add(-20 * time.Hour).Truncate(time.Hour)
	start := hour.Add(30 * time.Minute)
	ledgerNow := func() time.Time { return start.Add(time.Since(anchor) * rate) }
	wallAt := func(l time.Time) time.Time { return anchor.Add(l.Sub(start) / rate) }

	var rs []*replica
	var aws []*meteringLog
	for i := range replicas {
		m, endpoint := newMeteringLog(t, emu["aws"])
		aws = append(aws, m)
		rs = append(rs, newReplica(t, fmt.Sprint("replica-", i), []string{"-catalogue", cat, "-replicas", fmt.Sprint(replicas),
			"-seal-every", "1s", "-clock-rate", fmt.Sprint(rate), "-clock-anchor", anchor.Format(time.RFC3339),
			"-clock-offset", start.Sub(anchor).String(),
			"-aws-product-code", "prod-rep", "-aws-region", "us-east-1",
			"-azure-tenant-id", "72f988bf-86f1-41af-91ab-2d7cd011db47", "-azure-app-id", "6a1e7f7c-3d8e-4b5a-9c2f-0e1d2c3b4a59",
			"-azure-emulator-url", emu["azure"], "-azure-emulator-ca-file", certFile,
			"-gcp-service", service, "-gcp-provider-id", "demo-provider", "-gcp-signup-audience", audience, "-gcp-emulator-url", emu["gcp"]},
			[]string{"MARKETPLACED_STORE=" + dbURL, "AWS_ENDPOINT_URL_MARKETPLACE_METERING=" + endpoint,
				"AWS_ACCESS_KEY_ID=AKIDEMULATOR", "AWS_SECRET_ACCESS_KEY=emulator-secret", "MARKETPLACED_AZURE_CLIENT_SECRET=" + azureSecret}))
	}
	rs[replicas-1].addr = webhookAddr
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Go(func() { r.start(t) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	allLogs := func() string {
		var b strings.Builder
		for _, r := range rs {
			b.WriteString(r.logs() + "\n")
		}
		return b.String()
	}

	// The buyers. AWS and Google: subscribed at the emulator (Google's
	// ledger customer is the entitlement's usageReportingId). Azure: they
	// land, each on another replica, which stores the subscription (its
	// plan is what the Azure reporter sends).
	customers := map[string][]string{}
	for range perCloud {
		var b admin.Buyer
		if st := getJSON(t, "POST", emu["aws"]+"/emulator/buyers", `{"product":"prod-rep"}`, &b); st != 201 {
			t.Fatalf("AWS buyer: %d", st)
		}
		customers["aws"] = append(customers["aws"], b.ID)
		if st := getJSON(t, "POST", emu["gcp"]+"/emulator/buyers", `{"product":"demo","plan":"standard","active":true}`, &b); st != 201 || b.Cloud["usageReportingId"] == "" {
			t.Fatalf("Google buyer: %d %+v", st, b)
		}
		customers["gcp"] = append(customers["gcp"], b.Cloud["usageReportingId"])
	}
	// Read through another replica than the landings: the state is shared.
	azureActive := func() map[string]bool {
		states, err := subscriptionStates(t.Context(), plain, rs[replicas-1].url(), "azure")
		if err != nil {
			t.Fatalf("Azure subscriptions: %v", err)
		}
		m := map[string]bool{}
		for c, s := range states {
			m[c] = s == "active"
		}
		return m
	}
	// One more Azure buyer, the lifecycle one: suspended during the load.
	var lifecycleBuyer admin.Buyer
	lifecycleCustomer := ""
	for i := range perCloud + 1 {
		var b admin.Buyer
		if st, err := call(t.Context(), azClient, "POST", emu["azure"]+"/emulator/buyers", `{"plan":"basic"}`, &b); err != nil || st != 201 {
			t.Fatalf("Azure buyer: %d %v", st, err)
		}
		if st, err := call(t.Context(), plain, "GET", rs[i%replicas].url()+"/azure/landing?token="+url.QueryEscape(b.Token), "", nil); err != nil || st >= 300 {
			t.Fatalf("Azure landing: %d %v\n%s", st, err, allLogs())
		}
		if i == 0 {
			lifecycleBuyer = b
			for c := range azureActive() {
				lifecycleCustomer = c
			}
		}
	}
	for c, active := range azureActive() {
		if active && c != lifecycleCustomer {
			customers["azure"] = append(customers["azure"], c)
		}
	}
	if lifecycleCustomer == "" || len(customers["azure"]) != perCloud {
		t.Fatalf("active Azure subscriptions: %v, want %d besides the lifecycle buyer's %q", azureActive(), perCloud, lifecycleCustomer)
	}
	if l := ledgerNow(); !l.Before(hour.Add(time.Hour)) {
		t.Logf("set-up took until %s by the ledger: the first hour has no usage", l.Format("15:04"))
	}

	// The load, until H+1:20 by the ledger's clock.
	// (At least 10 s of load, should set-up have been slow.)
	loadEnd := wallAt(hour.Add(80 * time.Minute))
	if minEnd := time.Now().Add(10 * time.Second); loadEnd.Before(minEnd) {
		loadEnd = minEnd
	}
	var (
		mu      sync.Mutex
		acked   = map[string]map[string]float64{"aws": {}, "azure": {}, "gcp": {}}
		batches int
		retries int
	)
	for _, cloud := range []string{"aws", "azure", "gcp"} {
		for home := range replicas {
			wg.Go(func() {
				for n := 0; time.Now().Before(loadEnd) && !t.Failed(); n++ {
					var recs []usageRecord
					sum := map[string]float64{}
					key := ""
					if cloud == "azure" {
						key = fmt.Sprintf("az-%d-%d", home, n) // the batch counts once, under its key
					}
					for i := range 1 + (n+home)%8 {
						c := customers[cloud][(n+i)%perCloud]
						q := int64(1 + (n*7+i*3+home)%50)
						rec := usageRecord{Provider: cloud, Customer: c, Metric: "tokens", Quantity: q}
						if key == "" {
							rec.EventID = fmt.Sprintf("%s-%d-%d-%d", cloud, home, n, i)
						}
						recs = append(recs, rec)
						sum[c] += float64(q)
					}
					// A batch a replica does not acknowledge goes to the next.
					to := func(try int) string { return rs[(home+try)%replicas].url() }
					tries, err := ingestUntilAcked(t.Context(), plain, to, key, usageBody(recs), 200)
					if err != nil {
						t.Errorf("%s usage: %v", cloud, err)
						return
					}
					mu.Lock()
					retries += tries
					batches++
					for c, q := range sum {
						acked[cloud][c] += q
					}
					mu.Unlock()
					time.Sleep(30 * time.Millisecond)
				}
			})
		}
	}

	// Azure suspends the lifecycle buyer: its webhook reaches the last
	// replica, which stores the notification in the shared inbox.
	var ev admin.EventResult
	if st, err := call(t.Context(), azClient, "POST", emu["azure"]+"/emulator/buyers/"+url.PathEscape(lifecycleBuyer.ID)+"/events", `{"event":"Suspend"}`, &ev); err != nil || st != 200 ||
		len(ev.Deliveries) != 1 || ev.Deliveries[0].Status/100 != 2 {
		t.Errorf("Azure Suspend: %d %v %+v\n%s", st, err, ev, allLogs())
	}

	// The kill: the first replica seen with an AWS call in flight once
	// the first hour sealed, or (if set-up was too slow for that hour)
	// the second.
	victim, killedAt := -1, time.Time{}
	for deadline := time.Now().Add(90 * time.Second); victim < 0 && time.Now().Before(deadline) && !t.Failed(); time.Sleep(5 * time.Millisecond) {
		for i, m := range aws {
			if m.inflight.Load() > 0 {
				victim = i
				break
			}
		}
	}
	if victim < 0 {
		wg.Wait()
		t.Fatalf("no replica made an AWS call within 90 s\n%s", allLogs())
	}
	rs[victim].kill()
	killedAt = time.Now()
	var cut []string // the records of the call the kill cut off
	aws[victim].mu.Lock()
	for _, c := range aws[victim].sent {
		if !c.answered {
			cut = append(cut, c.records...)
		}
	}
	aws[victim].mu.Unlock()
	if len(cut) == 0 {
		t.Fatalf("%s had an AWS call in flight, but the proxy saw no unanswered BatchMeterUsage", rs[victim].name)
	}
	time.Sleep(2 * time.Second)
	rs[victim].start(t)
	t.Logf("SIGKILLed %s with an AWS call in flight at %s by the ledger; restarted 2 s later", rs[victim].name, ledgerNow().Sub(hour))
	wg.Wait()
	if t.Failed() {
		t.Fatal(allLogs())
	}
	if !killedAt.Before(loadEnd) {
		t.Logf("the kill came after the load (set-up was slow): it still lands mid-report")
	}

	// Every hour of the load ends at H+2:00; wait for the bills.
	type line struct{ buyer, dim, start string }
	got := settledBills(t, emu, map[string]*http.Client{"aws": plain, "azure": azClient, "gcp": plain}, acked, 90*time.Second)
	for _, cloud := range []string{"aws", "azure", "gcp"} {
		b, want := perBuyer(got[cloud]), acked[cloud]
		t.Logf("%s: acknowledged %.0f, billed %.0f in %d lines", cloud, total(want), total(b), len(got[cloud].Lines))
		if total(want) == 0 {
			t.Errorf("%s: nothing acknowledged: the test did nothing", cloud)
		}
		for c, q := range want {
			if b[c] != q {
				t.Errorf("%s %s: acknowledged %.0f, billed %.0f", cloud, c, q, b[c])
			}
		}
		if len(b) != len(want) {
			t.Errorf("%s: billed customers %v, acknowledged %v", cloud, b, want)
		}
		seen := map[line]bool{}
		ids := map[string]bool{}
		for _, l := range got[cloud].Lines {
			k := line{l.Buyer, l.Dimension, l.Start.UTC().Truncate(time.Hour).Format(time.RFC3339)}
			if seen[k] || ids[l.ID] {
				t.Errorf("%s: %s %s hour %s billed twice", cloud, l.Buyer, l.Dimension, k.start)
			}
			seen[k], ids[l.ID] = true, true
		}
	}

	// The suspension is applied, whichever replica's lifecycle worker took
	// it from the inbox, and every replica sees it.
	for i, r := range rs[:2] {
		var sub map[string]any
		if st, err := call(t.Context(), plain, "GET", r.url()+"/v1/subscriptions/azure/"+url.PathEscape(lifecycleCustomer), "", &sub); err != nil || st != 200 || sub["status"] != "suspended" {
			t.Errorf("replica-%d: the lifecycle buyer's subscription after Suspend: %d %v %v", i, st, err, sub)
		}
	}

	// The records of the cut-off call were sent again, once the dead
	// replica's lease ran out (by whichever replica took them over).
	resent := map[string]string{}
	for i, m := range aws {
		m.mu.Lock()
		for _, c := range m.sent {
			if c.at.After(killedAt) && c.answered {
				for _, k := range c.records {
					resent[k] = rs[i].name
				}
			}
		}
		m.mu.Unlock()
	}
	for _, k := range cut {
		if resent[k] == "" {
			t.Errorf("AWS record %s of the call cut off by the kill was never sent again", k)
		} else {
			t.Logf("AWS record %s, cut off by the kill, sent again by %s", k, resent[k])
		}
	}

	// In the database: every bucket reported, no lease left behind.
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var all, reported, leased int
	if err := conn.QueryRow(t.Context(), `SELECT count(*), count(*) FILTER (WHERE state = 'reported'),
		count(*) FILTER (WHERE lease_owner <> '') FROM buckets`).Scan(&all, &reported, &leased); err != nil {
		t.Fatal(err)
	}
	t.Logf("buckets: %d, reported %d, leased %d; batches %d, client retries %d", all, reported, leased, batches, retries)
	if all == 0 || reported != all || leased != 0 {
		rows, _ := conn.Query(t.Context(), `SELECT provider, customer, hour, state, lease_owner, lease_until, reason FROM buckets WHERE state <> 'reported' OR lease_owner <> ''`)
		var b strings.Builder
		for rows.Next() {
			vals, _ := rows.Values()
			fmt.Fprintln(&b, vals...)
		}
		rows.Close()
		t.Errorf("buckets: %d, reported %d, still leased %d; want all reported and none leased:\n%s", all, reported, leased, b.String())
	}
	for _, r := range rs {
		if err := r.stop(t); err != nil {
			t.Errorf("%s: exit after SIGTERM: %v\n%s", r.name, err, r.logs())
		}
	}
}
