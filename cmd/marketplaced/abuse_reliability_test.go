package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/emulator/admin"
	gcpemu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/sqlite"
)

// TestReliabilityAbuse: the real daemon, with the three clouds mounted
// against the real emulators, gets forged notifications, oversized, slow
// and malformed bodies, wrong content types, unknown routes, missing and
// wrong API keys, and a flood past its ingest limit. Each gets the right
// 4xx or 429, changes no state, and puts no secret or token into the
// answers or the daemon's logs.
func TestReliabilityAbuse(t *testing.T) {
	if *reliabilityOff {
		t.Skip("reliability suite skipped (-reliability.skip)")
	}
	const (
		ebSecret    = "eventbridge-secret-ABUSE-7f3a9c"
		azureSecret = "azure-client-secret-ABUSE-1b2c3d"
		wrongKey    = "wrong-api-key-ABUSE-0123456789"
		service     = "inference.endpoints.e2e-project.cloud.goog"
		pushAccount = "pubsub-push@e2e-project.iam.gserviceaccount.com"
		// The push subscription's audience: the daemon's public URL.
		pushAudience = "https://saas.example.com/gcp/notifications"
	)
	daemonAddr := freeAddr(t)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	certFile := filepath.Join(dir, "azure-cert.pem")
	// Every genuine notification reaches the daemon through a relay that
	// keeps a copy of it (bytes and headers), to be replayed below.
	rel := &relay{to: "http://" + daemonAddr}
	relaySrv := httptest.NewServer(rel)
	defer relaySrv.Close()
	emu := startEmulate(t, "-clouds", "aws,azure", "-aws-listen", "127.0.0.1:0", "-azure-listen", "127.0.0.1:0",
		"-aws-eventbridge-endpoint", relaySrv.URL+"/aws/notifications", "-aws-eventbridge-secret", ebSecret,
		"-azure-cert-file", certFile, "-azure-client-secret", azureSecret, "-azure-webhook-url", relaySrv.URL+"/azure/notifications")
	// Google runs in the test's process: its lifecycle events go out as a
	// Pub/Sub push subscription sends them (the demo's pushDelivery), with
	// an OIDC token signed by the keys the daemon trusts.
	push := &pushDelivery{url: relaySrv.URL + "/gcp/notifications", audience: pushAudience, account: pushAccount,
		subscription: "projects/e2e-project/subscriptions/marketplaced-push", queue: make(chan []byte, 64),
		client: &http.Client{Timeout: 10 * time.Second}, logger: slog.New(slog.DiscardHandler), done: t.Context().Done()}
	gemu, err := gcpemu.New(gcpemu.Config{ProviderID: "demo-provider", ServiceName: service, Audience: "saas.example.com", Publisher: push,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	push.mint = func(audience, email string) (string, error) {
		return gemu.MintPushToken(audience, email, gcpemu.TokenOptions{})
	}
	if emu["gcp"], err = gemu.Start(t.Context(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go push.run(t.Context())
	cat := filepath.Join(dir, "catalogue.json")
	if err := os.WriteFile(cat, []byte(`{"products":[
		{"provider":"aws","product":"prod-rel","metrics":{"tokens":{"dimension":"tokens"}}},
		{"provider":"azure","product":"inference-offer","metrics":{"tokens":{"dimension":"tokens"}}},
		{"provider":"gcp","product":"`+service+`","metrics":{"tokens":{"dimension":"`+service+`/tokens"}}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ENDPOINT_URL_MARKETPLACE_METERING", emu["aws"])
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEMULATOR")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "emulator-secret")
	t.Setenv("MARKETPLACED_AWS_EVENTBRIDGE_SECRET", ebSecret)
	t.Setenv("MARKETPLACED_AZURE_CLIENT_SECRET", azureSecret)
	d := startServe(t, "-addr", daemonAddr, "-data", dataDir, "-catalogue", cat, "-log-level", "debug",
		"-max-body", "65536", "-max-in-flight", "1", "-read-header-timeout", "1s", "-read-timeout", "3s",
		"-aws-product-code", "prod-rel", "-aws-region", "us-east-1",
		"-azure-tenant-id", "72f988bf-86f1-41af-91ab-2d7cd011db47", "-azure-app-id", "6a1e7f7c-3d8e-4b5a-9c2f-0e1d2c3b4a59",
		"-azure-emulator-url", emu["azure"], "-azure-emulator-ca-file", certFile,
		"-gcp-service", service, "-gcp-provider-id", "demo-provider", "-gcp-signup-audience", "saas.example.com",
		"-gcp-push-service-account", pushAccount, "-gcp-push-audience", pushAudience,
		"-gcp-emulator-url", emu["gcp"])

	// Forged tokens: unsigned ("alg":"none"), expired, for another
	// audience; none is signed by a key the daemon trusts.
	seg := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	now := time.Now().Unix()
	forged := map[string]string{
		"none":     seg(`{"alg":"none","typ":"JWT"}`) + "." + seg(fmt.Sprintf(`{"aud":"6a1e7f7c-3d8e-4b5a-9c2f-0e1d2c3b4a59","iss":"https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/","exp":%d}`, now+600)) + ".",
		"expired":  seg(`{"alg":"RS256","kid":"k1","typ":"JWT"}`) + "." + seg(fmt.Sprintf(`{"aud":"https://saas.example.com/gcp/notifications","email":"pubsub-push@e2e-project.iam.gserviceaccount.com","exp":%d}`, now-3600)) + "." + seg("FORGED-SIGNATURE-ABUSE"),
		"audience": seg(`{"alg":"RS256","kid":"k1","typ":"JWT"}`) + "." + seg(fmt.Sprintf(`{"aud":"https://evil.example.com","exp":%d}`, now+600)) + "." + seg("FORGED-SIGNATURE-ABUSE-2"),
	}
	ebEvent := `{"version":"0","id":"forged-1","detail-type":"Purchase Agreement Created - Manufacturer","source":"aws.agreement-marketplace","account":"287250355862","time":"2026-01-01T00:00:00Z","region":"us-east-1","resources":[],"detail":{"agreement":{"id":"agmt-1"},"acceptor":{"accountId":"123456789012"},"product":{"code":"prod-rel"}}}`
	azEvent := `{"id":"op-forged","activityId":"a","subscriptionId":"sub-forged","offerId":"inference-offer","planId":"pro","quantity":1,"timeStamp":"2026-01-01T00:00:00Z","action":"Unsubscribe","status":"Succeeded"}`
	gcpPush := `{"message":{"data":"` + base64.StdEncoding.EncodeToString([]byte(`{"eventId":"forged","eventType":"ENTITLEMENT_CANCELLED","entitlement":{"id":"ent-1"}}`)) + `","messageId":"1"},"subscription":"projects/p/subscriptions/s"}`
	big := `{"records":[` + strings.Repeat(`{"event_id":"x","provider":"aws","customer":"c","metric":"tokens","quantity":1},`, 2000) + `{}]}`
	usage := `{"records":[{"event_id":"abuse-1","provider":"aws","customer":"abuse-cust","metric":"tokens","quantity":5}]}`

	type req struct {
		name, method, path, body string
		header                   map[string]string
		want                     int
	}
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	jsonKey := func(key string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + key, "Content-Type": "application/json"}
	}
	cases := []req{
		{"aws eventbridge without secret", "POST", "/aws/notifications", ebEvent, map[string]string{"Content-Type": "application/json"}, 401},
		{"aws eventbridge wrong secret", "POST", "/aws/notifications", ebEvent, map[string]string{"Content-Type": "application/json", "X-Marketplace-Secret": "not-" + ebSecret[:8]}, 401},
		// The adapters' body limits (AWS notifications 256 KiB, Azure and
		// Google notifications 1 MiB, landing forms 64 KiB) answer 413
		// (lifecycle.BodyStatus) once the body is read past them. Where the
		// credentials are checked first (EventBridge's secret, Azure's and
		// Google's bearer tokens), a forgery is refused 401 unread; SNS and
		// the landings carry theirs in the body, so its size is met first.
		{"aws eventbridge oversized", "POST", "/aws/notifications", `{"detail":"` + strings.Repeat("A", 2<<20) + `"}`, map[string]string{"Content-Type": "application/json", "X-Marketplace-Secret": ebSecret}, 413},
		{"aws eventbridge oversized, without secret", "POST", "/aws/notifications", `{"detail":"` + strings.Repeat("A", 2<<20) + `"}`, map[string]string{"Content-Type": "application/json"}, 401},
		{"aws sns oversized, unsigned", "POST", "/aws/notifications", `{"Type":"Notification","Message":"` + strings.Repeat("A", 2<<20) + `"}`, map[string]string{"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification"}, 413},
		{"aws landing oversized", "POST", "/aws/landing", "x-amzn-marketplace-token=" + strings.Repeat("A", 2<<20), map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 413},
		{"gcp landing oversized", "POST", "/gcp/landing", "x-gcp-marketplace-token=" + strings.Repeat("A", 2<<20), map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 413},
		{"gcp push oversized, forged", "POST", "/gcp/notifications", `{"message":{"data":"` + strings.Repeat("A", 2<<20) + `"}}`, bearer(forged["expired"]), 401},
		{"aws sns bad signature", "POST", "/aws/notifications", `{"Type":"Notification","MessageId":"m","TopicArn":"arn:aws:sns:us-east-1:287250355862:evil","Message":"{}","Timestamp":"2026-01-01T00:00:00Z","SignatureVersion":"2","Signature":"Zm9yZ2Vk","SigningCertURL":"https://evil.example.com/cert.pem"}`, map[string]string{"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification"}, 401},
		{"azure webhook without token", "POST", "/azure/notifications", azEvent, map[string]string{"Content-Type": "application/json"}, 401},
		{"azure webhook unsigned token", "POST", "/azure/notifications", azEvent, bearer(forged["none"]), 401},
		{"azure webhook wrong audience", "POST", "/azure/notifications", azEvent, bearer(forged["audience"]), 401},
		// Authentication comes before the body: a forged token with a
		// large body is refused as not authentic without reading it.
		{"azure webhook oversized, forged", "POST", "/azure/notifications", `{"id":"` + strings.Repeat("A", 2<<20) + `"}`, bearer(forged["none"]), 401},
		{"gcp push without token", "POST", "/gcp/notifications", gcpPush, map[string]string{"Content-Type": "application/json"}, 401},
		{"gcp push expired token", "POST", "/gcp/notifications", gcpPush, bearer(forged["expired"]), 401},
		{"gcp push wrong audience", "POST", "/gcp/notifications", gcpPush, bearer(forged["audience"]), 401},
		{"gcp landing forged jwt", "POST", "/gcp/landing", "x-gcp-marketplace-token=" + forged["expired"], map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 401},
		{"aws landing forged token", "POST", "/aws/landing", "x-amzn-marketplace-token=FORGED-TOKEN-ABUSE", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 400},
		{"usage without key", "POST", "/v1/usage", usage, map[string]string{"Content-Type": "application/json"}, 401},
		{"usage wrong key", "POST", "/v1/usage", usage, jsonKey(wrongKey), 401},
		{"subscriptions wrong key", "GET", "/v1/subscriptions?provider=aws", "", bearer(wrongKey), 401},
		{"usage malformed json", "POST", "/v1/usage", `{"records":[{"event_id":`, jsonKey(serveKey), 400},
		{"usage wrong content type", "POST", "/v1/usage", usage, map[string]string{"Authorization": "Bearer " + serveKey, "Content-Type": "text/plain"}, 415},
		{"usage oversized", "POST", "/v1/usage", big + strings.Repeat(" ", 70000), jsonKey(serveKey), 413},
		{"unknown route", "GET", "/v1/nothing-here", "", bearer(serveKey), 404},
		{"unknown route without key", "GET", "/admin/secrets", "", nil, 404},
	}
	var answers bytes.Buffer
	client := &http.Client{Timeout: 10 * time.Second}
	for _, c := range cases {
		r, _ := http.NewRequestWithContext(t.Context(), c.method, d.url+c.path, strings.NewReader(c.body))
		for k, v := range c.header {
			r.Header.Set(k, v)
		}
		resp, err := client.Do(r)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers.Write(b)
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d, want %d: %.300s", c.name, resp.StatusCode, c.want, b)
		}
	}

	// A slow body (slowloris) holds the only ingest slot: the next
	// request is refused with 429, and the slow one is cut off by the
	// read timeout.
	conn, err := net.Dial("tcp", daemonAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v1/usage HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"records\":[", serveKey)
	time.Sleep(300 * time.Millisecond)
	var flood sync.WaitGroup
	codes := make(chan int, 20)
	for range 20 {
		flood.Go(func() {
			r, _ := http.NewRequestWithContext(t.Context(), "POST", d.url+"/v1/usage", strings.NewReader(usage))
			r.Header.Set("Authorization", "Bearer "+serveKey)
			r.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(r)
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	flood.Wait()
	close(codes)
	n429 := 0
	for c := range codes {
		if c == 429 {
			n429++
		} else if c != 200 {
			t.Errorf("flood: %d, want 429 (or 200 once the slot is free)", c)
		}
	}
	if n429 == 0 {
		t.Error("flood past -max-in-flight 1 with a slow body holding the slot: no 429")
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	slow, _ := io.ReadAll(conn) // the daemon ends the slow request
	conn.Close()
	if bytes.HasPrefix(slow, []byte("HTTP/1.1 200")) {
		t.Errorf("the slow body was accepted: %.200s", slow)
	}
	// A slow header (slowloris proper) is cut off too.
	conn2, err := net.Dial("tcp", daemonAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn2, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	conn2.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	io.ReadAll(conn2)
	conn2.Close()
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("a connection that never finished its headers was kept %s (-read-header-timeout 1s)", el)
	}

	// No state changed: no subscription, no usage but the flood's.
	for _, p := range []string{"aws", "azure", "gcp"} {
		var page struct {
			Subscriptions []any `json:"subscriptions"`
		}
		getJSON(t, "GET", d.url+"/v1/subscriptions?provider="+p, "", &page)
		if len(page.Subscriptions) != 0 {
			t.Errorf("%s: forged requests made subscriptions: %v", p, page.Subscriptions)
		}
	}
	var u struct {
		Buckets []struct {
			Quantity int64 `json:"quantity"`
		} `json:"buckets"`
	}
	getJSON(t, "GET", d.url+"/v1/usage?provider=aws&customer=c", "", &u)
	if len(u.Buckets) != 0 {
		t.Errorf("the oversized batch was counted: %+v", u)
	}

	// Replays: for each cloud a genuine notification, delivered by its
	// emulator (through the relay) and accepted, then delivered again with
	// the same bytes and headers. The replay is answered 2xx (a redelivery
	// the daemon already holds: the cloud stops retrying) and changes
	// nothing: the subscription's version moved once, and the inbox holds
	// the notification once.
	replayed := replayGenuine(t, d, emu, gemu, certFile, rel)
	genuineTokens := map[string]string{}
	for _, r := range replayed {
		if a := r.header.Get("Authorization"); a != "" {
			genuineTokens[r.cloud+" notification token"] = strings.TrimPrefix(a, "Bearer ")
		}
	}

	// No secret or token in the answers or the logs.
	logs := d.logs()
	if !strings.Contains(logs, "/azure/notifications") || !strings.Contains(logs, "/v1/usage") {
		t.Fatalf("the daemon's log has no request lines (-log-level debug): the check below would prove nothing\n%s", logs)
	}
	for name, s := range merge(genuineTokens, map[string]string{"API key": serveKey, "wrong API key": wrongKey, "EventBridge secret": ebSecret,
		"Azure client secret": azureSecret, "unsigned token": forged["none"], "expired token": forged["expired"],
		"forged signature": seg("FORGED-SIGNATURE-ABUSE"), "forged landing token": "FORGED-TOKEN-ABUSE"}) {
		if strings.Contains(answers.String(), s) {
			t.Errorf("an answer holds the %s", name)
		}
		if strings.Contains(logs, s) {
			i := strings.Index(logs, s)
			t.Errorf("the daemon's log holds the %s: …%s…", name, logs[max(0, i-200):min(len(logs), i+len(s)+50)])
		}
	}

	// The inbox, read from the daemon's data folder once it has stopped:
	// each replayed notification is there once, and done.
	if err := d.stop(t, 20*time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.logs())
	}
	store, err := sqlite.Open(t.Context(), filepath.Join(dataDir, "marketplace.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, r := range replayed {
		ns, err := store.ListNotifications(t.Context(), marketplace.CloudProvider(r.cloud), "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		var held []marketplace.Notification
		for _, n := range ns {
			if n.ID == r.id {
				held = append(held, n)
			}
		}
		if len(held) != 1 || held[0].State != marketplace.NotificationDone {
			t.Errorf("%s: the inbox holds notification %s %d times (%+v), want once, done", r.cloud, r.id, len(held), held)
		}
	}
	t.Logf("figures abuse: %d genuine notifications replayed (one per cloud), each answered 2xx and applied once", len(replayed))
}

// relay forwards each request to the daemon and keeps a copy of it, with
// the daemon's answer: the genuine deliveries the abuse test replays.
type relay struct {
	to string

	mu  sync.Mutex
	got []delivery
}

// delivery is one request the relay passed on.
type delivery struct {
	path   string
	header http.Header
	body   []byte
	status int // the daemon's answer
}

func (rl *relay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, rl.to+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	rl.mu.Lock()
	rl.got = append(rl.got, delivery{path: r.URL.Path, header: r.Header.Clone(), body: body, status: resp.StatusCode})
	rl.mu.Unlock()
	w.WriteHeader(resp.StatusCode)
	w.Write(answer)
}

// accepted returns the deliveries to path the daemon answered 2xx.
func (rl *relay) accepted(path string) []delivery {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	var out []delivery
	for _, d := range rl.got {
		if d.path == path && d.status/100 == 2 {
			out = append(out, d)
		}
	}
	return out
}

// replay is a genuine notification the abuse test delivered twice.
type replay struct {
	cloud, id string // the cloud's id of the delivery: the inbox's dedupe key
	header    http.Header
}

// replayGenuine subscribes a buyer on each cloud through its landing page,
// has the cloud's emulator send a notification that changes the
// subscription (AWS: License Deprovisioned over EventBridge with its API
// key; Azure: ChangePlan over the webhook with an Entra token; Google:
// the entitlement's approval as a Pub/Sub push with an OIDC token), waits
// until it is applied (the version moved once), and replays the very
// bytes and headers the daemon accepted. The replay must be answered as
// the first delivery was (2xx) and change nothing.
func replayGenuine(t *testing.T, d *daemon, emu map[string]string, gemu *gcpemu.Emulator, certFile string, rel *relay) []replay {
	t.Helper()
	type view struct {
		Status  string `json:"status"`
		Plan    string `json:"plan"`
		Version int64  `json:"version"`
	}
	sub := func(cloud, customer string) view {
		var v view
		getJSON(t, "GET", d.url+"/v1/subscriptions/"+cloud+"/"+url.PathEscape(customer), "", &v)
		return v
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(45 * time.Second); !ok(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 45 s\n%s", what, d.logs())
			}
		}
	}
	// settled waits until the subscription has not changed for a second:
	// whatever the delivery set off is done.
	settled := func(cloud, customer string) view {
		last := sub(cloud, customer)
		for still := time.Now(); time.Since(still) < time.Second; time.Sleep(200 * time.Millisecond) {
			if v := sub(cloud, customer); v != last {
				last, still = v, time.Now()
			}
		}
		return last
	}
	land := func(cloud string, req *http.Request) {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("%s landing: %d %s\n%s", cloud, resp.StatusCode, b, d.logs())
		}
	}
	form := func(path, field, token string) *http.Request {
		r, _ := http.NewRequestWithContext(t.Context(), "POST", d.url+path, strings.NewReader(url.Values{field: {token}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return r
	}
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	azClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	emuCall := func(c *http.Client, method, u, body string, out any) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, u, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %d: %v", method, u, resp.StatusCode, err)
		}
		return resp.StatusCode
	}
	idOf := func(body []byte) string {
		var v struct {
			ID string `json:"id"`
		}
		json.Unmarshal(body, &v)
		return v.ID
	}
	pushEvent := func(body []byte) (id, typ string) {
		var p struct {
			Message struct {
				Data []byte `json:"data"`
			} `json:"message"`
		}
		var m struct {
			EventID   string `json:"eventId"`
			EventType string `json:"eventType"`
		}
		json.Unmarshal(body, &p)
		json.Unmarshal(p.Message.Data, &m)
		return m.EventID, m.EventType
	}

	// replayOf delivers d again, as the cloud would redeliver it, and
	// checks the answer and that the subscription is as it was.
	var out []replay
	replayOf := func(cloud, customer string, first delivery, id string) {
		t.Helper()
		before := settled(cloud, customer)
		req, _ := http.NewRequestWithContext(t.Context(), "POST", d.url+first.path, bytes.NewReader(first.body))
		req.Header = first.header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s replay: %v", cloud, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != first.status {
			t.Errorf("%s replay of %s: %d %s, want %d as for the first delivery (a redelivery is answered 2xx, so that the cloud stops)",
				cloud, id, resp.StatusCode, b, first.status)
		}
		after := settled(cloud, customer)
		if after != before {
			t.Errorf("%s replay of %s changed the subscription: %+v, was %+v", cloud, id, after, before)
		}
		// The daemon told the replay from a first delivery by the cloud's
		// id: its debug log has the delivery accepted twice, first then not.
		var seen []bool
		for line := range strings.Lines(d.logs()) {
			var l struct {
				Msg                  string
				ID, Operation, Event string
				First                *bool
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.First != nil && strings.HasSuffix(l.Msg, "accepted") &&
				(l.ID == id || l.Operation == id || l.Event == id) {
				seen = append(seen, *l.First)
			}
		}
		if len(seen) != 2 || !seen[0] || seen[1] {
			t.Errorf("%s: the daemon's log has %s accepted with first=%v, want [true false]", cloud, id, seen)
		}
		t.Logf("%s: replay of %s answered %d (first delivery %d), accepted as first=%v; subscription %+v, was %+v",
			cloud, id, resp.StatusCode, first.status, seen, after, before)
		out = append(out, replay{cloud: cloud, id: id, header: first.header})
	}
	// only returns the one delivery to path the daemon accepted.
	only := func(cloud, path string, match func(delivery) bool) delivery {
		t.Helper()
		var got []delivery
		for _, d := range rel.accepted(path) {
			if match(d) {
				got = append(got, d)
			}
		}
		if len(got) != 1 {
			t.Fatalf("%s: %d accepted deliveries, want 1: %+v", cloud, len(got), got)
		}
		return got[0]
	}

	// AWS: EventBridge, authenticated by the API destination's key.
	var ab admin.Buyer
	if st := emuCall(http.DefaultClient, "POST", emu["aws"]+"/emulator/buyers", `{"product":"prod-rel"}`, &ab); st != 201 || ab.Token == "" {
		t.Fatalf("aws buyer: %d %+v", st, ab)
	}
	land("aws", form("/aws/landing", "x-amzn-marketplace-token", ab.Token))
	waitFor("aws buyer active", func() bool { return sub("aws", ab.ID).Status == "active" })
	v0 := settled("aws", ab.ID)
	var ev admin.EventResult
	if st := emuCall(http.DefaultClient, "POST", emu["aws"]+"/emulator/buyers/"+url.PathEscape(ab.ID)+"/events",
		`{"event":"License Deprovisioned - Manufacturer"}`, &ev); st != 200 || len(ev.Deliveries) != 1 || ev.Deliveries[0].Status/100 != 2 {
		t.Fatalf("aws License Deprovisioned: %d %+v\n%s", st, ev, d.logs())
	}
	waitFor("aws buyer cancelled", func() bool { return sub("aws", ab.ID).Status == "cancelled" })
	if v1 := settled("aws", ab.ID); v1.Version != v0.Version+1 {
		t.Errorf("aws: License Deprovisioned moved the version from %d to %d, want once", v0.Version, v1.Version)
	}
	first := only("aws", "/aws/notifications", func(delivery) bool { return true })
	replayOf("aws", ab.ID, first, idOf(first.body))

	// Azure: the webhook, authenticated by an Entra token.
	var zb admin.Buyer
	if st := emuCall(azClient, "POST", emu["azure"]+"/emulator/buyers", `{"plan":"basic"}`, &zb); st != 201 || zb.Token == "" {
		t.Fatalf("azure buyer: %d %+v", st, zb)
	}
	r, _ := http.NewRequestWithContext(t.Context(), "GET", d.url+"/azure/landing?token="+url.QueryEscape(zb.Token), nil)
	land("azure", r)
	waitFor("azure buyer active", func() bool { return sub("azure", zb.ID).Status == "active" })
	v0 = settled("azure", zb.ID)
	if st := emuCall(azClient, "POST", emu["azure"]+"/emulator/buyers/"+url.PathEscape(zb.ID)+"/events",
		`{"event":"ChangePlan","plan":"pro"}`, &ev); st != 200 {
		t.Fatalf("azure ChangePlan: %d %+v\n%s", st, ev, d.logs())
	}
	waitFor("azure plan pro", func() bool { return sub("azure", zb.ID).Plan == "pro" })
	if v1 := settled("azure", zb.ID); v1.Version != v0.Version+1 {
		t.Errorf("azure: ChangePlan moved the version from %d to %d, want once", v0.Version, v1.Version)
	}
	first = only("azure", "/azure/notifications", func(delivery) bool { return true })
	replayOf("azure", zb.ID, first, idOf(first.body))

	// Google: the entitlement's approval, pushed with an OIDC token.
	gb, err := gemu.Admin().CreateBuyer(t.Context(), admin.BuyerRequest{Product: "demo", Plan: "standard"})
	if err != nil {
		t.Fatal(err)
	}
	land("gcp", form("/gcp/landing", "x-gcp-marketplace-token", gb.Token))
	var gcpCustomer string
	waitFor("gcp buyer active", func() bool {
		var page struct {
			Subscriptions []struct {
				Customer string `json:"customer"`
				Status   string `json:"status"`
			} `json:"subscriptions"`
		}
		getJSON(t, "GET", d.url+"/v1/subscriptions?provider=gcp", "", &page)
		if len(page.Subscriptions) == 1 && page.Subscriptions[0].Status == "active" {
			gcpCustomer = page.Subscriptions[0].Customer
		}
		return gcpCustomer != ""
	})
	first = only("gcp", "/gcp/notifications", func(d delivery) bool { _, typ := pushEvent(d.body); return typ == "ENTITLEMENT_ACTIVE" })
	id, _ := pushEvent(first.body)
	replayOf("gcp", gcpCustomer, first, id)
	return out
}

// merge returns the union of maps of names to secrets.
func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}
