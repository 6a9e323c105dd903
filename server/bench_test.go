package server

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
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

// BenchmarkDashboardData is one refresh of the dashboard's data (what
// /dashboard/data answers when its cache has run out), no network, on
// SQLite holding 20,000 AWS subscriptions (half of them linked) and the
// buckets of 2,000 customers over the chart's 24 hours (48,000, all but the
// current hour sealed). What it costs should not grow with the buyers.
func BenchmarkDashboardData(b *testing.B) {
	const subscriptions, customers = 20_000, 2_000
	cfg := testConfig(b)
	ctx := b.Context()
	store, err := sqlite.Open(ctx, cfg.DBPath())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	subs := make([]marketplace.Subscription, subscriptions)
	statuses := []string{marketplace.StatusActive, marketplace.StatusActive, marketplace.StatusActive, marketplace.StatusPending, marketplace.StatusCancelled}
	for i := range subs {
		subs[i] = marketplace.Subscription{Provider: marketplace.AWS, ID: fmt.Sprintf("sub-%06d", i), CustomerID: fmt.Sprintf("cust-%06d", i),
			Status: statuses[i%len(statuses)], Attributes: map[string]string{"license_id": fmt.Sprintf("l-%d", i)}}
		if i%2 == 0 {
			subs[i].AccountID = fmt.Sprintf("acct-%d", i)
		}
	}
	if err := store.ImportSubscriptions(ctx, subs); err != nil {
		b.Fatal(err)
	}
	// The chart's first hour is 23 hours before t0's; records that old
	// need a MaxAge above the default 23 hours.
	led := ledger.New(store, ledger.Config{Units: cfg.Catalogue.Units(), Clock: func() time.Time { return t0 }, MaxAge: 25 * time.Hour})
	b.Cleanup(func() { led.Close() })
	first := ledger.HourOf(t0).Add(-(usageHours - 1) * time.Hour)
	for h := range usageHours {
		recs := make([]ledger.Record, customers)
		for c := range recs {
			recs[c] = ledger.Record{Provider: marketplace.AWS, Customer: fmt.Sprintf("cust-%06d", c), Dimension: "tokens_1m",
				Quantity: int64(1_000_000 + c), Time: first.Add(time.Duration(h)*time.Hour + time.Minute)}
		}
		if _, err := led.Ingest(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := led.Seal(ctx); err != nil {
		b.Fatal(err)
	}
	cache := entitlement.New(entitlement.StoreLoader{Subscriptions: store}.Load, entitlement.Config{})
	b.Cleanup(cache.Close)
	srv, err := New(cfg, Deps{Ledger: led, Subscriptions: store, Entitlements: cache, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	d := newDashboard(srv)
	dd, err := d.compute(ctx, t0)
	if err != nil {
		b.Fatal(err)
	}
	if got := dd.Subscriptions[marketplace.AWS][marketplace.StatusActive]; got != subscriptions*3/5 || dd.Linked[marketplace.AWS] != subscriptions/2 {
		b.Fatalf("aws subscriptions %v linked %d", dd.Subscriptions[marketplace.AWS], dd.Linked[marketplace.AWS])
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := d.compute(ctx, t0); err != nil {
			b.Fatal(err)
		}
	}
}
