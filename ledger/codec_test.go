package ledger_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

func TestCheckEntry(t *testing.T) {
	hour := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	key := func(p marketplace.CloudProvider, c, d string, h time.Time) ledger.BucketKey {
		return ledger.BucketKey{SeriesKey: ledger.SeriesKey{Provider: p, Customer: c, Dimension: d}, Hour: h}
	}
	good := ledger.EncodeDeltas(nil, []ledger.Delta{{BucketKey: key(marketplace.AWS, "c1", "api_calls", hour), Quantity: 42}})
	if err := ledger.CheckEntry(good); err != nil {
		t.Fatalf("a good entry: %v", err)
	}
	// The body of a version-2 entry with version 1 and no checksum: what
	// a ledger before the checksum wrote. It is still read.
	v1 := append([]byte{1}, good[1:len(good)-4]...)
	if ds, err := ledger.DecodeDeltas(nil, v1); err != nil || len(ds) != 1 || ds[0].Quantity != 42 {
		t.Fatalf("version 1 entry: %+v, %v", ds, err)
	}
	flip := func(i int) []byte {
		b := append([]byte(nil), good...)
		b[i] ^= 0x01
		return b
	}
	for _, tc := range []struct {
		name  string
		entry []byte
		want  string
	}{
		{"empty", nil, "empty"},
		{"unknown version", append([]byte{9}, good[1:]...), "unknown version"},
		{"flipped quantity bit", flip(len(good) - 5), "checksum"},
		{"flipped checksum", flip(len(good) - 1), "checksum"},
		{"truncated", good[:len(good)-6], "checksum"},
		{"unknown cloud", ledger.EncodeDeltas(nil, []ledger.Delta{{BucketKey: key("awz", "c1", "d", hour), Quantity: 1}}), "unknown cloud"},
		{"no customer", ledger.EncodeDeltas(nil, []ledger.Delta{{BucketKey: key(marketplace.GCP, "", "d", hour), Quantity: 1}}), "empty customer"},
		{"not an hour", ledger.EncodeDeltas(nil, []ledger.Delta{{BucketKey: key(marketplace.Azure, "c", "d", hour.Add(time.Minute)), Quantity: 1}}), "start of an hour"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ledger.CheckEntry(tc.entry)
			if !errors.Is(err, ledger.ErrCorruptLog) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckEntry = %v, want ErrCorruptLog saying %q", err, tc.want)
			}
			var agg ledger.Aggregator
			if err := agg.AddEntry(tc.entry); err == nil || len(agg.Deltas()) != 0 {
				t.Fatalf("AddEntry added a corrupt entry: %+v, %v", agg.Deltas(), err)
			}
		})
	}
}
