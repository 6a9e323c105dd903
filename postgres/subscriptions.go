package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/saasmarket/marketplace"
)

var (
	_ marketplace.SubscriptionStore = (*Store)(nil)
	_ marketplace.EntitlementStore  = (*Store)(nil)
	_ marketplace.NotificationInbox = (*Store)(nil)
)

const subCols = `provider, id, customer, product, status, plan, quantity, account_id, entitlements, attributes,
	expires_at, cloud_updated, version, updated`

func scanSub(row pgx.Row) (*marketplace.Subscription, error) {
	var (
		s                              marketplace.Subscription
		provider                       string
		ents, attrs                    []byte
		expires, cloudUpdated, updated int64
	)
	if err := row.Scan(&provider, &s.ID, &s.CustomerID, &s.ProductCode, &s.Status, &s.Plan, &s.Quantity, &s.AccountID,
		&ents, &attrs, &expires, &cloudUpdated, &s.Version, &updated); err != nil {
		return nil, err
	}
	s.Provider = marketplace.CloudProvider(provider)
	if err := json.Unmarshal(ents, &s.Entitlements); err != nil {
		return nil, fmt.Errorf("entitlements of %s/%s: %w", provider, s.ID, err)
	}
	if err := json.Unmarshal(attrs, &s.Attributes); err != nil {
		return nil, fmt.Errorf("attributes of %s/%s: %w", provider, s.ID, err)
	}
	s.ExpiresAt = fromMilli(expires)
	s.CloudUpdated = fromMilli(cloudUpdated)
	s.Updated = fromMilli(updated)
	return &s, nil
}

func notFound(what string) error {
	return fmt.Errorf("postgres: %s: %w", what, marketplace.ErrNotFound)
}

// GetSubscription implements marketplace.SubscriptionStore.
func (s *Store) GetSubscription(ctx context.Context, p marketplace.CloudProvider, id string) (*marketplace.Subscription, error) {
	sub, err := scanSub(s.pool.QueryRow(ctx, `SELECT `+subCols+` FROM subscriptions WHERE provider = $1 AND id = $2`, string(p), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("subscription %s/%s", p, id))
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get subscription %s/%s: %w", p, id, err)
	}
	return sub, nil
}

// FindSubscription implements marketplace.SubscriptionStore.
func (s *Store) FindSubscription(ctx context.Context, p marketplace.CloudProvider, customerID string) (*marketplace.Subscription, error) {
	sub, err := scanSub(s.pool.QueryRow(ctx, `SELECT `+subCols+` FROM subscriptions WHERE provider = $1 AND customer = $2
		ORDER BY (status = 'active') DESC, updated DESC LIMIT 1`, string(p), customerID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("subscription of customer %s/%s", p, customerID))
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: find subscription of %s/%s: %w", p, customerID, err)
	}
	return sub, nil
}

