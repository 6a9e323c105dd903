package main

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/emulator/admin"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/sqlite"
)

// TestReliabilityQuarantine: rows damaged on disk do not halt the daemon.
// marketplaced serve runs against marketplaced emulate (AWS) on a data
// folder; usage of five customers is ingested and acknowledged while the
// test holds folding back (a trigger refuses new buckets), so that it is
// still in the append log when the daemon stops. On disk, the test then
// appends a garbage log entry, flips a bit in the quantity of customer X's
// entry (keeping the original) and tears a column of a pending inbox
// notification. Restarted, the daemon folds, seals and bills everyone
// else's usage exactly; the damaged rows are quarantined with their
// reasons, counted by /metrics and listed by the dashboard's data and by
// marketplaced quarantine list. Restoring the garbage is refused, saying
// why; restoring X's entry with the original bytes bills X exactly once.
// Discarding the garbage and the torn row, which will never be mended,
// brings the gauge and the list back to 0.
func TestReliabilityQuarantine(t *testing.T) {
	if *reliabilityOff {
		t.Skip("reliability suite skipped (-reliability.skip)")
	}
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	emu := startEmulate(t, "-clouds", "aws", "-aws-listen", "127.0.0.1:0")
	cat := filepath.Join(t.TempDir(), "catalogue.json")
	if err := os.WriteFile(cat, []byte(`{"products":[{"provider":"aws","product":"prod-q","metrics":{"tokens":{"dimension":"tokens"}}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ENDPOINT_URL_MARKETPLACE_METERING", emu["aws"])
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEMULATOR")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "emulator-secret")
	t.Setenv("MARKETPLACED_AWS_EVENTBRIDGE_SECRET", "eventbridge-secret-for-the-quarantine-test")
	d := newReplica(t, "quarantine", []string{"-catalogue", cat, "-aws-product-code", "prod-q", "-aws-region", "us-east-1",
		"-seal-grace", "5s", "-seal-every", "1s"}, nil)
	d.start(t)

	// Five buyers, subscribed through the landing page; the last is X.
	var buyers []string
	for range 5 {
		var b admin.Buyer
		if st := getJSON(t, "POST", emu["aws"]+"/emulator/buyers", `{"product":"prod-q"}`, &b); st != 201 {
			t.Fatalf("new buyer: %d", st)
		}
		resp, err := http.PostForm(d.url()+"/aws/landing", url.Values{"x-amzn-marketplace-token": {b.Token}})
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("landing: %d\n%s", resp.StatusCode, d.logs())
		}
		buyers = append(buyers, b.ID)
	}
	x, others := buyers[4], buyers[:4]

	dbPath := filepath.Join(d.data(), "marketplace.db")
	db, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec1 := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(t.Context(), q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// Folding fails (and is retried) while the trigger stands: the usage
	// stays in the append log, as it is between a commit and a fold.
	exec1(`CREATE TRIGGER quarantine_test_hold BEFORE INSERT ON buckets BEGIN SELECT RAISE(ABORT, 'held by the quarantine test'); END`)

	// Usage of an hour that has ended (the AWS emulator takes it), three
	// batches per customer, X's in one batch of its own.
	at := time.Now().UTC().Truncate(time.Hour).Add(-2*time.Hour + 30*time.Minute).Format(time.RFC3339)
	ingested := map[string]float64{}
	ingest := func(customer string, batch int, qs ...int64) {
		t.Helper()
		var recs []usageRecord
		for i, q := range qs {
			recs = append(recs, usageRecord{EventID: fmt.Sprintf("q-%s-%d-%d", customer, batch, i), Provider: "aws", Customer: customer,
				Metric: "tokens", Quantity: q, Time: at})
			ingested[customer] += float64(q)
		}
		if st := getJSON(t, "POST", d.url()+"/v1/usage", string(usageBody(recs)), nil); st != 200 {
			t.Fatalf("usage of %s: %d", customer, st)
		}
	}
	for batch := range 3 {
		for i, c := range others {
			ingest(c, batch, int64(100*(i+1)+batch), 7)
		}
	}
	ingest(x, 0, 4242, 58)
	if err := d.stop(t); err != nil {
		t.Logf("the daemon's stop: %v", err) // folding was held: not what is tested
	}
	exec1(`DROP TRIGGER quarantine_test_hold`)

	// Damage the rows on disk.
	var xSeq int64
	var original []byte
	rows, err := db.QueryContext(t.Context(), `SELECT seq, data FROM usage_log ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	entries := 0
	for rows.Next() {
		var seq int64
		var data []byte
		if err := rows.Scan(&seq, &data); err != nil {
			t.Fatal(err)
		}
		entries++
		ds, err := ledger.DecodeDeltas(nil, data)
		if err != nil {
			t.Fatalf("log entry %d: %v", seq, err)
		}
		if len(ds) > 0 && ds[0].Customer == x {
			if len(ds) != 1 {
				t.Fatalf("X's entry holds more than X's usage: %+v", ds)
			}
			xSeq, original = seq, data
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	if original == nil || entries < 2 {
		t.Fatalf("the append log holds %d entries and none of X's: folding was not held", entries)
	}
	flipped := bytes.Clone(original)
	flipped[len(flipped)-5] ^= 0x01 // the quantity's last byte: it decodes, only the checksum tells
	exec1(`UPDATE usage_log SET data = ? WHERE seq = ?`, flipped, xSeq)
	garbage := []byte("\x02\x01not a log entry at all")
	res, err := db.ExecContext(t.Context(), `INSERT INTO usage_log (data) VALUES (?)`, garbage)
	if err != nil {
		t.Fatal(err)
	}
	garbageSeq, _ := res.LastInsertId()
	// A pending notification, written by the store, then torn.
	store, err := sqlite.Open(t.Context(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := store.AddNotification(t.Context(), marketplace.Notification{Provider: marketplace.AWS, ID: "torn-1", Kind: "Entitlement Updated",
		Subject: others[0], Payload: []byte(`{}`), State: marketplace.NotificationPending, NextAttempt: now, Received: now, Expires: now.Add(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	store.Close()
	exec1(`UPDATE inbox SET attempts = 'many' WHERE provider = 'aws' AND id = 'torn-1'`)

	restarted := time.Now()
	d.start(t)
	client := map[string]*http.Client{"aws": http.DefaultClient}
	want := map[string]float64{}
	for _, c := range others {
		want[c] = ingested[c]
	}
	bill := perBuyer(settledBills(t, emu, client, map[string]map[string]float64{"aws": want}, 90*time.Second)["aws"])
	for _, c := range others {
		if bill[c] != ingested[c] {
			t.Errorf("customer %s: billed %v, ingested %v", c, bill[c], ingested[c])
		}
	}
	if bill[x] != 0 {
		t.Errorf("X's quarantined usage was billed: %v", bill[x])
	}
	if t.Failed() {
		t.Fatalf("everyone else's usage was not billed exactly\n%s", d.logs())
	}
	billedIn := time.Since(restarted)

	// /metrics counts the quarantined rows (the inbox row once the
	// lifecycle worker has tried to claim it).
	metrics := func() string {
		t.Helper()
		resp, err := http.Get(d.url() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	wantMetrics := []string{`marketplaced_quarantined_rows{source="usage_log"} 2`, `marketplaced_quarantined_rows{source="inbox"} 1`}
	var m string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if m = metrics(); strings.Contains(m, wantMetrics[0]) && strings.Contains(m, wantMetrics[1]) {
			break
		}
	}
	for _, w := range wantMetrics {
		if !strings.Contains(m, w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}

	// The dashboard's data lists them.
	var dd struct {
		Quarantined []struct {
			ID     int64  `json:"id"`
			Source string `json:"source"`
			Ref    string `json:"ref"`
			Reason string `json:"reason"`
		} `json:"quarantined"`
		Count map[string]int64 `json:"quarantined_count"`
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", d.url()+"/dashboard/data", nil)
	req.Header.Set("Authorization", "Bearer "+serveKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&dd)
	resp.Body.Close()
	if err != nil || len(dd.Quarantined) != 3 || dd.Count["usage_log"] != 2 || dd.Count["inbox"] != 1 {
		t.Errorf("dashboard data: %v %+v", err, dd)
	}
	ids := map[string]int64{} // ref → id
	for _, q := range dd.Quarantined {
		ids[q.Ref] = q.ID
	}
	xRef, garbageRef := "seq "+strconv.FormatInt(xSeq, 10), "seq "+strconv.FormatInt(garbageSeq, 10)
	if ids[xRef] == 0 || ids[garbageRef] == 0 || ids["aws/torn-1"] == 0 {
		t.Fatalf("quarantined %+v; want %s, %s and aws/torn-1", dd.Quarantined, xRef, garbageRef)
	}

	// marketplaced quarantine, on the data folder (the daemon running) and
	// through the API.
	qcmd := func(args ...string) (string, string, error) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"quarantine"}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), err
	}
	api := []string{"-addr", d.url(), "-api-key", serveKey}
	list, _, err := qcmd("list", "-data", d.data())
	if err != nil {
		t.Fatalf("quarantine list -data: %v", err)
	}
	for _, w := range []string{xRef, garbageRef, "aws/torn-1", "checksum", `column attempts: "many" is not a count`, "3 quarantined (usage_log 2, inbox 1)"} {
		if !strings.Contains(list, w) {
			t.Errorf("quarantine list -data lacks %q:\n%s", w, list)
		}
	}
	if l2, _, err := qcmd(append([]string{"list"}, api...)...); err != nil || l2 != list {
		t.Errorf("quarantine list through the API (%v) differs from -data:\n%s\n%s", err, l2, list)
	}
	xID, garbageID := strconv.FormatInt(ids[xRef], 10), strconv.FormatInt(ids[garbageRef], 10)
	show, _, err := qcmd("show", "-id", xID, "-data", d.data())
	if err != nil || !strings.Contains(show, "checksum") || !strings.Contains(show, "00000000  ") {
		t.Errorf("quarantine show: %v\n%s", err, show)
	}
	if raw, _, err := qcmd("show", "-id", xID, "-raw", "-data", d.data()); err != nil || raw != string(flipped) {
		t.Errorf("quarantine show -raw: %v: %x, want the flipped entry %x", err, raw, flipped)
	}
	if show, _, err := qcmd(append([]string{"show", "-id", strconv.FormatInt(ids["aws/torn-1"], 10)}, api...)...); err != nil ||
		!strings.Contains(show, `"attempts": "many"`) || !strings.Contains(show, `"id": "torn-1"`) {
		t.Errorf("quarantine show of the inbox row: %v\n%s", err, show)
	}

	// Garbage stays quarantined, and the command says why.
	for _, src := range [][]string{{"-data", d.data()}, api} {
		_, errOut, err := qcmd(append([]string{"restore", "-id", garbageID}, src...)...)
		if err == nil || !strings.Contains(errOut, "stays quarantined") || !strings.Contains(errOut, "corrupt log entry") {
			t.Errorf("restore of garbage (%s): %v\n%s", src[0], err, errOut)
		}
	}
	// X's entry, mended with the original bytes, goes back through the API.
	mended := filepath.Join(t.TempDir(), "mended")
	if err := os.WriteFile(mended, original, 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := qcmd(append([]string{"restore", "-id", xID, "-file", mended}, api...)...)
	if err != nil || !strings.Contains(out, "restored quarantined row "+xID) {
		t.Fatalf("restore of X's entry: %v\n%s%s", err, out, errOut)
	}
	restored := time.Now()
	want[x] = ingested[x]
	bill = perBuyer(settledBills(t, emu, client, map[string]map[string]float64{"aws": want}, 90*time.Second)["aws"])
	for _, c := range buyers {
		if bill[c] != ingested[c] {
			t.Errorf("customer %s: billed %v, ingested %v", c, bill[c], ingested[c])
		}
	}
	if _, _, err := qcmd("restore", "-id", xID, "-file", mended, "-data", d.data()); err == nil {
		t.Error("a second restore of X's entry succeeded")
	}
	if m := metrics(); !strings.Contains(m, `marketplaced_quarantined_rows{source="usage_log"} 1`) {
		t.Error("/metrics does not count the restored entry out")
	}
	t.Logf("figures quarantine: %d log entries, 2 damaged on disk (garbage, a flipped bit in X's quantity) and 1 inbox row torn: "+
		"all 3 quarantined; the 4 other customers billed exactly (%v units), settled %.1f s after the restart; X billed exactly once (%v units), settled %.1f s after its entry was restored (each settling includes 3 s in which nothing more may arrive)",
		entries+1, total(want)-ingested[x], billedIn.Seconds(), ingested[x], time.Since(restored).Seconds())

	// The garbage will never be mended: discarded through the API, and
	// the torn inbox row on the data folder (its data kept with -raw),
	// the gauge and the list come back to 0.
	if out, errOut, err := qcmd(append([]string{"discard", "-id", garbageID}, api...)...); err != nil ||
		!strings.Contains(out, "discarded quarantined row "+garbageID) {
		t.Errorf("discard of the garbage: %v\n%s%s", err, out, errOut)
	}
	if out, errOut, err := qcmd("discard", "-id", strconv.FormatInt(ids["aws/torn-1"], 10), "-raw", "-data", d.data()); err != nil ||
		!strings.Contains(out, `"attempts":"many"`) {
		t.Errorf("discard -raw of the torn inbox row: %v\n%s%s", err, out, errOut)
	}
	m = metrics()
	for _, w := range []string{`marketplaced_quarantined_rows{source="usage_log"} 0`, `marketplaced_quarantined_rows{source="inbox"} 0`} {
		if !strings.Contains(m, w) {
			t.Errorf("/metrics after the discards lacks %s", w)
		}
	}
	if list, _, err := qcmd(append([]string{"list"}, api...)...); err != nil || !strings.Contains(list, "0 quarantined (usage_log 0, inbox 0)") {
		t.Errorf("quarantine list after the discards: %v\n%s", err, list)
	}
}

// TestQuarantineCommand: marketplaced quarantine's usage errors and an
// empty quarantine, in-process on a data folder.
func TestQuarantineCommand(t *testing.T) {
	data := t.TempDir()
	store, err := sqlite.Open(t.Context(), filepath.Join(data, "marketplace.db"))
	if err != nil {
		t.Fatal(err)
	}
	store.Close()
	out, err := adminRun(t, "quarantine", "list", "-data", data)
	if err != nil || !strings.Contains(out, "0 quarantined (usage_log 0, inbox 0)") {
		t.Errorf("list of an empty quarantine: %v\n%s", err, out)
	}
	if out, err := adminRun(t, "quarantine", "list", "-json", "-data", data); err != nil ||
		strings.TrimSpace(out) != "{\n  \"counts\": {\n    \"inbox\": 0,\n    \"usage_log\": 0\n  },\n  \"quarantined\": []\n}" {
		t.Errorf("list -json: %v\n%s", err, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "want list, show, restore or discard"},
		{[]string{"mend"}, "want list, show, restore or discard"},
		{[]string{"show", "-data", data}, "setting -id: is required"},
		{[]string{"show", "-id", "7", "-data", data}, "no quarantined row 7"},
		{[]string{"restore", "-id", "7", "-data", data}, "no quarantined row 7"},
		{[]string{"restore", "-id", "7", "-file", filepath.Join(data, "missing"), "-data", data}, "setting -file"},
		{[]string{"discard", "-data", data}, "setting -id: is required"},
		{[]string{"discard", "-id", "7", "-data", data}, "no quarantined row 7"},
		{[]string{"list", "-data", filepath.Join(data, "nowhere")}, "holds no marketplace.db"},
	} {
		_, err := adminRun(t, append([]string{"quarantine"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("quarantine %v: %v, want an error with %q", c.args, err, c.want)
		}
	}
}

// TestQuarantineDiscardCommand: marketplaced quarantine discard gives up on
// rows, on a data folder and through a daemon's API: it prints what it
// discarded, data and all (-raw: the data alone, -json: the API's view),
// and the row is gone for list, show, restore and a second discard.
func TestQuarantineDiscardCommand(t *testing.T) {
	data := t.TempDir()
	dbPath := filepath.Join(data, "marketplace.db")
	store, err := sqlite.Open(t.Context(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	store.Close()
	db, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	garbage := []byte{9, 1, 2, 3}
	torn := `{"provider":"aws","id":"torn-1","kind":"subscribe","subject":"s","event_time":"1","payload":null,"state":"pending",` +
		`"attempts":"many","next_attempt":"0","progress":"","reason":"","received":"1","expires":"2"}`
	// Rows as the store quarantines them: 1 and 3 log entries, 2 an
	// inbox row.
	for _, r := range []struct {
		source, ref string
		data        []byte
		reason      string
	}{
		{"usage_log", "seq 7", garbage, "ledger: corrupt log entry: unknown version 9"},
		{"inbox", "aws/torn-1", []byte(torn), `inbox row aws/torn-1: column attempts: "many" is not a count`},
		{"usage_log", "seq 9", garbage[:2], "ledger: corrupt log entry: unknown version 9"},
	} {
		if _, err := db.ExecContext(t.Context(), `INSERT INTO quarantine (source, ref, data, reason, at) VALUES (?, ?, ?, ?, ?)`,
			r.source, r.ref, r.data, r.reason, time.Now().UnixMilli()); err != nil {
			t.Fatal(err)
		}
	}

	// On the data folder: the row and its data, once.
	out, err := adminRun(t, "quarantine", "discard", "-id", "1", "-data", data)
	if err != nil {
		t.Fatalf("discard -data: %v", err)
	}
	for _, w := range []string{"discarded quarantined row 1 (usage_log, seq 7)", "its usage is never billed", "unknown version 9",
		"00000000  09 01 02 03", "the data above is the last one"} {
		if !strings.Contains(out, w) {
			t.Errorf("discard -data lacks %q:\n%s", w, out)
		}
	}
	for _, args := range [][]string{{"discard", "-id", "1"}, {"show", "-id", "1"}, {"restore", "-id", "1"}} {
		if _, err := adminRun(t, append(append([]string{"quarantine"}, args...), "-data", data)...); err == nil ||
			!strings.Contains(err.Error(), "no quarantined row 1") {
			t.Errorf("quarantine %v after the discard: %v, want no quarantined row 1", args, err)
		}
	}

	// Through the API: -json is the API's view, -raw the data alone.
	d := startServe(t, "-data", data)
	api := []string{"-addr", d.url, "-api-key", serveKey}
	out, err = adminRun(t, append([]string{"quarantine", "discard", "-id", "2", "-json"}, api...)...)
	if err != nil {
		t.Fatalf("discard -json through the API: %v", err)
	}
	var got struct{ Discarded quarantinedView }
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Discarded.ID != 2 || got.Discarded.Source != "inbox" ||
		string(got.Discarded.Data) != torn || got.Discarded.InboxRow == nil || got.Discarded.InboxRow.Attempts != "many" {
		t.Errorf("discard -json: %v\n%s", err, out)
	}
	if out, err := adminRun(t, append([]string{"quarantine", "discard", "-id", "3", "-raw"}, api...)...); err != nil || out != string(garbage[:2]) {
		t.Errorf("discard -raw through the API: %v: %x, want %x", err, out, garbage[:2])
	}
	if _, err := adminRun(t, append([]string{"quarantine", "discard", "-id", "3"}, api...)...); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("second discard through the API: %v, want 404", err)
	}
	if out, err := adminRun(t, append([]string{"quarantine", "list"}, api...)...); err != nil || !strings.Contains(out, "0 quarantined (usage_log 0, inbox 0)") {
		t.Errorf("list after the discards: %v\n%s", err, out)
	}
	if !strings.Contains(d.logs(), "quarantined row discarded") {
		t.Errorf("the daemon did not log the discards:\n%s", d.logs())
	}
}
