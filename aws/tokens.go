package aws

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// TokensDimension is the dimension TokenBillingTracker bills: millions of
// tokens.
const TokensDimension = "tokens_1m"

// TokenBillingTracker counts an AI API's tokens per customer and hands
// them to the ledger, which bills whole millions per hour under
// TokensDimension and carries the remainder to the next hour (never
// rounding up). The ledger must be configured with
// Units{"tokens_1m": 1_000_000} (or "aws/tokens_1m").
type TokenBillingTracker struct {
	productCode string
	ledger      *ledger.Ledger

	mu      sync.Mutex
	pending map[string]int64
}

// NewTokenBillingTracker returns a tracker recording into l.
func NewTokenBillingTracker(productCode string, l *ledger.Ledger) *TokenBillingTracker {
	return &TokenBillingTracker{productCode: productCode, ledger: l, pending: map[string]int64{}}
}

// RecordUsage adds a request's tokens for customer (the ledger customer id).
func (t *TokenBillingTracker) RecordUsage(customer string, inputTokens, outputTokens int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending[customer] += int64(max(inputTokens, 0)) + int64(max(outputTokens, 0))
}

// Snapshot returns the tokens not yet flushed, one record per customer,
// with Quantity in tokens.
func (t *TokenBillingTracker) Snapshot() []UsageRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]UsageRecord, 0, len(t.pending))
	for c, n := range t.pending {
		out = append(out, UsageRecord{CustomerIdentifier: c, Dimension: TokensDimension, Quantity: int(n)})
	}
	slices.SortFunc(out, func(a, b UsageRecord) int { return strings.Compare(a.CustomerIdentifier, b.CustomerIdentifier) })
	return out
}

// Flush records the pending tokens durably in the ledger; its Results
// list what was recorded (Quantity in tokens, status Success). On error
// nothing was recorded and the tokens stay pending.
func (t *TokenBillingTracker) Flush(ctx context.Context) (*BatchMeterUsageOutput, error) {
	// Swap the counts out, so recording never waits for the ledger's commit.
	t.mu.Lock()
	pending := t.pending
	t.pending = map[string]int64{}
	t.mu.Unlock()
	out := &BatchMeterUsageOutput{Results: []UsageRecordResult{}}
	now := t.ledger.Config().Clock()
	recs := make([]marketplace.UsageRecord, 0, len(pending))
	for c, n := range pending {
		if n > 0 {
			recs = append(recs, marketplace.UsageRecord{CustomerID: c, Dimension: TokensDimension, Quantity: n, Timestamp: now})
		}
	}
	if len(recs) == 0 {
		return out, nil
	}
	if err := (ledger.Meter{Ledger: t.ledger, Provider: marketplace.AWS}).SubmitUsage(ctx, recs); err != nil {
		t.mu.Lock()
		for c, n := range pending {
			t.pending[c] += n
		}
		t.mu.Unlock()
		return nil, fmt.Errorf("aws: flush tokens: %w", err)
	}
	for _, r := range recs {
		out.Results = append(out.Results, UsageRecordResult{MeteringStatus: StatusSuccess,
			UsageRecord: UsageRecord{CustomerIdentifier: r.CustomerID, Dimension: TokensDimension, Quantity: int(r.Quantity), Timestamp: now.Truncate(time.Hour)}})
	}
	return out, nil
}