// PutSubscription implements marketplace.SubscriptionStore. The version
// check and the write are one statement (an insert that must not collide,
// or an update of the expected version), so concurrent writers in any
// process conflict exactly as on one machine.
func (s *Store) PutSubscription(ctx context.Context, sub marketplace.Subscription) (*marketplace.Subscription, error) {
	if !sub.Provider.Valid() || sub.ID == "" {
		return nil, fmt.Errorf("postgres: put subscription: provider %q and id %q must be set", sub.Provider, sub.ID)
	}
	ents, err := json.Marshal(orEmpty(sub.Entitlements))
	if err != nil {
		return nil, fmt.Errorf("postgres: put subscription %s/%s: %w", sub.Provider, sub.ID, err)
	}
	attrs, err := json.Marshal(orEmptyMap(sub.Attributes))
	if err != nil {
		return nil, fmt.Errorf("postgres: put subscription %s/%s: %w", sub.Provider, sub.ID, err)
	}
	want := sub.Version
	sub.Version++
	sub.Updated = time.Now().UTC()
	args := []any{string(sub.Provider), sub.ID, sub.CustomerID, sub.ProductCode, sub.Status, sub.Plan, sub.Quantity, sub.AccountID,
		string(ents), string(attrs), unixMilli(sub.ExpiresAt), unixMilli(sub.CloudUpdated), sub.Version, unixMilli(sub.Updated)}
	var q string
	if want == 0 {
		q = `INSERT INTO subscriptions (` + subCols + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11, $12, $13, $14)
			ON CONFLICT (provider, id) DO NOTHING`
	} else {
		q = `UPDATE subscriptions SET customer = $3, product = $4, status = $5, plan = $6, quantity = $7, account_id = $8,
			entitlements = $9::jsonb, attributes = $10::jsonb, expires_at = $11, cloud_updated = $12, version = $13, updated = $14
			WHERE provider = $1 AND id = $2 AND version = $15`
		args = append(args, want)
	}
	tag, err := s.pool.Exec(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: put subscription %s/%s: %w", sub.Provider, sub.ID, err)
	}
	if tag.RowsAffected() == 1 {
		return &sub, nil
	}
	var cur int64
	err = s.pool.QueryRow(ctx, `SELECT version FROM subscriptions WHERE provider = $1 AND id = $2`, string(sub.Provider), sub.ID).Scan(&cur)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: put subscription %s/%s: %w", sub.Provider, sub.ID, err)
	}
	return nil, fmt.Errorf("postgres: put subscription: subscription %s/%s is at version %d, not %d: %w",
		sub.Provider, sub.ID, cur, want, marketplace.ErrVersionConflict)
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
	q := `SELECT ` + subCols + ` FROM subscriptions
		WHERE ($1 = '' OR provider = $1) AND ($2 = '' OR status = $2) AND (provider, id) > ($3, $4)
		ORDER BY provider, id`
	if f.Limit > 0 {
		q += ` LIMIT ` + strconv.Itoa(f.Limit)
	}
	return s.querySubs(ctx, "list subscriptions", q, string(f.Provider), f.Status, string(f.AfterProvider), f.AfterID)
}

// FindSubscriptionsByAttribute implements marketplace.SubscriptionStore,
// from the GIN index on attributes. An empty value matches nothing, as an
// attribute that is empty is not indexed by the other stores.
func (s *Store) FindSubscriptionsByAttribute(ctx context.Context, p marketplace.CloudProvider, name, value string) ([]marketplace.Subscription, error) {
	if value == "" {
		return nil, nil
	}
	return s.querySubs(ctx, "find subscriptions by "+name, `SELECT `+subCols+` FROM subscriptions
		WHERE attributes @> jsonb_build_object($2::text, $3::text) AND provider = $1 ORDER BY id`, string(p), name, value)
}

func (s *Store) querySubs(ctx context.Context, what, q string, args ...any) ([]marketplace.Subscription, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", what, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (marketplace.Subscription, error) {
		sub, err := scanSub(row)
		if err != nil {
			return marketplace.Subscription{}, err
		}
		return *sub, nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", what, err)
	}
	return out, nil
}

// CountSubscriptions implements marketplace.SubscriptionStore.
func (s *Store) CountSubscriptions(ctx context.Context, p marketplace.CloudProvider) (marketplace.SubscriptionCounts, error) {
	c := marketplace.SubscriptionCounts{ByStatus: map[string]int{}}
	rows, err := s.pool.Query(ctx, `SELECT status, COUNT(*), COUNT(*) FILTER (WHERE account_id <> '')
		FROM subscriptions WHERE provider = $1 GROUP BY status`, string(p))
	if err != nil {
		return c, fmt.Errorf("postgres: count subscriptions of %s: %w", p, err)
	}
	var status string
	var n, linked int
	_, err = pgx.ForEachRow(rows, []any{&status, &n, &linked}, func() error {
		c.ByStatus[status] = n
		c.Linked += linked
		return nil
	})
	if err != nil {
		return c, fmt.Errorf("postgres: count subscriptions of %s: %w", p, err)
	}
	return c, nil
}

// DeleteSubscription implements marketplace.SubscriptionStore.
func (s *Store) DeleteSubscription(ctx context.Context, p marketplace.CloudProvider, id string) error {
	_, err := s.exec(ctx, "delete subscription", `DELETE FROM subscriptions WHERE provider = $1 AND id = $2`, string(p), id)
	return err
}

// GetEntitlement implements marketplace.EntitlementStore.
func (s *Store) GetEntitlement(ctx context.Context, p marketplace.CloudProvider, customerID, feature string) (*marketplace.Entitlement, error) {
	e := marketplace.Entitlement{Provider: p, CustomerID: customerID, Feature: feature}
	var expires, updated int64
	err := s.pool.QueryRow(ctx, `SELECT value, expires_at, version, updated FROM entitlements WHERE provider = $1 AND customer = $2 AND feature = $3`,
		string(p), customerID, feature).Scan(&e.Value, &expires, &e.Version, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("entitlement %s/%s/%s", p, customerID, feature))
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get entitlement %s/%s/%s: %w", p, customerID, feature, err)
	}
	e.ExpiresAt, e.Updated = fromMilli(expires), fromMilli(updated)
	return &e, nil
}

// PutEntitlement implements marketplace.EntitlementStore.
func (s *Store) PutEntitlement(ctx context.Context, e marketplace.Entitlement) (*marketplace.Entitlement, error) {
	if !e.Provider.Valid() || e.CustomerID == "" || e.Feature == "" {
		return nil, fmt.Errorf("postgres: put entitlement: provider %q, customer %q and feature %q must be set", e.Provider, e.CustomerID, e.Feature)
	}
	e.Updated = time.Now().UTC()
	err := s.pool.QueryRow(ctx, `INSERT INTO entitlements AS e (provider, customer, feature, value, expires_at, version, updated)
		VALUES ($1, $2, $3, $4, $5, 1, $6)
		ON CONFLICT (provider, customer, feature) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at,
		version = e.version + 1, updated = excluded.updated RETURNING version`,
		string(e.Provider), e.CustomerID, e.Feature, e.Value, unixMilli(e.ExpiresAt), unixMilli(e.Updated)).Scan(&e.Version)
	if err != nil {
		return nil, fmt.Errorf("postgres: put entitlement %s/%s/%s: %w", e.Provider, e.CustomerID, e.Feature, err)
	}
	return &e, nil
}

// DeleteEntitlement implements marketplace.EntitlementStore.
func (s *Store) DeleteEntitlement(ctx context.Context, p marketplace.CloudProvider, customerID, feature string) error {
	_, err := s.exec(ctx, "delete entitlement", `DELETE FROM entitlements WHERE provider = $1 AND customer = $2 AND feature = $3`,
		string(p), customerID, feature)
	return err
}

// ListEntitlements implements marketplace.EntitlementStore.
func (s *Store) ListEntitlements(ctx context.Context, p marketplace.CloudProvider, customerID string) ([]marketplace.Entitlement, error) {
	rows, err := s.pool.Query(ctx, `SELECT feature, value, expires_at, version, updated FROM entitlements
		WHERE provider = $1 AND customer = $2 ORDER BY feature`, string(p), customerID)
	if err != nil {
		return nil, fmt.Errorf("postgres: list entitlements: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (marketplace.Entitlement, error) {
		e := marketplace.Entitlement{Provider: p, CustomerID: customerID}
		var expires, updated int64
		err := row.Scan(&e.Feature, &e.Value, &expires, &e.Version, &updated)
		e.ExpiresAt, e.Updated = fromMilli(expires), fromMilli(updated)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list entitlements: %w", err)
	}
	return out, nil
}
