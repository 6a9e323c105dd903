package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/postgres"
)

// TestQuarantineInboxRechecks: a reader hands the quarantine the rows it
// read torn outside a transaction; by then one may be mended or gone, and
// only the ones still torn may be moved.
func TestQuarantineInboxRechecks(t *testing.T) {
	ctx := t.Context()
	db := pg.NewDB(t)
	s := open(t, db)
	ts := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, id := range []string{"torn", "mended", "good", "gone"} {
		if _, err := s.AddNotification(ctx, marketplace.Notification{Provider: "aws", ID: id, Received: ts, Payload: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// Read torn, then mended or deleted before the quarantine looks again.
	for _, q := range []string{
		`UPDATE inbox SET attempts = -1 WHERE id IN ('torn', 'mended', 'gone')`,
		`UPDATE inbox SET attempts = 0 WHERE id = 'mended'`,
		`DELETE FROM inbox WHERE id = 'gone'`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}

	moved, err := postgres.QuarantineInboxRows(ctx, s, [2]string{"aws", "torn"}, [2]string{"aws", "mended"}, [2]string{"aws", "good"},
		[2]string{"aws", "gone"})
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
