package server

import (
	"fmt"
	"strings"
	"testing"
)

// TestJSONBodies: every endpoint that reads a JSON body refuses alike
// (requireJSON, decodeJSON, refuseBody): a body over its limit is 413
// body_too_large naming the limit in bytes, another content type 415, a
// body that is not its JSON 400 invalid_json, and an unknown member 400.
func TestJSONBodies(t *testing.T) {
	h := newHarness(t, harnessOptions{cfg: func(c *Config) { c.MaxBodyBytes = 4096 }})
	pad := func(n int) string { return strings.Repeat(" ", n) + "{}" }
	for _, ep := range []struct {
		method, path string
		limit        int
	}{
		{"POST", "/v1/usage", 4096},
		{"POST", "/v1/usage/seal", 64 << 10},
		{"PUT", "/v1/subscriptions/aws/c1/account", 64 << 10},
		{"POST", "/v1/quarantine/1/restore", 4096},
	} {
		for _, c := range []struct {
			name   string
			body   string
			hdr    []string
			status int
			code   string
			msg    string
		}{
			{"over the limit", pad(ep.limit), nil, 413, "body_too_large", fmt.Sprintf("larger than %d bytes", ep.limit)},
			{"text/plain", `{}`, []string{"Content-Type", "text/plain"}, 415, "unsupported_media_type", "application/json"},
			{"not JSON", `{"provider":`, nil, 400, "invalid_json", "the body is not "},
			{"unknown member", `{"nothing_of_ours":1}`, nil, 400, "invalid_json", "nothing_of_ours"},
		} {
			t.Run(ep.method+" "+ep.path+"/"+c.name, func(t *testing.T) {
				resp, body := h.do(t, ep.method, ep.path, c.body, testKey, c.hdr...)
				if resp.StatusCode != c.status {
					t.Fatalf("status %d %s, want %d", resp.StatusCode, body, c.status)
				}
				e := decode[apiError](t, body).Error
				if e.Code != c.code || !strings.Contains(e.Message, c.msg) {
					t.Fatalf("error %+v, want code %q and a message with %q", e, c.code, c.msg)
				}
			})
		}
	}
}
