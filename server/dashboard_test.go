package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/internal/a11ytest"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/sqlite"
)

// browser is an HTTP client with cookies that does not follow redirects.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, u string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func signIn(t *testing.T, c *http.Client, base, secret string) *http.Response {
	t.Helper()
	res, err := c.PostForm(base+"/dashboard/login", url.Values{"secret": {secret}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res
}

func TestDashboardSignIn(t *testing.T) {
	h := newHarness(t, harnessOptions{cfg: func(c *Config) { c.DashboardPassword = "correct horse battery" }})
	c := browser(t)
	base := h.rawURL

	res, body := get(t, c, base+"/dashboard/")
	if res.StatusCode != 200 || !strings.Contains(body, `<label for="secret">Dashboard password or API key</label>`) || strings.Contains(body, "Usage per hour") {
		t.Fatalf("signed out: %d\n%s", res.StatusCode, body)
	}
	for _, p := range a11ytest.Problems(body) {
		t.Errorf("sign-in page: %s", p)
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if res, _ := get(t, c, base+"/dashboard/data"); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("data signed out: %d", res.StatusCode)
	}

	res = signIn(t, c, base, "not the key at all")
	if res.StatusCode != http.StatusUnauthorized || res.Header.Get("Set-Cookie") != "" {
		t.Errorf("wrong secret: %d, cookie %q", res.StatusCode, res.Header.Get("Set-Cookie"))
	}

	for _, secret := range []string{testKey, testKey2, "correct horse battery"} {
		c := browser(t)
		res := signIn(t, c, base, secret)
		if res.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-in with %q: %d", secret, res.StatusCode)
		}
		ck := res.Header.Get("Set-Cookie")
		for _, want := range []string{sessionCookie + "=", "HttpOnly", "SameSite=Strict", "Path=/dashboard"} {
			if !strings.Contains(ck, want) {
				t.Errorf("cookie %q lacks %s", ck, want)
			}
		}
		if strings.Contains(ck, secret) {
			t.Errorf("cookie carries the secret: %q", ck)
		}
		res, body := get(t, c, base+"/dashboard/")
		if res.StatusCode != 200 || !strings.Contains(body, "Usage per hour") {
			t.Errorf("signed in: %d\n%s", res.StatusCode, body)
		}
		for _, p := range a11ytest.Problems(body) {
			t.Errorf("dashboard page: %s", p)
		}
		if res, _ := get(t, c, base+"/dashboard/data"); res.StatusCode != 200 {
			t.Errorf("data signed in: %d", res.StatusCode)
		}
		// Sign out ends the session.
		res, err := c.PostForm(base+"/dashboard/logout", nil)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res, _ := get(t, c, base+"/dashboard/data"); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("data after sign-out: %d", res.StatusCode)
		}
	}

	// Scripts use the API key.
	if res, _ := get(t, http.DefaultClient, base+"/dashboard/data", "Authorization", "Bearer "+testKey); res.StatusCode != 200 {
		t.Errorf("data with the API key: %d", res.StatusCode)
	}
	if res, _ := get(t, http.DefaultClient, base+"/dashboard/data", "Authorization", "Bearer correct horse battery"); res.StatusCode != 401 {
		t.Errorf("data with the password as a bearer token: %d, want 401 (the password is for the page)", res.StatusCode)
	}
}

