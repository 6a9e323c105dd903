package azure_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/azure"
	emu "github.com/saasmarket/marketplace/emulator/azure"
)

// FuzzDecodeWebhook: any body decodes to a checked payload, which survives
// the trip through the inbox's encoding, or to an error wrapping
// marketplace.ErrInvalidInput; never a panic.
func FuzzDecodeWebhook(f *testing.F) {
	seed, err := os.ReadFile("testdata/webhook_changeplan.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"id":"x","subscriptionId":"y","action":"Renew","timeStamp":"2026-03-01"}`))
	f.Add([]byte(`{"id":"x","subscriptionId":"a/b","action":"Renew"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := azure.DecodeWebhook(b)
		if err != nil {
			if !errors.Is(err, marketplace.ErrInvalidInput) {
				t.Fatalf("error not wrapping ErrInvalidInput: %v", err)
			}
			return
		}
		if p.ID == "" || p.SubscriptionID == "" || p.Action == "" {
			t.Fatalf("accepted an incomplete payload: %+v", p)
		}
		stored, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("accepted a payload the inbox cannot store: %v", err)
		}
		again, err := azure.DecodeWebhook(stored)
		if err != nil || again.ID != p.ID || again.SubscriptionID != p.SubscriptionID || again.Action != p.Action ||
			!again.TimeStamp.Equal(p.TimeStamp.Time) {
			t.Fatalf("stored payload decodes to %+v, %v; was %+v", again, err, p)
		}
	})
}

// FuzzLanding sends any query to the landing handler against the
// emulator: it answers 200 only for a genuine token, otherwise 400 or 405,
// and never panics.
func FuzzLanding(f *testing.F) {
	v := newHooked(f, options{})
	p, err := v.emu.CreatePurchase(emu.Purchase{PlanID: "basic"})
	if err != nil {
		f.Fatal(err)
	}
	landing := v.landing
	f.Add("token="+p.Token, "GET")
	f.Add("token=%2B%2F", "GET")
	f.Add("token=", "POST")
	f.Add("a=b&token=%zz", "GET")
	f.Add("token=a+b", "HEAD")
	f.Fuzz(func(t *testing.T, rawQuery, method string) {
		req := httptest.NewRequest(http.MethodGet, "/landing", nil)
		req.Method = method
		req.URL.RawQuery = rawQuery
		rec := httptest.NewRecorder()
		landing.ServeHTTP(rec, req)
		tok, _ := azure.LandingToken(rawQuery)
		switch rec.Code {
		case http.StatusOK:
			if tok != p.Token {
				t.Fatalf("200 for token %q", tok)
			}
		case http.StatusBadRequest, http.StatusMethodNotAllowed:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}

// FuzzDecodeResponses decodes any body as the API answers this client
// reads: an error or a value, never a panic.
func FuzzDecodeResponses(f *testing.F) {
	for _, name := range []string{"subscription_response.json", "subscription_date_only.json", "batch_usage_response.json", "operation_response.json"} {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"term":{"startDate":"2026-02-30"}}`))
	f.Add([]byte(`{"result":[{"error":{"additionalInfo":null}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s azure.Subscription
		json.Unmarshal(b, &s)
		var r azure.ResolvedSubscription
		json.Unmarshal(b, &r)
		var op azure.Operation
		json.Unmarshal(b, &op)
		var br azure.BatchResult
		if json.Unmarshal(b, &br) == nil {
			for _, it := range br.Result {
				it.Error.Accepted()
			}
		}
		// A single usage event's 409 body: the event accepted first.
		var uc azure.UsageConflict
		if json.Unmarshal(b, &uc) == nil {
			uc.Accepted()
		}
		var tm azure.Time
		if json.Unmarshal(b, &tm) == nil && !tm.IsZero() {
			if _, err := json.Marshal(tm); err != nil {
				t.Fatalf("decoded %v but cannot encode it: %v", tm, err)
			}
		}
	})
}
