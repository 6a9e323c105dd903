package lifecycle_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/saasmarket/marketplace/lifecycle"
)

func TestHeldResponse(t *testing.T) {
	for _, tc := range []struct {
		name       string
		link       func(w http.ResponseWriter)
		wrote      bool
		wantStatus int
		wantBody   string
	}{
		{"nothing written", func(w http.ResponseWriter) { w.Header().Set("Set-Cookie", "s=1") }, false, 200, "page"},
		{"redirect", func(w http.ResponseWriter) {
			w.Header().Set("Set-Cookie", "s=1")
			w.Header().Set("Location", "/app")
			w.WriteHeader(http.StatusSeeOther)
		}, true, http.StatusSeeOther, ""},
		{"body", func(w http.ResponseWriter) { w.Write([]byte("hello")); w.WriteHeader(500) }, true, 200, "hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := lifecycle.NewHeldResponse()
			tc.link(h)
			if h.Wrote() != tc.wrote {
				t.Errorf("Wrote = %v", h.Wrote())
			}
			rec := httptest.NewRecorder()
			if !h.Release(rec) {
				rec.WriteString("page")
			}
			if rec.Code != tc.wantStatus || rec.Body.String() != tc.wantBody || rec.Header().Get("Set-Cookie") != "s=1" && tc.name != "body" {
				t.Errorf("released: %d %q %v", rec.Code, rec.Body.String(), rec.Header())
			}
		})
	}
}
