package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

var _ ledger.Store = (*Store)(nil)

// eventChunk is the number of event ids per INSERT statement (two
// parameters each, well under SQLite's limit of 32766).
const eventChunk = 500

// Append implements ledger.Store: event ids and the log entry are written
// in one transaction, so an id is marked seen exactly when its usage is
// stored.
func (s *Store) Append(ctx context.Context, b *ledger.AppendBatch) ([]bool, error) {
	var fresh []bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		if fresh, err = insertEvents(ctx, tx, b.EventIDs, b.EventExpiry); err != nil {
			return err
		}
		entry := b.Entry(fresh)
		if entry == nil {
			return nil
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO usage_log (data) VALUES (?)`, entry)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: append: %w", err)
	}
	return fresh, nil
}

// insertEvents inserts the distinct event ids ids and returns, per id,
// whether it was new.
func insertEvents(ctx context.Context, tx *sql.Tx, ids []string, expiry time.Time) ([]bool, error) {
	fresh := make([]bool, len(ids))
	if len(ids) == 0 {
		return fresh, nil
	}
	exp := expiry.UnixMilli()
	args := make([]any, 0, 2*eventChunk)
	pos := make(map[string]int, min(len(ids), eventChunk))
	for off := 0; off < len(ids); off += eventChunk {
		chunk := ids[off:min(off+eventChunk, len(ids))]
		args = args[:0]
		clear(pos)
		for i, id := range chunk {
			args = append(args, id, exp)
			pos[id] = off + i
		}
		q := `INSERT INTO events (id, expires) VALUES ` + strings.Repeat("(?,?),", len(chunk)-1) + `(?,?) ON CONFLICT (id) DO NOTHING RETURNING id`
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			i, ok := pos[id]
			if !ok {
				rows.Close()
				return nil, fmt.Errorf("insert returned event id %q that was not inserted", id)
			}
			fresh[i] = true
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, err
		}
	}
	return fresh, nil
}

// Fold implements ledger.Store.
func (s *Store) Fold(ctx context.Context) ([]ledger.BucketDelta, error) {
	var added []ledger.BucketDelta
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		added, err = fold(ctx, tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: fold: %w", err)
	}
	return added, nil
}

func fold(ctx context.Context, tx *sql.Tx) ([]ledger.BucketDelta, error) {
	rows, err := tx.QueryContext(ctx, `SELECT seq, data FROM usage_log ORDER BY seq`)
	if err != nil {
		return nil, err
	}
	var (
		agg     ledger.Aggregator
		last    int64
		corrupt []quarantined
	)
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&last, &data); err != nil {
			rows.Close()
			return nil, err
		}
		// An entry the ledger cannot fold is moved aside, not a reason to
		// stop folding everyone else's usage; AddEntry added none of it.
		if err := agg.AddEntry(data); err != nil {
			corrupt = append(corrupt, quarantined{marketplace.QuarantineUsageLog, fmt.Sprintf("seq %d", last), data, err.Error()})
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	if last == 0 {
		return nil, nil
	}
	if err := quarantine(ctx, tx, corrupt...); err != nil {
		return nil, err
	}
	deltas := agg.Deltas()
	keys := make([]ledger.SeriesKey, 0, len(deltas))
	for _, d := range deltas {
		keys = append(keys, d.SeriesKey)
	}
	series, err := loadSeries(ctx, tx, keys)
	if err != nil {
		return nil, err
	}
	added := ledger.PlanFold(deltas, series)
	up, err := tx.PrepareContext(ctx, `INSERT INTO buckets (provider, customer, dimension, hour, quantity, late) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (provider, customer, dimension, hour) DO UPDATE SET quantity = quantity + excluded.quantity, late = late + excluded.late
		WHERE state = 'open'`)
	if err != nil {
		return nil, err
	}
	defer up.Close()
	for _, d := range added {
		res, err := up.ExecContext(ctx, d.Provider, d.Customer, d.Dimension, d.Hour.Unix(), d.Quantity, d.Late)
		if err != nil {
			return nil, err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			// PlanFold only targets open hours; a sealed one here means the
			// series and buckets disagree. Refuse rather than lose usage.
			return nil, fmt.Errorf("bucket %s is not open (series state is inconsistent)", d.BucketKey)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM usage_log WHERE seq <= ?`, last); err != nil {
		return nil, err
	}
	return added, nil
}

