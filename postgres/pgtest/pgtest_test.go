package pgtest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// recorder is a testing.TB whose Skipf and Fatalf record what they say.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestNoServer: without a server, a test skips saying how to run it, and
// fails instead when CI is set.
func TestNoServer(t *testing.T) {
	s := &Server{reason: "no initdb; " + howTo}
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := &recorder{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.NewDB(r)
			t.Error("NewDB returned without a server")
		}()
		<-done
		said := r.skipped
		if ci != "" {
			said = r.failed
			if r.skipped != "" {
				t.Errorf("CI=%q: skipped (%q), want a failure", ci, r.skipped)
			}
		} else if r.failed != "" {
			t.Errorf("no CI: failed (%q), want a skip", r.failed)
		}
		if !strings.Contains(said, EnvURL) || !strings.Contains(said, "apt-get install postgresql") {
			t.Errorf("CI=%q: %q does not say how to run the tests", ci, said)
		}
	}
}

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u@h:5432/postgres?sslmode=disable", "postgres://u@h:5432/db1?sslmode=disable"},
		{"postgresql://u:p@h/x", "postgresql://u:p@h/db1"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=db1"},
	} {
		got, err := withDatabase(tc.in, "db1")
		if err != nil || got != tc.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
