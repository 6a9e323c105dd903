package server

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/internal/tornrows"
	"github.com/saasmarket/marketplace/ledger"
)

// fakeQuarantine is a marketplace.QuarantineStore in memory that checks a
// restored row as the contract says (ledger.CheckEntry, InboxRow), so that
// the API is tested apart from any store.
type fakeQuarantine struct {
	mu       sync.Mutex
	rows     []marketplace.Quarantined
	restored map[int64][]byte // what went back, per id
	fail     error            // every call fails with it, when set
}

var _ marketplace.QuarantineStore = (*fakeQuarantine)(nil)

func (f *fakeQuarantine) ListQuarantined(ctx context.Context, limit int) ([]marketplace.Quarantined, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	out := append([]marketplace.Quarantined(nil), f.rows...)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (f *fakeQuarantine) GetQuarantined(ctx context.Context, id int64) (*marketplace.Quarantined, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	for _, q := range f.rows {
		if q.ID == id {
			return &q, nil
		}
	}
	return nil, fmt.Errorf("quarantined row %d: %w", id, marketplace.ErrNotFound)
}

func (f *fakeQuarantine) CountQuarantined(ctx context.Context) (map[string]int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	m := map[string]int64{}
	for _, q := range f.rows {
		m[q.Source]++
	}
	return m, nil
}

func (f *fakeQuarantine) RestoreQuarantined(ctx context.Context, id int64, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, q := range f.rows {
		if q.ID != id {
			continue
		}
		if data == nil {
			data = q.Data
		}
		putEntry := func([]byte) error { return nil }
		putRow := func(marketplace.Notification) (bool, error) { return true, nil }
		if err := tornrows.Restore(q, data, putEntry, putRow); err != nil {
			return err
		}
		if f.restored == nil {
			f.restored = map[int64][]byte{}
		}
		f.restored[id] = data
		f.rows = append(f.rows[:i], f.rows[i+1:]...)
		return nil
	}
	return fmt.Errorf("quarantined row %d: %w", id, marketplace.ErrNotFound)
}

func (f *fakeQuarantine) DiscardQuarantined(ctx context.Context, id int64) (*marketplace.Quarantined, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	for i, q := range f.rows {
		if q.ID == id {
			f.rows = append(f.rows[:i], f.rows[i+1:]...)
			return &q, nil
		}
	}
	return nil, fmt.Errorf("quarantined row %d: %w", id, marketplace.ErrNotFound)
}

// damagedRows returns a quarantine holding a log entry with a flipped
// byte (id 1) and an inbox row with a torn column (id 2), and the mended
// forms of both.
func damagedRows(t *testing.T) (fq *fakeQuarantine, goodEntry, goodRow []byte) {
	t.Helper()
	goodEntry = ledger.EncodeDeltas(nil, []ledger.Delta{{BucketKey: ledger.BucketKey{
		SeriesKey: ledger.SeriesKey{Provider: marketplace.AWS, Customer: "cust-x", Dimension: "tokens"}, Hour: ledger.HourOf(t0)}, Quantity: 4200}})
	if err := ledger.CheckEntry(goodEntry); err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), goodEntry...)
	flipped[len(flipped)-6] ^= 0x10 // in the quantity: only the checksum tells
	row := marketplace.InboxRowOf(marketplace.Notification{Provider: marketplace.Azure, ID: "op-7", Kind: "Unsubscribe", Subject: "z1",
		Payload: []byte(`{"action":"Unsubscribe"}`), State: marketplace.NotificationPending, Received: t0, Expires: t0.Add(time.Hour)})
	goodRow, _ = json.Marshal(row)
	row.Attempts = "three"
	torn, _ := json.Marshal(row)
	fq = &fakeQuarantine{rows: []marketplace.Quarantined{
		{ID: 1, Source: marketplace.QuarantineUsageLog, Ref: "seq 17", Data: flipped, Reason: "ledger: corrupt log entry: checksum mismatch", At: t0},
		{ID: 2, Source: marketplace.QuarantineInbox, Ref: "azure/op-7", Data: torn, Reason: `column attempts: "three" is not a count`, At: t0.Add(time.Second)},
	}}
	return fq, goodEntry, goodRow
}

