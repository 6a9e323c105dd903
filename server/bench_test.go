package server

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/saasmarket/marketplace/entitlement"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/sqlite"
)

// BenchmarkPostUsageHandler is the ingest handler alone (no network), with
// the durable commit to SQLite: one op is one batch of 1,000 records without
// event ids, from 8 goroutines. The HTTP figures are in cmd/marketplaced-load.
func BenchmarkPostUsageHandler(b *testing.B) {
	h := newBenchServer(b)
	bodies := make([][]byte, 64)
	for i := range bodies {
		var buf bytes.Buffer
		buf.WriteString(`{"records":[`)
		for j := range 1000 {
			if j > 0 {
				buf.WriteByte(',')
			}
			buf.WriteString(`{"provider":"aws","customer":"cust-` + strconv.Itoa((i*1000+j)%2500) + `","metric":"tokens","quantity":` + strconv.Itoa(1+j%977) + `}`)
		}
		buf.WriteString(`]}`)
		bodies[i] = buf.Bytes()
	}
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			req := httptest.NewRequest("POST", "/v1/usage", bytes.NewReader(bodies[i%len(bodies)]))
			req.Header.Set("Authorization", "Bearer "+testKey)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatalf("%d %s", rec.Code, rec.Body)
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)*1000/time.Since(start).Seconds(), "records/s")
}

func newBenchServer(b testing.TB) http.Handler {
	cfg := testConfig(b)
	cfg.MaxInFlight = 64
	store, err := sqlite.Open(b.Context(), cfg.DBPath())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	led := ledger.New(store, ledger.Config{Units: cfg.Catalogue.Units()})
	b.Cleanup(func() { led.Close() })
	cache := entitlement.New(entitlement.StoreLoader{Subscriptions: store}.Load, entitlement.Config{})
	b.Cleanup(cache.Close)
	srv, err := New(cfg, Deps{Ledger: led, Subscriptions: store, Entitlements: cache, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	return srv.Handler()
}

// BenchmarkEntitlementCheckHandler is GET /v1/entitlements/check through
// the whole handler chain (auth, request id, metrics, cache hit), no network.
func BenchmarkEntitlementCheckHandler(b *testing.B) {
	h := newBenchServer(b)
	req := httptest.NewRequest("GET", "/v1/entitlements/check?provider=aws&customer=cust-1&feature=gpu", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req.Clone(req.Context()))
			if rec.Code != 200 {
				b.Fatalf("%d %s", rec.Code, rec.Body)
			}
		}
	})
}
