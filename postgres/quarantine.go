package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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
func quarantine(ctx context.Context, tx pgx.Tx, rows ...quarantined) error {
	at := time.Now().UnixMilli()
	// TEXT takes neither NUL nor invalid UTF-8, which a reason quoting a
	// damaged row must not make a reason to fail the whole commit.
	text := func(s string) string { return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\\x00") }
	for _, q := range rows {
		data := q.data
		if data == nil {
			data = []byte{}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO quarantine (source, ref, data, reason, at) VALUES ($1, $2, $3, $4, $5)`,
			q.source, text(q.ref), data, text(q.reason), at); err != nil {
			return fmt.Errorf("quarantine %s %s: %w", q.source, q.ref, err)
		}
	}
	return nil
}

// inboxKey is an inbox row's primary key as stored.
type inboxKey struct{ provider, id string }

// quarantineInbox moves the inbox rows keys that still cannot be read to
// the quarantine, in tx: each as the JSON of its InboxRow with the reason
// it cannot be read, deleted from the inbox in the same commit. A row gone
// or readable when tx reads it again, locked (a caller that read it
// outside tx raced with a restore, a mend or another quarantine), is left
// alone. It is the one way a torn inbox row leaves the inbox:
// ClaimNotifications, GetNotification and ListNotifications all use it.
// It returns how many rows it moved.
func quarantineInbox(ctx context.Context, tx pgx.Tx, keys ...inboxKey) (int, error) {
	moved := 0
	for _, k := range keys {
		_, r, err := scanInboxRow(tx.QueryRow(ctx, `SELECT `+inboxText+` FROM inbox WHERE provider = $1 AND id = $2 FOR UPDATE`,
			k.provider, k.id))
		if err == nil || errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if !errors.Is(err, marketplace.ErrInvalidInput) {
			return moved, err
		}
		data, jerr := json.Marshal(r)
		if jerr != nil {
			return moved, jerr
		}
		if err := quarantine(ctx, tx, quarantined{marketplace.QuarantineInbox, r.Provider + "/" + r.ID, data, err.Error()}); err != nil {
			return moved, err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM inbox WHERE provider = $1 AND id = $2`, k.provider, k.id)
		if err != nil {
			return moved, err
		}
		if tag.RowsAffected() != 1 {
			return moved, fmt.Errorf("torn inbox row %s/%s was not deleted", k.provider, k.id)
		}
		moved++
	}
	return moved, nil
}

// quarantineInboxRows is quarantineInbox in a transaction of its own, for
// the readers (GetNotification, ListNotifications) that found torn rows
// outside one.
func (s *Store) quarantineInboxRows(ctx context.Context, keys ...inboxKey) (int, error) {
	var moved int
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		moved, err = quarantineInbox(ctx, tx, keys...)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("quarantine torn inbox rows: %w", err)
	}
	return moved, nil
}

const quarantineCols = `id, source, ref, data, reason, at`

func scanQuarantined(row pgx.Row) (marketplace.Quarantined, error) {
	var (
		q  marketplace.Quarantined
		at int64
	)
	err := row.Scan(&q.ID, &q.Source, &q.Ref, &q.Data, &q.Reason, &at)
	q.At = fromMilli(at)
	return q, err
}

// ListQuarantined implements marketplace.QuarantineStore.
func (s *Store) ListQuarantined(ctx context.Context, limit int) ([]marketplace.Quarantined, error) {
	q := `SELECT ` + quarantineCols + ` FROM quarantine ORDER BY id`
	if limit > 0 {
		q += ` LIMIT ` + strconv.Itoa(limit)
	}
	rows, err := s.pool.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("postgres: list quarantined: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (marketplace.Quarantined, error) { return scanQuarantined(row) })
	if err != nil {
		return nil, fmt.Errorf("postgres: list quarantined: %w", err)
	}
	return out, nil
}

// GetQuarantined implements marketplace.QuarantineStore.
func (s *Store) GetQuarantined(ctx context.Context, id int64) (*marketplace.Quarantined, error) {
	q, err := scanQuarantined(s.pool.QueryRow(ctx, `SELECT `+quarantineCols+` FROM quarantine WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("quarantined row %d", id))
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get quarantined %d: %w", id, err)
	}
	return &q, nil
}

// CountQuarantined implements marketplace.QuarantineStore.
func (s *Store) CountQuarantined(ctx context.Context) (map[string]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT source, COUNT(*) FROM quarantine GROUP BY source`)
	if err != nil {
		return nil, fmt.Errorf("postgres: count quarantined: %w", err)
	}
	out := map[string]int64{}
	var (
		src string
		n   int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&src, &n}, func() error { out[src] = n; return nil }); err != nil {
		return nil, fmt.Errorf("postgres: count quarantined: %w", err)
	}
	return out, nil
}

// RestoreQuarantined implements marketplace.QuarantineStore.
func (s *Store) RestoreQuarantined(ctx context.Context, id int64, data []byte) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		q, err := scanQuarantined(tx.QueryRow(ctx, `SELECT `+quarantineCols+` FROM quarantine WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound(fmt.Sprintf("quarantined row %d", id))
		}
		if err != nil {
			return err
		}
		err = tornrows.Restore(q, data, func(entry []byte) error {
			_, err := tx.Exec(ctx, `INSERT INTO usage_log (data) VALUES ($1)`, entry)
			return err
		}, func(n marketplace.Notification) (bool, error) {
			tag, err := tx.Exec(ctx, `INSERT INTO inbox (`+inboxCols+`)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING`,
				string(n.Provider), n.ID, n.Kind, n.Subject, unixMilli(n.Time), n.Payload, n.State, n.Attempts, unixMilli(n.NextAttempt),
				n.Progress, n.Reason, unixMilli(n.Received), unixMilli(n.Expires))
			return tag.RowsAffected() == 1, err
		})
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM quarantine WHERE id = $1`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: restore quarantined row %d: %w", id, err)
	}
	return nil
}

// DiscardQuarantined implements marketplace.QuarantineStore. One statement
// deletes the row and returns it, so the row returned is exactly the row
// deleted, even with a restore or another discard racing it.
func (s *Store) DiscardQuarantined(ctx context.Context, id int64) (*marketplace.Quarantined, error) {
	var q marketplace.Quarantined
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		q, err = scanQuarantined(tx.QueryRow(ctx, `DELETE FROM quarantine WHERE id = $1 RETURNING `+quarantineCols, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound(fmt.Sprintf("quarantined row %d", id))
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: discard quarantined row %d: %w", id, err)
	}
	return &q, nil
}
