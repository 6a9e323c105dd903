package postgres

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

var _ ledger.Store = (*Store)(nil)

// Append implements ledger.Store: event ids and the log entry are written
// in one transaction, so an id is marked seen exactly when its usage is
// stored. A commit adds one log row however many records it carries; Fold
// upserts the sums into buckets later, in batches. The ledger sorts the
// event ids, so transactions inserting overlapping ids lock them in the
// same order and cannot deadlock.
func (s *Store) Append(ctx context.Context, b *ledger.AppendBatch) ([]bool, error) {
	if len(b.EventIDs) == 0 {
		// No event ids: nothing to deduplicate, so one statement (its own
		// transaction) and one round trip.
		entry := b.Entry(nil)
		if entry == nil {
			return nil, nil
		}
		_, err := s.exec(ctx, "append", `INSERT INTO usage_log (data) VALUES ($1)`, entry)
		return nil, err
	}
	insert := s.insertEvents
	if s.upsertRun.Load() > 0 {
		s.upsertRun.Add(-1)
		insert = insertEventsUpsert
	}
	fresh, err := s.append(ctx, b, insert)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == uniqueViolation {
		// An id is stored already (a retry), or another process committed
		// it meanwhile: nothing was stored. Again, with ON CONFLICT; and so
		// for the next commits too, as retries come in runs.
		s.upsertRun.Store(upsertRun)
		fresh, err = s.append(ctx, b, insertEventsUpsert)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: append: %w", err)
	}
	return fresh, nil
}

// upsertRun is how many commits take the ON CONFLICT path after one whose
// fast insert met a stored id.
const upsertRun = 16

const uniqueViolation = "23505"

// eventInserter stores the sorted distinct ids of a commit, expiring at
// expires, and returns fresh[i], whether ids[i] was new.
type eventInserter func(ctx context.Context, tx pgx.Tx, ids []string, expires int64) ([]bool, error)

func (s *Store) append(ctx context.Context, b *ledger.AppendBatch, insert eventInserter) ([]bool, error) {
	var fresh []bool
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		if fresh, err = insert(ctx, tx, b.EventIDs, b.EventExpiry.UnixMilli()); err != nil {
			return err
		}
		entry := b.Entry(fresh)
		if entry == nil {
			return nil
		}
		_, err = tx.Exec(ctx, `INSERT INTO usage_log (data) VALUES ($1)`, entry)
		return err
	})
	return fresh, err
}

// insertEventsFast inserts ids with a plain INSERT, the ids as one array
// parameter: the fast path, which costs the server about a third less
// than checking each id first and about half as much as ON CONFLICT's
// speculative insertion (BENCHMARKS.md). An id already stored, or
// committed meanwhile by another transaction, fails the statement with a
// unique violation, and Append redoes the commit with insertEventsUpsert.
func insertEventsFast(ctx context.Context, tx pgx.Tx, ids []string, expires int64) ([]bool, error) {
	if _, err := tx.Exec(ctx, `INSERT INTO events (id, expires) SELECT id, $2 FROM unnest($1::text[]) AS id`, ids, expires); err != nil {
		return nil, err
	}
	fresh := make([]bool, len(ids))
	for i := range fresh {
		fresh[i] = true
	}
	return fresh, nil
}

// insertEventsUpsert inserts ids with ON CONFLICT DO NOTHING: an id that
// another transaction is inserting waits for it, then counts as seen.
func insertEventsUpsert(ctx context.Context, tx pgx.Tx, ids []string, expires int64) ([]bool, error) {
	rows, err := tx.Query(ctx, `INSERT INTO events (id, expires) SELECT id, $2 FROM unnest($1::text[]) AS id
		ON CONFLICT (id) DO NOTHING RETURNING id`, ids, expires)
	if err != nil {
		return nil, err
	}
	return collectIDs(rows, ids)
}