func TestDashboardSessions(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	d := newDashboard(h.srv)
	req := func(v string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, "/dashboard/data", nil)
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: v})
		return r
	}
	good := d.session(t0.Add(time.Hour))
	ts, sig, _ := strings.Cut(good, ".")
	for _, tc := range []struct {
		name, value string
		want        bool
	}{
		{"valid", good, true},
		{"expired", d.session(t0.Add(-time.Second)), false},
		{"expiry moved", "9999999999." + sig, false},
		{"signature changed", ts + "." + strings.Repeat("A", len(sig)), false},
		{"another process's key", newDashboard(h.srv).session(t0.Add(time.Hour)), false},
		{"no dot", ts, false},
		{"empty", "", false},
	} {
		if got := d.signedIn(req(tc.value)); got != tc.want {
			t.Errorf("%s: signed in %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDashboardAssets(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for path, ct := range map[string]string{"dashboard.js": "text/javascript", "dashboard.css": "text/css"} {
		res, body := get(t, http.DefaultClient, h.rawURL+"/dashboard/assets/"+path)
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), ct) || len(body) < 100 {
			t.Errorf("%s: %d %q", path, res.StatusCode, res.Header.Get("Content-Type"))
		}
		// Nothing comes from elsewhere.
		if strings.Contains(body, "https://") || strings.Contains(body, "//cdn") {
			t.Errorf("%s refers to another site", path)
		}
	}
	for _, path := range []string{"login.html", "index.html", "nope.js", "x"} {
		if res, _ := get(t, http.DefaultClient, h.rawURL+"/dashboard/assets/"+path); res.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", path, res.StatusCode)
		}
	}
}

