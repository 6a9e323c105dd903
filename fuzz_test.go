package marketplace

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParseRetryAfter reads any Retry-After header a cloud may answer
// with (parsed by hand: seconds or an HTTP date): never a panic, never a
// negative wait, whitespace around it does not matter, and a positive
// number of seconds is that many seconds.
func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 12, 1, 14, 0, 0, 0, time.UTC)
	for _, s := range []string{"", "0", "1", "120", "-5", "9223372036854775807", "99999999999999999999", "1.5", " 30 ", "+7",
		"Tue, 01 Dec 2026 14:00:30 GMT", "Tue, 01 Dec 2026 13:00:00 GMT", "Tuesday, 01-Dec-26 14:01:00 GMT", "Tue Dec  1 14:02:00 2026",
		"Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 01 Jan 0001 00:00:00 GMT", "Tue, 01 Dec 2026 14:00:30 PST", "٣٠"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := ParseRetryAfter(v, now)
		if d < 0 {
			t.Fatalf("ParseRetryAfter(%q) = %v", v, d)
		}
		if again := ParseRetryAfter(" \t"+v+" ", now); again != d {
			t.Fatalf("ParseRetryAfter(%q) = %v, with spaces around it %v", v, d, again)
		}
		if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && s > 0 && s < 1<<32 && d != time.Duration(s)*time.Second {
			t.Fatalf("ParseRetryAfter(%q) = %v, want %d s", v, d, s)
		}
	})
}
