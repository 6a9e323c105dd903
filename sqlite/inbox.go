package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/saasmarket/marketplace"
)

const inboxCols = `provider, id, kind, subject, event_time, payload, state, attempts, next_attempt, progress, reason, received, expires`

func scanNotification(sc interface{ Scan(...any) error }) (*marketplace.Notification, error) {
	var (
		n                               marketplace.Notification
		provider                        string
		evTime, next, received, expires int64
	)
	if err := sc.Scan(&provider, &n.ID, &n.Kind, &n.Subject, &evTime, &n.Payload, &n.State, &n.Attempts, &next,
		&n.Progress, &n.Reason, &received, &expires); err != nil {
		return nil, err
	}
	n.Provider = marketplace.CloudProvider(provider)
	n.Time, n.NextAttempt, n.Received, n.Expires = fromMilli(evTime), fromMilli(next), fromMilli(received), fromMilli(expires)
	return &n, nil
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
		out = out[:0]
		rows, err := tx.QueryContext(ctx, `SELECT `+inboxCols+` FROM inbox
			WHERE state = 'pending' AND next_attempt <= ? AND (lease_owner = '' OR lease_owner = ? OR lease_until <= ?)
			ORDER BY event_time, received, provider, id LIMIT ?`, now, c.Owner, now, c.Limit)
		if err != nil {
			return err
		}
		for rows.Next() {
			n, err := scanNotification(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, *n)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return err
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

// GetNotification implements marketplace.NotificationInbox.
func (s *Store) GetNotification(ctx context.Context, p marketplace.CloudProvider, id string) (*marketplace.Notification, error) {
	n, err := scanNotification(s.r.QueryRowContext(ctx, `SELECT `+inboxCols+` FROM inbox WHERE provider = ? AND id = ?`, p, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("notification %s/%s", p, id))
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get notification %s/%s: %w", p, id, err)
	}
	return n, nil
}

// ListNotifications implements marketplace.NotificationInbox.
func (s *Store) ListNotifications(ctx context.Context, p marketplace.CloudProvider, state string, limit int) ([]marketplace.Notification, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+inboxCols+` FROM inbox WHERE (? = '' OR provider = ?) AND (? = '' OR state = ?)
		ORDER BY received, provider, id LIMIT ?`, p, p, state, state, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list notifications: %w", err)
	}
	defer rows.Close()
	var out []marketplace.Notification
	for rows.Next() {
		n, err := scanNotification(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list notifications: %w", err)
		}
		out = append(out, *n)
	}
	return out, rows.Err()
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
