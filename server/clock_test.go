package server

import (
	"io"
	"testing"
	"time"
)

// TestClockSettings: the test-and-demo clock runs at its rate from its
// anchor, so that two daemons started with the same settings (a restart)
// read the same time; without the settings it is the real clock.
func TestClockSettings(t *testing.T) {
	base := []string{"-catalogue", "testdata/catalogue.json", "-api-keys", "0123456789abcdef0123"}
	c, err := ParseConfig(base, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(c.Clock()()); d < 0 || d > time.Second {
		t.Errorf("default clock is %s off the real one", d)
	}
	anchor := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)
	c, err = ParseConfig(append(base, "-clock-rate", "60", "-clock-offset", "-6h", "-clock-anchor", anchor.Format(time.RFC3339)), env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// Ten real minutes at rate 60 are ten hours: 6 h behind plus 10 h.
	want := anchor.Add(-6*time.Hour + 10*time.Hour + time.Duration(60*float64(time.Since(anchor)-10*time.Minute)))
	if d := c.Clock()().Sub(want); d < -time.Minute || d > time.Minute {
		t.Errorf("clock reads %s, want about %s", c.Clock()(), want)
	}
	for _, bad := range [][]string{{"-clock-rate", "60"}, {"-clock-rate", "0.5"}, {"-clock-offset", "soon"}, {"-clock-rate", "2", "-clock-anchor", "yesterday"}, {"-seal-every", "0s"}} {
		if _, err := ParseConfig(append(base, bad...), env(nil), io.Discard); err == nil {
			t.Errorf("ParseConfig(%q) succeeded", bad)
		}
	}
}

// TestClockOffsetAlone: an offset without a rate needs no anchor.
func TestClockOffsetAlone(t *testing.T) {
	c, err := ParseConfig([]string{"-catalogue", "testdata/catalogue.json", "-api-keys", "0123456789abcdef0123", "-clock-offset", "-90m"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(c.Clock()()) + 90*time.Minute; d < -time.Second || d > time.Second {
		t.Errorf("clock with -clock-offset -90m is %s off", d)
	}
}
