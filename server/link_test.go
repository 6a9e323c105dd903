package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/sqlite"
)

const linkSecret = "link-secret-0123456789abcdef-0123456789"

// wantSignature computes a link's signature as docs/api.md describes it,
// independently of LinkHook.Sign.
func wantSignature(q url.Values) string {
	msg := "marketplaced-link-v1"
	for _, k := range []string{"provider", "subscription", "customer", "product", "plan", "expires"} {
		msg += "\n" + q.Get(k)
	}
	m := hmac.New(sha256.New, []byte(linkSecret))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

func TestLinkHookRedirects(t *testing.T) {
	u, _ := url.Parse("https://seller.example/signup?source=marketplace")
	h := &LinkHook{URL: u, Secret: []byte(linkSecret), TTL: 10 * time.Minute, Clock: func() time.Time { return t0 },
		Logger: slog.New(slog.DiscardHandler)}
	cases := []struct {
		name string
		sub  marketplace.Subscription
	}{
		{"aws", marketplace.Subscription{Provider: marketplace.AWS, ID: "cust-1", CustomerID: "cust-1", ProductCode: "prod-demo"}},
		{"azure", marketplace.Subscription{Provider: marketplace.Azure, ID: "6f1b0e5a-0000-4000-8000-000000000001", CustomerID: "6f1b0e5a-0000-4000-8000-000000000001",
			ProductCode: "inference-offer", Plan: "basic"}},
		{"gcp", marketplace.Subscription{Provider: marketplace.GCP, ID: "ent-7", CustomerID: "project_number:123", ProductCode: "svc.example", Plan: "standard & more"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			held := lifecycle.NewHeldResponse()
			acct, err := h.Link(t.Context(), held, httptest.NewRequest("POST", "/"+c.name+"/landing", nil), &c.sub)
			if err != nil || acct != "" {
				t.Fatalf("Link = %q, %v; want no account yet", acct, err)
			}
			rec := httptest.NewRecorder()
			if !held.Release(rec) || rec.Code != http.StatusSeeOther {
				t.Fatalf("status %d, want 303", rec.Code)
			}
			if rec.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q", rec.Header().Get("Cache-Control"))
			}
			loc, err := url.Parse(rec.Header().Get("Location"))
			if err != nil || loc.Host != "seller.example" || loc.Path != "/signup" {
				t.Fatalf("Location %q", rec.Header().Get("Location"))
			}
			q := loc.Query()
			want := map[string]string{"source": "marketplace", "provider": c.name, "subscription": c.sub.ID, "customer": c.sub.CustomerID,
				"product": c.sub.ProductCode, "plan": c.sub.Plan, "expires": strconv.FormatInt(t0.Add(10*time.Minute).Unix(), 10)}
			for k, v := range want {
				if q.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, q.Get(k), v)
				}
			}
			if got := q.Get("signature"); got != wantSignature(q) {
				t.Errorf("signature %s, want %s", got, wantSignature(q))
			}
			// Any changed value changes the signature.
			for _, k := range linkParams {
				tampered := url.Values{}
				for kk, v := range q {
					tampered[kk] = v
				}
				tampered.Set(k, q.Get(k)+"x")
				if wantSignature(tampered) == q.Get("signature") {
					t.Errorf("changing %s keeps the signature", k)
				}
			}
		})
	}
}

