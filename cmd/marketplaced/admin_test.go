package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/azure"
	"github.com/saasmarket/marketplace/emulator/admin"
	azureemu "github.com/saasmarket/marketplace/emulator/azure"
	"github.com/saasmarket/marketplace/postgres"
	"github.com/saasmarket/marketplace/server"
	"github.com/saasmarket/marketplace/sqlite"
)

var testCatalogue = filepath.Join("..", "..", "server", "testdata", "catalogue.json")

// adminRun runs an admin command in-process and returns its stdout.
func adminRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(t.Context(), args, &out, &errOut)
	return out.String(), err
}

// TestAdminCommands: subscriptions list and show, usage and seal give the
// same views through a running daemon's API and on its store (a SQLite
// data folder with -data, a PostgreSQL database with -store), in JSON and
// as tables; seal through either is seen by the other.
func TestAdminCommands(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) { testAdminCommands(t, kind) })
	}
}

func testAdminCommands(t *testing.T, kind string) {
	var (
		st    store
		where []string // the flags that name the store, for serve and the admin commands
		err   error
	)
	data := t.TempDir()
	if kind == "sqlite" {
		st, err = sqlite.Open(t.Context(), filepath.Join(data, "marketplace.db"))
		where = []string{"-data", data}
	} else {
		db := pgDatabase(t)
		st, err = postgres.Open(t.Context(), db)
		where = []string{"-store", db}
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []marketplace.Subscription{
		{Provider: marketplace.AWS, ID: "c1", CustomerID: "c1", ProductCode: "prod-inference", Status: marketplace.StatusActive, Entitlements: []string{"tokens_1m"}},
		{Provider: marketplace.AWS, ID: "c3", CustomerID: "c3", ProductCode: "prod-inference", Status: marketplace.StatusActive},
		{Provider: marketplace.Azure, ID: "sub-2", CustomerID: "sub-2", ProductCode: "inference-offer", Status: marketplace.StatusSuspended, Plan: "basic"},
	} {
		if _, err := st.PutSubscription(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	d := startServe(t, where...)
	for _, c := range []string{"c1", "c3"} {
		if st := getJSON(t, "POST", d.url+"/v1/usage", `{"records":[{"event_id":"a-`+c+`","provider":"aws","customer":"`+c+`","metric":"tokens","quantity":2500000}]}`, nil); st != 200 {
			t.Fatalf("usage of %s: %d", c, st)
		}
	}
	api := []string{"-addr", d.url, "-api-key", serveKey}
	dir := append(slices.Clone(where), "-catalogue", testCatalogue)
	both := func(what string, args ...string) string {
		t.Helper()
		a, err := adminRun(t, append(args, api...)...)
		if err != nil {
			t.Fatalf("%s through the API: %v", what, err)
		}
		b, err := adminRun(t, append(args, dir...)...)
		if err != nil {
			t.Fatalf("%s on the store: %v", what, err)
		}
		if a != b {
			t.Errorf("%s: the API and the store differ:\n%s\n%s", what, a, b)
		}
		return a
	}

	var subs []subView
	if err := json.Unmarshal([]byte(both("list", "subscriptions", "list", "-json")), &subs); err != nil || len(subs) != 3 {
		t.Fatalf("list: %v %+v", err, subs)
	}
	if err := json.Unmarshal([]byte(both("list azure", "subscriptions", "list", "-provider", "azure", "-state", "suspended", "-json")), &subs); err != nil ||
		len(subs) != 1 || subs[0].Customer != "sub-2" || subs[0].Plan != "basic" {
		t.Errorf("list azure suspended: %v %+v", err, subs)
	}
	var sub subView
	if err := json.Unmarshal([]byte(both("show", "subscriptions", "show", "-provider", "aws", "-customer", "c1", "-json")), &sub); err != nil ||
		sub.Status != "active" || len(sub.Entitlements) != 1 {
		t.Errorf("show: %v %+v", err, sub)
	}
	if out := both("list table", "subscriptions", "list"); !strings.Contains(out, "sub-2") || !strings.Contains(out, "3 subscriptions") {
		t.Errorf("list table:\n%s", out)
	}
	if out := both("show table", "subscriptions", "show", "-provider", "azure", "-customer", "sub-2"); !strings.Contains(out, "suspended") {
		t.Errorf("show table:\n%s", out)
	}

	usage := func(customer string) []bucketView {
		t.Helper()
		var bs []bucketView
		if err := json.Unmarshal([]byte(both("usage", "usage", "-provider", "aws", "-customer", customer, "-json")), &bs); err != nil {
			t.Fatal(err)
		}
		return bs
	}
	if bs := usage("c1"); len(bs) != 1 || bs[0].State != "open" || bs[0].Quantity != 2_500_000 || bs[0].Dimension != "tokens_1m" || bs[0].Customer != "c1" {
		t.Fatalf("usage before the seal: %+v", bs)
	}
	// Seal c1 through the API and c3 on the store: both are seen
	// both ways, with the catalogue's units.
	for _, tc := range []struct {
		customer string
		how      []string
	}{{"c1", api}, {"c3", dir}} {
		out, err := adminRun(t, append([]string{"seal", "-provider", "aws", "-customer", tc.customer, "-json"}, tc.how...)...)
		if err != nil || strings.TrimSpace(out) != "{\n  \"sealed\": 1\n}" {
			t.Errorf("seal %s: %v %q", tc.customer, err, out)
		}
		if bs := usage(tc.customer); len(bs) != 1 || bs[0].State == "open" || bs[0].Units != 2 {
			t.Errorf("usage of %s after the seal: %+v, want 2 units sealed", tc.customer, bs)
		}
	}
	if out := both("usage table", "usage", "-provider", "aws", "-customer", "c1"); !strings.Contains(out, "tokens_1m") || !strings.Contains(out, "1 buckets") {
		t.Errorf("usage table:\n%s", out)
	}

	if kind != "sqlite" {
		return
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"seal", "-provider", "aws", "-customer", "c1", "-data", data}, "-catalogue"},
		{[]string{"subscriptions", "show", "-provider", "aws", "-data", data}, "-customer"},
		{[]string{"subscriptions", "show", "-provider", "aws", "-customer", "nobody", "-data", data}, "no aws subscription"},
		{[]string{"subscriptions", "show", "-provider", "aws", "-customer", "nobody", "-addr", d.url, "-api-key", serveKey}, "404"},
		{[]string{"usage", "-provider", "ibm", "-customer", "c1", "-data", data}, "-provider"},
		{[]string{"usage", "-provider", "aws", "-customer", "c1", "-data", data, "-from", "yesterday"}, "-from"},
		{[]string{"subscriptions", "list", "-data", filepath.Join(data, "missing")}, "-data"},
		{[]string{"subscriptions", "list", "-addr", d.url, "-api-key", "wrong-key-0123456789"}, "401"},
		{[]string{"subscriptions", "list", "-addr", d.url, "-api-key", ""}, "-api-key"},
		{[]string{"subscriptions", "remove"}, "list or show"},
		{[]string{"subscriptions", "list", "-data", data, "-store", "postgres://app@127.0.0.1:1/m"}, "-data and -store"},
		{[]string{"subscriptions", "list", "-store", "mysql://app:hunter2-secret@db/m"}, "-store"},
		{[]string{"subscriptions", "list", "-store", "postgres://app:hunter2-secret@127.0.0.1:1/m?connect_timeout=5"}, "-store"},
	} {
		_, err := adminRun(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %s", tc.args, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: the error shows the password: %v", tc.args, err)
		}
	}
}

