package gcp_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	emu "github.com/saasmarket/marketplace/emulator/gcp"
	"github.com/saasmarket/marketplace/gcp"
	"github.com/saasmarket/marketplace/internal/benchcpu"
)

// seedSubscriptions stores n active Google subscriptions in one commit,
// one per procurement account acc-<i>, with the attributes the store
// indexes; linked says whether they carry a seller account. They are not
// emulator entitlements.
func seedSubscriptions(b *testing.B, a *app, n int, linked bool) {
	b.Helper()
	subs := make([]marketplace.Subscription, n)
	for i := range subs {
		acct := fmt.Sprintf("acc-%d", i)
		subs[i] = marketplace.Subscription{Provider: marketplace.GCP, ID: fmt.Sprintf("seed-%08d", i),
			CustomerID: fmt.Sprintf("project_number:%d", 900000000+i), ProductCode: "example-api", Plan: "standard",
			Entitlements: []string{"standard"}, Status: marketplace.StatusActive, CloudUpdated: testNow.Add(-time.Hour),
			Attributes: map[string]string{gcp.AttrAccount: acct, gcp.AttrState: gcp.StateActive}}
		if linked {
			subs[i].AccountID = "seller-" + acct
		}
	}
	if err := a.env.store.ImportSubscriptions(b.Context(), subs); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkNotification: one ENTITLEMENT_CREATION_REQUESTED of a buyer who
// already has a subscription, through NotificationHandler (OIDC token
// verified with a cached key, decode, Accept) and the engine (Process:
// the stale check, the entitlement read from the emulator through the
// official client, the approval, the seller account found by account_id
// from the index, the Update), with 1,000 and 100,000 subscriptions
// stored. Run it with -benchtime=1000x.
func BenchmarkNotification(b *testing.B) {
	for _, n := range []int{1000, 100_000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			l := newLifecycleEnv(b, nil, nil)
			seedSubscriptions(b, l, n, true)
			ids := make([]string, b.N)
			for i := range ids {
				ids[i] = l.emu.Purchase(b.Context(), fmt.Sprintf("acc-%d", i%n), "example-api", "standard")
			}
			var bodies [][]byte
			for _, ev := range l.pub.events() {
				if m, _ := gcp.DecodeMessage(ev); m.EventType == "ENTITLEMENT_CREATION_REQUESTED" {
					bodies = append(bodies, pushBody(ev, m.EventID))
				}
			}
			auth := l.bearer(b)
			b.ResetTimer()
			start := benchcpu.Now()
			for i := range b.N {
				if w := l.push(b, bodies[i], auth); w.Code != http.StatusNoContent {
					b.Fatalf("delivery: %d %s", w.Code, w.Body)
				}
				if err := l.eng.Drain(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
			benchcpu.Report(b, start)
			b.StopTimer()
			if s := l.sub(b, ids[0]); s == nil || s.AccountID != "seller-acc-0" {
				b.Fatalf("first entitlement after its notification: %+v", s)
			}
		})
	}
}

// BenchmarkSignup: one buyer's sign-up on LandingHandler (JWT verified
// with a cached key, the account's subscriptions found by account_id from
// the index, Link, the Update linking them, the account approval through
// the official client), with 1,000 and 100,000 subscriptions stored.
// Run it with -benchtime=1000x.
func BenchmarkSignup(b *testing.B) {
	for _, n := range []int{1000, 100_000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			l := newLifecycleEnv(b, nil, func(c *gcp.Config) {
				c.Link = func(_ context.Context, _ http.ResponseWriter, _ *http.Request, s *marketplace.Subscription) (string, error) {
					return "seller-" + s.Attributes[gcp.AttrAccount], nil
				}
			})
			if b.N > n {
				b.Fatalf("b.N %d > %d subscriptions: each sign-up needs its own account", b.N, n)
			}
			seedSubscriptions(b, l, n, false)
			tokens := make([]string, b.N)
			for i := range tokens {
				acct := fmt.Sprintf("acc-%d", i)
				l.emu.Purchase(b.Context(), acct, "example-api", "standard") // the account, at Google
				tok, err := l.emu.MintSignupToken(acct, emu.TokenOptions{})
				if err != nil {
					b.Fatal(err)
				}
				tokens[i] = tok
			}
			h := l.p.LandingHandler()
			b.ResetTimer()
			start := benchcpu.Now()
			for i := range b.N {
				if w := postSignup(h, tokens[i]); w.Code != http.StatusOK {
					b.Fatalf("sign-up: %d %s", w.Code, w.Body)
				}
			}
			benchcpu.Report(b, start)
			b.StopTimer()
			if s := l.sub(b, "seed-00000000"); s.AccountID != "seller-acc-0" {
				b.Fatalf("first account after its sign-up: %+v", s)
			}
		})
	}
}
