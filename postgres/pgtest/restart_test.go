package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestRestart: a cluster of StartCluster restarts on the same port; a
// connection open across the restart breaks, a new one works.
func TestRestart(t *testing.T) {
	s := StartCluster(t.Context())
	t.Cleanup(func() { s.Close() }) // after NewDB's cleanup, which drops the database
	dbURL := s.NewDB(t)
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := s.Restart(t.Context(), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), `SELECT 1`); err == nil {
		t.Error("a connection open across the restart still works: the server did not restart")
	}
	again, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	again.Close(context.Background())
	if err := (&Server{admin: dbURL}).Restart(t.Context(), 0); err == nil {
		t.Error("Restart of a server it did not start: no error")
	}
}
