package sqlite_test

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/sqlite"
	"github.com/saasmarket/marketplace/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		NewDB: func(t *testing.T) string { return filepath.Join(t.TempDir(), "marketplace.db") },
		Open: func(t *testing.T, db string) storetest.Store {
			s, err := sqlite.Open(t.Context(), db)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		Damage: damage,
	})
}

// damage damages the file behind the store's back, through a connection of
// its own, as storetest.Damage says.
func damage(t *testing.T, path string, d storetest.Damage) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	switch d.Kind {
	case storetest.DamageAppendRaw:
		_, err = db.ExecContext(t.Context(), `INSERT INTO usage_log (data) VALUES (?)`, d.Entry)
	case storetest.DamageFlipLogByte:
		var seq int64
		var data []byte
		if err = db.QueryRowContext(t.Context(), `SELECT seq, data FROM usage_log ORDER BY seq DESC LIMIT 1`).Scan(&seq, &data); err == nil {
			_, err = db.ExecContext(t.Context(), `UPDATE usage_log SET data = ? WHERE seq = ?`, d.Flip(data), seq)
		}
	case storetest.DamageInboxColumn:
		var res sql.Result
		res, err = db.ExecContext(t.Context(), `UPDATE inbox SET `+d.Column+` = ? WHERE provider = ? AND id = ?`, d.Value, d.Provider, d.ID)
		if err == nil {
			if n, _ := res.RowsAffected(); n != 1 {
				err = fmt.Errorf("no inbox row %s/%s", d.Provider, d.ID)
			}
		}
	default:
		err = fmt.Errorf("unknown damage %q", d.Kind)
	}
	if err != nil {
		t.Fatalf("damage %+v: %v", d, err)
	}
}

// TestMigrationsApplyOnce: reopening applies nothing twice, and every
// embedded migration is recorded.
func TestMigrationsApplyOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	for range 2 {
		s, err := sqlite.Open(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(files) < 3 {
		t.Fatalf("migrations: %v, %v", files, err)
	}
	var n, idx int
	if err := db.QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(files) {
		t.Errorf("schema_migrations has %d rows (%v), want %d", n, err, len(files))
	}
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'buckets_done'`).Scan(&idx); err != nil || idx != 1 {
		t.Errorf("migration 2 not applied: %d, %v", idx, err)
	}
}

// TestTornInboxRows: damage only SQLite can hold (any value in any column)
// is quarantined like the rest: text, and a real, in integer columns.
func TestTornInboxRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "torn.db")
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, id := range []string{"a", "b", "c"} {
		if _, err := s.AddNotification(ctx, marketplace.Notification{Provider: "gcp", ID: id, Received: t0, Payload: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
	}
	damage(t, path, storetest.Damage{Kind: storetest.DamageInboxColumn, Provider: "gcp", ID: "a", Column: "received", Value: "yesterday"})
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `UPDATE inbox SET attempts = 2.5 WHERE id = 'b'`); err != nil {
		t.Fatal(err)
	}
	// Get quarantines a, the claim b: each reader of a torn row moves it.
	if _, err := s.GetNotification(ctx, "gcp", "a"); !errors.Is(err, marketplace.ErrNotFound) || !strings.Contains(err.Error(), "gcp/a") ||
		!strings.Contains(err.Error(), "quarantine") {
		t.Errorf("GetNotification(gcp/a): %v; want ErrNotFound naming the row and the quarantine", err)
	}
	got, err := s.ClaimNotifications(ctx, marketplace.NotificationClaim{Owner: "w", Now: t0, Lease: time.Minute, Limit: 10})
	if err != nil || len(got) != 1 || got[0].ID != "c" {
		t.Fatalf("claim = %+v, %v; want gcp/c", got, err)
	}
	qs, err := s.ListQuarantined(ctx, 0)
	if err != nil || len(qs) != 2 {
		t.Fatalf("quarantined: %+v, %v; want 2", qs, err)
	}
	for _, q := range qs {
		var row marketplace.InboxRow
		if err := json.Unmarshal(q.Data, &row); err != nil || q.Ref != "gcp/"+row.ID {
			t.Errorf("quarantined %s: %s, %v", q.Ref, q.Data, err)
		}
		switch row.ID {
		case "a":
			if row.Received != "yesterday" || !strings.Contains(q.Reason, "received") {
				t.Errorf("gcp/a: %+v, reason %q", row, q.Reason)
			}
		case "b":
			if row.Attempts != "2.5" || !strings.Contains(q.Reason, "attempts") {
				t.Errorf("gcp/b: %+v, reason %q", row, q.Reason)
			}
		}
	}
}
