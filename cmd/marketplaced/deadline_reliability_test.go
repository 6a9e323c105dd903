package main

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace/emulator/admin"
)

// TestReliabilityDeadline: AWS throttles every metering call (an outage)
// for longer than its 24-hour window, by the daemon's clock (-clock-rate
// 1800: an hour every 2 s). The documented outcome (ledger.DeadlinePolicy,
// default carry): the bucket that reaches its deadline unsent is carried
// into the current hour, nothing is lost; once AWS answers again the
// carried usage is billed, once.
func TestReliabilityDeadline(t *testing.T) {
	if *reliabilityOff {
		t.Skip("reliability suite skipped (-reliability.skip)")
	}
	emu := startEmulate(t, "-clouds", "aws", "-aws-listen", "127.0.0.1:0", "-aws-throttle-rate", "1")
	cat := filepath.Join(t.TempDir(), "catalogue.json")
	if err := os.WriteFile(cat, []byte(`{"products":[{"provider":"aws","product":"prod-rel","metrics":{"tokens":{"dimension":"tokens"}}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ENDPOINT_URL_MARKETPLACE_METERING", emu["aws"])
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEMULATOR")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "emulator-secret")
	t.Setenv("MARKETPLACED_AWS_EVENTBRIDGE_SECRET", "eventbridge-secret-for-the-deadline-test")
	// The daemon's clock starts 40 hours behind the wall and runs 1800
	// times faster. The first hour's deadline passes about 48 s later (24
	// hours by the daemon's clock), and the reporter, which claims work
	// every 5 s of the wall (2.5 hours of the daemon's clock), carries the
	// bucket in the round after that. The hour it is carried into must
	// have ended by the wall's clock too, or the AWS target refuses to
	// send it ("its time range ends after now": the cloud's time is the
	// wall's) until its deadline passes by the daemon's clock and it is
	// carried again. The daemon's clock reaches the wall's only about 80 s
	// after the start, so the carried hour is some 9 to 17 hours behind
	// the wall, inside AWS's 24-hour window, with room for a slow start and
	// a few late rounds (with 26 hours behind, a clean-clone CI run
	// carried into an hour that ended after the wall's now, and a run here
	// under load did too).
	const behind = 40 * time.Hour
	anchor := time.Now().UTC().Truncate(time.Second)
	d := startServe(t, "-catalogue", cat, "-aws-product-code", "prod-rel", "-aws-region", "us-east-1",
		"-clock-rate", "1800", "-clock-anchor", anchor.Format(time.RFC3339), "-clock-offset", (-behind).String(),
		"-seal-grace", "5m", "-seal-every", "1s", "-log-level", "debug")
	// A failed run keeps the daemon's log (each report round's retries and
	// releases at debug level) with the test's artifacts (go test -artifacts).
	t.Cleanup(func() {
		if t.Failed() {
			os.WriteFile(filepath.Join(t.ArtifactDir(), "daemon.log"), []byte(d.logs()), 0o600)
		}
	})
	buyer := landBuyer(t, "aws", emu["aws"], `{"product":"prod-rel"}`, d)
	body := `{"records":[{"event_id":"deadline-1","provider":"aws","customer":"` + buyer.ID + `","metric":"tokens","quantity":42}]}`
	if st := getJSON(t, "POST", d.url+"/v1/usage", body, nil); st != 200 {
		t.Fatalf("usage: %d", st)
	}
	type bucket struct {
		Hour     time.Time `json:"hour"`
		State    string    `json:"state"`
		Quantity int64     `json:"quantity"`
		Reason   string    `json:"reason"`
	}
	buckets := func() []bucket {
		var u struct {
			Buckets []bucket `json:"buckets"`
		}
		getJSON(t, "GET", d.url+"/v1/usage?provider=aws&customer="+url.QueryEscape(buyer.ID), "", &u)
		return u.Buckets
	}
	// Wait for the outage to reach the deadline: the bucket is carried.
	start := time.Now()
	var first bucket
	for deadline := time.Now().Add(120 * time.Second); ; {
		bs := buckets()
		if len(bs) > 0 && bs[0].State != "open" && bs[0].State != "sealed" {
			first = bs[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no deadline outcome after 120 s: %+v", bs)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("figures deadline: after %.0f s of outage (about %.0f hours by the daemon's clock) the bucket is %q: %s",
		time.Since(start).Seconds(), 1800*time.Since(start).Hours(), first.State, first.Reason)
	if first.State != "carried" || first.Quantity != 42 {
		t.Fatalf("bucket %+v, want 42 carried (ledger.DeadlinePolicy's default)", first)
	}
	_, into, ok := strings.Cut(first.Reason, "carried into ")
	carriedInto, err := time.Parse(time.RFC3339, into)
	if !ok || err != nil {
		t.Fatalf("carried bucket's reason %q names no hour it was carried into", first.Reason)
	}
	// The test's own premise (see behind above): the hour carried into
	// has ended by the wall's clock, so nothing but the outage keeps it
	// from AWS.
	if end := carriedInto.Add(time.Hour); !end.Before(time.Now()) {
		t.Fatalf("test clock: carried into the hour %s, which ends after the wall's now (%s): AWS cannot be sent it; start the daemon's clock further behind",
			carriedInto.Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
	}
	// The outage ends: the carried usage is billed once, before the
	// carried hour's own deadline (24 hours of the daemon's clock, 48 s).
	if st := getJSON(t, "PUT", emu["aws"]+"/emulator/faults", `{}`, nil); st != 200 {
		t.Fatalf("faults off: %d", st)
	}
	end := time.Now()
	var bill admin.Bill
	var bs []bucket
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		getJSON(t, "GET", emu["aws"]+"/emulator/bill", "", &bill)
		bs = buckets()
		if len(bill.Lines) > 0 && len(bs) == 2 && bs[1].State == "reported" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("60 s after the outage: bill %+v, buckets %+v; want the carried 42 tokens billed and its bucket reported", bill, bs)
		}
	}
	billedAfter := time.Since(end)
	// Anything sent twice would reach the bill within a few rounds.
	time.Sleep(3 * time.Second)
	getJSON(t, "GET", emu["aws"]+"/emulator/bill", "", &bill)
	bs = buckets()
	if bill.Totals[buyer.ID]["tokens"] != 42 || len(bill.Lines) != 1 || !bill.Lines[0].Start.Equal(carriedInto) {
		t.Fatalf("bill after the outage: %+v, want 42 tokens once, in the hour carried into (%s)\n%+v", bill, carriedInto, bs)
	}
	if len(bs) != 2 || bs[1].State != "reported" || bs[1].Quantity != 42 || !bs[1].Hour.Equal(carriedInto) {
		t.Fatalf("buckets after the outage: %+v, want the carried one and one reported of 42 in %s", bs, carriedInto)
	}
	t.Logf("figures deadline: carried usage billed once, %.1f s after the outage: %v at %s",
		billedAfter.Seconds(), bill.Totals[buyer.ID], bill.Lines[0].Start)
}
