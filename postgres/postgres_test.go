package postgres_test

import (
	"context"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/saasmarket/marketplace/postgres"
	"github.com/saasmarket/marketplace/postgres/pgtest"
	"github.com/saasmarket/marketplace/storetest"
)

// pg is the server of this package's tests (see pgtest).
var pg *pgtest.Server

func TestMain(m *testing.M) {
	pg = pgtest.Start(context.Background())
	code := m.Run()
	if err := pg.Close(); err != nil {
		println("pgtest:", err.Error())
	}
	os.Exit(code)
}

func open(t testing.TB, db string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		NewDB: func(t *testing.T) string { return pg.NewDB(t) },
		Open:  func(t *testing.T, db string) storetest.Store { return open(t, db) },
	})
}

// TestConformanceWithoutPreparedStatements runs the suite as the store runs
// behind a pooler that keeps no prepared statements (PgBouncer before 1.21
// in transaction mode): pgx's exec mode, unnamed statements only.
func TestConformanceWithoutPreparedStatements(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		NewDB: func(t *testing.T) string {
			u, err := url.Parse(pg.NewDB(t))
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			q.Set("default_query_exec_mode", "exec")
			u.RawQuery = q.Encode()
			return u.String()
		},
		Open: func(t *testing.T, db string) storetest.Store { return open(t, db) },
	})
}

// TestMigrationsApplyOnceConcurrently: processes starting together on an
// empty database each migrate it; the advisory lock lets one apply each
// migration and the others find it applied.
func TestMigrationsApplyOnceConcurrently(t *testing.T) {
	db := pg.NewDB(t)
	const starters = 6
	var wg sync.WaitGroup
	for range starters {
		wg.Go(func() {
			s, err := postgres.Open(t.Context(), db)
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	conn, err := pgx.Connect(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n, distinct int
	if err := conn.QueryRow(t.Context(), `SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_migrations`).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	if n != len(entries) || distinct != n {
		t.Errorf("schema_migrations has %d rows (%d distinct), want one per migration (%d)", n, distinct, len(entries))
	}
}

func TestOpenErrorRedactsPassword(t *testing.T) {
	const secret = "s3cr3t-pa55"
	for _, dsn := range []string{
		"postgres://user:" + secret + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
		"host=127.0.0.1 port=1 user=user password=" + secret + " dbname=db sslmode=disable connect_timeout=2",
		"postgres://user:" + secret + "@127.0.0.1:1/db?sslmode=bogus",
	} {
		_, err := postgres.Open(t.Context(), dsn)
		if err == nil {
			t.Fatalf("Open(%s) succeeded against a closed port", postgres.Redact(dsn))
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://app:hunter2@db.example.com:5432/mk?sslmode=require", "postgres://app:xxxxx@db.example.com:5432/mk?sslmode=require"},
		{"postgresql://app@db/mk", "postgresql://app@db/mk"},
		{"postgres://db/mk?user=app&password=hunter2", "postgres://db/mk?password=xxxxx&user=app"},
		{"host=db user=app password=hunter2 dbname=mk", "host=db user=app password=xxxxx dbname=mk"},
		{"host=db password='hun ter2' dbname=mk", "host=db password=xxxxx dbname=mk"},
		{"postgres://app:hun%ter2@db/mk", "postgres://app:xxxxx@db/mk"}, // not a valid URL
	} {
		if got := postgres.Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
