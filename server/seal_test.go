package server

import (
	"testing"

	"github.com/saasmarket/marketplace/ledger"
)

// TestSeal: POST /v1/usage/seal seals a customer's open buckets at once
// (and only theirs), a second call finds nothing open, and bad requests
// name what is wrong.
func TestSeal(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	resp, body := h.do(t, "POST", "/v1/usage", usage(
		rec{"event_id": "s1", "provider": "aws", "customer": "c1", "metric": "tokens", "quantity": 2_500_000},
		rec{"event_id": "s2", "provider": "aws", "customer": "c2", "metric": "tokens", "quantity": 10},
	), testKey)
	if resp.StatusCode != 200 {
		t.Fatalf("usage: %d %s", resp.StatusCode, body)
	}
	type sealed struct {
		Sealed int `json:"sealed"`
	}
	for i, want := range []int{1, 0} {
		resp, body = h.do(t, "POST", "/v1/usage/seal", map[string]string{"provider": "aws", "customer": "c1"}, testKey)
		if got := decode[sealed](t, body); resp.StatusCode != 200 || got.Sealed != want {
			t.Fatalf("seal %d: %d %s, want %d sealed", i+1, resp.StatusCode, body, want)
		}
	}
	type report struct {
		Buckets []struct {
			State ledger.State `json:"state"`
		} `json:"buckets"`
	}
	for customer, state := range map[string]ledger.State{"c1": ledger.StateSealed, "c2": ledger.StateOpen} {
		_, body = h.do(t, "GET", "/v1/usage?provider=aws&customer="+customer, nil, testKey)
		if r := decode[report](t, body); len(r.Buckets) != 1 || r.Buckets[0].State != state {
			t.Errorf("%s after the seal: %s, want one %s bucket", customer, body, state)
		}
	}

	for _, tc := range []struct {
		name, body, key string
		hdr             []string
		status          int
	}{
		{"no customer", `{"provider":"aws","customer":""}`, testKey, nil, 400},
		{"unknown provider", `{"provider":"ibm","customer":"c1"}`, testKey, nil, 400},
		{"unknown field", `{"provider":"aws","customer":"c1","now":true}`, testKey, nil, 400},
		{"not JSON", `provider=aws`, testKey, []string{"Content-Type", "text/plain"}, 415},
		{"no key", `{"provider":"aws","customer":"c1"}`, "", nil, 401},
	} {
		if resp, body := h.do(t, "POST", "/v1/usage/seal", tc.body, tc.key, tc.hdr...); resp.StatusCode != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, body, tc.status)
		}
	}
}