// insertEventsCopy does what insertEventsUpsert does through COPY into a
// temporary staging table, then one INSERT … SELECT. It is kept for the
// benchmark that compares the ways (BENCHMARKS.md); COPY saves nothing at
// the ledger's batch sizes and costs two more round trips.
func insertEventsCopy(ctx context.Context, tx pgx.Tx, ids []string, expires int64) ([]bool, error) {
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS events_stage (id TEXT COLLATE "C" NOT NULL) ON COMMIT DELETE ROWS`); err != nil {
		return nil, err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"events_stage"}, []string{"id"}, pgx.CopyFromSlice(len(ids), func(i int) ([]any, error) {
		return []any{ids[i]}, nil
	})); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `INSERT INTO events (id, expires) SELECT id, $1 FROM events_stage ORDER BY id
		ON CONFLICT (id) DO NOTHING RETURNING id`, expires)
	if err != nil {
		return nil, err
	}
	return collectIDs(rows, ids)
}

// collectIDs maps the ids an insert returned to their places in ids (sorted).
func collectIDs(rows pgx.Rows, ids []string) ([]bool, error) {
	fresh := make([]bool, len(ids))
	var id string
	_, err := pgx.ForEachRow(rows, []any{&id}, func() error {
		i, ok := slices.BinarySearch(ids, id)
		if !ok {
			return fmt.Errorf("insert returned event id %q that was not inserted", id)
		}
		fresh[i] = true
		return nil
	})
	return fresh, err
}

// lockLedger takes the ledger's advisory lock until tx ends: folding and
// sealing read and rewrite series state, so at most one runs at a time
// across all processes. Appends and claims do not take it.
func lockLedgerTx(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockLedger)
	return err
}

// Fold implements ledger.Store.
func (s *Store) Fold(ctx context.Context) ([]ledger.BucketDelta, error) {
	var added []ledger.BucketDelta
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := lockLedgerTx(ctx, tx); err != nil {
			return err
		}
		var err error
		added, err = fold(ctx, tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: fold: %w", err)
	}
	return added, nil
}

// fold moves the log into buckets. It deletes exactly the log rows it
// reads (DELETE … RETURNING), so an append committing meanwhile stays in the
// log for the next fold.
func fold(ctx context.Context, tx pgx.Tx) ([]ledger.BucketDelta, error) {
	rows, err := tx.Query(ctx, `DELETE FROM usage_log RETURNING seq, data`)
	if err != nil {
		return nil, err
	}
	var (
		agg     ledger.Aggregator
		seq     int64
		data    []byte
		n       int
		corrupt []quarantined
	)
	_, err = pgx.ForEachRow(rows, []any{&seq, &data}, func() error {
		n++
		// An entry the ledger cannot fold is moved aside (it is deleted
		// with the rest), not a reason to stop folding everyone else's
		// usage; AddEntry added none of it.
		if err := agg.AddEntry(data); err != nil {
			corrupt = append(corrupt, quarantined{marketplace.QuarantineUsageLog, fmt.Sprintf("seq %d", seq), bytes.Clone(data), err.Error()})
		}
		return nil
	})
	if err != nil || n == 0 {
		return nil, err
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
	var (
		provs, custs, dims []string
		hours, qs, lates   []int64
	)
	for _, d := range added {
		provs = append(provs, string(d.Provider))
		custs = append(custs, d.Customer)
		dims = append(dims, d.Dimension)
		hours = append(hours, d.Hour.Unix())
		qs = append(qs, d.Quantity)
		lates = append(lates, d.Late)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO buckets AS b (provider, customer, dimension, hour, quantity, late)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
		ON CONFLICT (provider, customer, dimension, hour)
		DO UPDATE SET quantity = b.quantity + excluded.quantity, late = b.late + excluded.late
		WHERE b.state = 'open'`, provs, custs, dims, hours, qs, lates)
	if err != nil {
		return nil, err
	}
	if n := tag.RowsAffected(); n != int64(len(added)) {
		// PlanFold only targets open hours; a sealed one here means the
		// series and buckets disagree. Refuse rather than lose usage.
		return nil, fmt.Errorf("%d of %d buckets to fold into are not open (series state is inconsistent)", int64(len(added))-n, len(added))
	}
	return added, nil
}