func loadSeries(ctx context.Context, tx *sql.Tx, keys []ledger.SeriesKey) (map[ledger.SeriesKey]ledger.Series, error) {
	out := make(map[ledger.SeriesKey]ledger.Series)
	if len(keys) == 0 {
		return out, nil
	}
	st, err := tx.PrepareContext(ctx, `SELECT sealed_until, carry FROM series WHERE provider = ? AND customer = ? AND dimension = ?`)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	looked := make(map[ledger.SeriesKey]bool, len(keys))
	for _, k := range keys {
		if looked[k] {
			continue
		}
		looked[k] = true
		var until, carry int64
		err := st.QueryRowContext(ctx, k.Provider, k.Customer, k.Dimension).Scan(&until, &carry)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[k] = ledger.Series{SealedUntil: time.Unix(until, 0).UTC(), Carry: carry}
	}
	return out, nil
}

const bucketCols = `id, provider, customer, dimension, hour, quantity, late, state, units, report_id, attempts,
	next_attempt, maybe_applied, record_id, reason, sealed_at, done_at, attributes`

func scanBucket(sc interface{ Scan(...any) error }) (ledger.Bucket, error) {
	var (
		b                        ledger.Bucket
		hour, next, sealed, done int64
		maybe                    int
		provider, state, attrs   string
	)
	err := sc.Scan(&b.ID, &provider, &b.Customer, &b.Dimension, &hour, &b.Quantity, &b.Late, &state, &b.Units,
		&b.ReportID, &b.Attempts, &next, &maybe, &b.RecordID, &b.Reason, &sealed, &done, &attrs)
	if err == nil && attrs != "" {
		if jerr := json.Unmarshal([]byte(attrs), &b.Attributes); jerr != nil {
			err = fmt.Errorf("bucket %d: attributes: %w", b.ID, jerr)
		}
	}
	b.Provider = marketplace.CloudProvider(provider)
	b.State = ledger.State(state)
	b.Hour = time.Unix(hour, 0).UTC()
	b.NextAttempt = fromMilli(next)
	b.MaybeApplied = maybe != 0
	b.SealedAt = fromMilli(sealed)
	b.DoneAt = fromMilli(done)
	return b, err
}