func TestQuarantineAPI(t *testing.T) {
	fq, goodEntry, goodRow := damagedRows(t)
	h := newHarness(t, harnessOptions{quarantine: fq})

	// The same key as the rest of /v1.
	if resp, _ := h.do(t, "GET", "/v1/quarantine", nil, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no key: %d", resp.StatusCode)
	}
	type list struct {
		Quarantined []quarantined    `json:"quarantined"`
		Counts      map[string]int64 `json:"counts"`
	}
	resp, body := h.do(t, "GET", "/v1/quarantine", nil, testKey)
	l := decode[list](t, body)
	if resp.StatusCode != 200 || len(l.Quarantined) != 2 || l.Counts["usage_log"] != 1 || l.Counts["inbox"] != 1 {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	if q := l.Quarantined[0]; q.ID != 1 || q.Source != "usage_log" || q.Ref != "seq 17" || q.Data != nil || q.Size != len(goodEntry) ||
		!strings.Contains(q.Reason, "checksum") || !q.At.Equal(t0) {
		t.Errorf("listed %+v", q)
	}
	if resp, body := h.do(t, "GET", "/v1/quarantine?limit=1", nil, testKey); resp.StatusCode != 200 || len(decode[list](t, body).Quarantined) != 1 {
		t.Errorf("limit 1: %d %s", resp.StatusCode, body)
	}

	// One row, with its data.
	resp, body = h.do(t, "GET", "/v1/quarantine/1", nil, testKey)
	if q := decode[quarantined](t, body); resp.StatusCode != 200 || string(q.Data) != string(fq.rows[0].Data) || q.InboxRow != nil {
		t.Errorf("show 1: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do(t, "GET", "/v1/quarantine/2", nil, testKey)
	if q := decode[quarantined](t, body); resp.StatusCode != 200 || q.InboxRow == nil || q.InboxRow.Attempts != "three" || q.InboxRow.ID != "op-7" {
		t.Errorf("show 2: %d %s", resp.StatusCode, body)
	}

	for _, c := range []struct {
		name, method, path string
		body               any
		hdr                []string
		status             int
		code, msg          string
	}{
		{"unknown id", "GET", "/v1/quarantine/99", nil, nil, 404, "not_found", "no quarantined row 99"},
		{"not an id", "GET", "/v1/quarantine/abc", nil, nil, 400, "invalid_request", "id:"},
		{"bad limit", "GET", "/v1/quarantine?limit=0", nil, nil, 400, "invalid_request", "limit:"},
		{"restore unknown id", "POST", "/v1/quarantine/99/restore", nil, nil, 404, "not_found", "no quarantined row 99"},
		{"restore as stored: still corrupt", "POST", "/v1/quarantine/1/restore", nil, nil, 400, "invalid_row", "corrupt log entry"},
		{"restore garbage", "POST", "/v1/quarantine/1/restore", map[string]any{"data": []byte("garbage")}, nil, 400, "invalid_row", "stays quarantined"},
		{"restore a row still torn", "POST", "/v1/quarantine/2/restore", `{}`, nil, 400, "invalid_row", "column attempts"},
		{"not base64", "POST", "/v1/quarantine/1/restore", `{"data":"%%%"}`, nil, 400, "invalid_json", `{"data"`},
		{"unknown member", "POST", "/v1/quarantine/1/restore", `{"bytes":"AA=="}`, nil, 400, "invalid_json", `{"data"`},
		{"not JSON", "POST", "/v1/quarantine/1/restore", `data=AA`, []string{"Content-Type", "text/plain"}, 415, "unsupported_media_type", "application/json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := h.do(t, c.method, c.path, c.body, testKey, c.hdr...)
			e := decode[apiError](t, body).Error
			if resp.StatusCode != c.status || e.Code != c.code || !strings.Contains(e.Message, c.msg) {
				t.Errorf("%d %s, want %d %s with %q", resp.StatusCode, body, c.status, c.code, c.msg)
			}
		})
	}
	if len(fq.restored) != 0 {
		t.Fatalf("a refused restore restored %v", fq.restored)
	}

	// Mended: both go back, and leave the quarantine.
	resp, body = h.do(t, "POST", "/v1/quarantine/1/restore", map[string]any{"data": goodEntry}, testKey)
	if r := decode[struct{ Restored quarantined }](t, body).Restored; resp.StatusCode != 200 || r.ID != 1 || string(r.Data) != string(goodEntry) {
		t.Fatalf("restore 1: %d %s", resp.StatusCode, body)
	}
	if string(fq.restored[1]) != string(goodEntry) {
		t.Errorf("restored %x, want %x", fq.restored[1], goodEntry)
	}
	resp, body = h.do(t, "POST", "/v1/quarantine/2/restore", `{"data":"`+base64.StdEncoding.EncodeToString(goodRow)+`"}`, testKey)
	if resp.StatusCode != 200 || string(fq.restored[2]) != string(goodRow) {
		t.Fatalf("restore 2: %d %s", resp.StatusCode, body)
	}
	if resp, body := h.do(t, "POST", "/v1/quarantine/1/restore", nil, testKey); resp.StatusCode != 404 {
		t.Errorf("restored twice: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do(t, "GET", "/v1/quarantine", nil, testKey)
	if l := decode[list](t, body); resp.StatusCode != 200 || len(l.Quarantined) != 0 || l.Counts["usage_log"] != 0 || l.Counts["inbox"] != 0 {
		t.Errorf("after restoring: %s", body)
	}
	if !strings.Contains(h.logs.String(), "quarantined row restored") {
		t.Error("a restore is not logged")
	}

	// A store that does not answer: 503.
	fq.fail = fmt.Errorf("disk I/O error")
	if resp, body := h.do(t, "GET", "/v1/quarantine", nil, testKey); resp.StatusCode != 503 {
		t.Errorf("store down: %d %s", resp.StatusCode, body)
	}
	if resp, body := h.do(t, "GET", "/v1/quarantine/1", nil, testKey); resp.StatusCode != 503 {
		t.Errorf("store down: %d %s", resp.StatusCode, body)
	}
}

// TestQuarantineMetricsAndDashboard: /metrics counts the quarantined rows
// per source at scrape time, and the dashboard's data lists them.
func TestQuarantineMetricsAndDashboard(t *testing.T) {
	fq, goodEntry, _ := damagedRows(t)
	h := newHarness(t, harnessOptions{quarantine: fq})
	scrape := func() string {
		t.Helper()
		resp, body := h.do(t, "GET", "/metrics", nil, "")
		if resp.StatusCode != 200 {
			t.Fatalf("/metrics: %d", resp.StatusCode)
		}
		return string(body)
	}
	m := scrape()
	for _, want := range []string{`marketplaced_quarantined_rows{source="usage_log"} 1`, `marketplaced_quarantined_rows{source="inbox"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	res, body := get(t, http.DefaultClient, h.rawURL+"/dashboard/data", "Authorization", "Bearer "+testKey)
	var dd dashboardData
	if err := json.Unmarshal([]byte(body), &dd); res.StatusCode != 200 || err != nil {
		t.Fatalf("dashboard data: %d %v %s", res.StatusCode, err, body)
	}
	if len(dd.Quarantined) != 2 || dd.Quarantined[1].Ref != "azure/op-7" || !strings.Contains(dd.Quarantined[1].Reason, "attempts") ||
		dd.Quarantined[0].Data != nil || dd.QuarantinedCount["usage_log"] != 1 || dd.QuarantinedCount["inbox"] != 1 {
		t.Errorf("dashboard quarantine %+v %v", dd.Quarantined, dd.QuarantinedCount)
	}
	if !strings.Contains(body, `"quarantined_count":{"inbox":1,"usage_log":1}`) {
		t.Errorf("dashboard data JSON: %s", body)
	}
	// The page has the section.
	c := browser(t)
	signIn(t, c, h.rawURL, testKey)
	if _, page := get(t, c, h.rawURL+"/dashboard/"); !strings.Contains(page, `id="quarantine"`) || !strings.Contains(page, "marketplaced quarantine restore") {
		t.Error("the dashboard page lacks the quarantine section")
	}

	if err := fq.RestoreQuarantined(t.Context(), 1, goodEntry); err != nil {
		t.Fatal(err)
	}
	if m := scrape(); !strings.Contains(m, `marketplaced_quarantined_rows{source="usage_log"} 0`) {
		t.Error("the quarantine count was not refreshed")
	}
	// A count that fails is logged and the scrape still answers.
	fq.fail = fmt.Errorf("disk I/O error")
	scrape()
	if !strings.Contains(h.logs.String(), "counting quarantined rows") {
		t.Error("a failed count is not logged")
	}
}

// TestQuarantineOnTheSQLiteStore: the routes on the real store. An entry
// damaged on disk is quarantined by the next fold; restoring it as stored
// is refused (400), restoring the mended entry puts its usage in the
// customer's bucket, once.
func TestQuarantineOnTheSQLiteStore(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	good := ledger.EncodeDeltas(nil, []ledger.Delta{{BucketKey: ledger.BucketKey{
		SeriesKey: ledger.SeriesKey{Provider: marketplace.AWS, Customer: "c9", Dimension: "tokens_1m"}, Hour: ledger.HourOf(t0)}, Quantity: 77}})
	bad := append([]byte(nil), good...)
	bad[len(bad)-5] ^= 0x01 // the quantity's last byte
	db, err := sql.Open("sqlite", "file:"+h.cfg.DBPath()+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(t.Context(), `INSERT INTO usage_log (data) VALUES (?)`, bad); err != nil {
		t.Fatal(err)
	}
	if err := h.ledger.Fold(t.Context()); err != nil {
		t.Fatalf("a damaged entry halted folding: %v", err)
	}
	resp, body := h.do(t, "GET", "/v1/quarantine", nil, testKey)
	l := decode[struct {
		Quarantined []quarantined    `json:"quarantined"`
		Counts      map[string]int64 `json:"counts"`
	}](t, body)
	if resp.StatusCode != 200 || len(l.Quarantined) != 1 || l.Counts["usage_log"] != 1 || !strings.Contains(l.Quarantined[0].Reason, "corrupt log entry") {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	path := "/v1/quarantine/" + strconv.FormatInt(l.Quarantined[0].ID, 10)
	if resp, body := h.do(t, "GET", path, nil, testKey); resp.StatusCode != 200 || string(decode[quarantined](t, body).Data) != string(bad) {
		t.Errorf("show: %d %s", resp.StatusCode, body)
	}
	if resp, body := h.do(t, "POST", path+"/restore", nil, testKey); resp.StatusCode != 400 || decode[apiError](t, body).Error.Code != "invalid_row" {
		t.Errorf("restore as stored: %d %s, want 400 invalid_row", resp.StatusCode, body)
	}
	if resp, body := h.do(t, "POST", path+"/restore", map[string]any{"data": good}, testKey); resp.StatusCode != 200 {
		t.Fatalf("restore mended: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do(t, "GET", "/v1/usage?provider=aws&customer=c9", nil, testKey)
	var got int64
	for _, b := range decode[struct{ Buckets []bucket }](t, body).Buckets {
		got += b.Quantity
	}
	if resp.StatusCode != 200 || got != 77 {
		t.Errorf("usage after the restore: %d %s, want 77", resp.StatusCode, body)
	}
	if resp, body := h.do(t, "GET", "/v1/quarantine", nil, testKey); !strings.Contains(string(body), `"quarantined":[]`) {
		t.Errorf("after the restore: %d %s", resp.StatusCode, body)
	}

	// Another customer's entry, damaged too and given up on: discarded,
	// it is answered as stored and its usage is never folded.
	bad8 := ledger.EncodeDeltas(nil, []ledger.Delta{{BucketKey: ledger.BucketKey{
		SeriesKey: ledger.SeriesKey{Provider: marketplace.AWS, Customer: "c8", Dimension: "tokens_1m"}, Hour: ledger.HourOf(t0)}, Quantity: 55}})
	bad8[len(bad8)-5] ^= 0x01
	if _, err := db.ExecContext(t.Context(), `INSERT INTO usage_log (data) VALUES (?)`, bad8); err != nil {
		t.Fatal(err)
	}
	if err := h.ledger.Fold(t.Context()); err != nil {
		t.Fatalf("a damaged entry halted folding: %v", err)
	}
	resp, body = h.do(t, "GET", "/v1/quarantine", nil, testKey)
	l = decode[struct {
		Quarantined []quarantined    `json:"quarantined"`
		Counts      map[string]int64 `json:"counts"`
	}](t, body)
	if resp.StatusCode != 200 || len(l.Quarantined) != 1 {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	path = "/v1/quarantine/" + strconv.FormatInt(l.Quarantined[0].ID, 10)
	resp, body = h.do(t, "DELETE", path, nil, testKey)
	if d := decode[struct{ Discarded quarantined }](t, body).Discarded; resp.StatusCode != 200 || string(d.Data) != string(bad8) ||
		!strings.Contains(d.Reason, "corrupt log entry") {
		t.Fatalf("discard: %d %s", resp.StatusCode, body)
	}
	if resp, body := h.do(t, "DELETE", path, nil, testKey); resp.StatusCode != 404 {
		t.Errorf("second discard: %d %s, want 404", resp.StatusCode, body)
	}
	if err := h.ledger.Fold(t.Context()); err != nil {
		t.Fatal(err)
	}
	resp, body = h.do(t, "GET", "/v1/usage?provider=aws&customer=c8", nil, testKey)
	if bs := decode[struct{ Buckets []bucket }](t, body).Buckets; resp.StatusCode != 200 || len(bs) != 0 {
		t.Errorf("usage of the discarded entry's customer: %d %s, want none", resp.StatusCode, body)
	}
	if resp, body := h.do(t, "GET", "/v1/quarantine", nil, testKey); !strings.Contains(string(body), `"quarantined":[]`) {
		t.Errorf("after the discard: %d %s", resp.StatusCode, body)
	}
}

// TestQuarantineDiscardAPI: DELETE /v1/quarantine/{id} discards a row an
// operator gave up on. The answer is the row as it was, data and all; the
// row leaves the list, the counts and the gauge; the log says what went,
// without the data; and the id is gone for every route after it.
func TestQuarantineDiscardAPI(t *testing.T) {
	fq, _, _ := damagedRows(t)
	torn := fq.rows[1]
	h := newHarness(t, harnessOptions{quarantine: fq})
	scrape := func() string {
		t.Helper()
		resp, body := h.do(t, "GET", "/metrics", nil, "")
		if resp.StatusCode != 200 {
			t.Fatalf("/metrics: %d", resp.StatusCode)
		}
		return string(body)
	}
	if m := scrape(); !strings.Contains(m, `marketplaced_quarantined_rows{source="inbox"} 1`) {
		t.Fatal("/metrics does not count the torn inbox row")
	}

	for _, c := range []struct {
		name, path, key string
		status          int
		code, msg       string
	}{
		{"no key", "/v1/quarantine/2", "", 401, "unauthorized", ""},
		{"wrong key", "/v1/quarantine/2", "not-a-key", 401, "unauthorized", ""},
		{"not an id", "/v1/quarantine/abc", testKey, 400, "invalid_request", "id:"},
		{"zero", "/v1/quarantine/0", testKey, 400, "invalid_request", "id:"},
		{"unknown id", "/v1/quarantine/99", testKey, 404, "not_found", "no quarantined row 99"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := h.do(t, "DELETE", c.path, nil, c.key)
			e := decode[apiError](t, body).Error
			if resp.StatusCode != c.status || e.Code != c.code || !strings.Contains(e.Message, c.msg) {
				t.Errorf("%d %s, want %d %s with %q", resp.StatusCode, body, c.status, c.code, c.msg)
			}
		})
	}
	if len(fq.rows) != 2 {
		t.Fatalf("a refused discard discarded a row: %+v", fq.rows)
	}

	resp, body := h.do(t, "DELETE", "/v1/quarantine/2", nil, testKey)
	d := decode[struct{ Discarded quarantined }](t, body).Discarded
	if resp.StatusCode != 200 || d.ID != 2 || d.Source != "inbox" || d.Ref != "azure/op-7" || d.Reason != torn.Reason ||
		!d.At.Equal(torn.At) || d.Size != len(torn.Data) || string(d.Data) != string(torn.Data) || d.InboxRow == nil || d.InboxRow.Attempts != "three" {
		t.Fatalf("discard 2: %d %s", resp.StatusCode, body)
	}
	for _, c := range []struct{ method, path string }{
		{"DELETE", "/v1/quarantine/2"},
		{"GET", "/v1/quarantine/2"},
		{"POST", "/v1/quarantine/2/restore"},
	} {
		resp, body := h.do(t, c.method, c.path, nil, testKey)
		if e := decode[apiError](t, body).Error; resp.StatusCode != 404 || !strings.Contains(e.Message, "discarded already") {
			t.Errorf("%s %s after the discard: %d %s, want 404 saying it may be discarded", c.method, c.path, resp.StatusCode, body)
		}
	}
	resp, body = h.do(t, "GET", "/v1/quarantine", nil, testKey)
	l := decode[struct {
		Quarantined []quarantined    `json:"quarantined"`
		Counts      map[string]int64 `json:"counts"`
	}](t, body)
	if resp.StatusCode != 200 || len(l.Quarantined) != 1 || l.Quarantined[0].ID != 1 || l.Counts["usage_log"] != 1 || l.Counts["inbox"] != 0 {
		t.Errorf("list after the discard: %d %s", resp.StatusCode, body)
	}
	m := scrape()
	for _, want := range []string{`marketplaced_quarantined_rows{source="inbox"} 0`, `marketplaced_quarantined_rows{source="usage_log"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics after the discard lacks %s", want)
		}
	}

	// One warning per discard, with what identifies the row; the data is
	// in the answer, not the log.
	var logged []map[string]any
	for line := range strings.Lines(h.logs.String()) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "quarantined row discarded" {
			logged = append(logged, rec)
		}
	}
	if len(logged) != 1 {
		t.Fatalf("%d discard log records, want 1:\n%s", len(logged), h.logs.String())
	}
	rec := logged[0]
	if rec["level"] != "WARN" || rec["id"] != 2.0 || rec["source"] != "inbox" || rec["ref"] != "azure/op-7" || rec["reason"] != torn.Reason ||
		rec["size"] != float64(len(torn.Data)) || rec["request_id"] == "" {
		t.Errorf("discard log record: %v", rec)
	}
	if _, ok := rec["data"]; ok || strings.Contains(h.logs.String(), base64.StdEncoding.EncodeToString(torn.Data)) || strings.Contains(h.logs.String(), `\"attempts\":\"three\"`) {
		t.Error("the log holds the discarded row's data")
	}

	// A store that does not answer: 503, and nothing is discarded.
	fq.fail = fmt.Errorf("disk I/O error")
	if resp, body := h.do(t, "DELETE", "/v1/quarantine/1", nil, testKey); resp.StatusCode != 503 {
		t.Errorf("store down: %d %s", resp.StatusCode, body)
	}
	fq.fail = nil
	if len(fq.rows) != 1 {
		t.Errorf("rows after a failed discard: %+v", fq.rows)
	}
}
