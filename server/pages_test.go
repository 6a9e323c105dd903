package server

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// -pages takes a folder of the seller's templates, checked when the
// configuration is read: a broken template is an error naming the setting
// and the file.
func TestPagesSetting(t *testing.T) {
	base := []string{"-catalogue", "testdata/catalogue.json", "-api-keys", testKey}
	good, bad := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(good, "landing.html"), []byte(`{{define "title"}}Welcome{{end}}{{define "content"}}<h1>Welcome, {{.Buyer}}</h1>{{end}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "error.html"), []byte(`{{define "title"}}x{{end}}{{define "content"}}{{.Detial}}{{end}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig(append(base, "-pages", good), env(nil), io.Discard)
	if err != nil || c.PagesDir != good {
		t.Errorf("a good folder: %q %v", c.PagesDir, err)
	}
	if c, err := ParseConfig(base, env(nil), io.Discard); err != nil || c.PagesDir != "" {
		t.Errorf("no folder: %q %v", c.PagesDir, err)
	}
	for _, tc := range []struct {
		dir  string
		want []string
	}{
		{bad, []string{"setting -pages", "error.html", "Detial"}},
		{filepath.Join(good, "missing"), []string{"setting -pages", "missing"}},
	} {
		_, err := ParseConfig(append(base, "-pages", tc.dir), env(nil), io.Discard)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("-pages %s: %v, want it to mention %q", tc.dir, err, w)
			}
		}
	}
	_, err = ParseConfig(base, env(map[string]string{"MARKETPLACED_PAGES": bad}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "MARKETPLACED_PAGES") {
		t.Errorf("from the environment: %v", err)
	}
}
