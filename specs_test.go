package marketplace_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestSpecCopiesAreCurrent keeps specs/ equal to the project's shared
// specs, where this checkout has them beside it; a clean clone alone has
// only the copies, which the cloud packages' golden tests read.
func TestSpecCopiesAreCurrent(t *testing.T) {
	shared := filepath.Join("..", "shared", "specs")
	if _, err := os.Stat(shared); err != nil {
		t.Skipf("no shared specs beside this checkout (%v): nothing to compare", err)
	}
	n := 0
	err := filepath.WalkDir(shared, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(shared, path)
		want, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		got, err := os.ReadFile(filepath.Join("specs", rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("specs/%s differs from ../shared/specs/%s: copy it again", rel, rel)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Error("no spec files found")
	}
}
