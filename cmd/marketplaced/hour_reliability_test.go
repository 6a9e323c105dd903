package main

import (
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/saasmarket/marketplace/emulator/admin"
)

// TestReliabilityHourEdge: the daemon's clock (-clock-offset) starts 15 s
// before an hour ends. Usage of that hour is sealed once the grace
// (-seal-grace 5s) is over and reaches the AWS emulator's bill, as that
// hour, once; a record for the sealed hour that arrives afterwards is not
// lost: it goes to the earliest open hour (the next one), and the sealed
// hour's bill does not change.
func TestReliabilityHourEdge(t *testing.T) {
	if *reliabilityOff {
		t.Skip("reliability suite skipped (-reliability.skip)")
	}
	const secret = "eventbridge-secret-for-the-hour-test"
	emu := startEmulate(t, "-clouds", "aws", "-aws-listen", "127.0.0.1:0")
	cat := filepath.Join(t.TempDir(), "catalogue.json")
	if err := os.WriteFile(cat, []byte(`{"products":[{"provider":"aws","product":"prod-rel","metrics":{"tokens":{"dimension":"tokens"}}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ENDPOINT_URL_MARKETPLACE_METERING", emu["aws"])
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEMULATOR")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "emulator-secret")
	t.Setenv("MARKETPLACED_AWS_EVENTBRIDGE_SECRET", secret)
	// The daemon's clock: 15 s (plus its start-up) before the end of the
	// hour that began two hours before the wall's, so that AWS takes it.
	real := time.Now()
	hour := real.UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	offset := hour.Add(time.Hour - 15*time.Second).Sub(real)
	d := startServe(t, "-catalogue", cat, "-aws-product-code", "prod-rel", "-aws-region", "us-east-1",
		"-clock-offset", offset.Round(time.Millisecond).String(), "-seal-grace", "5s", "-seal-every", "1s")
	daemonNow := func() time.Time { return time.Now().Add(offset) }

	buyer := landBuyer(t, "aws", emu["aws"], `{"product":"prod-rel"}`, d)
	if end := hour.Add(time.Hour); !daemonNow().Before(end) {
		t.Fatalf("the daemon's clock passed the hour's end before the first record (start-up took too long)")
	}
	post := func(id string, q int, at string) {
		t.Helper()
		body := `{"records":[{"event_id":"` + id + `","provider":"aws","customer":"` + buyer.ID + `","metric":"tokens","quantity":` + strconv.Itoa(q) + at + `}]}`
		if st := getJSON(t, "POST", d.url+"/v1/usage", body, nil); st != 200 {
			t.Fatalf("usage %s: %d", id, st)
		}
	}
	post("edge-1", 100, "") // stamped by the daemon: the last seconds of the hour

	billed := func() map[time.Time]float64 {
		var b admin.Bill
		getJSON(t, "GET", emu["aws"]+"/emulator/bill", "", &b)
		m := map[time.Time]float64{}
		for _, l := range b.Lines {
			m[l.Start.UTC()] += l.Quantity
		}
		return m
	}
	end := hour.Add(time.Hour)
	deadline := time.Now().Add(90 * time.Second)
	for billed()[hour] == 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	after := daemonNow().Sub(end)
	if got := billed(); got[hour] != 100 || len(got) != 1 {
		t.Fatalf("bill %v, want 100 for the hour %s\n%s", got, hour, d.logs())
	}
	t.Logf("figures hour edge: the hour's usage was on the bill %.1f s after the hour ended (grace 5 s, sealing every 1 s)", after.Seconds())

	// A record for the sealed hour, arriving late: accepted, counted in
	// the next (open) hour.
	post("edge-late", 7, `,"time":"`+hour.Add(30*time.Minute).Format(time.RFC3339)+`"`)
	var usage struct {
		Buckets []struct {
			Hour     time.Time `json:"hour"`
			State    string    `json:"state"`
			Quantity int64     `json:"quantity"`
		} `json:"buckets"`
	}
	getJSON(t, "GET", d.url+"/v1/usage?provider=aws&customer="+url.QueryEscape(buyer.ID), "", &usage)
	got := map[time.Time]int64{}
	for _, b := range usage.Buckets {
		got[b.Hour.UTC()] += b.Quantity
	}
	if got[hour] != 100 || got[end] != 7 {
		t.Errorf("buckets %+v: want 100 in %s (sealed) and the late 7 in %s (the earliest open hour)", usage.Buckets, hour, end)
	}
	time.Sleep(2 * time.Second)
	if b := billed(); b[hour] != 100 || len(b) != 1 {
		t.Errorf("the late record changed the sealed hour's bill: %v", b)
	}
}