func TestLinkHookLeavesLinkedAndUnnamed(t *testing.T) {
	u, _ := url.Parse("https://seller.example/signup")
	h := &LinkHook{URL: u, Secret: []byte(linkSecret), TTL: time.Minute, Clock: func() time.Time { return t0 }, Logger: slog.New(slog.DiscardHandler)}
	r := httptest.NewRequest("POST", "/aws/landing", nil)
	for _, c := range []struct {
		name string
		sub  marketplace.Subscription
		want string
	}{
		{"already linked: kept, no redirect", marketplace.Subscription{Provider: marketplace.AWS, ID: "c", CustomerID: "c", AccountID: "acct-9"}, "acct-9"},
		{"google account without an entitlement", marketplace.Subscription{Provider: marketplace.GCP, Attributes: map[string]string{"account_id": "a"}}, ""},
	} {
		held := lifecycle.NewHeldResponse()
		acct, err := h.Link(t.Context(), held, r, &c.sub)
		if err != nil || acct != c.want || held.Wrote() {
			t.Errorf("%s: Link = %q, %v, wrote %v; want %q and nothing written", c.name, acct, err, held.Wrote(), c.want)
		}
	}
	held := lifecycle.NewHeldResponse()
	if _, err := h.Link(t.Context(), held, r, &marketplace.Subscription{Provider: marketplace.AWS, ID: "c", CustomerID: "c\nplan"}); err == nil || held.Wrote() {
		t.Errorf("a line break in a signed value: %v, wrote %v; want an error", err, held.Wrote())
	}
}

