package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/saasmarket/marketplace/emulator/admin"
	"github.com/saasmarket/marketplace/internal/a11ytest"
)

// The browser tests drive a real headless Chromium (Debian's chromium
// package) against the real binaries: a buyer arrives from each
// marketplace's emulator on the daemon's landing page, and the seller signs
// in to the dashboard and watches usage arrive. Screenshots go to
// t.ArtifactDir(): run with -artifacts (and -outputdir) to keep them.

// chromium finds the browser; without one the test skips, or fails under CI.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium on PATH (chromium, chromium-browser, google-chrome); .ci/run installs Debian's: apt-get install -y chromium")
	}
	t.Skip("no Chromium on PATH; install Debian's chromium package to run the browser tests")
	return ""
}

// newBrowser starts a headless Chromium with a new, empty profile and the
// background connections off (this machine's network refuses them).
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// do runs browser actions, within a bound.
func do(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// value runs one browser action that returns a value, within a bound.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// screenshot saves the whole page as NAME.png in the test's artifact
// folder, at the desktop size and, with phone, at a phone's width too.
func screenshot(t *testing.T, ctx context.Context, name string, phone bool) {
	t.Helper()
	dir := t.ArtifactDir()
	save := func(file string) {
		png := value(t, ctx, "screenshot "+file, chromedp.FullScreenshot(100))
		if err := os.WriteFile(filepath.Join(dir, file), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	do(t, ctx, "desktop size", chromedp.EmulateViewport(1280, 900))
	save(name + ".png")
	// The page as the browser holds it (after its scripts ran).
	for _, p := range a11ytest.Problems(value(t, ctx, "the DOM", chromedp.Evaluate[string](`document.documentElement.outerHTML`))) {
		t.Errorf("%s: accessibility: %s", name, p)
	}
	if phone {
		do(t, ctx, "phone size", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
		// Readable on a phone: nothing is wider than the screen (checked
		// before the screenshot, which resizes the page to its content).
		// A mobile browser zooms out to fit a wider page, so the width is
		// compared with the screen's, not the window's.
		if w := value(t, ctx, "page width", chromedp.Evaluate[[]int](`[document.documentElement.scrollWidth, screen.width]`)); len(w) != 2 || w[0] > w[1] {
			t.Errorf("%s: the page is %v px wide on a phone's screen of %v", name, w[0], w[1])
		}
		save(name + "-phone.png")
		do(t, ctx, "desktop size", chromedp.EmulateViewport(1280, 900))
	}
	t.Logf("screenshots of %s in %s", name, dir)
}

// marketplacePage serves the marketplace's side of a POST landing: a
// page with the form the cloud posts, as AWS and Google do.
func marketplacePage(t *testing.T, action, field, token string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><html lang="en"><title>Marketplace</title><body><form method="post" action="%s">
<input type="hidden" name="%s" value="%s"><button id="setup" type="submit">Set up your account</button></form></body></html>`,
			html.EscapeString(action), html.EscapeString(field), html.EscapeString(token))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// pageText returns the text of the page's <main>.
func pageText(t *testing.T, ctx context.Context) (h1, main string) {
	t.Helper()
	do(t, ctx, "wait for the page", chromedp.WaitVisible(chromedp.CSS("h1")))
	return value(t, ctx, "read h1", chromedp.Text(chromedp.CSS("h1"))), value(t, ctx, "read main", chromedp.Text(chromedp.CSS("main")))
}

// browserEnv is one `marketplaced emulate` with all three clouds and one
// `marketplaced serve` with all three mounted.
type browserEnv struct {
	d                     *daemon
	data                  string // the daemon's data folder
	awsURL, azURL, gcpURL string
	azClient              *http.Client // trusts the Azure emulator's certificate
}

func startBrowserEnv(t *testing.T) *browserEnv {
	t.Helper()
	const (
		ebSecret = "eventbridge-secret-for-the-test"
		azSecret = "azure-client-secret-for-the-test"
		service  = "inference.endpoints.browser-project.cloud.goog"
		audience = "saas.example.com"
	)
	daemonAddr := freeAddr(t)
	certFile := filepath.Join(t.TempDir(), "azure-cert.pem")
	emu := startEmulate(t, "-clouds", "aws,azure,gcp",
		"-aws-listen", "127.0.0.1:0", "-aws-eventbridge-endpoint", "http://"+daemonAddr+"/aws/notifications",
		"-aws-eventbridge-secret", ebSecret, "-aws-dimensions", "prod-demo=tokens_1m",
		"-azure-listen", "127.0.0.1:0", "-azure-cert-file", certFile, "-azure-client-secret", azSecret,
		"-azure-webhook-url", "http://"+daemonAddr+"/azure/notifications",
		"-gcp-listen", "127.0.0.1:0", "-gcp-service", service, "-gcp-metrics", "tokens", "-gcp-audience", audience)
	e := &browserEnv{awsURL: emu["aws"], azURL: emu["azure"], gcpURL: emu["gcp"], data: t.TempDir()}
	if e.awsURL == "" || e.azURL == "" || e.gcpURL == "" {
		t.Fatalf("emulator URLs: %v", emu)
	}
	cat := filepath.Join(t.TempDir(), "catalogue.json")
	if err := os.WriteFile(cat, []byte(`{"products":[
{"provider":"aws","product":"prod-demo","metrics":{"tokens":{"dimension":"tokens_1m","unit":1000000}}},
{"provider":"azure","product":"inference-offer","metrics":{"tokens":{"dimension":"tokens_1m","unit":1000000}}},
{"provider":"gcp","product":"`+service+`","metrics":{"tokens":{"dimension":"`+service+`/tokens"}}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ENDPOINT_URL_MARKETPLACE_METERING", e.awsURL)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEMULATOR")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "emulator-secret")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("MARKETPLACED_AWS_EVENTBRIDGE_SECRET", ebSecret)
	t.Setenv("MARKETPLACED_AZURE_CLIENT_SECRET", azSecret)
	e.d = startServe(t, "-addr", daemonAddr, "-data", e.data, "-catalogue", cat,
		"-aws-product-code", "prod-demo",
		"-azure-tenant-id", "72f988bf-86f1-41af-91ab-2d7cd011db47", "-azure-app-id", "6a1e7f7c-3d8e-4b5a-9c2f-0e1d2c3b4a59",
		"-azure-emulator-url", e.azURL, "-azure-emulator-ca-file", certFile,
		"-gcp-service", service, "-gcp-provider-id", "demo-provider", "-gcp-signup-audience", audience, "-gcp-emulator-url", e.gcpURL)
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	e.azClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return e
}

// newBuyer creates a buyer on a cloud's emulator; its Token is what the
// marketplace gives the buyer's browser.
func (e *browserEnv) newBuyer(t *testing.T, cloud string) admin.Buyer {
	t.Helper()
	var b admin.Buyer
	switch cloud {
	case "aws":
		if st := getJSON(t, "POST", e.awsURL+"/emulator/buyers", `{"product":"prod-demo"}`, &b); st != 201 {
			t.Fatalf("new AWS buyer: %d", st)
		}
	case "gcp":
		if st := getJSON(t, "POST", e.gcpURL+"/emulator/buyers", `{"product":"demo","plan":"standard"}`, &b); st != 201 {
			t.Fatalf("new Google buyer: %d", st)
		}
	case "azure":
		req, _ := http.NewRequestWithContext(t.Context(), "POST", e.azURL+"/emulator/buyers", strings.NewReader(`{"plan":"basic"}`))
		resp, err := e.azClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil || resp.StatusCode != 201 {
			t.Fatalf("new Azure buyer: %d %v", resp.StatusCode, err)
		}
	}
	if b.Token == "" {
		t.Fatalf("%s buyer without a token: %+v", cloud, b)
	}
	return b
}

// customer is the id the daemon's API knows a cloud's only subscription by.
func (e *browserEnv) customer(t *testing.T, cloud string) string {
	t.Helper()
	var page struct {
		Subscriptions []struct {
			Customer string `json:"customer"`
		} `json:"subscriptions"`
	}
	getJSON(t, "GET", e.d.url+"/v1/subscriptions?provider="+cloud, "", &page)
	if len(page.Subscriptions) == 0 {
		t.Fatalf("no %s subscription", cloud)
	}
	return page.Subscriptions[0].Customer
}

// landed checks the confirmation page a buyer sees.
func landed(t *testing.T, ctx context.Context, name string, want ...string) {
	t.Helper()
	h1, text := pageText(t, ctx)
	if h1 != "Your subscription is active" && h1 != "We have your subscription" {
		t.Errorf("heading %q:\n%s", h1, text)
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("the page does not show %q:\n%s", w, text)
		}
	}
	if value(t, ctx, "lang", chromedp.Evaluate[string](`document.documentElement.lang`)) == "" {
		t.Error("the page has no language")
	}
	screenshot(t, ctx, name, true)
}

// refused checks an error page and the status code it came with.
func refused(t *testing.T, ctx context.Context, name string, resp *network.Response, status int, heading, says string) {
	t.Helper()
	if resp.Status != int64(status) || !strings.HasPrefix(resp.MimeType, "text/html") {
		t.Errorf("%s: %d %s, want %d text/html", name, resp.Status, resp.MimeType, status)
	}
	h1, text := pageText(t, ctx)
	if h1 != heading || !strings.Contains(text, says) || !strings.Contains(text, "What to do now") {
		t.Errorf("%s: %q\n%s", name, h1, text)
	}
	screenshot(t, ctx, name, true)
}

// TestBrowser: buyers of each cloud arrive from the marketplace's emulator
// and see what was resolved, or an error page that says what to do (with
// the status code that fits); the seller signs in to the dashboard with the
// keyboard, reads subscriptions per cloud, the usage chart and reporter
// health, and the chart follows new usage without a reload.
func TestBrowser(t *testing.T) {
	ctx := newBrowser(t)
	e := startBrowserEnv(t)
	d := e.d

	t.Run("aws landing", func(t *testing.T) {
		buyer := e.newBuyer(t, "aws")
		page := marketplacePage(t, d.url+"/aws/landing", "x-amzn-marketplace-token", buyer.Token)
		do(t, ctx, "open the marketplace", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("#setup")))
		// The buyer uses the keyboard: focus the button and press Enter.
		do(t, ctx, "set up the account", chromedp.Focus(chromedp.CSS("#setup")), chromedp.KeyEvent("\r"))
		landed(t, ctx, "aws-landing", "Your subscription is active", "AWS Marketplace", "prod-demo", buyer.ID, "Active")
		var sub map[string]any
		if st := getJSON(t, "GET", d.url+"/v1/subscriptions/aws/"+url.PathEscape(buyer.ID), "", &sub); st != 200 || sub["status"] != "active" {
			t.Errorf("subscription after landing: %d %v", st, sub)
		}
	})

	t.Run("aws forged token", func(t *testing.T) {
		page := marketplacePage(t, d.url+"/aws/landing", "x-amzn-marketplace-token", "forged-token")
		do(t, ctx, "open the marketplace", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("#setup")))
		resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("#setup")))
		if err != nil {
			t.Fatal(err)
		}
		refused(t, ctx, "aws-forged-token", resp, http.StatusBadRequest, "We could not complete your sign-up", "not valid")
	})

	t.Run("azure landing", func(t *testing.T) {
		buyer := e.newBuyer(t, "azure")
		// Azure sends the buyer's browser to the landing URL with the token.
		resp, err := chromedp.RunResponse(ctx, chromedp.Navigate(d.url+"/azure/landing?token="+url.QueryEscape(buyer.Token)))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != 200 {
			t.Errorf("landing: %d\n%s", resp.Status, d.logs())
		}
		landed(t, ctx, "azure-landing", "Your subscription is active", "Azure Marketplace", "basic", buyer.ID)
	})

	t.Run("azure bad token", func(t *testing.T) {
		resp, err := chromedp.RunResponse(ctx, chromedp.Navigate(d.url+"/azure/landing?token=not-a-token"))
		if err != nil {
			t.Fatal(err)
		}
		refused(t, ctx, "azure-bad-token", resp, http.StatusBadRequest, "We could not complete your sign-up", "invalid or has expired")
	})

	t.Run("gcp landing", func(t *testing.T) {
		buyer := e.newBuyer(t, "gcp")
		page := marketplacePage(t, d.url+"/gcp/landing", "x-gcp-marketplace-token", buyer.Token)
		do(t, ctx, "open the marketplace", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("#setup")),
			chromedp.Click(chromedp.CSS("#setup")))
		// Google approves the entitlement afterwards (through Pub/Sub): the
		// buyer sees it received, on the plan bought.
		landed(t, ctx, "gcp-landing", "Google Cloud Marketplace", "standard")
	})

	t.Run("gcp forged token", func(t *testing.T) {
		page := marketplacePage(t, d.url+"/gcp/landing", "x-gcp-marketplace-token", "not.a.jwt")
		do(t, ctx, "open the marketplace", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("#setup")))
		resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("#setup")))
		if err != nil {
			t.Fatal(err)
		}
		refused(t, ctx, "gcp-forged-token", resp, http.StatusUnauthorized, "We could not confirm this sign-up", "not authentic")
	})

	t.Run("dashboard", func(t *testing.T) {
		usage := map[string]int64{"aws": 4_000_000, "azure": 3_000_000, "gcp": 2_000}
		n := 0
		postUsageAt := func(cloud string, q int64, at time.Time) {
			n++
			body := `{"records":[{"event_id":"browser-` + strconv.Itoa(n) + `","provider":"` + cloud + `","customer":"` + e.customer(t, cloud) +
				`","metric":"tokens","quantity":` + strconv.FormatInt(q, 10) + `,"time":"` + at.UTC().Format(time.RFC3339) + `"}]}`
			if st := getJSON(t, "POST", d.url+"/v1/usage", body, nil); st != 200 {
				t.Fatalf("%s usage: %d", cloud, st)
			}
		}
		postUsage := func(cloud string, q int64) { postUsageAt(cloud, q, time.Now()) }
		for cloud, q := range usage {
			postUsage(cloud, q)
		}
		// An hour that has ended is sealed and reported to Azure's emulator.
		postUsageAt("azure", 2_500_000, time.Now().Add(-2*time.Hour))
		usage["azure"] += 2_500_000

		// Signed out: the sign-in form, operated with the keyboard.
		do(t, ctx, "open the dashboard", chromedp.Navigate(d.url+"/dashboard/"), chromedp.WaitVisible(chromedp.CSS("#secret")))
		screenshot(t, ctx, "dashboard-sign-in", false)
		if value(t, ctx, "label", chromedp.Text(chromedp.CSS(`label[for="secret"]`))) == "" {
			t.Error("the key field has no label")
		}
		do(t, ctx, "sign in", chromedp.SendKeys(chromedp.CSS("#secret"), serveKey+"\r"),
			chromedp.WaitVisible(chromedp.CSS(`#usage-chart rect.bar`)))

		rows := value(t, ctx, "subscriptions", chromedp.Evaluate[[][]string](`Array.from(document.querySelectorAll("#subscriptions tbody tr")).map(r => Array.from(r.cells).map(c => c.textContent))`))
		want := map[string]string{"AWS": "1", "Azure": "1", "Google Cloud": "0"} // active; Google's awaits its approval
		if len(rows) != 3 {
			t.Errorf("subscriptions table: %v", rows)
		}
		for _, r := range rows {
			if len(r) != 7 || r[1] != want[r[0]] || r[6] != "1" {
				t.Errorf("subscriptions row %v: want %s active of 1", r, want[r[0]])
			}
		}
		chartSum := func(cloud string) int64 {
			return value(t, ctx, "read the chart", chromedp.Evaluate[int64](`Array.from(document.querySelectorAll('#usage-chart rect.bar[data-provider="`+cloud+`"]')).reduce((a, r) => a + Number(r.dataset.value), 0)`))
		}
		for cloud, q := range usage {
			if got := chartSum(cloud); got != q {
				t.Errorf("the chart shows %d for %s, want %d", got, cloud, q)
			}
		}
		health := func() map[string][]string {
			rows := value(t, ctx, "health", chromedp.Evaluate[[][]string](`Array.from(document.querySelectorAll("#health tbody tr")).map(r => Array.from(r.cells).map(c => c.textContent))`))
			m := map[string][]string{}
			for _, r := range rows {
				m[r[0]] = r
			}
			return m
		}
		// Columns: cloud, pending, oldest unreported, retried, reported, rejected, conflict.
		deadline := time.Now().Add(60 * time.Second)
		for health()["Azure"][4] != "1" && time.Now().Before(deadline) {
			time.Sleep(250 * time.Millisecond)
		}
		h := health()
		if len(h) != 3 || h["Azure"][4] != "1" || h["Azure"][1] != "0" || h["AWS"][4] != "0" {
			t.Errorf("reporter health: %v, want Azure's ended hour reported\n%s", h, d.logs())
		}
		// The reported count is of the chart's hours, and says so; no
		// problem list is capped, so the page does not say it is.
		if head := value(t, ctx, "health header", chromedp.Text(chromedp.CSS(`#health thead`))); !strings.Contains(head, "Reported (last 24 h)") {
			t.Errorf("reporter health header %q does not say the reported count is of the last 24 hours", head)
		}
		if note := value(t, ctx, "problems note", chromedp.Evaluate[string](`document.getElementById("problems-note").textContent`)); note != "" {
			t.Errorf("problems note %q, want none (nothing is capped)", note)
		}
		screenshot(t, ctx, "dashboard", true)

		// New usage shows without a reload: a mark set on the page survives.
		value(t, ctx, "mark the page", chromedp.Evaluate[bool](`window.notReloaded = true`))
		postUsage("aws", 1_500_000)
		deadline = time.Now().Add(20 * time.Second)
		for chartSum("aws") != 5_500_000 && time.Now().Before(deadline) {
			time.Sleep(250 * time.Millisecond)
		}
		if got := chartSum("aws"); got != 5_500_000 {
			t.Errorf("after more usage the chart shows %d for AWS, want 5500000", got)
		}
		if !value(t, ctx, "the mark", chromedp.Evaluate[bool](`window.notReloaded === true`)) {
			t.Error("the page was reloaded to refresh")
		}
		screenshot(t, ctx, "dashboard-refreshed", false)

		// Quarantined rows: none yet; then a log entry damaged on disk is
		// moved aside by the next fold, and the page lists it, with what
		// the operator does, without a reload.
		quarantine := func() (string, [][]string) {
			return value(t, ctx, "quarantine count", chromedp.Text(chromedp.CSS("#quarantine-count"))),
				value(t, ctx, "quarantine", chromedp.Evaluate[[][]string](`Array.from(document.querySelectorAll("#quarantine tbody tr")).map(r => Array.from(r.cells).map(c => c.textContent))`))
		}
		if note, rows := quarantine(); note != "Nothing is quarantined." || len(rows) != 1 || rows[0][0] != "None." {
			t.Errorf("quarantine section before any damage: %q %v", note, rows)
		}
		db, err := sql.Open("sqlite", "file:"+filepath.Join(e.data, "marketplace.db")+"?_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		res, err := db.ExecContext(t.Context(), `INSERT INTO usage_log (data) VALUES (?)`, []byte("\x02\x01torn by the browser test"))
		if err != nil {
			t.Fatal(err)
		}
		seq, _ := res.LastInsertId()
		ref := "seq " + strconv.FormatInt(seq, 10)
		deadline = time.Now().Add(20 * time.Second)
		// The note and the table are read one after the other: a refresh
		// may land between them, so wait for both.
		note, rows := quarantine()
		for (len(rows) != 1 || len(rows[0]) != 6 || rows[0][2] != ref || note != "1 quarantined: Usage log 1, Inbox 0.") && time.Now().Before(deadline) {
			time.Sleep(250 * time.Millisecond)
			note, rows = quarantine()
		}
		if len(rows) != 1 || len(rows[0]) != 6 || rows[0][1] != "Usage log" || rows[0][2] != ref || !strings.Contains(rows[0][5], "corrupt log entry") {
			t.Errorf("quarantine table %v, want the entry at %s with its reason", rows, ref)
		}
		if note != "1 quarantined: Usage log 1, Inbox 0." {
			t.Errorf("quarantine count %q", note)
		}
		if text := value(t, ctx, "the section", chromedp.Text(chromedp.CSS(`section[aria-labelledby="quarantine-h"]`))); !strings.Contains(text, "marketplaced quarantine restore") {
			t.Errorf("the section does not say how to put a row back:\n%s", text)
		}
		if !value(t, ctx, "the mark", chromedp.Evaluate[bool](`window.notReloaded === true`)) {
			t.Error("the page was reloaded to refresh")
		}
		screenshot(t, ctx, "dashboard-quarantine", true)
	})
}
