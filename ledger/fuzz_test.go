package ledger_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
)

// appendStore is a ledger.Store that only keeps what Append is given, for
// tests of ingest alone. Its other methods do nothing.
type appendStore struct {
	mu   sync.Mutex
	recs []ledger.Record
}

func (s *appendStore) Append(_ context.Context, b *ledger.AppendBatch) ([]bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, b.Records()...)
	fresh := make([]bool, len(b.EventIDs))
	for i := range fresh {
		fresh[i] = true
	}
	return fresh, nil
}

// take returns and forgets what was appended.
func (s *appendStore) take() []ledger.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recs
	s.recs = nil
	return r
}

func (s *appendStore) Fold(context.Context) ([]ledger.BucketDelta, error) { return nil, nil }
func (s *appendStore) Seal(context.Context, ledger.SealRequest) (ledger.SealResult, error) {
	return ledger.SealResult{}, nil
}
func (s *appendStore) Claim(context.Context, ledger.ClaimRequest) ([]ledger.Bucket, error) {
	return nil, nil
}
func (s *appendStore) Complete(context.Context, string, []ledger.Completion) error { return nil }
func (s *appendStore) Freeze(context.Context, string, []ledger.Frozen) ([]ledger.Frozen, error) {
	return nil, nil
}
func (s *appendStore) Buckets(context.Context, ledger.BucketFilter) ([]ledger.Bucket, error) {
	return nil, nil
}
func (s *appendStore) SumBuckets(context.Context, ledger.BucketFilter) ([]ledger.BucketSum, error) {
	return nil, nil
}
func (s *appendStore) Backlog(context.Context) ([]ledger.Backlog, error)      { return nil, nil }
func (s *appendStore) PurgeEvents(context.Context, time.Time) (int64, error)  { return 0, nil }
func (s *appendStore) PurgeBuckets(context.Context, time.Time) (int64, error) { return 0, nil }
func (s *appendStore) Close() error                                           { return nil }

// FuzzValidate feeds arbitrary records through Ingest: each is either
// refused with a *ValidationError naming a field, storing nothing, or
// stored as given, and then obeys every rule.
func FuzzValidate(f *testing.F) {
	f.Add("aws", "c1", "requests", int64(5), int64(-time.Hour), false, "ev-1")
	f.Add("gcp", "", "requests", int64(5), int64(0), true, "")
	f.Add("azure", "c\xff", "d", int64(-1), int64(time.Hour), false, "e")
	f.Add("oracle", "c", "", int64(1<<53+1), int64(-24*time.Hour), false, "")
	f.Add("aws", "c", "d", int64(1<<53), int64(5*time.Minute), false, "\xc3")

	store := &appendStore{}
	clock := ledgertest.NewClock(testNow)
	l := ledger.New(store, ledger.Config{Clock: clock.Now, Logger: discardLogger})
	f.Cleanup(func() { l.Close() })
	cfg := l.Config()

	fields := []string{"provider", "customer", "dimension", "quantity", "time", "event_id"}
	f.Fuzz(func(t *testing.T, provider, customer, dimension string, quantity, offset int64, zeroTime bool, eventID string) {
		in := ledger.Record{Provider: marketplace.CloudProvider(provider), Customer: customer, Dimension: dimension,
			Quantity: quantity, Time: testNow.Add(time.Duration(offset)), EventID: eventID}
		if zeroTime {
			in.Time = time.Time{}
		}
		res, err := l.Ingest(t.Context(), []ledger.Record{in})
		stored := store.take()
		if err != nil {
			var ve *ledger.ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ledger.ErrInvalidRecord) {
				t.Fatalf("Ingest(%+v) = %v, want a *ValidationError", in, err)
			}
			if !slices.Contains(fields, ve.Field) || ve.Index != 0 || ve.Rule == "" {
				t.Fatalf("Ingest(%+v): error names record %d field %q rule %q", in, ve.Index, ve.Field, ve.Rule)
			}
			if len(stored) != 0 {
				t.Fatalf("refused record stored: %+v", stored)
			}
			return
		}
		if res.Accepted != 1 || len(stored) != 1 {
			t.Fatalf("Ingest(%+v) = %+v; stored %d records", in, res, len(stored))
		}
		got := stored[0]
		want := in
		if zeroTime {
			want.Time = testNow
		}
		if got.Provider != want.Provider || got.Customer != want.Customer || got.Dimension != want.Dimension ||
			got.Quantity != want.Quantity || !got.Time.Equal(want.Time) || got.EventID != want.EventID {
			t.Fatalf("stored %+v, want %+v", got, want)
		}
		// What was accepted obeys every rule.
		switch {
		case !got.Provider.Valid():
			t.Fatalf("accepted provider %q", got.Provider)
		case got.Customer == "" || len(got.Customer) > 256 || !utf8.ValidString(got.Customer):
			t.Fatalf("accepted customer %q", got.Customer)
		case got.Dimension == "" || len(got.Dimension) > 256 || !utf8.ValidString(got.Dimension):
			t.Fatalf("accepted dimension %q", got.Dimension)
		case len(got.EventID) > 256 || !utf8.ValidString(got.EventID):
			t.Fatalf("accepted event id %q", got.EventID)
		case got.Quantity < 0 || got.Quantity > 1<<53:
			t.Fatalf("accepted quantity %d", got.Quantity)
		case got.Time.After(testNow.Add(cfg.MaxFuture)) || got.Time.Before(testNow.Add(-cfg.MaxAge)):
			t.Fatalf("accepted time %v at %v", got.Time, testNow)
		}
	})
}