// TestReconcileAzure: buckets the daemon reported to Azure's emulator agree
// with Azure's usage events; once Azure holds usage the ledger never
// reported, reconcile lists that hour (through the API and on the data
// folder alike) and fails.
func TestReconcileAzure(t *testing.T) {
	const secret = "azure-client-secret-for-the-test"
	daemonAddr := freeAddr(t)
	emu := azureemu.New(azureemu.Config{WebhookURL: "http://" + daemonAddr + "/azure/notifications", OfferID: "inference-offer",
		PublisherApp: azureemu.DefaultPublisherApp, Clients: map[string]string{azureemu.DefaultPublisherApp: secret}})
	azURL, certPEM, err := emu.Start(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(t.TempDir(), "azure-ca.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	t.Setenv("MARKETPLACED_AZURE_CLIENT_SECRET", secret)
	azArgs := []string{"-azure-tenant-id", emu.Config().TenantID, "-azure-app-id", emu.Config().PublisherApp,
		"-azure-emulator-url", azURL, "-azure-emulator-ca-file", certFile}
	d := startServe(t, append([]string{"-addr", daemonAddr, "-data", data}, azArgs...)...)

	buyer, err := emu.Admin().CreateBuyer(t.Context(), admin.BuyerRequest{Plan: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	if st := getJSON(t, "GET", d.url+"/azure/landing?token="+url.QueryEscape(buyer.Token), "", nil); st != 200 {
		t.Fatalf("landing: %d\n%s", st, d.logs())
	}
	customer := buyer.ID
	now := time.Now().UTC()
	for i, ago := range []time.Duration{3 * time.Hour, 2 * time.Hour} {
		body := `{"records":[{"event_id":"r` + strconv.Itoa(i) + `","provider":"azure","customer":"` + customer +
			`","metric":"tokens","quantity":2500000,"time":"` + now.Add(-ago).Format(time.RFC3339) + `"}]}`
		if st := getJSON(t, "POST", d.url+"/v1/usage", body, nil); st != 200 {
			t.Fatalf("usage: %d\n%s", st, d.logs())
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(emu.Admin().Bill().Lines) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the emulator billed %+v after 60 s\n%s", emu.Admin().Bill(), d.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The reporter stores the outcome after Azure answered: wait for it.
	deadline = time.Now().Add(30 * time.Second)
	for {
		var r struct {
			Buckets []bucketView `json:"buckets"`
		}
		getJSON(t, "GET", d.url+"/v1/usage?provider=azure&customer="+customer, "", &r)
		if len(r.Buckets) == 2 && r.Buckets[0].State == "reported" && r.Buckets[1].State == "reported" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("buckets not reported: %+v", r)
		}
		time.Sleep(200 * time.Millisecond)
	}

	reconcile := func(how []string) (reconciliation, error) {
		t.Helper()
		out, err := adminRun(t, append(append([]string{"reconcile", "-provider", "azure", "-json",
			"-from", now.Add(-6 * time.Hour).Format(time.RFC3339)}, azArgs...), how...)...)
		var r reconciliation
		if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
			t.Fatalf("reconcile %q: %v %v\n%s", how, err, jerr, out)
		}
		return r, err
	}
	ways := map[string][]string{"api": {"-addr", d.url, "-api-key", serveKey}, "data": {"-data", data}}
	for name, how := range ways {
		r, err := reconcile(how)
		if err != nil || len(r.Differences) != 0 || r.Reported != 2 || r.AzureRecords != 2 || r.Customers != 1 {
			t.Errorf("%s: agreeing: %v %+v", name, err, r)
		}
	}

	// Azure holds usage the ledger never reported (sent by another tool).
	cfg, err := azureConfig(server.AzureConfig{TenantID: emu.Config().TenantID, AppID: emu.Config().PublisherApp, ClientSecret: secret,
		EmulatorURL: azURL, EmulatorCAFile: certFile})
	if err != nil {
		t.Fatal(err)
	}
	stray := now.Add(-4 * time.Hour).Truncate(time.Hour)
	if _, err := cfg.Client.PostUsageEvent(t.Context(), azure.UsageEvent{ResourceID: customer, Quantity: 7, Dimension: "tokens_1m",
		EffectiveStartTime: azure.Time{Time: stray}, PlanID: "basic"}); err != nil {
		t.Fatal(err)
	}
	for name, how := range ways {
		r, err := reconcile(how)
		if !errors.Is(err, errDifferences) || len(r.Differences) != 1 {
			t.Errorf("%s: %v %+v, want one difference", name, err, r)
			continue
		}
		if d := r.Differences[0]; d.Kind != "not_reported_by_us" || d.Customer != customer || !d.Hour.Equal(stray) || d.Azure != 7 || d.OurState != "" {
			t.Errorf("%s: difference %+v", name, d)
		}
	}
	out, err := adminRun(t, append(append([]string{"reconcile", "-provider", "azure", "-from", now.Add(-6 * time.Hour).Format(time.RFC3339)}, azArgs...), ways["data"]...)...)
	if !errors.Is(err, errDifferences) || !strings.Contains(out, "not_reported_by_us") || !strings.Contains(out, "1 differences") {
		t.Errorf("table: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"reconcile", "-provider", "aws", "-data", data}, "only Azure"},
		{[]string{"reconcile", "-data", data}, "-provider"},
		{[]string{"reconcile", "-provider", "azure", "-data", data}, "-azure-tenant-id"},
	} {
		if _, err := adminRun(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}

// TestProgress: a short run shows nothing; a long one shows its progress
// on one line, at most every 200 ms, and ends it.
func TestProgress(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	p := newProgress(&buf, func() time.Time { return now })
	p.update("customer %d", 1)
	if buf.Len() != 0 {
		t.Fatalf("a short run printed %q", buf.String())
	}
	now = now.Add(2 * time.Second)
	p.update("customer %d of %d", 2, 10)
	p.update("customer %d of %d", 3, 10) // within 200 ms: not shown
	now = now.Add(300 * time.Millisecond)
	p.update("customer %d", 4)
	p.done()
	if got, want := buf.String(), "\rcustomer 2 of 10\rcustomer 4      \n"; got != want {
		t.Errorf("progress %q, want %q", got, want)
	}
}
