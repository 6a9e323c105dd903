package azure_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/azure"
	"github.com/saasmarket/marketplace/internal/benchcpu"
)

// benchSizes are the numbers of stored subscriptions the lifecycle
// benchmarks run against: the cost of one notification or sign-up must
// not grow with them.
var benchSizes = []int{1_000, 100_000}

// seedSubscriptions stores n Azure subscriptions besides the benchmark's
// own, in one commit.
func seedSubscriptions(b *testing.B, h *hooked, n int) {
	b.Helper()
	subs := make([]marketplace.Subscription, n)
	for i := range subs {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		subs[i] = marketplace.Subscription{ID: id, CustomerID: id, Provider: marketplace.Azure, ProductCode: "inference-api",
			Status: marketplace.StatusActive, Plan: "basic", Entitlements: []string{"basic"}, Quantity: 1,
			Attributes: map[string]string{"offerId": "inference-api", "publisherId": "contoso"}}
	}
	if err := h.store.ImportSubscriptions(b.Context(), subs); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkNotification: one ChangeQuantity webhook call, authenticated,
// accepted and answered, then applied by the worker (Get Operation, PATCH,
// follow, Get Subscription, Update), against the emulator over loopback
// TLS. The emulator runs in the process, so cpu-ns/op is both sides.
func BenchmarkNotification(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			h := newHooked(b, options{emu: emu.Config{OperationDelay: time.Hour}})
			seedSubscriptions(b, h, n)
			id := h.land(b, "basic")
			tok, err := h.emu.SignToken(h.emu.WebhookClaims())
			if err != nil {
				b.Fatal(err)
			}
			// The operations, made up front; their deliveries are ours to send.
			h.lose()
			ops := make([]string, b.N)
			for i := range ops {
				op, _, err := h.emu.Drive(b.Context(), id, emu.Action{Name: emu.ActionChangeQuantity, Quantity: int64(i%2 + 2)})
				if err != nil {
					b.Fatal(err)
				}
				ops[i] = op
			}
			b.ResetTimer()
			cpu := benchcpu.Now()
			for i := range b.N {
				if rec := h.post("Bearer "+tok, payload(ops[i], id, emu.ActionChangeQuantity)); rec.Code != http.StatusOK {
					b.Fatalf("webhook: %d %s", rec.Code, rec.Body)
				}
				if err := h.eng.Drain(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			benchcpu.Report(b, cpu)
			if s := h.stored(b, id); s.Quantity != int64((b.N-1)%2+2) {
				b.Fatalf("last change not applied: %+v", s)
			}
		})
	}
}

// BenchmarkSignup: one buyer through the landing page (Resolve, store
// pending, Activate, store active), against the emulator over loopback TLS
// (in the process: cpu-ns/op is both sides).
func BenchmarkSignup(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			h := newHooked(b, options{})
			seedSubscriptions(b, h, n)
			tokens := make([]string, b.N)
			for i := range tokens {
				p, err := h.emu.CreatePurchase(emu.Purchase{PlanID: "basic"})
				if err != nil {
					b.Fatal(err)
				}
				tokens[i] = p.Token
			}
			b.ResetTimer()
			cpu := benchcpu.Now()
			for i := range b.N {
				rec := httptest.NewRecorder()
				h.landing.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/azure/landing?token="+url.QueryEscape(tokens[i]), nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("landing: %d %s", rec.Code, rec.Body)
				}
			}
			b.StopTimer()
			benchcpu.Report(b, cpu)
		})
	}
}
