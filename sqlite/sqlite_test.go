package sqlite_test

import (
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