// loadSeries reads the stored state of the series named by keys.
func loadSeries(ctx context.Context, tx pgx.Tx, keys []ledger.SeriesKey) (map[ledger.SeriesKey]ledger.Series, error) {
	out := make(map[ledger.SeriesKey]ledger.Series)
	if len(keys) == 0 {
		return out, nil
	}
	provs, custs, dims := make([]string, len(keys)), make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		provs[i], custs[i], dims[i] = string(k.Provider), k.Customer, k.Dimension
	}
	rows, err := tx.Query(ctx, `SELECT s.provider, s.customer, s.dimension, s.sealed_until, s.carry
		FROM series s JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[], $3::text[])) AS k (provider, customer, dimension)
		USING (provider, customer, dimension)`, provs, custs, dims)
	if err != nil {
		return nil, err
	}
	return out, scanSeries(rows, out)
}

func scanSeries(rows pgx.Rows, into map[ledger.SeriesKey]ledger.Series) error {
	var (
		k            ledger.SeriesKey
		p            string
		until, carry int64
	)
	_, err := pgx.ForEachRow(rows, []any{&p, &k.Customer, &k.Dimension, &until, &carry}, func() error {
		k.Provider = marketplace.CloudProvider(p)
		into[k] = ledger.Series{SealedUntil: time.Unix(until, 0).UTC(), Carry: carry}
		return nil
	})
	return err
}

const bucketCols = `id, provider, customer, dimension, hour, quantity, late, state, units, report_id, attempts,
	next_attempt, maybe_applied, record_id, reason, sealed_at, done_at, attributes`

func scanBucket(row pgx.CollectableRow) (ledger.Bucket, error) {
	var (
		b                        ledger.Bucket
		hour, next, sealed, done int64
		provider, state          string
		attrs                    []byte
	)
	err := row.Scan(&b.ID, &provider, &b.Customer, &b.Dimension, &hour, &b.Quantity, &b.Late, &state, &b.Units,
		&b.ReportID, &b.Attempts, &next, &b.MaybeApplied, &b.RecordID, &b.Reason, &sealed, &done, &attrs)
	if err == nil && attrs != nil {
		if jerr := json.Unmarshal(attrs, &b.Attributes); jerr != nil {
			err = fmt.Errorf("bucket %d: attributes: %w", b.ID, jerr)
		}
	}
	b.Provider = marketplace.CloudProvider(provider)
	b.State = ledger.State(state)
	b.Hour = time.Unix(hour, 0).UTC()
	b.NextAttempt = fromMilli(next)
	b.SealedAt = fromMilli(sealed)
	b.DoneAt = fromMilli(done)
	return b, err
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func queryBuckets(ctx context.Context, q querier, query string, args ...any) ([]ledger.Bucket, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanBucket)
}

// Seal implements ledger.Store.
func (s *Store) Seal(ctx context.Context, req ledger.SealRequest) (ledger.SealResult, error) {
	var res ledger.SealResult
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := lockLedgerTx(ctx, tx); err != nil {
			return err
		}
		var err error
		if res.Folded, err = fold(ctx, tx); err != nil {
			return err
		}
		open, err := queryBuckets(ctx, tx, `SELECT `+bucketCols+` FROM buckets WHERE state = 'open' AND hour < $1
			AND ($2 = '' OR provider = $2) AND ($3 = '' OR customer = $3)`, req.Before.Unix(), string(req.Provider), req.Customer)
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
			rows, err := tx.Query(ctx, `SELECT provider, customer, dimension, sealed_until, carry FROM series WHERE provider = $1 AND customer = $2`,
				string(req.Provider), req.Customer)
			if err != nil {
				return err
			}
			if err := scanSeries(rows, series); err != nil {
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
		return ledger.SealResult{}, fmt.Errorf("postgres: seal: %w", err)
	}
	return res, nil
}

