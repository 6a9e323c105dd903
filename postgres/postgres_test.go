package postgres_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
		NewDB:  func(t *testing.T) string { return pg.NewDB(t) },
		Open:   func(t *testing.T, db string) storetest.Store { return open(t, db) },
		Damage: damage,
	})
}

// damage damages the database behind the store's back, through a
// connection of its own, as storetest.Damage says.
func damage(t *testing.T, db string, d storetest.Damage) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	switch d.Kind {
	case storetest.DamageAppendRaw:
		_, err = conn.Exec(ctx, `INSERT INTO usage_log (data) VALUES ($1)`, d.Entry)
	case storetest.DamageFlipLogByte:
		var seq int64
		var data []byte
		if err = conn.QueryRow(ctx, `SELECT seq, data FROM usage_log ORDER BY seq DESC LIMIT 1`).Scan(&seq, &data); err == nil {
			_, err = conn.Exec(ctx, `UPDATE usage_log SET data = $1 WHERE seq = $2`, d.Flip(data), seq)
		}
	case storetest.DamageInboxColumn:
		// The simple protocol sends the value as a quoted literal, which
		// the server converts to the column's type.
		var tag pgconn.CommandTag
		tag, err = conn.Exec(ctx, `UPDATE inbox SET `+pgx.Identifier{d.Column}.Sanitize()+` = $1 WHERE provider = $2 AND id = $3`,
			pgx.QueryExecModeSimpleProtocol, d.Value, string(d.Provider), d.ID)
		if err == nil && tag.RowsAffected() != 1 {
			err = fmt.Errorf("no inbox row %s/%s", d.Provider, d.ID)
		}
	default:
		err = fmt.Errorf("unknown damage %q", d.Kind)
	}
	if err != nil {
		t.Fatalf("damage %+v: %v", d, err)
	}
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
		Open:   func(t *testing.T, db string) storetest.Store { return open(t, db) },
		Damage: damage,
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
