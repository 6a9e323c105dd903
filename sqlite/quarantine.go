package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

var _ marketplace.QuarantineStore = (*Store)(nil)

// quarantined is a row on its way into the quarantine.
type quarantined struct {
	source, ref string
	data        []byte
	reason      string
}

// quarantine inserts rows into the quarantine, in the caller's transaction,
// which also deletes them from where they were.
func quarantine(ctx context.Context, tx *sql.Tx, rows ...quarantined) error {
	at := time.Now().UnixMilli()
	for _, q := range rows {
		data := q.data
		if data == nil {
			data = []byte{}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO quarantine (source, ref, data, reason, at) VALUES (?, ?, ?, ?, ?)`,
			q.source, q.ref, data, q.reason, at); err != nil {
			return fmt.Errorf("quarantine %s %s: %w", q.source, q.ref, err)
		}
	}
	return nil
}

const quarantineCols = `id, source, ref, data, reason, at`

func scanQuarantined(sc interface{ Scan(...any) error }) (marketplace.Quarantined, error) {
	var (
		q  marketplace.Quarantined
		at int64
	)
	err := sc.Scan(&q.ID, &q.Source, &q.Ref, &q.Data, &q.Reason, &at)
	q.At = fromMilli(at)
	return q, err
}

// ListQuarantined implements marketplace.QuarantineStore.
func (s *Store) ListQuarantined(ctx context.Context, limit int) ([]marketplace.Quarantined, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+quarantineCols+` FROM quarantine ORDER BY id LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list quarantined: %w", err)
	}
	defer rows.Close()
	var out []marketplace.Quarantined
	for rows.Next() {
		q, err := scanQuarantined(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list quarantined: %w", err)
		}
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list quarantined: %w", err)
	}
	return out, nil
}

// GetQuarantined implements marketplace.QuarantineStore.
func (s *Store) GetQuarantined(ctx context.Context, id int64) (*marketplace.Quarantined, error) {
	q, err := scanQuarantined(s.r.QueryRowContext(ctx, `SELECT `+quarantineCols+` FROM quarantine WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("quarantined row %d", id))
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get quarantined %d: %w", id, err)
	}
	return &q, nil
}

// CountQuarantined implements marketplace.QuarantineStore.
func (s *Store) CountQuarantined(ctx context.Context) (map[string]int64, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT source, COUNT(*) FROM quarantine GROUP BY source`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: count quarantined: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var src string
		var n int64
		if err := rows.Scan(&src, &n); err != nil {
			return nil, fmt.Errorf("sqlite: count quarantined: %w", err)
		}
		out[src] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: count quarantined: %w", err)
	}
	return out, nil
}

// RestoreQuarantined implements marketplace.QuarantineStore.
func (s *Store) RestoreQuarantined(ctx context.Context, id int64, data []byte) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		q, err := scanQuarantined(tx.QueryRowContext(ctx, `SELECT `+quarantineCols+` FROM quarantine WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return notFound(fmt.Sprintf("quarantined row %d", id))
		}
		if err != nil {
			return err
		}
		if data == nil {
			data = q.Data
		}
		switch q.Source {
		case marketplace.QuarantineUsageLog:
			if err := ledger.CheckEntry(data); err != nil {
				return fmt.Errorf("%w: %w", marketplace.ErrInvalidInput, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO usage_log (data) VALUES (?)`, data); err != nil {
				return err
			}
		case marketplace.QuarantineInbox:
			n, err := marketplace.ParseInboxRow(data)
			if err != nil {
				return err
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO inbox (`+inboxCols+`, lease_owner, lease_until)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', 0) ON CONFLICT DO NOTHING`,
				n.Provider, n.ID, n.Kind, n.Subject, unixMilli(n.Time), n.Payload, n.State, n.Attempts, unixMilli(n.NextAttempt),
				n.Progress, n.Reason, unixMilli(n.Received), unixMilli(n.Expires))
			if err != nil {
				return err
			}
			if k, err := res.RowsAffected(); err != nil || k != 1 {
				return errors.Join(err, fmt.Errorf("%w: notification %s/%s is in the inbox again", marketplace.ErrInvalidInput, n.Provider, n.ID))
			}
		default:
			return fmt.Errorf("%w: unknown source %q", marketplace.ErrInvalidInput, q.Source)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM quarantine WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: restore quarantined row %d: %w", id, err)
	}
	return nil
}
