package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"testing"

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
	})
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