func TestDashboardData(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := t.Context()
	for _, s := range []marketplace.Subscription{
		{ID: "a1", CustomerID: "c1", Provider: marketplace.AWS, Status: marketplace.StatusActive},
		{ID: "a2", CustomerID: "c2", Provider: marketplace.AWS, Status: marketplace.StatusActive},
		{ID: "a3", CustomerID: "c3", Provider: marketplace.AWS, Status: marketplace.StatusPending},
		{ID: "z1", CustomerID: "z1", Provider: marketplace.Azure, Status: marketplace.StatusCancelled},
	} {
		if _, err := h.store.PutSubscription(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	earlier := t0.Add(-2 * time.Hour)
	recs := []ledger.Record{
		{Provider: marketplace.AWS, Customer: "c1", Dimension: "tokens_1m", Quantity: 3_000_000, Time: earlier, EventID: "e1"},
		{Provider: marketplace.AWS, Customer: "c2", Dimension: "tokens_1m", Quantity: 2_000_000, Time: earlier, EventID: "e2"},
		{Provider: marketplace.AWS, Customer: "c3", Dimension: "tokens_1m", Quantity: 1_000_000, Time: earlier, EventID: "e3"},
		{Provider: marketplace.Azure, Customer: "z1", Dimension: "tokens_1m", Quantity: 7_000_000, Time: t0, EventID: "e4"},
	}
	if _, err := h.ledger.Ingest(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ledger.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	// The cloud rejects c1's hour, holds another quantity for c2's, and
	// c3's failed once and waits for a retry.
	claimed, err := h.store.Claim(ctx, ledger.ClaimRequest{Provider: marketplace.AWS, Owner: "test", Now: t0, Lease: time.Minute, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var done []ledger.Completion
	for _, b := range claimed {
		if !b.Hour.Equal(ledger.HourOf(earlier)) {
			done = append(done, ledger.Completion{BucketID: b.ID, State: ledger.StateReported, Attempted: true, RecordID: "r", Now: t0})
			continue
		}
		c := ledger.Completion{BucketID: b.ID, Attempted: true, Now: t0}
		switch b.Customer {
		case "c1":
			c.State, c.Reason = ledger.StateRejected, "CustomerNotEntitledException: <b>not entitled</b>"
		case "c2":
			c.State, c.Reason = ledger.StateConflict, "DuplicateRequestException"
		case "c3":
			c.State, c.NextAttempt, c.Reason = ledger.StateSealed, t0.Add(time.Minute), "ThrottlingException"
		}
		done = append(done, c)
	}
	if err := h.store.Complete(ctx, "test", done); err != nil {
		t.Fatal(err)
	}
	// A parked notification.
	if _, err := h.store.AddNotification(ctx, marketplace.Notification{Provider: marketplace.Azure, ID: "op-9", Kind: "ChangePlan",
		Subject: "z1", State: marketplace.NotificationPending, NextAttempt: t0, Received: t0, Expires: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	ns, err := h.store.ClaimNotifications(ctx, marketplace.NotificationClaim{Owner: "w", Now: t0, Lease: time.Minute, Limit: 1})
	if err != nil || len(ns) != 1 {
		t.Fatalf("claim: %v %v", ns, err)
	}
	ns[0].State, ns[0].Attempts, ns[0].Reason = marketplace.NotificationParked, 30, "plan gold-2 is not in the catalogue"
	if err := h.store.SettleNotification(ctx, "w", ns[0]); err != nil {
		t.Fatal(err)
	}

	res, body := get(t, http.DefaultClient, h.rawURL+"/dashboard/data", "Authorization", "Bearer "+testKey)
	if res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	var dd dashboardData
	if err := json.Unmarshal([]byte(body), &dd); err != nil {
		t.Fatal(err)
	}
	if want := []marketplace.CloudProvider{marketplace.AWS, marketplace.Azure, marketplace.GCP}; !equal(dd.Providers, want) {
		t.Errorf("providers %v, want %v", dd.Providers, want)
	}
	if got := dd.Subscriptions[marketplace.AWS]; got["active"] != 2 || got["pending"] != 1 {
		t.Errorf("aws subscriptions %v", got)
	}
	if got := dd.Subscriptions[marketplace.Azure]; got["cancelled"] != 1 {
		t.Errorf("azure subscriptions %v", got)
	}
	if len(dd.Hours) != usageHours || !dd.Hours[usageHours-1].Equal(ledger.HourOf(t0)) {
		t.Errorf("hours %v", dd.Hours)
	}
	usage := map[marketplace.CloudProvider]int64{}
	for _, s := range dd.Usage {
		if len(s.Quantity) != usageHours {
			t.Fatalf("series %v: %d hours", s, len(s.Quantity))
		}
		for i, q := range s.Quantity {
			usage[s.Provider] += q
			if s.Provider == marketplace.AWS && q > 0 && !dd.Hours[i].Equal(ledger.HourOf(earlier)) {
				t.Errorf("aws usage at %v, want only at %v", dd.Hours[i], ledger.HourOf(earlier))
			}
		}
	}
	if usage[marketplace.AWS] != 6_000_000 || usage[marketplace.Azure] != 7_000_000 {
		t.Errorf("usage %v", usage)
	}
	var aws reportHealth
	for _, r := range dd.Health {
		if r.Provider == marketplace.AWS {
			aws = r
		}
	}
	if aws.Pending != 1 || aws.Retried != 1 || aws.OldestUnreported == nil || !aws.OldestUnreported.Equal(ledger.HourOf(earlier)) {
		t.Errorf("aws pending %d retried %d oldest %v", aws.Pending, aws.Retried, aws.OldestUnreported)
	}
	if aws.RejectedCount != 1 || len(aws.Rejected) != 1 || aws.Rejected[0].Customer != "c1" || !strings.Contains(aws.Rejected[0].Reason, "not entitled") {
		t.Errorf("rejected %+v", aws.Rejected)
	}
	if aws.ConflictCount != 1 || aws.Conflict[0].Reason != "DuplicateRequestException" || aws.Conflict[0].Units != 2 {
		t.Errorf("conflict %+v", aws.Conflict)
	}
	if len(dd.Parked) != 1 || dd.Parked[0].ID != "op-9" || dd.Parked[0].Reason != "plan gold-2 is not in the catalogue" {
		t.Errorf("parked %+v", dd.Parked)
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDashboardPasswordSetting(t *testing.T) {
	base := []string{"-catalogue", "testdata/catalogue.json", "-api-keys", testKey}
	_, err := ParseConfig(append(base, "-dashboard-password", "pw-4711"), env(nil), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-dashboard-password") || strings.Contains(err.Error(), "pw-4711") {
		t.Errorf("a short password: %v (want the setting named, the value not echoed)", err)
	}
	c, err := ParseConfig(base, env(map[string]string{"MARKETPLACED_DASHBOARD_PASSWORD": "a long enough password"}), io.Discard)
	if err != nil || c.DashboardPassword != "a long enough password" {
		t.Errorf("from the environment: %q %v", c.DashboardPassword, err)
	}
}

// bucketRecorder is a ledger store that records the BucketFilters asked of
// it, of Buckets (rows) and of SumBuckets (sums), so that a test can see
// how much the dashboard reads.
type bucketRecorder struct {
	ledger.Store
	mu      sync.Mutex
	filters []ledger.BucketFilter
	sums    []ledger.BucketFilter
}

func (r *bucketRecorder) Buckets(ctx context.Context, f ledger.BucketFilter) ([]ledger.Bucket, error) {
	r.mu.Lock()
	r.filters = append(r.filters, f)
	r.mu.Unlock()
	return r.Store.Buckets(ctx, f)
}

func (r *bucketRecorder) SumBuckets(ctx context.Context, f ledger.BucketFilter) ([]ledger.BucketSum, error) {
	r.mu.Lock()
	r.sums = append(r.sums, f)
	r.mu.Unlock()
	return r.Store.SumBuckets(ctx, f)
}

// take returns and forgets the filters of Buckets and of SumBuckets.
func (r *bucketRecorder) take() (rows, sums []ledger.BucketFilter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rows, sums = r.filters, r.sums
	r.filters, r.sums = nil, nil
	return rows, sums
}

// subscriptionLister is the server's subscription store with its
// ListSubscriptions recorded: the dashboard must count in the store
// (CountSubscriptions), never list every subscription to count them. It
// embeds the SQLite store, so the dashboard still finds its other methods
// (the parked notifications).
type subscriptionLister struct {
	*sqlite.Store
	mu    sync.Mutex
	lists []marketplace.SubscriptionFilter
}

func (l *subscriptionLister) ListSubscriptions(ctx context.Context, f marketplace.SubscriptionFilter) ([]marketplace.Subscription, error) {
	l.mu.Lock()
	l.lists = append(l.lists, f)
	l.mu.Unlock()
	return l.Store.ListSubscriptions(ctx, f)
}

// TestDashboardReadsBounded: a refresh reads sums of the chart's hours
// and the newest few buckets of each problem state, never all the buckets
// retention keeps nor the chart's buckets one by one, and counts the
// subscriptions in the store rather than listing them; the lists it caps
// say so.
func TestDashboardReadsBounded(t *testing.T) {
	rec := &bucketRecorder{}
	h := newHarness(t, harnessOptions{ledgerStore: func(s ledger.Store) ledger.Store { rec.Store = s; return rec }})
	// Set before the first request (New starts nothing that reads it).
	subs := &subscriptionLister{Store: h.store}
	h.srv.deps.Subscriptions = subs
	ctx := t.Context()
	for _, s := range []marketplace.Subscription{
		{ID: "a1", CustomerID: "c1", Provider: marketplace.AWS, Status: marketplace.StatusActive, AccountID: "acct-1"},
		{ID: "a2", CustomerID: "c2", Provider: marketplace.AWS, Status: marketplace.StatusCancelled, AccountID: "acct-2"},
		{ID: "a3", CustomerID: "c3", Provider: marketplace.AWS, Status: marketplace.StatusActive},
	} {
		if _, err := h.store.PutSubscription(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// More rejected buckets than the dashboard lists: problemLimit+1 at
	// one hour and an older one.
	newer, older := ledger.HourOf(t0.Add(-2*time.Hour)), ledger.HourOf(t0.Add(-3*time.Hour))
	var recs []ledger.Record
	for i := range problemLimit + 2 {
		at := newer
		if i == 0 {
			at = older
		}
		recs = append(recs, ledger.Record{Provider: marketplace.AWS, Customer: fmt.Sprintf("c%d", i), Dimension: "tokens_1m",
			Quantity: 1_000_000, Time: at, EventID: fmt.Sprintf("e%d", i)})
	}
	if _, err := h.ledger.Ingest(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ledger.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	claimed, err := h.store.Claim(ctx, ledger.ClaimRequest{Provider: marketplace.AWS, Owner: "test", Now: t0, Lease: time.Minute, Limit: 1000})
	if err != nil || len(claimed) != len(recs) {
		t.Fatalf("claim: %d buckets, %v", len(claimed), err)
	}
	var done []ledger.Completion
	for i, b := range claimed {
		c := ledger.Completion{BucketID: b.ID, State: ledger.StateRejected, Attempted: true, Reason: "CustomerNotEntitledException", Now: t0}
		if i < 2 && b.Hour.Equal(older) { // the older hour's bucket: reported
			c.State, c.Reason, c.RecordID = ledger.StateReported, "", "r-1"
		}
		done = append(done, c)
	}
	if err := h.store.Complete(ctx, "test", done); err != nil {
		t.Fatal(err)
	}
	rec.take()

	res, body := get(t, http.DefaultClient, h.rawURL+"/dashboard/data", "Authorization", "Bearer "+testKey)
	if res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	filters, sums := rec.take()
	if len(filters) == 0 {
		t.Fatal("the dashboard read no buckets")
	}
	// Rows only for the lists of problems, each capped: the chart's
	// hours (every customer's buckets) are summed by the store.
	for _, f := range filters {
		if f.Limit <= 0 || f.Limit > problemLimit+1 {
			t.Errorf("the dashboard read buckets row by row without a cap (the chart's must be summed): %+v", f)
		}
	}
	if len(sums) == 0 {
		t.Error("the dashboard summed no buckets for its chart")
	}
	for _, f := range sums {
		if f.Provider == "" || f.From.IsZero() || f.Before.IsZero() || f.Before.Sub(f.From) > usageHours*time.Hour {
			t.Errorf("the dashboard summed buckets beyond one cloud's chart hours: %+v", f)
		}
	}
	subs.mu.Lock()
	if len(subs.lists) > 0 {
		t.Errorf("the dashboard listed subscriptions (it must count them in the store): %+v", subs.lists)
	}
	subs.mu.Unlock()
	var dd dashboardData
	if err := json.Unmarshal([]byte(body), &dd); err != nil {
		t.Fatal(err)
	}
	var aws reportHealth
	for _, r := range dd.Health {
		if r.Provider == marketplace.AWS {
			aws = r
		}
	}
	if aws.RejectedCount != problemLimit || !aws.RejectedCapped || len(aws.Rejected) != problemLimit || aws.ProblemLimit != problemLimit {
		t.Errorf("rejected: count %d capped %v listed %d limit %d; want %d, true, %d, %d",
			aws.RejectedCount, aws.RejectedCapped, len(aws.Rejected), aws.ProblemLimit, problemLimit, problemLimit, problemLimit)
	}
	for _, p := range aws.Rejected {
		if !p.Hour.Equal(newer) {
			t.Errorf("listed rejected bucket of %v; the newest %d are all at %v", p.Hour, problemLimit, newer)
			break
		}
	}
	if aws.ConflictCapped || aws.RetriedCapped || aws.Pending != 0 {
		t.Errorf("conflict capped %v, retried capped %v, pending %d; want false, false, 0", aws.ConflictCapped, aws.RetriedCapped, aws.Pending)
	}
	// What the store counted and summed is what listing and reading
	// every row gave.
	if got := dd.Subscriptions[marketplace.AWS]; len(got) != 2 || got[marketplace.StatusActive] != 2 || got[marketplace.StatusCancelled] != 1 || dd.Linked[marketplace.AWS] != 2 {
		t.Errorf("aws subscriptions %v linked %d; want active 2, cancelled 1, linked 2", got, dd.Linked[marketplace.AWS])
	}
	if got := dd.Subscriptions[marketplace.Azure]; got == nil || len(got) != 0 || dd.Linked[marketplace.Azure] != 0 {
		t.Errorf("azure subscriptions %v linked %d; want {} and 0", got, dd.Linked[marketplace.Azure])
	}
	if aws.Reported != 1 {
		t.Errorf("aws reported %d, want 1", aws.Reported)
	}
	var total int64
	for _, u := range dd.Usage {
		for _, q := range u.Quantity {
			total += q
		}
	}
	if want := int64(problemLimit+2) * 1_000_000; total != want {
		t.Errorf("usage charted %d, want %d (every customer's, summed)", total, want)
	}
}
