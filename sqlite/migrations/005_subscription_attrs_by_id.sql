-- PutSubscription, ImportSubscriptions and DeleteSubscription replace a
-- subscription's attribute rows by (provider, id): without this index each
-- of them scanned every attribute row, so one subscription write cost time
-- in proportion to all subscriptions (and an import, to their square).
CREATE INDEX subscription_attrs_by_id ON subscription_attrs (provider, id);