func writeSealPlan(ctx context.Context, tx pgx.Tx, plan ledger.SealPlan) error {
	var (
		ids, units, sealed, done []int64
		states, reportIDs        []string
	)
	for _, b := range plan.Buckets {
		if b.ID == 0 {
			_, err := tx.Exec(ctx, `INSERT INTO buckets (provider, customer, dimension, hour, quantity, state, units, report_id, sealed_at, done_at)
				VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8, $9)`, string(b.Provider), b.Customer, b.Dimension, b.Hour.Unix(),
				string(b.State), b.Units, b.ReportID, unixMilli(b.SealedAt), unixMilli(b.DoneAt))
			if err != nil {
				return fmt.Errorf("insert settlement bucket %s: %w", b.BucketKey, err)
			}
			continue
		}
		ids = append(ids, b.ID)
		states = append(states, string(b.State))
		units = append(units, b.Units)
		reportIDs = append(reportIDs, b.ReportID)
		sealed = append(sealed, unixMilli(b.SealedAt))
		done = append(done, unixMilli(b.DoneAt))
	}
	if len(ids) > 0 {
		tag, err := tx.Exec(ctx, `UPDATE buckets b SET state = u.state, units = u.units, report_id = u.report_id,
			sealed_at = u.sealed_at, done_at = u.done_at
			FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[])
				AS u (id, state, units, report_id, sealed_at, done_at)
			WHERE b.id = u.id AND b.state = 'open'`, ids, states, units, reportIDs, sealed, done)
		if err != nil {
			return err
		}
		if n := tag.RowsAffected(); n != int64(len(ids)) {
			return fmt.Errorf("%d of %d buckets to seal were not open", int64(len(ids))-n, len(ids))
		}
	}
	if len(plan.Series) == 0 {
		return nil
	}
	var (
		provs, custs, dims []string
		untils, carries    []int64
	)
	for k, sr := range plan.Series {
		provs = append(provs, string(k.Provider))
		custs = append(custs, k.Customer)
		dims = append(dims, k.Dimension)
		untils = append(untils, sr.SealedUntil.Unix())
		carries = append(carries, sr.Carry)
	}
	_, err := tx.Exec(ctx, `INSERT INTO series (provider, customer, dimension, sealed_until, carry)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
		ON CONFLICT (provider, customer, dimension) DO UPDATE SET sealed_until = excluded.sealed_until, carry = excluded.carry`,
		provs, custs, dims, untils, carries)
	return err
}

// Claim implements ledger.Store: the due buckets are locked with FOR UPDATE
// SKIP LOCKED, so concurrent claimants (in any process) each take other
// buckets without waiting for one another, and leased until req.Now +
// req.Lease. A lease that ran out is taken over like a free bucket, flagged
// as maybe applied: its holder may have sent it before it died.
func (s *Store) Claim(ctx context.Context, req ledger.ClaimRequest) ([]ledger.Bucket, error) {
	now := req.Now.UnixMilli()
	claimed, err := queryBuckets(ctx, s.pool, `UPDATE buckets b SET lease_owner = $1, lease_until = $2,
			maybe_applied = b.maybe_applied OR b.lease_owner <> ''
		FROM (SELECT id FROM buckets
			WHERE provider = $3 AND state = 'sealed' AND hour <= $4 AND next_attempt <= $5 AND lease_until <= $5
			ORDER BY hour, id LIMIT $6 FOR UPDATE SKIP LOCKED) c
		WHERE b.id = c.id
		RETURNING `+prefixCols("b.", bucketCols),
		req.Owner, req.Now.Add(req.Lease).UnixMilli(), string(req.Provider), req.Now.Unix(), now, req.Limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: claim: %w", err)
	}
	slices.SortFunc(claimed, func(a, b ledger.Bucket) int {
		return cmp.Or(a.Hour.Compare(b.Hour), cmp.Compare(a.ID, b.ID))
	})
	return claimed, nil
}

func prefixCols(prefix, cols string) string {
	parts := strings.Split(cols, ",")
	for i, p := range parts {
		parts[i] = prefix + strings.TrimSpace(p)
	}
	return strings.Join(parts, ", ")
}

