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
	"github.com/saasmarket/marketplace/internal/tornrows"
)

const inboxCols = `provider, id, kind, subject, event_time, payload, state, attempts, next_attempt, progress, reason, received, expires`

// inboxText is inboxCols as text: a store reads inbox rows as
// marketplace.InboxRow and converts them by its rules, as every store does.
const inboxText = `provider, id, kind, subject, event_time::text, payload, state, attempts::text, next_attempt::text,
	progress, reason, received::text, expires::text`

// scanInboxRow reads one row of inboxText columns. A row that cannot be
// converted comes back with an error wrapping marketplace.ErrInvalidInput
// that names it.
func scanInboxRow(row pgx.Row) (marketplace.Notification, marketplace.InboxRow, error) {
	var r marketplace.InboxRow
	if err := row.Scan(&r.Provider, &r.ID, &r.Kind, &r.Subject, &r.Time, &r.Payload, &r.State, &r.Attempts, &r.NextAttempt,
		&r.Progress, &r.Reason, &r.Received, &r.Expires); err != nil {
		return marketplace.Notification{}, r, err
	}
	n, err := r.Notification()
	return n, r, err
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
	var out []marketplace.Notification
	err := s.tx(ctx, func(tx pgx.Tx) error {
		// A row that cannot be read is moved to the quarantine and the
		// claim runs again, so that it still returns up to Limit of the
		// others (the rows leased by the first run are the owner's, so they
		// are claimed again); the loop ends when a run finds no bad row.
		for {
			rows, err := tx.Query(ctx, `UPDATE inbox i SET lease_owner = $1, lease_until = $2
				FROM (SELECT provider, id FROM inbox
					WHERE state = 'pending' AND next_attempt <= $3 AND (lease_owner = '' OR lease_owner = $1 OR lease_until <= $3)
					ORDER BY event_time, received, provider, id LIMIT $4 FOR UPDATE SKIP LOCKED) c
				WHERE i.provider = c.provider AND i.id = c.id
				RETURNING `+prefixCols("i.", inboxText), c.Owner, c.Now.Add(c.Lease).UnixMilli(), now, c.Limit)
			if err != nil {
				return err
			}
			out = out[:0]
			var torn []inboxKey
			for rows.Next() {
				n, r, err := scanInboxRow(rows)
				if errors.Is(err, marketplace.ErrInvalidInput) {
					torn = append(torn, inboxKey{r.Provider, r.ID})
					continue
				}
				if err != nil {
					rows.Close()
					return err
				}
				out = append(out, n)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if len(torn) == 0 {
				return nil
			}
			moved, err := quarantineInbox(ctx, tx, torn...)
			if err != nil {
				return err
			}
			// Not moved, a row would be read again, forever (the claim
			// holds its lock, so nothing else can have mended or moved it).
			if moved != len(torn) {
				return fmt.Errorf("%d of %d torn inbox rows were not quarantined", len(torn)-moved, len(torn))
			}
		}
	})
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

// GetNotification implements marketplace.NotificationInbox. A row that
// cannot be read is moved to the quarantine (see quarantineInboxRows), and
// the notification is then not found: the error wraps
// marketplace.ErrNotFound and says why.
func (s *Store) GetNotification(ctx context.Context, p marketplace.CloudProvider, id string) (*marketplace.Notification, error) {
	key := inboxKey{string(p), id}
	n, err := tornrows.Get(func() (*marketplace.Notification, inboxKey, error) {
		n, _, err := scanInboxRow(s.pool.QueryRow(ctx, `SELECT `+inboxText+` FROM inbox WHERE provider = $1 AND id = $2`, string(p), id))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, key, marketplace.ErrNotFound
		}
		return &n, key, err
	}, func(k inboxKey) (int, error) { return s.quarantineInboxRows(ctx, k) })
	if err != nil {
		return nil, fmt.Errorf("postgres: get notification %s/%s: %w", p, id, err)
	}
	return n, nil
}

// ListNotifications implements marketplace.NotificationInbox. A row that
// cannot be read (done or parked: a claim quarantines a pending one) is
// moved to the quarantine and the query runs again, so the list still
// holds up to limit of the others and one torn row does not hide them.
func (s *Store) ListNotifications(ctx context.Context, p marketplace.CloudProvider, state string, limit int) ([]marketplace.Notification, error) {
	out, err := tornrows.Read(func() ([]marketplace.Notification, []inboxKey, error) {
		return s.listNotifications(ctx, p, state, limit)
	}, func(keys ...inboxKey) (int, error) { return s.quarantineInboxRows(ctx, keys...) })
	if err != nil {
		return nil, fmt.Errorf("postgres: list notifications: %w", err)
	}
	return out, nil
}

// listNotifications runs the list's query once. It returns the rows it
// could read, the keys of those it could not, and an error wrapping
// marketplace.ErrInvalidInput naming them.
func (s *Store) listNotifications(ctx context.Context, p marketplace.CloudProvider, state string, limit int) ([]marketplace.Notification, []inboxKey, error) {
	q := `SELECT ` + inboxText + ` FROM inbox WHERE ($1 = '' OR provider = $1) AND ($2 = '' OR state = $2)
		ORDER BY received, provider, id`
	if limit > 0 {
		q += ` LIMIT ` + strconv.Itoa(limit)
	}
	rows, err := s.pool.Query(ctx, q, string(p), state)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var (
		out  []marketplace.Notification
		torn []inboxKey
		errs []error
	)
	for rows.Next() {
		n, r, err := scanInboxRow(rows)
		if errors.Is(err, marketplace.ErrInvalidInput) {
			torn, errs = append(torn, inboxKey{r.Provider, r.ID}), append(errs, err)
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
