package aws_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
	"github.com/saasmarket/marketplace/internal/benchcpu"
)

// seedLicenses stores n active license-mode subscriptions of product in
// one commit, with the attributes notifications find them by; they are
// not emulator buyers. It returns their account ids and license ARNs.
func seedLicenses(b *testing.B, e *env, n int) (accounts, arns []string) {
	b.Helper()
	subs := make([]marketplace.Subscription, n)
	for i := range subs {
		acct := fmt.Sprintf("%012d", 200000000000+i)
		id := fmt.Sprintf("l-seed%08d", i)
		arn := "arn:aws:license-manager::" + acct + ":license:" + id
		accounts, arns = append(accounts, acct), append(arns, arn)
		subs[i] = marketplace.Subscription{Provider: marketplace.AWS, ID: arn, CustomerID: aws.LicenseCustomer(acct, arn),
			ProductCode: product, Status: marketplace.StatusActive, CloudUpdated: testNow.Add(-time.Hour),
			Attributes: map[string]string{"license_id": id, "aws_account_id": acct, "license_arn": arn}}
	}
	if err := e.store.ImportSubscriptions(b.Context(), subs); err != nil {
		b.Fatal(err)
	}
	return accounts, arns
}

// BenchmarkNotification: one EventBridge License Deprovisioned event
// through NotificationHandler (authenticate, decode, Accept) and the
// engine (Process: find the subscription by license id, cancel it, seal
// its usage), with 1,000 and 100,000 subscriptions stored. Each event is
// about another subscription until all are cancelled (-benchtime=1000x
// keeps it so).
func BenchmarkNotification(b *testing.B) {
	for _, n := range []int{1000, 100_000} {
		// The fixture is made once per size: the benchmark function runs more than once.
		e := newEnv(b, emu.Config{})
		cfg := baseConfig(e)
		cfg.LicenseMode = true
		a := newApp(b, e, cfg)
		accounts, arns := seedLicenses(b, e, n)
		h := a.NotificationHandler()
		next := 0
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			bodies := make([][]byte, b.N)
			for i := range bodies {
				k := next % n
				next++
				// The event's form of the license ARN, as AWS documents it.
				lic := "aws:license-manager:us-east-1:" + accounts[k] + ":" + arns[k][len(arns[k])-len("l-seed00000000"):]
				bodies[i], _ = json.Marshal(map[string]any{"version": "0", "id": fmt.Sprintf("ev-%d", next),
					"detail-type": "License Deprovisioned - Manufacturer", "source": aws.EventBridgeSource,
					"time": testNow.Format(time.RFC3339), "detail": map[string]any{
						"acceptor": map[string]string{"accountId": accounts[k]}, "product": map[string]string{"code": product},
						"license": map[string]string{"arn": lic}}})
			}
			b.ResetTimer()
			cpu := benchcpu.Now()
			for i := range b.N {
				if w := sendEB(b, h, bodies[i], secret); w.Code != http.StatusNoContent {
					b.Fatalf("delivery: %d %s", w.Code, w.Body)
				}
				a.drain(b)
			}
			b.StopTimer()
			benchcpu.Report(b, cpu)
			s, err := e.store.GetSubscription(b.Context(), marketplace.AWS, arns[0])
			if err != nil || s.Status != marketplace.StatusCancelled {
				b.Fatalf("first subscription after its event: %+v, %v", s, err)
			}
		})
	}
}

// BenchmarkSignup: one buyer's sign-up on the landing page (ResolveCustomer
// against the emulator through the official SDK, the lookup by license id,
// the pending and active updates), with 1,000 and 100,000 subscriptions
// stored. The emulator runs in the process: cpu-ns/op is both sides.
func BenchmarkSignup(b *testing.B) {
	for _, n := range []int{1000, 100_000} {
		e := newEnv(b, emu.Config{})
		cfg := baseConfig(e)
		cfg.LicenseMode = true
		a := newApp(b, e, cfg)
		seedLicenses(b, e, n)
		h := a.LandingHandler()
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			tokens := make([]string, b.N)
			for i := range tokens {
				buyer := e.emu.AddBuyer(emu.Buyer{ProductCode: product, LicenseArn: "new"})
				tok, err := e.emu.MintToken(buyer.Key(), 1000*time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				tokens[i] = tok
			}
			b.ResetTimer()
			cpu := benchcpu.Now()
			for i := range b.N {
				if w := postToken(b, h, tokens[i]); w.Code != http.StatusOK {
					b.Fatalf("landing: %d %s", w.Code, w.Body)
				}
			}
			b.StopTimer()
			benchcpu.Report(b, cpu)
		})
	}
}