// Complete implements ledger.Store, in one statement: an outcome applies
// only while owner still holds the bucket's lease.
func (s *Store) Complete(ctx context.Context, owner string, outs []ledger.Completion) error {
	if len(outs) == 0 {
		return nil
	}
	var (
		ids, nexts, attempted, done []int64
		states, recordIDs, reasons  []string
		maybe                       []bool
	)
	carry := make(map[int64]ledger.Completion)
	for _, c := range outs {
		ids = append(ids, c.BucketID)
		states = append(states, string(c.State))
		recordIDs = append(recordIDs, c.RecordID)
		reasons = append(reasons, c.Reason)
		nexts = append(nexts, unixMilli(c.NextAttempt))
		maybe = append(maybe, c.MaybeApplied)
		a := int64(0)
		if c.Attempted {
			a = 1
		}
		attempted = append(attempted, a)
		d := int64(0)
		if c.State.Final() {
			d = unixMilli(c.Now)
		}
		done = append(done, d)
		if c.CarryQuantity > 0 {
			carry[c.BucketID] = c
		}
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE buckets b SET state = u.state, record_id = u.record_id, reason = u.reason,
				next_attempt = u.next_attempt, maybe_applied = u.maybe_applied, attempts = b.attempts + u.attempted,
				lease_owner = '', lease_until = 0, done_at = u.done_at
			FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::boolean[], $7::bigint[], $8::bigint[])
				AS u (id, state, record_id, reason, next_attempt, maybe_applied, attempted, done_at)
			WHERE b.id = u.id AND b.lease_owner = $9 AND b.state = 'sealed'
			RETURNING b.id, b.provider, b.customer, b.dimension`,
			ids, states, recordIDs, reasons, nexts, maybe, attempted, done, owner)
		if err != nil {
			return err
		}
		var (
			carries []ledger.Delta
			id      int64
			k       ledger.SeriesKey
			p       string
		)
		// Outcomes whose lease moved on match no row: their new holder reports them.
		_, err = pgx.ForEachRow(rows, []any{&id, &p, &k.Customer, &k.Dimension}, func() error {
			if c, ok := carry[id]; ok {
				k.Provider = marketplace.CloudProvider(p)
				carries = append(carries, ledger.Delta{BucketKey: ledger.BucketKey{SeriesKey: k, Hour: c.CarryHour.UTC()}, Quantity: c.CarryQuantity})
			}
			return nil
		})
		if err != nil || len(carries) == 0 {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO usage_log (data) VALUES ($1)`, ledger.EncodeDeltas(nil, carries))
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: complete: %w", err)
	}
	return nil
}

// Freeze implements ledger.Store, in one statement: attributes are stored
// only where owner holds the lease and none are stored yet, and every
// bucket still held comes back with what it holds.
func (s *Store) Freeze(ctx context.Context, owner string, frozen []ledger.Frozen) ([]ledger.Frozen, error) {
	if len(frozen) == 0 {
		return nil, nil
	}
	ids := make([]int64, len(frozen))
	encs := make([]*string, len(frozen)) // nil (SQL NULL): nothing to freeze
	for i, f := range frozen {
		ids[i] = f.BucketID
		if len(f.Attributes) > 0 {
			b, err := json.Marshal(f.Attributes)
			if err != nil {
				return nil, fmt.Errorf("postgres: freeze bucket %d: %w", f.BucketID, err)
			}
			enc := string(b)
			encs[i] = &enc
		}
	}
	rows, err := s.pool.Query(ctx, `UPDATE buckets b SET attributes = COALESCE(b.attributes, u.attrs::jsonb)
		FROM unnest($1::bigint[], $2::text[]) AS u (id, attrs)
		WHERE b.id = u.id AND b.lease_owner = $3 AND b.state = 'sealed'
		RETURNING b.id, b.attributes`, ids, encs, owner)
	if err != nil {
		return nil, fmt.Errorf("postgres: freeze: %w", err)
	}
	held := make(map[int64]map[string]string, len(frozen))
	var (
		id    int64
		attrs []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &attrs}, func() error {
		var m map[string]string
		if attrs != nil {
			if err := json.Unmarshal(attrs, &m); err != nil {
				return fmt.Errorf("bucket %d: attributes: %w", id, err)
			}
		}
		held[id] = m
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: freeze: %w", err)
	}
	// In the order asked; a bucket whose lease moved on is left out.
	out := make([]ledger.Frozen, 0, len(held))
	for _, f := range frozen {
		if m, ok := held[f.BucketID]; ok {
			out = append(out, ledger.Frozen{BucketID: f.BucketID, Attributes: m})
		}
	}
	return out, nil
}

