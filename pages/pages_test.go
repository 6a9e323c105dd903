package pages_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/pages"
)

func mustNew(t *testing.T, fsys fstest.MapFS) *pages.Pages {
	t.Helper()
	var p *pages.Pages
	var err error
	if fsys == nil {
		p, err = pages.New(nil, nil)
	} else {
		p, err = pages.New(fsys, nil)
	}
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func sub(p marketplace.CloudProvider) *marketplace.Subscription {
	return &marketplace.Subscription{ID: "sub-" + string(p), CustomerID: "buyer-" + string(p), Provider: p,
		ProductCode: "prod-" + string(p), Plan: "gold", Quantity: 3, AccountID: "acct-42", Status: marketplace.StatusActive}
}

func landing(t *testing.T, p *pages.Pages, s *marketplace.Subscription) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	w.Header().Set("X-Request-Id", "req-7")
	p.Landing(w, httptest.NewRequest(http.MethodPost, "/landing", nil), s)
	return w
}

func TestLandingShowsWhatWasResolved(t *testing.T) {
	p := mustNew(t, nil)
	for _, cloud := range marketplace.Providers() {
		t.Run(string(cloud), func(t *testing.T) {
			w := landing(t, p, sub(cloud))
			if w.Code != http.StatusOK {
				t.Fatalf("status %d, want 200", w.Code)
			}
			if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			for h, want := range map[string]string{"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
				if got := w.Header().Get(h); got != want {
					t.Errorf("%s: %q, want %q", h, got, want)
				}
			}
			body := w.Body.String()
			for _, want := range []string{pages.Marketplace(cloud), "Your subscription is active", "prod-" + string(cloud), "gold",
				"buyer-" + string(cloud), "sub-" + string(cloud), "acct-42", "<dd>3</dd>", "req-7"} {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %q:\n%s", want, body)
				}
			}
			checkAccessible(t, body)
		})
	}
}

func TestLandingPending(t *testing.T) {
	s := sub(marketplace.Azure)
	s.Status, s.Plan, s.Quantity, s.AccountID = marketplace.StatusPending, "", 0, ""
	body := landing(t, mustNew(t, nil), s).Body.String()
	if !strings.Contains(body, "Waiting for the marketplace") || strings.Contains(body, "is active") {
		t.Errorf("a pending subscription's page:\n%s", body)
	}
	for _, absent := range []string{"<dt>Plan</dt>", "<dt>Quantity</dt>", "<dt>Your account</dt>"} {
		if strings.Contains(body, absent) {
			t.Errorf("page shows %s without a value", absent)
		}
	}
}

func TestEscaping(t *testing.T) {
	p := mustNew(t, nil)
	s := sub(marketplace.AWS)
	s.ProductCode = `<script>alert(1)</script>`
	s.AccountID = `"><img src=x onerror=alert(2)>`
	body := landing(t, p, s).Body.String()
	for _, bad := range []string{"<script>alert", "<img src=x"} {
		if strings.Contains(body, bad) {
			t.Errorf("page carries %q unescaped", bad)
		}
	}
	if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("product not shown escaped:\n%s", body)
	}

	d := pages.LandingFor(sub(marketplace.GCP))
	d.Next = "javascript:alert(3)"
	w := httptest.NewRecorder()
	p.RenderLanding(w, httptest.NewRequest(http.MethodPost, "/", nil), d)
	if strings.Contains(w.Body.String(), "javascript:") {
		t.Errorf("a javascript: link got through:\n%s", w.Body.String())
	}

	w = httptest.NewRecorder()
	p.Error(w, httptest.NewRequest(http.MethodGet, "/", nil), pages.Problem{Provider: marketplace.AWS, Status: 400, Detail: `Token "<b>x</b>" refused`})
	if strings.Contains(w.Body.String(), "<b>x</b>") || !strings.Contains(w.Body.String(), "&lt;b&gt;x&lt;/b&gt;") {
		t.Errorf("detail not escaped:\n%s", w.Body.String())
	}
}

