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
)

var (
	_ marketplace.SubscriptionStore = (*Store)(nil)
	_ marketplace.EntitlementStore  = (*Store)(nil)
	_ marketplace.NotificationInbox = (*Store)(nil)
)

const subCols = `provider, id, customer, product, status, plan, quantity, account_id, entitlements, attributes,
	expires_at, cloud_updated, version, updated`

func scanSub(sc interface{ Scan(...any) error }) (*marketplace.Subscription, error) {
	var (
		s                              marketplace.Subscription
		provider, ents, attrs          string
		expires, cloudUpdated, updated int64
	)
	if err := sc.Scan(&provider, &s.ID, &s.CustomerID, &s.ProductCode, &s.Status, &s.Plan, &s.Quantity, &s.AccountID,
		&ents, &attrs, &expires, &cloudUpdated, &s.Version, &updated); err != nil {
		return nil, err
	}
	s.Provider = marketplace.CloudProvider(provider)
	if err := json.Unmarshal([]byte(ents), &s.Entitlements); err != nil {
		return nil, fmt.Errorf("entitlements of %s/%s: %w", provider, s.ID, err)
	}
	if err := json.Unmarshal([]byte(attrs), &s.Attributes); err != nil {
		return nil, fmt.Errorf("attributes of %s/%s: %w", provider, s.ID, err)
	}
	s.ExpiresAt = fromMilli(expires)
	s.CloudUpdated = fromMilli(cloudUpdated)
	s.Updated = fromMilli(updated)
	return &s, nil
}

func notFound(what string) error { return fmt.Errorf("sqlite: %s: %w", what, marketplace.ErrNotFound) }

// GetSubscription implements marketplace.SubscriptionStore.
func (s *Store) GetSubscription(ctx context.Context, p marketplace.CloudProvider, id string) (*marketplace.Subscription, error) {
	sub, err := scanSub(s.r.QueryRowContext(ctx, `SELECT `+subCols+` FROM subscriptions WHERE provider = ? AND id = ?`, p, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("subscription %s/%s", p, id))
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get subscription %s/%s: %w", p, id, err)
	}
	return sub, nil
}

// FindSubscription implements marketplace.SubscriptionStore.
func (s *Store) FindSubscription(ctx context.Context, p marketplace.CloudProvider, customerID string) (*marketplace.Subscription, error) {
	sub, err := scanSub(s.r.QueryRowContext(ctx, `SELECT `+subCols+` FROM subscriptions WHERE provider = ? AND customer = ?
		ORDER BY (status = 'active') DESC, updated DESC LIMIT 1`, p, customerID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("subscription of customer %s/%s", p, customerID))
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: find subscription of %s/%s: %w", p, customerID, err)
	}
	return sub, nil
}