func TestPutAccount(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := t.Context()
	for _, s := range []marketplace.Subscription{
		{ID: "a1", CustomerID: "c1", Provider: marketplace.AWS, Status: marketplace.StatusActive, ProductCode: "prod-inference"},
		{ID: "g1", CustomerID: "project_number:42", Provider: marketplace.GCP, Status: marketplace.StatusActive},
	} {
		if _, err := h.store.PutSubscription(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	put := func(path string, body any, key string) (int, []byte) {
		resp, b := h.do(t, "PUT", path, body, key)
		return resp.StatusCode, b
	}
	st, b := put("/v1/subscriptions/aws/c1/account", map[string]any{"account_id": "acct-42"}, testKey)
	if st != 200 {
		t.Fatalf("PUT: %d %s", st, b)
	}
	if got := decode[subscription](t, b); got.AccountID != "acct-42" || got.Status != "active" || got.Version != 2 {
		t.Fatalf("PUT answered %+v", got)
	}
	// Idempotent: the same id again stores nothing new.
	if st, b := put("/v1/subscriptions/aws/c1/account", map[string]any{"account_id": "acct-42"}, testKey2); st != 200 || decode[subscription](t, b).Version != 2 {
		t.Fatalf("PUT again: %d %s", st, b)
	}
	if st, b := put("/v1/subscriptions/gcp/"+url.PathEscape("project_number:42")+"/account", map[string]any{"account_id": "acct-g"}, testKey); st != 200 {
		t.Fatalf("PUT gcp: %d %s", st, b)
	}
	stored, err := h.store.GetSubscription(ctx, marketplace.AWS, "a1")
	if err != nil || stored.AccountID != "acct-42" {
		t.Fatalf("stored %+v, %v", stored, err)
	}
	resp, b := h.do(t, "GET", "/v1/subscriptions/aws/c1", nil, testKey)
	if resp.StatusCode != 200 || decode[subscription](t, b).AccountID != "acct-42" {
		t.Fatalf("GET: %d %s", resp.StatusCode, b)
	}
	dres, dbody := get(t, http.DefaultClient, h.rawURL+"/dashboard/data", "Authorization", "Bearer "+testKey)
	if dres.StatusCode != 200 {
		t.Fatalf("dashboard data: %d %s", dres.StatusCode, dbody)
	}
	if dd := decode[dashboardData](t, []byte(dbody)); dd.Linked[marketplace.AWS] != 1 || dd.Linked[marketplace.GCP] != 1 || dd.Linked[marketplace.Azure] != 0 {
		t.Errorf("dashboard linked %v", dd.Linked)
	}

	for _, c := range []struct {
		name, path string
		body       any
		key        string
		status     int
		says       string
	}{
		{"no key", "/v1/subscriptions/aws/c1/account", map[string]any{"account_id": "x"}, "", 401, "API key"},
		{"unknown customer", "/v1/subscriptions/aws/nobody/account", map[string]any{"account_id": "x"}, testKey, 404, "nobody"},
		{"unknown provider", "/v1/subscriptions/ibm/c1/account", map[string]any{"account_id": "x"}, testKey, 400, "provider"},
		{"no account_id", "/v1/subscriptions/aws/c1/account", map[string]any{}, testKey, 400, "account_id: is required"},
		{"empty", "/v1/subscriptions/aws/c1/account", map[string]any{"account_id": ""}, testKey, 400, "account_id: must not be empty"},
		{"too long", "/v1/subscriptions/aws/c1/account", map[string]any{"account_id": strings.Repeat("a", 257)}, testKey, 400, "longer than 256"},
		{"control character", "/v1/subscriptions/aws/c1/account", map[string]any{"account_id": "a\nb"}, testKey, 400, "control character"},
		{"unknown field", "/v1/subscriptions/aws/c1/account", map[string]any{"account_id": "x", "status": "active"}, testKey, 400, "status"},
		{"not JSON", "/v1/subscriptions/aws/c1/account", "account_id=x", testKey, 400, "invalid_json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, b := put(c.path, c.body, c.key)
			if st != c.status || !bytes.Contains(b, []byte(c.says)) {
				t.Errorf("%d %s; want %d saying %s", st, b, c.status, c.says)
			}
		})
	}
	resp, b = h.do(t, "PUT", "/v1/subscriptions/aws/c1/account", nil, testKey, "Content-Type", "text/plain")
	if resp.StatusCode != 415 {
		t.Errorf("text/plain: %d %s", resp.StatusCode, b)
	}
	if stored, _ := h.store.GetSubscription(ctx, marketplace.AWS, "a1"); stored.AccountID != "acct-42" {
		t.Errorf("a refused PUT changed the account: %q", stored.AccountID)
	}
}

// failingUpdater is a lifecycle engine whose store is down.
type failingUpdater struct{}

func (failingUpdater) Update(context.Context, lifecycle.Change) (lifecycle.Result, error) {
	return lifecycle.Result{}, errors.New("database is locked")
}

func TestPutAccountStoreDown(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	if _, err := h.store.PutSubscription(t.Context(), marketplace.Subscription{ID: "a1", CustomerID: "c1", Provider: marketplace.AWS}); err != nil {
		t.Fatal(err)
	}
	h.srv.deps.Updater = failingUpdater{}
	resp, b := h.do(t, "PUT", "/v1/subscriptions/aws/c1/account", map[string]any{"account_id": "x"}, testKey)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || bytes.Contains(b, []byte("locked")) {
		t.Fatalf("%d %s; want 503 with Retry-After, without the store's error", resp.StatusCode, b)
	}
	var e apiError
	json.Unmarshal(b, &e)
	if e.Error.Code != "unavailable" {
		t.Errorf("code %q", e.Error.Code)
	}
}

func TestLinkSettings(t *testing.T) {
	base := map[string]string{"MARKETPLACED_API_KEYS": testKey, "MARKETPLACED_CATALOGUE": catalogueFile}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	c, err := ParseConfig(nil, env(with("MARKETPLACED_LINK_URL", "https://seller.example/signup", "MARKETPLACED_LINK_SECRET", linkSecret)), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.LinkURL.String() != "https://seller.example/signup" || string(c.LinkSecret) != linkSecret || c.LinkTTL != 10*time.Minute || c.LinkFunc(nil) == nil {
		t.Fatalf("config %+v", c)
	}
	if v := c.LogValue().String(); strings.Contains(v, linkSecret) || !strings.Contains(v, "link_secret_set=true") {
		t.Fatalf("log value %s", v)
	}
	if c, err := ParseConfig(nil, env(base), &bytes.Buffer{}); err != nil || c.LinkFunc(nil) != nil {
		t.Fatalf("no -link-url: %v, hook %v", err, c.LinkFunc(nil) != nil)
	}
	for _, c := range []struct {
		env  []string
		want string
	}{
		{[]string{"MARKETPLACED_LINK_URL", "https://seller.example/signup"}, "setting -link-secret / MARKETPLACED_LINK_SECRET: is required with -link-url"},
		{[]string{"MARKETPLACED_LINK_SECRET", linkSecret}, "setting -link-url / MARKETPLACED_LINK_URL: is required with -link-secret"},
		{[]string{"MARKETPLACED_LINK_URL", "https://seller.example/", "MARKETPLACED_LINK_SECRET", "short-secret"}, "setting MARKETPLACED_LINK_SECRET: too short: 12 bytes"},
		{[]string{"MARKETPLACED_LINK_URL", "/signup", "MARKETPLACED_LINK_SECRET", linkSecret}, `setting MARKETPLACED_LINK_URL: want an absolute https:// URL, got "/signup"`},
		{[]string{"MARKETPLACED_LINK_URL", "http://seller.example/", "MARKETPLACED_LINK_SECRET", linkSecret}, "http:// only on loopback"},
		{[]string{"MARKETPLACED_LINK_URL", "https://seller.example/#x", "MARKETPLACED_LINK_SECRET", linkSecret}, "without a #fragment"},
		{[]string{"MARKETPLACED_LINK_TTL", "0s"}, "setting MARKETPLACED_LINK_TTL: want a positive duration"},
	} {
		_, err := ParseConfig(nil, env(with(c.env...)), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.env, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), linkSecret) {
			t.Errorf("%v: the error shows the secret: %v", c.env, err)
		}
	}
	if _, err := ParseConfig(nil, env(with("MARKETPLACED_LINK_URL", "http://127.0.0.1:3000/signup", "MARKETPLACED_LINK_SECRET", linkSecret)), &bytes.Buffer{}); err != nil {
		t.Errorf("a loopback http:// URL: %v", err)
	}
}

// FuzzPutAccount sends arbitrary bodies to
// PUT /v1/subscriptions/aws/c1/account: the answer is 200 or 400 with a JSON
// body, never a 5xx or a panic, and an account is stored only as sent.
func FuzzPutAccount(f *testing.F) {
	for _, s := range []string{`{"account_id":"acct-1"}`, `{"account_id":""}`, `{"account_id":null}`, `{"account_id":1}`,
		`{"account_id":"a","x":1}`, `{"account_id":"\u0000"}`, `{"account_id":"\ud800"}`, `{}`, `[]`, `{`, ``} {
		f.Add(s)
	}
	cfg := testConfig(f)
	store, err := sqlite.Open(f.Context(), cfg.DBPath())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	led := ledger.New(store, ledger.Config{Units: cfg.Catalogue.Units()})
	f.Cleanup(func() { led.Close() })
	engine, err := lifecycle.New(lifecycle.Deps{Store: store, Ledger: led, Logger: slog.New(slog.DiscardHandler)}, lifecycle.Config{})
	if err != nil {
		f.Fatal(err)
	}
	srv, err := New(cfg, Deps{Ledger: led, Subscriptions: store, Entitlements: engine.Deps().Entitlements, Updater: engine,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := store.PutSubscription(f.Context(), marketplace.Subscription{ID: "a1", CustomerID: "c1", Provider: marketplace.AWS}); err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("PUT", "/v1/subscriptions/aws/c1/account", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			var want struct {
				AccountID string `json:"account_id"`
			}
			json.Unmarshal([]byte(body), &want)
			if got := decode[subscription](t, rec.Body.Bytes()); got.AccountID != want.AccountID || checkAccountID(got.AccountID) != "" {
				t.Fatalf("body %q: stored %q", body, got.AccountID)
			}
		case http.StatusBadRequest:
		default:
			t.Fatalf("body %q: status %d %s", body, rec.Code, rec.Body)
		}
		if !strings.HasPrefix(rec.Body.String(), "{") {
			t.Fatalf("body %q: answer is not JSON: %s", body, rec.Body)
		}
	})
}