func queryBuckets(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, query string, args ...any) ([]ledger.Bucket, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ledger.Bucket
	for rows.Next() {
		b, err := scanBucket(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// Seal implements ledger.Store.
func (s *Store) Seal(ctx context.Context, req ledger.SealRequest) (ledger.SealResult, error) {
	var res ledger.SealResult
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		if res.Folded, err = fold(ctx, tx); err != nil {
			return err
		}
		q := `SELECT ` + bucketCols + ` FROM buckets WHERE state = 'open' AND hour < ?`
		args := []any{req.Before.Unix()}
		if req.Provider != "" {
			q += ` AND provider = ?`
			args = append(args, req.Provider)
		}
		if req.Customer != "" {
			q += ` AND customer = ?`
			args = append(args, req.Customer)
		}
		open, err := queryBuckets(ctx, tx, q, args...)
		if err != nil {
			return err
		}
		keys := make([]ledger.SeriesKey, 0, len(open))
		for _, b := range open {
			keys = append(keys, b.SeriesKey)
		}
		series, err := loadSeries(ctx, tx, keys)
		if err != nil {
			return err
		}
		if req.Final {
			rows, err := tx.QueryContext(ctx, `SELECT provider, customer, dimension, sealed_until, carry FROM series WHERE provider = ? AND customer = ?`, req.Provider, req.Customer)
			if err != nil {
				return err
			}
			for rows.Next() {
				var k ledger.SeriesKey
				var until, carry int64
				if err := rows.Scan(&k.Provider, &k.Customer, &k.Dimension, &until, &carry); err != nil {
					rows.Close()
					return err
				}
				series[k] = ledger.Series{SealedUntil: time.Unix(until, 0).UTC(), Carry: carry}
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				return err
			}
		}
		plan := ledger.PlanSeal(open, series, req)
		if err := writeSealPlan(ctx, tx, plan); err != nil {
			return err
		}
		res.Sealed = plan.Buckets
		return nil
	})
	if err != nil {
		return ledger.SealResult{}, fmt.Errorf("sqlite: seal: %w", err)
	}
	return res, nil
}

func writeSealPlan(ctx context.Context, tx *sql.Tx, plan ledger.SealPlan) error {
	upd, err := tx.PrepareContext(ctx, `UPDATE buckets SET state = ?, units = ?, report_id = ?, sealed_at = ?, done_at = ? WHERE id = ? AND state = 'open'`)
	if err != nil {
		return err
	}
	defer upd.Close()
	for _, b := range plan.Buckets {
		if b.ID == 0 {
			_, err := tx.ExecContext(ctx, `INSERT INTO buckets (provider, customer, dimension, hour, quantity, state, units, report_id, sealed_at, done_at)
				VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?)`, b.Provider, b.Customer, b.Dimension, b.Hour.Unix(), b.State, b.Units, b.ReportID, unixMilli(b.SealedAt), unixMilli(b.DoneAt))
			if err != nil {
				return fmt.Errorf("insert settlement bucket %s: %w", b.BucketKey, err)
			}
			continue
		}
		res, err := upd.ExecContext(ctx, b.State, b.Units, b.ReportID, unixMilli(b.SealedAt), unixMilli(b.DoneAt), b.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("bucket %s was not open", b.BucketKey)
		}
	}
	ups, err := tx.PrepareContext(ctx, `INSERT INTO series (provider, customer, dimension, sealed_until, carry) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (provider, customer, dimension) DO UPDATE SET sealed_until = excluded.sealed_until, carry = excluded.carry`)
	if err != nil {
		return err
	}
	defer ups.Close()
	for k, sr := range plan.Series {
		if _, err := ups.ExecContext(ctx, k.Provider, k.Customer, k.Dimension, sr.SealedUntil.Unix(), sr.Carry); err != nil {
			return err
		}
	}
	return nil
}

// Claim implements ledger.Store. SQLite has one writer at a time, so the
// select and the lease update cannot interleave with another claim.
func (s *Store) Claim(ctx context.Context, req ledger.ClaimRequest) ([]ledger.Bucket, error) {
	var claimed []ledger.Bucket
	now := req.Now.UnixMilli()
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		claimed, err = queryBuckets(ctx, tx, `SELECT `+bucketCols+` FROM buckets
			WHERE provider = ? AND state = 'sealed' AND hour <= ? AND next_attempt <= ? AND lease_until <= ?
			ORDER BY hour, id LIMIT ?`, req.Provider, req.Now.Unix(), now, now, req.Limit)
		if err != nil || len(claimed) == 0 {
			return err
		}
		// A lease still named here ran out without a Complete: its holder
		// may have sent the bucket, so it may have been applied.
		st, err := tx.PrepareContext(ctx, `UPDATE buckets SET lease_owner = ?, lease_until = ?,
			maybe_applied = (maybe_applied OR lease_owner != '') WHERE id = ? RETURNING maybe_applied`)
		if err != nil {
			return err
		}
		defer st.Close()
		until := req.Now.Add(req.Lease).UnixMilli()
		for i := range claimed {
			if err := st.QueryRowContext(ctx, req.Owner, until, claimed[i].ID).Scan(&claimed[i].MaybeApplied); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim: %w", err)
	}
	return claimed, nil
}

// Complete implements ledger.Store.
func (s *Store) Complete(ctx context.Context, owner string, outs []ledger.Completion) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `UPDATE buckets SET state = ?, record_id = ?, reason = ?, next_attempt = ?,
			maybe_applied = ?, attempts = attempts + ?, lease_owner = '', lease_until = 0, done_at = ?
			WHERE id = ? AND lease_owner = ? AND state = 'sealed'
			RETURNING provider, customer, dimension`)
		if err != nil {
			return err
		}
		defer st.Close()
		var carries []ledger.Delta
		for _, c := range outs {
			done := int64(0)
			if c.State.Final() {
				done = unixMilli(c.Now)
			}
			var k ledger.SeriesKey
			attempted := 0
			if c.Attempted {
				attempted = 1
			}
			err := st.QueryRowContext(ctx, c.State, c.RecordID, c.Reason, unixMilli(c.NextAttempt), c.MaybeApplied, attempted, done, c.BucketID, owner).
				Scan(&k.Provider, &k.Customer, &k.Dimension)
			if errors.Is(err, sql.ErrNoRows) {
				continue // the lease moved on; its new holder reports it
			}
			if err != nil {
				return err
			}
			if c.CarryQuantity > 0 {
				carries = append(carries, ledger.Delta{BucketKey: ledger.BucketKey{SeriesKey: k, Hour: c.CarryHour.UTC()}, Quantity: c.CarryQuantity})
			}
		}
		if len(carries) > 0 {
			_, err := tx.ExecContext(ctx, `INSERT INTO usage_log (data) VALUES (?)`, ledger.EncodeDeltas(nil, carries))
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: complete: %w", err)
	}
	return nil
}

