package sqlite

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
)

// TestQuarantineInboxRechecks: a reader hands quarantineInboxRows the rows
// it read torn outside a write transaction; by then one may be mended or
// gone, and only the ones still torn may be moved.
func TestQuarantineInboxRechecks(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rowids := map[string]int64{}
	for _, id := range []string{"torn", "mended", "good", "gone"} {
		if _, err := s.AddNotification(ctx, marketplace.Notification{Provider: "aws", ID: id, Received: ts, Payload: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
		var rowid int64
		if err := s.r.QueryRowContext(ctx, `SELECT rowid FROM inbox WHERE id = ?`, id).Scan(&rowid); err != nil {
			t.Fatal(err)
		}
		rowids[id] = rowid
	}
	exec := func(q string) {
		t.Helper()
		if _, err := s.w.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// Read torn, then mended or deleted before the quarantine looks again.
	exec(`UPDATE inbox SET attempts = '-1' WHERE id IN ('torn', 'mended', 'gone')`)
	exec(`UPDATE inbox SET attempts = '0' WHERE id = 'mended'`)
	exec(`DELETE FROM inbox WHERE id = 'gone'`)

	moved, err := s.quarantineInboxRows(ctx, rowids["torn"], rowids["mended"], rowids["good"], rowids["gone"])
	if err != nil || moved != 1 {
		t.Fatalf("quarantineInboxRows = %d, %v; want 1 (the row still torn)", moved, err)
	}
	qs, err := s.ListQuarantined(ctx, 0)
	if err != nil || len(qs) != 1 || qs[0].Ref != "aws/torn" {
		t.Errorf("quarantined %+v, %v; want aws/torn alone", qs, err)
	}
	ns, err := s.ListNotifications(ctx, "", "", 0)
	var ids []string
	for _, n := range ns {
		ids = append(ids, n.ID)
	}
	if err != nil || fmt.Sprint(ids) != "[good mended]" {
		t.Errorf("inbox %v, %v; want [good mended]", ids, err)
	}
}