// FuzzDecodeDeltas decodes arbitrary log entries: never a panic; a corrupt
// entry fails with ErrCorruptLog, and CheckEntry (what a store asks before
// it folds or restores an entry) says so too; an Aggregator adds nothing of
// it; what decodes encodes and decodes again to the same deltas, and the
// Aggregator sums them per bucket.
func FuzzDecodeDeltas(f *testing.F) {
	h := ledger.HourOf(testNow)
	f.Add([]byte{})
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 200, 1})
	f.Add(ledger.EncodeDeltas(nil, []ledger.Delta{
		{BucketKey: ledger.BucketKey{SeriesKey: ledger.SeriesKey{Provider: marketplace.AWS, Customer: "c1", Dimension: "requests"}, Hour: h}, Quantity: 42},
		{BucketKey: ledger.BucketKey{SeriesKey: ledger.SeriesKey{Provider: marketplace.GCP, Customer: "", Dimension: "é"}, Hour: time.Unix(-1<<40, 0)}, Quantity: 1 << 53},
	}))
	f.Fuzz(func(t *testing.T, b []byte) {
		prefix := []ledger.Delta{{Quantity: -7}}
		ds, err := ledger.DecodeDeltas(slices.Clone(prefix), b)
		if len(ds) < 1 || ds[0].Quantity != -7 {
			t.Fatalf("DecodeDeltas lost what dst held: %+v", ds)
		}
		if cerr := ledger.CheckEntry(b); (cerr == nil) != (err == nil) {
			t.Fatalf("DecodeDeltas: %v, but CheckEntry: %v", err, cerr)
		}
		var agg ledger.Aggregator
		aerr := agg.AddEntry(b)
		if (aerr == nil) != (err == nil) {
			t.Fatalf("DecodeDeltas: %v, but Aggregator.AddEntry: %v", err, aerr)
		}
		if err != nil {
			if !errors.Is(err, ledger.ErrCorruptLog) {
				t.Fatalf("error %v does not match ErrCorruptLog", err)
			}
			if len(agg.Deltas()) != 0 {
				t.Fatalf("a corrupt entry added %+v to the aggregate", agg.Deltas())
			}
			return
		}
		ds = ds[1:]
		type bucket struct {
			ledger.SeriesKey
			hour int64
		}
		sums := map[bucket]int64{}
		for _, d := range ds {
			sums[bucket{d.SeriesKey, d.Hour.Unix()}] += d.Quantity
		}
		for _, d := range agg.Deltas() {
			k := bucket{d.SeriesKey, d.Hour.Unix()}
			if sums[k] != d.Quantity {
				t.Fatalf("aggregate %+v, decoded %+v", agg.Deltas(), ds)
			}
			delete(sums, k)
		}
		if len(sums) != 0 {
			t.Fatalf("aggregate %+v misses %+v", agg.Deltas(), sums)
		}
		again, err := ledger.DecodeDeltas(nil, ledger.EncodeDeltas(nil, ds))
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if len(again) != len(ds) {
			t.Fatalf("round trip: %d deltas, want %d", len(again), len(ds))
		}
		for i := range ds {
			a, b := ds[i], again[i]
			if a.SeriesKey != b.SeriesKey || !a.Hour.Equal(b.Hour) || a.Quantity != b.Quantity || a.Quantity < 0 {
				t.Fatalf("delta %d: %+v became %+v", i, a, b)
			}
		}
	})
}