// Freeze implements ledger.Store.
func (s *Store) Freeze(ctx context.Context, owner string, frozen []ledger.Frozen) ([]ledger.Frozen, error) {
	var held []ledger.Frozen
	err := s.write(ctx, func(tx *sql.Tx) error {
		held = held[:0]
		st, err := tx.PrepareContext(ctx, `UPDATE buckets SET attributes = CASE WHEN attributes = '' THEN ? ELSE attributes END
			WHERE id = ? AND lease_owner = ? AND state = 'sealed' RETURNING attributes`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, f := range frozen {
			enc := ""
			if len(f.Attributes) > 0 {
				b, err := json.Marshal(f.Attributes)
				if err != nil {
					return err
				}
				enc = string(b)
			}
			var stored string
			err := st.QueryRowContext(ctx, enc, f.BucketID, owner).Scan(&stored)
			if errors.Is(err, sql.ErrNoRows) {
				continue // the lease moved on
			}
			if err != nil {
				return err
			}
			h := ledger.Frozen{BucketID: f.BucketID}
			if stored != "" {
				if err := json.Unmarshal([]byte(stored), &h.Attributes); err != nil {
					return fmt.Errorf("bucket %d: attributes: %w", f.BucketID, err)
				}
			}
			held = append(held, h)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: freeze: %w", err)
	}
	return held, nil
}

// Buckets implements ledger.Store.
func (s *Store) Buckets(ctx context.Context, f ledger.BucketFilter) ([]ledger.Bucket, error) {
	q, args := bucketsQuery(f)
	out, err := queryBuckets(ctx, s.r, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: buckets: %w", err)
	}
	return out, nil
}

// SumBuckets implements ledger.Store.
func (s *Store) SumBuckets(ctx context.Context, f ledger.BucketFilter) ([]ledger.BucketSum, error) {
	q, args := sumBucketsQuery(f)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: sum buckets: %w", err)
	}
	defer rows.Close()
	var out []ledger.BucketSum
	for rows.Next() {
		var b ledger.BucketSum
		var hour int64
		if err := rows.Scan(&b.Provider, &b.Dimension, &hour, &b.State, &b.Buckets, &b.Quantity); err != nil {
			return nil, fmt.Errorf("sqlite: sum buckets: %w", err)
		}
		b.Hour = time.Unix(hour, 0).UTC()
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: sum buckets: %w", err)
	}
	return out, nil
}

// sumBucketsQuery is SumBuckets' query (apart, so that plan_test checks its
// plan).
func sumBucketsQuery(f ledger.BucketFilter) (string, []any) {
	where, args := bucketsWhere(f)
	return `SELECT provider, dimension, hour, state, COUNT(*), SUM(quantity) FROM buckets WHERE ` + where +
		` GROUP BY provider, dimension, hour, state ORDER BY provider, dimension, hour, state`, args
}

// bucketsQuery is Buckets' query (apart, so that plan_test checks its plan).
func bucketsQuery(f ledger.BucketFilter) (string, []any) {
	where, args := bucketsWhere(f)
	q := `SELECT ` + bucketCols + ` FROM buckets WHERE ` + where
	if f.NewestFirst {
		// buckets_by_state (provider, state, hour) yields this order for
		// one provider and state without sorting: its entries end in the
		// rowid, which is id.
		q += ` ORDER BY hour DESC, id DESC`
	} else {
		q += ` ORDER BY provider, customer, dimension, hour`
	}
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	return q, args
}

// bucketsWhere is the condition that selects f's buckets (all but its
// order and limit).
func bucketsWhere(f ledger.BucketFilter) (string, []any) {
	q := `1 = 1`
	var args []any
	if f.Provider != "" {
		q += ` AND provider = ?`
		args = append(args, f.Provider)
	}
	if f.Customer != "" {
		q += ` AND customer = ?`
		args = append(args, f.Customer)
	}
	if len(f.States) > 0 {
		q += ` AND state IN (?` + strings.Repeat(",?", len(f.States)-1) + `)`
		for _, st := range f.States {
			args = append(args, st)
		}
	}
	if !f.From.IsZero() {
		q += ` AND hour >= ?`
		args = append(args, f.From.Unix())
	}
	if !f.Before.IsZero() {
		q += ` AND hour < ?`
		args = append(args, f.Before.Unix())
	}
	if f.MinAttempts > 0 {
		q += ` AND attempts >= ?`
		args = append(args, f.MinAttempts)
	}
	return q, args
}

// Backlog implements ledger.Store.
func (s *Store) Backlog(ctx context.Context) ([]ledger.Backlog, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT provider, COUNT(*), MIN(hour) FROM buckets WHERE state = 'sealed' GROUP BY provider ORDER BY provider`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: backlog: %w", err)
	}
	defer rows.Close()
	var out []ledger.Backlog
	for rows.Next() {
		var b ledger.Backlog
		var hour int64
		if err := rows.Scan(&b.Provider, &b.Sealed, &hour); err != nil {
			return nil, fmt.Errorf("sqlite: backlog: %w", err)
		}
		b.OldestHour = time.Unix(hour, 0).UTC()
		out = append(out, b)
	}
	return out, rows.Err()
}

// PurgeEvents implements ledger.Store.
func (s *Store) PurgeEvents(ctx context.Context, t time.Time) (int64, error) {
	return s.purge(ctx, "events", t)
}

// PurgeBuckets implements ledger.Store.
func (s *Store) PurgeBuckets(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM buckets WHERE state NOT IN ('open', 'sealed') AND done_at > 0 AND done_at < ?`, t.UnixMilli())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: purge buckets: %w", err)
	}
	return n, nil
}

// purge deletes the rows of table (events or notifications) that expired before t.
func (s *Store) purge(ctx context.Context, table string, t time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE expires < ?`, t.UnixMilli())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: purge %s: %w", table, err)
	}
	return n, nil
}
