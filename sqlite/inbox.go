package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/internal/tornrows"
)

const inboxCols = `provider, id, kind, subject, event_time, payload, state, attempts, next_attempt, progress, reason, received, expires`

// readInboxRow reads the current row of rows: lead (columns before the
// inbox's, such as rowid), then the inbox columns, each as text (the
// driver converts integers), converted by marketplace.InboxRow so that
// every store reads a row by the same rules. A row that cannot be read
// comes back as far as it could be read, with an error wrapping
// marketplace.ErrInvalidInput that names it, never a panic.
func readInboxRow(rows *sql.Rows, lead ...any) (marketplace.Notification, marketplace.InboxRow, error) {
	var r marketplace.InboxRow
	err := rows.Scan(append(lead, &r.Provider, &r.ID, &r.Kind, &r.Subject, &r.Time, &r.Payload, &r.State, &r.Attempts,
		&r.NextAttempt, &r.Progress, &r.Reason, &r.Received, &r.Expires)...)
	if err != nil {
		// Not even text (a NULL, a number where bytes belong): read what
		// is there as it is, so the row can be named and kept.
		vals := make([]any, 13)
		dst := append([]any(nil), lead...)
		for i := range vals {
			dst = append(dst, &vals[i])
		}
		if err2 := rows.Scan(dst...); err2 != nil {
			return marketplace.Notification{}, r, errors.Join(err, err2)
		}
		text := func(v any) string {
			switch v := v.(type) {
			case nil:
				return ""
			case []byte:
				return string(v)
			default:
				return fmt.Sprint(v)
			}
		}
		r = marketplace.InboxRow{Provider: text(vals[0]), ID: text(vals[1]), Kind: text(vals[2]), Subject: text(vals[3]),
			Time: text(vals[4]), Payload: []byte(text(vals[5])), State: text(vals[6]), Attempts: text(vals[7]),
			NextAttempt: text(vals[8]), Progress: text(vals[9]), Reason: text(vals[10]), Received: text(vals[11]), Expires: text(vals[12])}
		return marketplace.Notification{}, r, fmt.Errorf("%w: inbox row %s/%s: %w", marketplace.ErrInvalidInput, r.Provider, r.ID, err)
	}
	n, err := r.Notification()
	return n, r, err
}

// AddNotification implements marketplace.NotificationInbox.
func (s *Store) AddNotification(ctx context.Context, n marketplace.Notification) (bool, error) {
	if !n.Provider.Valid() || n.ID == "" {
		return false, fmt.Errorf("sqlite: add notification: provider %q and id %q must be set", n.Provider, n.ID)
	}
	if n.Payload == nil {
		n.Payload = []byte{}
	}
	var first bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO inbox (`+inboxCols+`, lease_owner, lease_until)
			VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, '', '', ?, ?, '', 0) ON CONFLICT DO NOTHING`,
			n.Provider, n.ID, n.Kind, n.Subject, unixMilli(n.Time), n.Payload, unixMilli(n.Received), unixMilli(n.Received), unixMilli(n.Expires))
		if err != nil {
			return err
		}
		k, err := res.RowsAffected()
		first = k == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("sqlite: add notification %s/%s: %w", n.Provider, n.ID, err)
	}
	return first, nil
}

// ClaimNotifications implements marketplace.NotificationInbox.
func (s *Store) ClaimNotifications(ctx context.Context, c marketplace.NotificationClaim) ([]marketplace.Notification, error) {
	if c.Owner == "" || c.Limit <= 0 {
		return nil, fmt.Errorf("sqlite: claim notifications: owner %q and a positive limit are required", c.Owner)
	}
	now := c.Now.UnixMilli()
	var out []marketplace.Notification
	err := s.write(ctx, func(tx *sql.Tx) error {
		// A row that cannot be read is moved to the quarantine and the
		// query runs again, so the claim still returns up to Limit of the
		// others; the loop ends when a query finds no bad row.
		for {
			out = out[:0]
			rows, err := tx.QueryContext(ctx, `SELECT rowid, `+inboxCols+` FROM inbox
				WHERE state = 'pending' AND next_attempt <= ? AND (lease_owner = '' OR lease_owner = ? OR lease_until <= ?)
				ORDER BY event_time, received, provider, id LIMIT ?`, now, c.Owner, now, c.Limit)
			if err != nil {
				return err
			}
			var torn []int64
			for rows.Next() {
				var rowid int64
				n, _, err := readInboxRow(rows, &rowid)
				if errors.Is(err, marketplace.ErrInvalidInput) {
					torn = append(torn, rowid)
					continue
				}
				if err != nil {
					rows.Close()
					return err
				}
				out = append(out, n)
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				return err
			}
			if len(torn) == 0 {
				break
			}
			moved, err := quarantineInbox(ctx, tx, torn...)
			if err != nil {
				return err
			}
			// Not moved, a row would be read again, forever (in this
			// transaction nothing else can have mended or moved it).
			if moved != len(torn) {
				return fmt.Errorf("%d of %d torn inbox rows were not quarantined", len(torn)-moved, len(torn))
			}
		}
		for _, n := range out {
			if _, err := tx.ExecContext(ctx, `UPDATE inbox SET lease_owner = ?, lease_until = ? WHERE provider = ? AND id = ?`,
				c.Owner, c.Now.Add(c.Lease).UnixMilli(), n.Provider, n.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim notifications: %w", err)
	}
	return out, nil
}

// SettleNotification implements marketplace.NotificationInbox.
func (s *Store) SettleNotification(ctx context.Context, owner string, n marketplace.Notification) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE inbox SET state = ?, attempts = ?, next_attempt = ?, progress = ?, reason = ?,
			expires = ?, lease_owner = '', lease_until = 0 WHERE provider = ? AND id = ? AND lease_owner = ?`,
			n.State, n.Attempts, unixMilli(n.NextAttempt), n.Progress, n.Reason, unixMilli(n.Expires), n.Provider, n.ID, owner)
		if err != nil {
			return err
		}
		if k, err := res.RowsAffected(); err != nil || k == 1 {
			return err
		}
		return fmt.Errorf("notification %s/%s is not leased by %s: %w", n.Provider, n.ID, owner, marketplace.ErrVersionConflict)
	})
	if err != nil {
		return fmt.Errorf("sqlite: settle notification: %w", err)
	}
	return nil
}

