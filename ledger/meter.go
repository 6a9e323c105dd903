package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/saasmarket/marketplace"
)

// Meter is the marketplace.MeteringService of one cloud backed by the
// ledger: SubmitUsage records durably instead of calling the cloud, and a
// Reporter sends the sealed hours. Cloud providers' SubmitUsage delegates
// to it, and a UsageTracker can flush into it.
type Meter struct {
	Ledger   *Ledger
	Provider marketplace.CloudProvider
}

// SubmitUsage records every record or none. Its errors say which:
//
//   - an error wrapping marketplace.ErrOutcomeUnknown: the context ended
//     while the records were being committed, and the commit gave no verdict
//     within the ledger's VerdictWait; they may or may not be stored;
//   - any other error wraps marketplace.ErrMeteringFailed, and nothing was
//     stored (a *ValidationError says which record broke which rule).
//
// Under a context with an idempotency key (marketplace.WithIdempotencyKey),
// record i gets the event id "key:i", so a resubmission of the same batch
// under the same key is counted once (within the ledger's EventWindow).
func (m Meter) SubmitUsage(ctx context.Context, records []marketplace.UsageRecord) error {
	key, keyed := marketplace.IdempotencyKey(ctx)
	recs := make([]Record, len(records))
	for i, r := range records {
		recs[i] = Record{Provider: m.Provider, Customer: r.CustomerID, Dimension: r.Dimension, Quantity: r.Quantity, Time: r.Timestamp}
		if keyed {
			recs[i].EventID = key + ":" + strconv.Itoa(i)
		}
	}
	_, err := m.Ledger.Ingest(ctx, recs)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, marketplace.ErrOutcomeUnknown):
		return fmt.Errorf("ledger: %s usage: %w", m.Provider, err)
	default:
		return fmt.Errorf("%w: %s: %w", marketplace.ErrMeteringFailed, m.Provider, err)
	}
}