// Buckets implements ledger.Store.
func (s *Store) Buckets(ctx context.Context, f ledger.BucketFilter) ([]ledger.Bucket, error) {
	where, args := bucketsWhere(f)
	q := `SELECT ` + bucketCols + ` FROM buckets WHERE ` + where
	if f.NewestFirst {
		q += ` ORDER BY hour DESC, id DESC`
	} else {
		q += ` ORDER BY provider, customer, dimension, hour`
	}
	if f.Limit > 0 {
		q += ` LIMIT ` + strconv.Itoa(f.Limit)
	}
	out, err := queryBuckets(ctx, s.pool, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: buckets: %w", err)
	}
	return out, nil
}

// SumBuckets implements ledger.Store.
func (s *Store) SumBuckets(ctx context.Context, f ledger.BucketFilter) ([]ledger.BucketSum, error) {
	where, args := bucketsWhere(f)
	rows, err := s.pool.Query(ctx, `SELECT provider, dimension, hour, state, COUNT(*), SUM(quantity)::bigint
		FROM buckets WHERE `+where+` GROUP BY provider, dimension, hour, state ORDER BY provider, dimension, hour, state`, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: sum buckets: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ledger.BucketSum, error) {
		var (
			b     ledger.BucketSum
			p, st string
			hour  int64
		)
		err := row.Scan(&p, &b.Dimension, &hour, &st, &b.Buckets, &b.Quantity)
		b.Provider, b.Hour, b.State = marketplace.CloudProvider(p), time.Unix(hour, 0).UTC(), ledger.State(st)
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: sum buckets: %w", err)
	}
	return out, nil
}

// bucketsWhere is the condition that selects f's buckets (all but its
// order and limit), with its arguments.
func bucketsWhere(f ledger.BucketFilter) (string, []any) {
	states := make([]string, len(f.States))
	for i, st := range f.States {
		states[i] = string(st)
	}
	// The optional conditions are added only when set, so that the planner
	// sees plain comparisons it can match to an index (buckets_hour,
	// buckets_by_state) rather than ($n = '' OR ...).
	q := `true`
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return `$` + strconv.Itoa(len(args))
	}
	if f.Provider != "" {
		q += ` AND provider = ` + arg(string(f.Provider))
	}
	if f.Customer != "" {
		q += ` AND customer = ` + arg(f.Customer)
	}
	switch len(states) {
	case 0:
	case 1:
		q += ` AND state = ` + arg(states[0])
	default:
		q += ` AND state = ANY(` + arg(states) + `::text[])`
	}
	if !f.From.IsZero() {
		q += ` AND hour >= ` + arg(f.From.Unix())
	}
	if !f.Before.IsZero() {
		q += ` AND hour < ` + arg(f.Before.Unix())
	}
	if f.MinAttempts > 0 {
		q += ` AND attempts >= ` + arg(f.MinAttempts)
	}
	return q, args
}

// Backlog implements ledger.Store.
func (s *Store) Backlog(ctx context.Context) ([]ledger.Backlog, error) {
	rows, err := s.pool.Query(ctx, `SELECT provider, COUNT(*), MIN(hour) FROM buckets WHERE state = 'sealed' GROUP BY provider ORDER BY provider`)
	if err != nil {
		return nil, fmt.Errorf("postgres: backlog: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ledger.Backlog, error) {
		var (
			b    ledger.Backlog
			p    string
			hour int64
		)
		err := row.Scan(&p, &b.Sealed, &hour)
		b.Provider, b.OldestHour = marketplace.CloudProvider(p), time.Unix(hour, 0).UTC()
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: backlog: %w", err)
	}
	return out, nil
}

// PurgeEvents implements ledger.Store.
func (s *Store) PurgeEvents(ctx context.Context, t time.Time) (int64, error) {
	return s.exec(ctx, "purge events", `DELETE FROM events WHERE expires < $1`, t.UnixMilli())
}

// PurgeBuckets implements ledger.Store.
func (s *Store) PurgeBuckets(ctx context.Context, t time.Time) (int64, error) {
	return s.exec(ctx, "purge buckets", `DELETE FROM buckets WHERE state NOT IN ('open', 'sealed') AND done_at > 0 AND done_at < $1`, t.UnixMilli())
}
