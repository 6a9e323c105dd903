package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzPostUsage sends arbitrary bodies to POST /v1/usage: the answer is
// always 200, 400 or 413 with a JSON body, never a 5xx or a panic.
func FuzzPostUsage(f *testing.F) {
	for _, s := range []string{
		`{"records":[{"event_id":"e","provider":"aws","customer":"c","metric":"tokens","quantity":1}]}`,
		`{"records":[{"provider":"gcp","customer":"c","metric":"tokens","quantity":1e3}]}`,
		`{"records":[{"provider":"aws","product":"prod-inference","customer":"c","metric":"gpu_seconds","quantity":9223372036854775807,"time":"2026-12-01T14:00:00Z"}]}`,
		`{"records":[{"provider":"azure","customer":"\u0000","metric":"tokens","quantity":"1"}]}`,
		`{"records":null}`, `[]`, `{`, ``, `{"records":[{}]}`,
	} {
		f.Add(s)
	}
	h := newBenchServer(f) // one server for every input: the ledger keeps what is valid
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/v1/usage", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("body %q: status %d %s", body, rec.Code, rec.Body)
		}
		if !strings.HasPrefix(rec.Body.String(), "{") {
			t.Fatalf("body %q: answer is not JSON: %s", body, rec.Body)
		}
	})
}
