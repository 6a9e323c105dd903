package sqlite

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// TestIndexedQueryPlans: the lookups on a request or notification path
// use an index; none scans a table (the cost would grow with the buyers).
func TestIndexedQueryPlans(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "plan.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The planner's choice depends on the data: plan against a populated store.
	subs := make([]marketplace.Subscription, 2000)
	for i := range subs {
		subs[i] = marketplace.Subscription{Provider: "aws", ID: fmt.Sprintf("s-%d", i), CustomerID: fmt.Sprintf("c-%d", i), Status: "active",
			Attributes: map[string]string{"license_id": fmt.Sprintf("l-%d", i), "aws_account_id": fmt.Sprintf("%012d", i%100)}}
	}
	if err := s.ImportSubscriptions(t.Context(), subs); err != nil {
		t.Fatal(err)
	}
	// Buckets over 200 hours of two clouds, in every final state, as
	// retention keeps them.
	if _, err := s.w.ExecContext(t.Context(), `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999)
		INSERT INTO buckets (provider, customer, dimension, hour, state, attempts)
		SELECT CASE i % 2 WHEN 0 THEN 'aws' ELSE 'azure' END, 'c-' || (i / 200), 'd', 1700000000 + (i % 200) * 3600,
			CASE i % 7 WHEN 0 THEN 'rejected' WHEN 1 THEN 'conflict' WHEN 2 THEN 'sealed' ELSE 'reported' END, i % 3
		FROM n`); err != nil {
		t.Fatal(err)
	}
	window, windowArgs := bucketsQuery(ledger.BucketFilter{Provider: "aws", From: time.Unix(1700000000+176*3600, 0), Before: time.Unix(1700000000+200*3600, 0)})
	newest, newestArgs := bucketsQuery(ledger.BucketFilter{Provider: "aws", States: []ledger.State{ledger.StateRejected}, NewestFirst: true, Limit: 51})
	sums, sumsArgs := sumBucketsQuery(ledger.BucketFilter{Provider: "aws", From: time.Unix(1700000000+176*3600, 0), Before: time.Unix(1700000000+200*3600, 0)})
	retried, retriedArgs := bucketsQuery(ledger.BucketFilter{Provider: "aws", States: []ledger.State{ledger.StateSealed}, MinAttempts: 1, NewestFirst: true, Limit: 51})
	for _, tc := range []struct {
		name, q string
		args    []any
		// first is the plan's first step: the lookup must start from the
		// key it is given (a SEARCH on a prefix alone walks a range).
		first string
		// noSort: the order the query asks for comes from the index (a
		// LIMIT after a sort would still read every match).
		noSort bool
	}{
		{"find by attribute", findByAttrQuery, []any{"aws", "license_id", "l-1"}, "(provider=? AND name=? AND value=?)", false},
		{"attribute rows of one subscription", `DELETE FROM subscription_attrs WHERE provider = ? AND id = ?`, []any{"aws", "s"}, "(provider=? AND id=?)", false},
		{"get subscription", `SELECT ` + subCols + ` FROM subscriptions WHERE provider = ? AND id = ?`, []any{"aws", "s"}, "(provider=? AND id=?)", false},
		// The dashboard's reads: one cloud's last hours, and the newest
		// buckets of one cloud in one state, without a sort of them all.
		{"buckets of an hour range", window, windowArgs, "(provider=? AND hour>? AND hour<?)", false},
		{"newest buckets in a state", newest, newestArgs, "(provider=? AND state=?)", true},
		// The dashboard's aggregates: the chart's sums and the
		// subscriptions' counts read one cloud's rows, not the table.
		{"sums of an hour range", sums, sumsArgs, "(provider=? AND hour>? AND hour<?)", false},
		{"count subscriptions", countSubsQuery, []any{"aws"}, "(provider=?)", false},
		{"newest retried buckets", retried, retriedArgs, "(provider=? AND state=?)", true},
		{"get notification", `SELECT ` + inboxCols + ` FROM inbox WHERE provider = ? AND id = ?`, []any{"aws", "n"}, "(provider=? AND id=?)", false},
	} {
		rows, err := s.r.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+tc.q, tc.args...)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if len(plan) == 0 || !strings.HasPrefix(plan[0], "SEARCH ") || !strings.Contains(plan[0], tc.first) {
			t.Errorf("%s: plan %q; want it to start with a SEARCH on %s", tc.name, plan, tc.first)
		}
		for _, step := range plan {
			if strings.HasPrefix(step, "SCAN ") || (tc.noSort && strings.Contains(step, "TEMP B-TREE")) {
				t.Errorf("%s scans a table or sorts its matches: %q", tc.name, plan)
			}
		}
	}
}
