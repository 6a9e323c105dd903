package server

import (
	"bytes"
	"strings"
	"testing"
)

// TestParseConfigStore: -store takes a PostgreSQL URL (or nothing, for
// SQLite); -replicas above 1 needs one; the password never appears in an
// error or in the start-up log.
func TestParseConfigStore(t *testing.T) {
	const password = "Sup3r-s3cret-pw"
	base := map[string]string{"MARKETPLACED_API_KEYS": "key-aaaaaaaaaaaaaaaa"}
	for _, c := range []struct {
		name     string
		args     []string
		env      map[string]string
		wantErr  string // empty: valid
		store    string // StoreName when valid
		replicas int
	}{
		{name: "default sqlite", store: "sqlite:marketplaced-data/marketplace.db", replicas: 1},
		{name: "postgres flag", args: []string{"-store", "postgres://app:" + password + "@db:5432/m?sslmode=disable", "-replicas", "3"},
			store: "postgres://app:xxxxx@db:5432/m?sslmode=disable", replicas: 3},
		{name: "postgres env", env: map[string]string{"MARKETPLACED_STORE": "postgresql://app:" + password + "@db/m", "MARKETPLACED_REPLICAS": "2"},
			store: "postgresql://app:xxxxx@db/m", replicas: 2},
		{name: "other scheme", args: []string{"-store", "mysql://app:" + password + "@db/m"},
			wantErr: `setting -store: want empty (SQLite in -data) or a postgres:// URL, got "mysql://app:xxxxx@db/m"`},
		{name: "key=value", env: map[string]string{"MARKETPLACED_STORE": "host=db password=" + password},
			wantErr: `setting MARKETPLACED_STORE: want empty (SQLite in -data) or a postgres:// URL, got "host=db password=xxxxx"`},
		{name: "broken URL", args: []string{"-store", "postgres://app:" + password + "@db:port/%zz"},
			wantErr: "setting -store: want empty (SQLite in -data) or a valid postgres:// URL"},
		{name: "replicas on sqlite", args: []string{"-replicas", "3"},
			wantErr: "setting -replicas / MARKETPLACED_REPLICAS: 3 daemons need a shared database: set -store / MARKETPLACED_STORE"},
		{name: "replicas zero", args: []string{"-replicas", "0", "-store", "postgres://db/m"},
			wantErr: `setting -replicas: want a positive integer, got "0"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := map[string]string{}
			for k, v := range base {
				e[k] = v
			}
			for k, v := range c.env {
				e[k] = v
			}
			cfg, err := ParseConfig(append([]string{"-catalogue", catalogueFile}, c.args...), env(e), &bytes.Buffer{})
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				if strings.Contains(err.Error(), password) {
					t.Fatalf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.StoreName() != c.store || cfg.Replicas != c.replicas {
				t.Errorf("store %q, replicas %d; want %q, %d", cfg.StoreName(), cfg.Replicas, c.store, c.replicas)
			}
			if v := cfg.LogValue().String(); strings.Contains(v, password) || !strings.Contains(v, "store="+c.store) {
				t.Errorf("the start-up log's configuration: %s", v)
			}
		})
	}
}