// PutSubscription implements marketplace.SubscriptionStore.
func (s *Store) PutSubscription(ctx context.Context, sub marketplace.Subscription) (*marketplace.Subscription, error) {
	if !sub.Provider.Valid() || sub.ID == "" {
		return nil, fmt.Errorf("sqlite: put subscription: provider %q and id %q must be set", sub.Provider, sub.ID)
	}
	ents, err := json.Marshal(orEmpty(sub.Entitlements))
	if err != nil {
		return nil, err
	}
	attrs, err := json.Marshal(orEmptyMap(sub.Attributes))
	if err != nil {
		return nil, err
	}
	want := sub.Version
	sub.Version++
	sub.Updated = time.Now().UTC()
	err = s.write(ctx, func(tx *sql.Tx) error {
		var cur int64
		err := tx.QueryRowContext(ctx, `SELECT version FROM subscriptions WHERE provider = ? AND id = ?`, sub.Provider, sub.ID).Scan(&cur)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			cur = 0
		case err != nil:
			return err
		}
		if cur != want {
			return fmt.Errorf("subscription %s/%s is at version %d, not %d: %w", sub.Provider, sub.ID, cur, want, marketplace.ErrVersionConflict)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO subscriptions (`+subCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (provider, id) DO UPDATE SET customer = excluded.customer, product = excluded.product,
			status = excluded.status, plan = excluded.plan, quantity = excluded.quantity, account_id = excluded.account_id,
			entitlements = excluded.entitlements, attributes = excluded.attributes, expires_at = excluded.expires_at,
			cloud_updated = excluded.cloud_updated, version = excluded.version, updated = excluded.updated`,
			sub.Provider, sub.ID, sub.CustomerID, sub.ProductCode, sub.Status, sub.Plan, sub.Quantity, sub.AccountID,
			string(ents), string(attrs), unixMilli(sub.ExpiresAt), unixMilli(sub.CloudUpdated), sub.Version, unixMilli(sub.Updated))
		if err != nil {
			return err
		}
		return putAttrs(ctx, tx, sub)
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: put subscription: %w", err)
	}
	return &sub, nil
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func orEmptyMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// ListSubscriptions implements marketplace.SubscriptionStore.
func (s *Store) ListSubscriptions(ctx context.Context, f marketplace.SubscriptionFilter) ([]marketplace.Subscription, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	return s.querySubs(ctx, "list subscriptions", `SELECT `+subCols+` FROM subscriptions
		WHERE (? = '' OR provider = ?) AND (? = '' OR status = ?) AND (provider, id) > (?, ?)
		ORDER BY provider, id LIMIT ?`, f.Provider, f.Provider, f.Status, f.Status, f.AfterProvider, f.AfterID, limit)
}

// FindSubscriptionsByAttribute implements marketplace.SubscriptionStore.
func (s *Store) FindSubscriptionsByAttribute(ctx context.Context, p marketplace.CloudProvider, name, value string) ([]marketplace.Subscription, error) {
	return s.querySubs(ctx, "find subscriptions by "+name, findByAttrQuery, p, name, value)
}

// findByAttrQuery orders by a.id, not s.id: ordering by s.id makes SQLite
// scan every subscription of the provider (TestIndexedQueryPlans).
var findByAttrQuery = `SELECT ` + prefixed("s.", subCols) + ` FROM subscription_attrs a
	JOIN subscriptions s ON s.provider = a.provider AND s.id = a.id
	WHERE a.provider = ? AND a.name = ? AND a.value = ? ORDER BY a.id`

func (s *Store) querySubs(ctx context.Context, what, q string, args ...any) ([]marketplace.Subscription, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", what, err)
	}
	defer rows.Close()
	var out []marketplace.Subscription
	for rows.Next() {
		sub, err := scanSub(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: %s: %w", what, err)
		}
		out = append(out, *sub)
	}
	return out, rows.Err()
}

// CountSubscriptions implements marketplace.SubscriptionStore.
func (s *Store) CountSubscriptions(ctx context.Context, p marketplace.CloudProvider) (marketplace.SubscriptionCounts, error) {
	c := marketplace.SubscriptionCounts{ByStatus: map[string]int{}}
	rows, err := s.r.QueryContext(ctx, countSubsQuery, p)
	if err != nil {
		return c, fmt.Errorf("sqlite: count subscriptions of %s: %w", p, err)
	}
	defer rows.Close()
	for rows.Next() {
		var status string
		var n, linked int
		if err := rows.Scan(&status, &n, &linked); err != nil {
			return c, fmt.Errorf("sqlite: count subscriptions of %s: %w", p, err)
		}
		c.ByStatus[status] = n
		c.Linked += linked
	}
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("sqlite: count subscriptions of %s: %w", p, err)
	}
	return c, nil
}

// countSubsQuery is CountSubscriptions' query (apart, so that plan_test
// checks its plan): one row per status.
const countSubsQuery = `SELECT status, COUNT(*), SUM(account_id <> '') FROM subscriptions WHERE provider = ? GROUP BY status`

// prefixed qualifies each column of a comma-separated list.
func prefixed(prefix, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = prefix + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// putAttrs replaces the attribute index rows of a subscription.
func putAttrs(ctx context.Context, tx *sql.Tx, sub marketplace.Subscription) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM subscription_attrs WHERE provider = ? AND id = ?`, sub.Provider, sub.ID); err != nil {
		return err
	}
	for k, v := range sub.Attributes {
		if v == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO subscription_attrs (provider, name, value, id) VALUES (?, ?, ?, ?)`, sub.Provider, k, v, sub.ID); err != nil {
			return err
		}
	}
	return nil
}

// DeleteSubscription implements marketplace.SubscriptionStore.
func (s *Store) DeleteSubscription(ctx context.Context, p marketplace.CloudProvider, id string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM subscription_attrs WHERE provider = ? AND id = ?`, p, id); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM subscriptions WHERE provider = ? AND id = ?`, p, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: delete subscription %s/%s: %w", p, id, err)
	}
	return nil
}

func (s *Store) exec(ctx context.Context, what, q string, args ...any) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, q, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: %s: %w", what, err)
	}
	return nil
}

