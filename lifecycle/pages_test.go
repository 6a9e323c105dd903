package lifecycle_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/pages"
)

// New fills in the embedded pages; a seller's are kept.
func TestDepsPages(t *testing.T) {
	e := newEnv(t, lifecycle.Config{})
	def := e.eng.Deps().Pages
	if def == nil {
		t.Fatal("Deps().Pages is nil: New did not fill in the defaults")
	}
	sub := &marketplace.Subscription{ID: "s", Provider: marketplace.GCP, ProductCode: "p", Status: marketplace.StatusActive}
	w := httptest.NewRecorder()
	def.Landing(w, httptest.NewRequest("POST", "/", nil), sub)
	if !strings.Contains(w.Body.String(), "Google Cloud Marketplace") {
		t.Errorf("default landing page:\n%s", w.Body.String())
	}

	own, err := pages.New(fstest.MapFS{"landing.html": {Data: []byte(`{{define "title"}}t{{end}}{{define "content"}}<h1>acme {{.Product}}</h1>{{end}}`)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	deps := e.eng.Deps()
	deps.Pages = own
	eng, err := lifecycle.New(deps, lifecycle.Config{})
	if err != nil {
		t.Fatal(err)
	}
	w = httptest.NewRecorder()
	eng.Deps().Pages.Landing(w, httptest.NewRequest("POST", "/", nil), sub)
	if !strings.Contains(w.Body.String(), "acme p") {
		t.Errorf("the seller's pages were replaced:\n%s", w.Body.String())
	}
}