// GetNotification implements marketplace.NotificationInbox. A row that
// cannot be read is moved to the quarantine (see quarantineInboxRows), and
// the notification is then not found: the error wraps
// marketplace.ErrNotFound and says why.
func (s *Store) GetNotification(ctx context.Context, p marketplace.CloudProvider, id string) (*marketplace.Notification, error) {
	n, err := tornrows.Get(func() (*marketplace.Notification, int64, error) { return s.getNotification(ctx, p, id) },
		func(rowid int64) (int, error) { return s.quarantineInboxRows(ctx, rowid) })
	if err != nil {
		return nil, fmt.Errorf("sqlite: get notification %s/%s: %w", p, id, err)
	}
	return n, nil
}

// getNotification reads one notification. A row that cannot be read is
// an error wrapping marketplace.ErrInvalidInput, with its rowid.
func (s *Store) getNotification(ctx context.Context, p marketplace.CloudProvider, id string) (*marketplace.Notification, int64, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT rowid, `+inboxCols+` FROM inbox WHERE provider = ? AND id = ?`, p, id)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, 0, err
		}
		return nil, 0, marketplace.ErrNotFound
	}
	var rowid int64
	n, _, err := readInboxRow(rows, &rowid)
	if err != nil {
		return nil, rowid, err
	}
	return &n, rowid, nil
}

// ListNotifications implements marketplace.NotificationInbox. A row that
// cannot be read (done or parked: a claim quarantines a pending one) is
// moved to the quarantine and the query runs again, so the list still
// holds up to limit of the others and one torn row does not hide them.
func (s *Store) ListNotifications(ctx context.Context, p marketplace.CloudProvider, state string, limit int) ([]marketplace.Notification, error) {
	out, err := tornrows.Read(func() ([]marketplace.Notification, []int64, error) {
		return s.listNotifications(ctx, p, state, limit)
	}, func(keys ...int64) (int, error) { return s.quarantineInboxRows(ctx, keys...) })
	if err != nil {
		return nil, fmt.Errorf("sqlite: list notifications: %w", err)
	}
	return out, nil
}

// listNotifications runs the list's query once. It returns the rows it
// could read, the rowids of those it could not, and an error wrapping
// marketplace.ErrInvalidInput naming them.
func (s *Store) listNotifications(ctx context.Context, p marketplace.CloudProvider, state string, limit int) ([]marketplace.Notification, []int64, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.r.QueryContext(ctx, `SELECT rowid, `+inboxCols+` FROM inbox WHERE (? = '' OR provider = ?) AND (? = '' OR state = ?)
		ORDER BY received, provider, id LIMIT ?`, p, p, state, state, limit)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var (
		out  []marketplace.Notification
		torn []int64
		errs []error
	)
	for rows.Next() {
		var rowid int64
		n, _, err := readInboxRow(rows, &rowid)
		if errors.Is(err, marketplace.ErrInvalidInput) {
			torn, errs = append(torn, rowid), append(errs, err)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	return out, torn, errors.Join(errs...)
}

// RequeueNotification implements marketplace.NotificationInbox.
func (s *Store) RequeueNotification(ctx context.Context, p marketplace.CloudProvider, id string, now time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE inbox SET state = 'pending', attempts = 0, next_attempt = ?, reason = '',
			lease_owner = '', lease_until = 0 WHERE provider = ? AND id = ? AND state = 'parked'`, now.UnixMilli(), p, id)
		if err != nil {
			return err
		}
		if k, err := res.RowsAffected(); err != nil || k == 1 {
			return err
		}
		return notFound(fmt.Sprintf("parked notification %s/%s", p, id))
	})
	if err != nil {
		return fmt.Errorf("sqlite: requeue notification: %w", err)
	}
	return nil
}

// PurgeNotifications implements marketplace.NotificationInbox: done
// notifications that expired before t.
func (s *Store) PurgeNotifications(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{`DELETE FROM inbox WHERE state = 'done' AND expires < ?`} {
			res, err := tx.ExecContext(ctx, q, t.UnixMilli())
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += k
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: purge notifications: %w", err)
	}
	return n, nil
}
