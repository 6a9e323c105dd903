package ledger

import (
	"context"
	"fmt"

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

// SubmitUsage records every record or none: on error nothing was stored
// (a *ValidationError says which record broke which rule), except when the
// context ended while waiting for the commit, when the records may or may
// not have been stored.
func (m Meter) SubmitUsage(ctx context.Context, records []marketplace.UsageRecord) error {
	recs := make([]Record, len(records))
	for i, r := range records {
		recs[i] = Record{Provider: m.Provider, Customer: r.CustomerID, Dimension: r.Dimension, Quantity: r.Quantity, Time: r.Timestamp}
	}
	if _, err := m.Ledger.Ingest(ctx, recs); err != nil {
		return fmt.Errorf("%w: %s: %w", marketplace.ErrMeteringFailed, m.Provider, err)
	}
	return nil
}
