package sqlite

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestIndexedQueryPlans: the lookups on a request or notification path
// use an index; none scans a table (the cost would grow with the buyers).
func TestIndexedQueryPlans(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "plan.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct {
		name, q string
		args    []any
	}{
		{"find by attribute", findByAttrQuery, []any{"aws", "license_id", "l-1"}},
		{"attribute rows of one subscription", `DELETE FROM subscription_attrs WHERE provider = ? AND id = ?`, []any{"aws", "s"}},
		{"get subscription", `SELECT ` + subCols + ` FROM subscriptions WHERE provider = ? AND id = ?`, []any{"aws", "s"}},
		{"get notification", `SELECT ` + inboxCols + ` FROM inbox WHERE provider = ? AND id = ?`, []any{"aws", "n"}},
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
		for _, step := range plan {
			if strings.HasPrefix(step, "SCAN ") {
				t.Errorf("%s scans a table: %q", tc.name, plan)
			}
		}
	}
}
