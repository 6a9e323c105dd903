package marketplace_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
)

func TestInboxRowRoundTrip(t *testing.T) {
	n := marketplace.Notification{Provider: marketplace.Azure, ID: "op-1", Kind: "ChangePlan", Subject: "sub-1",
		Time: time.UnixMilli(1_700_000_000_123).UTC(), Payload: []byte(`{"a":1}`), State: marketplace.NotificationPending,
		Attempts: 3, NextAttempt: time.UnixMilli(1_700_000_100_000).UTC(), Progress: "patched", Reason: "busy",
		Received: time.UnixMilli(1_700_000_000_500).UTC(), Expires: time.UnixMilli(1_700_600_000_000).UTC()}
	got, err := marketplace.InboxRowOf(n).Notification()
	if err != nil {
		t.Fatal(err)
	}
	if got.Provider != n.Provider || got.ID != n.ID || got.Kind != n.Kind || got.Subject != n.Subject || !got.Time.Equal(n.Time) ||
		string(got.Payload) != string(n.Payload) || got.State != n.State || got.Attempts != n.Attempts ||
		!got.NextAttempt.Equal(n.NextAttempt) || got.Progress != n.Progress || got.Reason != n.Reason ||
		!got.Received.Equal(n.Received) || !got.Expires.Equal(n.Expires) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, n)
	}
	zero, err := marketplace.InboxRowOf(marketplace.Notification{Provider: marketplace.AWS, ID: "m", State: "done"}).Notification()
	if err != nil || !zero.Time.IsZero() || zero.Payload == nil {
		t.Fatalf("zero times: %+v, %v", zero, err)
	}
}

func TestInboxRowNamesTheBadColumn(t *testing.T) {
	good := marketplace.InboxRowOf(marketplace.Notification{Provider: marketplace.GCP, ID: "e-1", State: "pending"})
	for _, tc := range []struct {
		name, want string
		mend       func(*marketplace.InboxRow)
	}{
		{"provider", "column provider", func(r *marketplace.InboxRow) { r.Provider = "awz" }},
		{"id", "column id", func(r *marketplace.InboxRow) { r.ID = "" }},
		{"state", "column state", func(r *marketplace.InboxRow) { r.State = "pen" }},
		{"attempts", "column attempts", func(r *marketplace.InboxRow) { r.Attempts = "-1" }},
		{"time", "column event_time", func(r *marketplace.InboxRow) { r.Time = "garbage" }},
		{"next", "column next_attempt", func(r *marketplace.InboxRow) { r.NextAttempt = "1.5" }},
		{"received", "column received", func(r *marketplace.InboxRow) { r.Received = "" }},
		{"expires", "column expires", func(r *marketplace.InboxRow) { r.Expires = "-5" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			tc.mend(&r)
			_, err := r.Notification()
			if !errors.Is(err, marketplace.ErrInvalidInput) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidInput naming %q", err, tc.want)
			}
		})
	}
}
