package main

import (
	"context"
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
		save(name + "-phone.png")
		// Readable on a phone: nothing is wider than the screen.
		if value(t, ctx, "page width", chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`)) {
			t.Errorf("%s: the page is wider than a phone's screen", name)
		}
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

// TestBrowserLandingAndDashboard: an AWS buyer lands and sees what was
// resolved; a forged token gets a page that says so; the seller signs in to
// the dashboard with the keyboard, sees the subscription and the usage
// chart, and the chart follows new usage without a reload.
func TestBrowserLandingAndDashboard(t *testing.T) {
	ctx := newBrowser(t)
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
	d := startServe(t, "-addr", daemonAddr, "-catalogue", cat, "-aws-product-code", "prod-demo")

	t.Run("aws landing", func(t *testing.T) {
		var buyer admin.Buyer
		if st := getJSON(t, "POST", awsURL+"/emulator/buyers", `{"product":"prod-demo"}`, &buyer); st != 201 || buyer.Token == "" {
			t.Fatalf("new buyer: %d %+v", st, buyer)
		}
		page := marketplacePage(t, d.url+"/aws/landing", "x-amzn-marketplace-token", buyer.Token)
		do(t, ctx, "open the marketplace", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("#setup")))
		// The buyer uses the keyboard: focus the button and press Enter.
		do(t, ctx, "set up the account", chromedp.Focus(chromedp.CSS("#setup")), chromedp.KeyEvent("\r"))
		h1, text := pageText(t, ctx)
		if h1 != "Your subscription is active" {
			t.Errorf("heading %q\n%s", h1, d.logs())
		}
		for _, want := range []string{"AWS Marketplace", "prod-demo", buyer.ID, "Active"} {
			if !strings.Contains(text, want) {
				t.Errorf("the page does not show %q:\n%s", want, text)
			}
		}
		if value(t, ctx, "lang", chromedp.Evaluate[string](`document.documentElement.lang`)) == "" {
			t.Error("the page has no language")
		}
		screenshot(t, ctx, "aws-landing", true)
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
		if resp.Status != http.StatusBadRequest || !strings.HasPrefix(resp.MimeType, "text/html") {
			t.Errorf("forged token: %d %s", resp.Status, resp.MimeType)
		}
		h1, text := pageText(t, ctx)
		if h1 != "We could not complete your sign-up" || !strings.Contains(text, "not valid") || !strings.Contains(text, "What to do now") {
			t.Errorf("error page: %q\n%s", h1, text)
		}
		screenshot(t, ctx, "aws-forged-token", true)
	})

	t.Run("dashboard", func(t *testing.T) {
		var buyer admin.Buyer
		getJSON(t, "POST", awsURL+"/emulator/buyers", `{"product":"prod-demo"}`, &buyer)
		if resp, err := http.PostForm(d.url+"/aws/landing", url.Values{"x-amzn-marketplace-token": {buyer.Token}}); err != nil || resp.StatusCode != 200 {
			t.Fatalf("landing: %v %v", resp, err)
		}
		postUsage := func(id string, q int64) {
			body := `{"records":[{"event_id":"` + id + `","provider":"aws","customer":"` + buyer.ID + `","metric":"tokens","quantity":` + strconv.FormatInt(q, 10) + `}]}`
			if st := getJSON(t, "POST", d.url+"/v1/usage", body, nil); st != 200 {
				t.Fatalf("usage: %d", st)
			}
		}
		postUsage("browser-1", 4_000_000)

		// Signed out: the sign-in form, operated with the keyboard.
		do(t, ctx, "open the dashboard", chromedp.Navigate(d.url+"/dashboard/"), chromedp.WaitVisible(chromedp.CSS("#secret")))
		screenshot(t, ctx, "dashboard-sign-in", false)
		if value(t, ctx, "label", chromedp.Text(chromedp.CSS(`label[for="secret"]`))) == "" {
			t.Error("the key field has no label")
		}
		do(t, ctx, "sign in", chromedp.SendKeys(chromedp.CSS("#secret"), serveKey+"\r"),
			chromedp.WaitVisible(chromedp.CSS(`#usage-chart rect.bar[data-provider="aws"]`)))

		subsText := value(t, ctx, "subscriptions", chromedp.Text(chromedp.CSS("#subscriptions tbody")))
		if !strings.Contains(subsText, "AWS") || !strings.Contains(subsText, "2") {
			t.Errorf("subscriptions table: %q", subsText)
		}
		chartSum := func() int64 {
			return value(t, ctx, "read the chart", chromedp.Evaluate[int64](`Array.from(document.querySelectorAll('#usage-chart rect.bar[data-provider="aws"]')).reduce((a, r) => a + Number(r.dataset.value), 0)`))
		}
		if got := chartSum(); got != 4_000_000 {
			t.Errorf("the chart shows %d for AWS, want 4000000", got)
		}
		health := value(t, ctx, "health", chromedp.Text(chromedp.CSS("#health tbody")))
		if !strings.Contains(health, "AWS") {
			t.Errorf("reporter health: %q", health)
		}
		screenshot(t, ctx, "dashboard", true)

		// New usage shows without a reload: a mark set on the page survives.
		value(t, ctx, "mark the page", chromedp.Evaluate[bool](`window.notReloaded = true`))
		postUsage("browser-2", 1_500_000)
		deadline := time.Now().Add(20 * time.Second)
		for chartSum() != 5_500_000 && time.Now().Before(deadline) {
			time.Sleep(250 * time.Millisecond)
		}
		if got := chartSum(); got != 5_500_000 {
			t.Errorf("after more usage the chart shows %d, want 5500000", got)
		}
		if !value(t, ctx, "the mark", chromedp.Evaluate[bool](`window.notReloaded === true`)) {
			t.Error("the page was reloaded to refresh")
		}
		screenshot(t, ctx, "dashboard-refreshed", false)
	})
}
