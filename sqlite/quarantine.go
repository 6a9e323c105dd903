package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/internal/tornrows"
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

// quarantineInbox moves the inbox rows rowids that still cannot be read to
// the quarantine, in tx: each as the JSON of its InboxRow with the reason
// it cannot be read, deleted from the inbox in the same commit. A row gone
// or readable when tx reads it again (a caller that read it outside tx
// raced with a restore, a mend or another quarantine) is left alone. It is
// the one way a torn inbox row leaves the inbox: ClaimNotifications,
// GetNotification and ListNotifications all use it. It returns how many
// rows it moved.
func quarantineInbox(ctx context.Context, tx *sql.Tx, rowids ...int64) (int, error) {
	moved := 0
	for _, id := range rowids {
		q, err := tornInboxRow(ctx, tx, id)
		if err != nil {
			return moved, err
		}
		if q == nil {
			continue
		}
		if err := quarantine(ctx, tx, *q); err != nil {
			return moved, err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM inbox WHERE rowid = ?`, id)
		if err != nil {
			return moved, err
		}
		if k, err := res.RowsAffected(); err != nil || k != 1 {
			return moved, errors.Join(err, fmt.Errorf("torn inbox row %d was not deleted", id))
		}
		moved++
	}
	return moved, nil
}

// tornInboxRow reads inbox row rowid in tx: nil if it is gone or can be
// read, else the row on its way into the quarantine.
func tornInboxRow(ctx context.Context, tx *sql.Tx, rowid int64) (*quarantined, error) {
	rows, err := tx.QueryContext(ctx, `SELECT `+inboxCols+` FROM inbox WHERE rowid = ?`, rowid)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	_, r, err := readInboxRow(rows)
	if !errors.Is(err, marketplace.ErrInvalidInput) {
		return nil, err
	}
	data, jerr := json.Marshal(r)
	if jerr != nil {
		return nil, jerr
	}
	return &quarantined{marketplace.QuarantineInbox, r.Provider + "/" + r.ID, data, err.Error()}, nil
}

// quarantineInboxRows is quarantineInbox in a write transaction of its
// own, for the readers (GetNotification, ListNotifications) that found
// torn rows outside one.
func (s *Store) quarantineInboxRows(ctx context.Context, rowids ...int64) (int, error) {
	var moved int
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		moved, err = quarantineInbox(ctx, tx, rowids...)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("quarantine torn inbox rows: %w", err)
	}
	return moved, nil
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
		err = tornrows.Restore(q, data, func(entry []byte) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO usage_log (data) VALUES (?)`, entry)
			return err
		}, func(n marketplace.Notification) (bool, error) {
			res, err := tx.ExecContext(ctx, `INSERT INTO inbox (`+inboxCols+`, lease_owner, lease_until)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', 0) ON CONFLICT DO NOTHING`,
				n.Provider, n.ID, n.Kind, n.Subject, unixMilli(n.Time), n.Payload, n.State, n.Attempts, unixMilli(n.NextAttempt),
				n.Progress, n.Reason, unixMilli(n.Received), unixMilli(n.Expires))
			if err != nil {
				return false, err
			}
			k, err := res.RowsAffected()
			return k == 1, err
		})
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM quarantine WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: restore quarantined row %d: %w", id, err)
	}
	return nil
}

// DiscardQuarantined implements marketplace.QuarantineStore. One statement
// deletes the row and returns it, so the row returned is exactly the row
// deleted, even with a restore or another discard racing it.
func (s *Store) DiscardQuarantined(ctx context.Context, id int64) (*marketplace.Quarantined, error) {
	var q marketplace.Quarantined
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		q, err = scanQuarantined(tx.QueryRowContext(ctx, `DELETE FROM quarantine WHERE id = ? RETURNING `+quarantineCols, id))
		if errors.Is(err, sql.ErrNoRows) {
			return notFound(fmt.Sprintf("quarantined row %d", id))
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: discard quarantined row %d: %w", id, err)
	}
	return &q, nil
}
