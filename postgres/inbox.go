package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/saasmarket/marketplace"
)

const inboxCols = `provider, id, kind, subject, event_time, payload, state, attempts, next_attempt, progress, reason, received, expires`

func scanNotification(row pgx.Row) (*marketplace.Notification, error) {
	var (
		n                               marketplace.Notification
		provider                        string
		evTime, next, received, expires int64
	)
	if err := row.Scan(&provider, &n.ID, &n.Kind, &n.Subject, &evTime, &n.Payload, &n.State, &n.Attempts, &next,
		&n.Progress, &n.Reason, &received, &expires); err != nil {
		return nil, err
	}
	n.Provider = marketplace.CloudProvider(provider)
	n.Time, n.NextAttempt, n.Received, n.Expires = fromMilli(evTime), fromMilli(next), fromMilli(received), fromMilli(expires)
	return &n, nil
}

func collectNotifications(rows pgx.Rows) ([]marketplace.Notification, error) {
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (marketplace.Notification, error) {
		n, err := scanNotification(row)
		if err != nil {
			return marketplace.Notification{}, err
		}
		return *n, nil
	})
}

// AddNotification implements marketplace.NotificationInbox.
func (s *Store) AddNotification(ctx context.Context, n marketplace.Notification) (bool, error) {
	if !n.Provider.Valid() || n.ID == "" {
		return false, fmt.Errorf("postgres: add notification: provider %q and id %q must be set", n.Provider, n.ID)
	}
	if n.Payload == nil {
		n.Payload = []byte{}
	}
	k, err := s.exec(ctx, "add notification "+string(n.Provider)+"/"+n.ID, `INSERT INTO inbox (`+inboxCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, '', '', $7, $8) ON CONFLICT DO NOTHING`,
		string(n.Provider), n.ID, n.Kind, n.Subject, unixMilli(n.Time), n.Payload, unixMilli(n.Received), unixMilli(n.Expires))
	return k == 1, err
}

// ClaimNotifications implements marketplace.NotificationInbox, with FOR
// UPDATE SKIP LOCKED as Claim does for buckets.
func (s *Store) ClaimNotifications(ctx context.Context, c marketplace.NotificationClaim) ([]marketplace.Notification, error) {
	if c.Owner == "" || c.Limit <= 0 {
		return nil, fmt.Errorf("postgres: claim notifications: owner %q and a positive limit are required", c.Owner)
	}
	now := c.Now.UnixMilli()
	rows, err := s.pool.Query(ctx, `UPDATE inbox i SET lease_owner = $1, lease_until = $2
		FROM (SELECT provider, id FROM inbox
			WHERE state = 'pending' AND next_attempt <= $3 AND (lease_owner = '' OR lease_owner = $1 OR lease_until <= $3)
			ORDER BY event_time, received, provider, id LIMIT $4 FOR UPDATE SKIP LOCKED) c
		WHERE i.provider = c.provider AND i.id = c.id
		RETURNING `+prefixCols("i.", inboxCols), c.Owner, c.Now.Add(c.Lease).UnixMilli(), now, c.Limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: claim notifications: %w", err)
	}
	out, err := collectNotifications(rows)
	if err != nil {
		return nil, fmt.Errorf("postgres: claim notifications: %w", err)
	}
	// RETURNING has no order: restore the claim's.
	sortNotifications(out)
	return out, nil
}

// sortNotifications orders as the inbox hands work out: event time, then
// time received, then key.
func sortNotifications(ns []marketplace.Notification) {
	slices.SortFunc(ns, func(a, b marketplace.Notification) int {
		return cmp.Or(cmp.Compare(unixMilli(a.Time), unixMilli(b.Time)), cmp.Compare(unixMilli(a.Received), unixMilli(b.Received)),
			cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.ID, b.ID))
	})
}

// SettleNotification implements marketplace.NotificationInbox.
func (s *Store) SettleNotification(ctx context.Context, owner string, n marketplace.Notification) error {
	k, err := s.exec(ctx, "settle notification "+string(n.Provider)+"/"+n.ID, `UPDATE inbox SET state = $1, attempts = $2,
		next_attempt = $3, progress = $4, reason = $5, expires = $6, lease_owner = '', lease_until = 0
		WHERE provider = $7 AND id = $8 AND lease_owner = $9`,
		n.State, n.Attempts, unixMilli(n.NextAttempt), n.Progress, n.Reason, unixMilli(n.Expires), string(n.Provider), n.ID, owner)
	if err != nil || k == 1 {
		return err
	}
	return fmt.Errorf("postgres: settle notification: %s/%s is not leased by %s: %w", n.Provider, n.ID, owner, marketplace.ErrVersionConflict)
}

// GetNotification implements marketplace.NotificationInbox.
func (s *Store) GetNotification(ctx context.Context, p marketplace.CloudProvider, id string) (*marketplace.Notification, error) {
	n, err := scanNotification(s.pool.QueryRow(ctx, `SELECT `+inboxCols+` FROM inbox WHERE provider = $1 AND id = $2`, string(p), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("notification %s/%s", p, id))
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get notification %s/%s: %w", p, id, err)
	}
	return n, nil
}

// ListNotifications implements marketplace.NotificationInbox.
func (s *Store) ListNotifications(ctx context.Context, p marketplace.CloudProvider, state string, limit int) ([]marketplace.Notification, error) {
	q := `SELECT ` + inboxCols + ` FROM inbox WHERE ($1 = '' OR provider = $1) AND ($2 = '' OR state = $2)
		ORDER BY received, provider, id`
	if limit > 0 {
		q += ` LIMIT ` + strconv.Itoa(limit)
	}
	rows, err := s.pool.Query(ctx, q, string(p), state)
	if err != nil {
		return nil, fmt.Errorf("postgres: list notifications: %w", err)
	}
	out, err := collectNotifications(rows)
	if err != nil {
		return nil, fmt.Errorf("postgres: list notifications: %w", err)
	}
	return out, nil
}

// RequeueNotification implements marketplace.NotificationInbox.
func (s *Store) RequeueNotification(ctx context.Context, p marketplace.CloudProvider, id string, now time.Time) error {
	k, err := s.exec(ctx, "requeue notification "+string(p)+"/"+id, `UPDATE inbox SET state = 'pending', attempts = 0,
		next_attempt = $1, reason = '', lease_owner = '', lease_until = 0
		WHERE provider = $2 AND id = $3 AND state = 'parked'`, now.UnixMilli(), string(p), id)
	if err != nil || k == 1 {
		return err
	}
	return notFound(fmt.Sprintf("parked notification %s/%s", p, id))
}

// PurgeNotifications implements marketplace.NotificationInbox: done
// notifications that expired before t.
func (s *Store) PurgeNotifications(ctx context.Context, t time.Time) (int64, error) {
	return s.exec(ctx, "purge notifications", `DELETE FROM inbox WHERE state = 'done' AND expires < $1`, t.UnixMilli())
}
