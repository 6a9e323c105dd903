package sqlite

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saasmarket/marketplace"
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
	for _, tc := range []struct {
		name, q string
		args    []any
		// first is the plan's first step: the lookup must start from the
		// key it is given (a SEARCH on a prefix alone walks a range).
		first string
	}{
		{"find by attribute", findByAttrQuery, []any{"aws", "license_id", "l-1"}, "(provider=? AND name=? AND value=?)"},
		{"attribute rows of one subscription", `DELETE FROM subscription_attrs WHERE provider = ? AND id = ?`, []any{"aws", "s"}, "(provider=? AND id=?)"},
		{"get subscription", `SELECT ` + subCols + ` FROM subscriptions WHERE provider = ? AND id = ?`, []any{"aws", "s"}, "(provider=? AND id=?)"},
		{"get notification", `SELECT ` + inboxCols + ` FROM inbox WHERE provider = ? AND id = ?`, []any{"aws", "n"}, "(provider=? AND id=?)"},
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
			if strings.HasPrefix(step, "SCAN ") {
				t.Errorf("%s scans a table: %q", tc.name, plan)
			}
		}
	}
}