// GetEntitlement implements marketplace.EntitlementStore.
func (s *Store) GetEntitlement(ctx context.Context, p marketplace.CloudProvider, customerID, feature string) (*marketplace.Entitlement, error) {
	e := marketplace.Entitlement{Provider: p, CustomerID: customerID, Feature: feature}
	var expires, updated int64
	err := s.r.QueryRowContext(ctx, `SELECT value, expires_at, version, updated FROM entitlements WHERE provider = ? AND customer = ? AND feature = ?`,
		p, customerID, feature).Scan(&e.Value, &expires, &e.Version, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("entitlement %s/%s/%s", p, customerID, feature))
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get entitlement: %w", err)
	}
	e.ExpiresAt, e.Updated = fromMilli(expires), fromMilli(updated)
	return &e, nil
}

// PutEntitlement implements marketplace.EntitlementStore.
func (s *Store) PutEntitlement(ctx context.Context, e marketplace.Entitlement) (*marketplace.Entitlement, error) {
	if !e.Provider.Valid() || e.CustomerID == "" || e.Feature == "" {
		return nil, fmt.Errorf("sqlite: put entitlement: provider %q, customer %q and feature %q must be set", e.Provider, e.CustomerID, e.Feature)
	}
	e.Updated = time.Now().UTC()
	err := s.write(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO entitlements (provider, customer, feature, value, expires_at, version, updated)
			VALUES (?, ?, ?, ?, ?, 1, ?)
			ON CONFLICT (provider, customer, feature) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at,
			version = version + 1, updated = excluded.updated RETURNING version`,
			e.Provider, e.CustomerID, e.Feature, e.Value, unixMilli(e.ExpiresAt), unixMilli(e.Updated)).Scan(&e.Version)
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: put entitlement: %w", err)
	}
	return &e, nil
}

// DeleteEntitlement implements marketplace.EntitlementStore.
func (s *Store) DeleteEntitlement(ctx context.Context, p marketplace.CloudProvider, customerID, feature string) error {
	return s.exec(ctx, "delete entitlement", `DELETE FROM entitlements WHERE provider = ? AND customer = ? AND feature = ?`, p, customerID, feature)
}

// ListEntitlements implements marketplace.EntitlementStore.
func (s *Store) ListEntitlements(ctx context.Context, p marketplace.CloudProvider, customerID string) ([]marketplace.Entitlement, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT feature, value, expires_at, version, updated FROM entitlements
		WHERE provider = ? AND customer = ? ORDER BY feature`, p, customerID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list entitlements: %w", err)
	}
	defer rows.Close()
	var out []marketplace.Entitlement
	for rows.Next() {
		e := marketplace.Entitlement{Provider: p, CustomerID: customerID}
		var expires, updated int64
		if err := rows.Scan(&e.Feature, &e.Value, &expires, &e.Version, &updated); err != nil {
			return nil, fmt.Errorf("sqlite: list entitlements: %w", err)
		}
		e.ExpiresAt, e.Updated = fromMilli(expires), fromMilli(updated)
		out = append(out, e)
	}
	return out, rows.Err()
}

// ImportSubscriptions stores many new subscriptions in one commit (a
// migration from another system, a benchmark's fixture). Each must not
// exist yet; it is stored at version 1. All or none are stored.
func (s *Store) ImportSubscriptions(ctx context.Context, subs []marketplace.Subscription) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, sub := range subs {
			if !sub.Provider.Valid() || sub.ID == "" {
				return fmt.Errorf("provider %q and id %q must be set", sub.Provider, sub.ID)
			}
			ents, err := json.Marshal(orEmpty(sub.Entitlements))
			if err != nil {
				return err
			}
			attrs, err := json.Marshal(orEmptyMap(sub.Attributes))
			if err != nil {
				return err
			}
			sub.Version, sub.Updated = 1, time.Now().UTC()
			if _, err := tx.ExecContext(ctx, `INSERT INTO subscriptions (`+subCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				sub.Provider, sub.ID, sub.CustomerID, sub.ProductCode, sub.Status, sub.Plan, sub.Quantity, sub.AccountID,
				string(ents), string(attrs), unixMilli(sub.ExpiresAt), unixMilli(sub.CloudUpdated), sub.Version, unixMilli(sub.Updated)); err != nil {
				return fmt.Errorf("subscription %s/%s: %w", sub.Provider, sub.ID, err)
			}
			if err := putAttrs(ctx, tx, sub); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: import subscriptions: %w", err)
	}
	return nil
}
