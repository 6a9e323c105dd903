package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/saasmarket/marketplace"
)

// TestClaimFailsWhenATornRowStays: a claim moves the torn rows it meets to
// the quarantine and claims again. If a torn row could not be deleted from
// the inbox (here a trigger keeps it), the claim would meet it again
// forever: it must fail instead, roll back (nothing quarantined, nothing
// leased), and succeed once the row can be moved.
func TestClaimFailsWhenATornRowStays(t *testing.T) {
	ctx := t.Context()
	db := pg.NewDB(t)
	s := open(t, db)
	ts := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, id := range []string{"torn", "good"} {
		if _, err := s.AddNotification(ctx, marketplace.Notification{Provider: "aws", ID: id, Received: ts, Payload: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		`UPDATE inbox SET attempts = -1 WHERE id = 'torn'`,
		`CREATE FUNCTION keep_inbox_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`,
		`CREATE TRIGGER keep_inbox_rows BEFORE DELETE ON inbox FOR EACH ROW EXECUTE FUNCTION keep_inbox_rows()`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}

	claim := marketplace.NotificationClaim{Owner: "w1", Now: ts.Add(time.Minute), Lease: time.Minute, Limit: 10}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	ns, err := s.ClaimNotifications(cctx, claim)
	if err == nil || cctx.Err() != nil || !strings.Contains(err.Error(), "not deleted") {
		t.Fatalf("claim with an undeletable torn row = %d notifications, %v; want an error saying the row was not deleted", len(ns), err)
	}
	if qs, err := s.ListQuarantined(ctx, 0); err != nil || len(qs) != 0 {
		t.Fatalf("after the failed claim the quarantine holds %d rows (%v); want none (rolled back)", len(qs), err)
	}
	var leased int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM inbox WHERE lease_owner <> ''`).Scan(&leased); err != nil || leased != 0 {
		t.Fatalf("after the failed claim %d inbox rows are leased (%v); want none (rolled back)", leased, err)
	}

	if _, err := conn.Exec(ctx, `DROP TRIGGER keep_inbox_rows ON inbox`); err != nil {
		t.Fatal(err)
	}
	ns, err = s.ClaimNotifications(ctx, claim)
	if err != nil || len(ns) != 1 || ns[0].ID != "good" {
		t.Fatalf("claim once the row can move = %+v, %v; want the good notification alone", ns, err)
	}
	if qs, err := s.ListQuarantined(ctx, 0); err != nil || len(qs) != 1 || qs[0].Ref != "aws/torn" {
		t.Fatalf("quarantine %+v, %v; want aws/torn alone", qs, err)
	}
}