func TestErrorPages(t *testing.T) {
	p := mustNew(t, nil)
	for _, tc := range []struct {
		name       string
		pr         pages.Problem
		wantTitle  string
		wantAction string
		wantLink   bool
	}{
		{"expired token", pages.Problem{Provider: marketplace.AWS, Status: 400, Title: "Your registration link has expired",
			Detail: "AWS Marketplace links are valid for a short time.", Action: "Return to AWS Marketplace and choose Set up your account again."},
			"Your registration link has expired", "choose Set up your account again", true},
		{"invalid token", pages.Problem{Provider: marketplace.Azure, Status: 400, Detail: "The purchase token is invalid."},
			"We could not complete your sign-up", "start the sign-up from there again", true},
		{"not authentic", pages.Problem{Provider: marketplace.GCP, Status: 401, Detail: "The sign-up token is not authentic."},
			"We could not confirm this sign-up", "Google Cloud Marketplace", true},
		{"bookmark", pages.Problem{Provider: marketplace.AWS, Status: 405, Detail: "This page is opened from AWS Marketplace."},
			"Please start from AWS Marketplace", "a bookmark of it does not work", true},
		{"cloud down", pages.Problem{Provider: marketplace.AWS, Status: 502, Detail: "AWS Marketplace could not be reached."},
			"The marketplace did not answer", "reload this page in a minute", false},
		{"store failed", pages.Problem{Provider: marketplace.Azure, Status: 500, Detail: "Your registration could not be stored."},
			"Something went wrong on our side", "quote the reference", false},
		{"no status", pages.Problem{Provider: marketplace.Azure, Detail: "x"}, "Something went wrong on our side", "reload", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			w.Header().Set("X-Request-Id", "req-9")
			p.Error(w, httptest.NewRequest(http.MethodGet, "/", nil), tc.pr)
			want := tc.pr.Status
			if want == 0 {
				want = 500
			}
			if w.Code != want {
				t.Errorf("status %d, want %d", w.Code, want)
			}
			body := w.Body.String()
			for _, s := range []string{"<h1>" + tc.wantTitle + "</h1>", tc.pr.Detail, tc.wantAction, "req-9", `role="alert"`} {
				if !strings.Contains(body, s) {
					t.Errorf("page lacks %q:\n%s", s, body)
				}
			}
			if got := strings.Contains(body, `class="button"`); got != tc.wantLink {
				t.Errorf("link back to the marketplace: %v, want %v", got, tc.wantLink)
			}
			checkAccessible(t, body)
		})
	}
}

func TestSellerTemplatesReplaceDefaults(t *testing.T) {
	p := mustNew(t, fstest.MapFS{
		"landing.html": {Data: []byte(`{{define "title"}}Welcome{{end}}{{define "content"}}<h1>Welcome to Acme, {{.Buyer}}</h1>
<form action="/acme/finish" method="post"><label for="email">Work email</label><input id="email" name="email" type="email"><button>Finish</button></form>{{end}}`)},
		"README.md": {Data: []byte("not a template: ignored")},
	})
	body := landing(t, p, sub(marketplace.AWS)).Body.String()
	if !strings.Contains(body, "<h1>Welcome to Acme, buyer-aws</h1>") || !strings.Contains(body, `<html lang="en">`) {
		t.Errorf("seller's landing.html (in the default layout) not used:\n%s", body)
	}
	checkAccessible(t, body)

	w := httptest.NewRecorder()
	p.Error(w, httptest.NewRequest(http.MethodGet, "/", nil), pages.Problem{Provider: marketplace.AWS, Status: 400, Detail: "d"})
	if !strings.Contains(w.Body.String(), "We could not complete your sign-up") {
		t.Errorf("error.html not the default:\n%s", w.Body.String())
	}

	p = mustNew(t, fstest.MapFS{"layout.html": {Data: []byte(`{{define "layout"}}<!doctype html><html lang="de"><head><meta name="viewport" content="width=device-width"><title>{{template "title" .}}</title></head><body><header>Acme GmbH</header>{{template "content" .}}</body></html>{{end}}`)}})
	body = landing(t, p, sub(marketplace.GCP)).Body.String()
	if !strings.Contains(body, "Acme GmbH") || !strings.Contains(body, "prod-gcp") {
		t.Errorf("seller's layout.html not used:\n%s", body)
	}
}

func TestSellerTemplateErrorsNameTheFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		fs   fstest.MapFS
		want []string
	}{
		{"does not parse", fstest.MapFS{"landing.html": {Data: []byte(`{{define "content"}}{{.Product{{end}}`)}}, []string{"seller template landing.html", "does not parse"}},
		{"unknown field", fstest.MapFS{"error.html": {Data: []byte(`{{define "title"}}x{{end}}{{define "content"}}{{.Prodcut}}{{end}}`)}}, []string{"seller template error.html", "Prodcut"}},
		{"no content block", fstest.MapFS{"landing.html": {Data: []byte(`{{define "title"}}x{{end}}`)}}, []string{"seller template landing.html", "content"}},
		{"broken layout", fstest.MapFS{"layout.html": {Data: []byte(`{{define "layout"}}{{template "body" .}}{{end}}`)}}, []string{"seller template layout.html", "body"}},
		{"misspelt file", fstest.MapFS{"landng.html": {Data: []byte(`x`)}}, []string{"seller template landng.html", "landing.html"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pages.New(tc.fs, nil)
			if err == nil {
				t.Fatal("New accepted it")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// A seller's template that fails only on data the start-up sample lacks
// still answers with the right status, in plain text.
func TestRenderFailureFallsBack(t *testing.T) {
	p := mustNew(t, fstest.MapFS{"landing.html": {Data: []byte(`{{define "title"}}x{{end}}{{define "content"}}<h1>{{if not .Active}}{{index .Plan 10}}{{end}}ok</h1>{{end}}`)}})
	s := sub(marketplace.AWS)
	s.Status = marketplace.StatusPending
	w := landing(t, p, s)
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "text/plain; charset=utf-8" || !strings.Contains(w.Body.String(), "pending") {
		t.Errorf("fallback: %d %q %q", w.Code, w.Header().Get("Content-Type"), w.Body.String())
	}
}

// A handler with no subscription to show still answers a page.
func TestLandingWithoutSubscription(t *testing.T) {
	w := landing(t, mustNew(t, nil), nil)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "<h1>We have your subscription</h1>") {
		t.Errorf("%d\n%s", w.Code, w.Body)
	}
}
