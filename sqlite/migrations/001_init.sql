-- The usage ledger.
CREATE TABLE usage_log (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    data BLOB NOT NULL
);

CREATE TABLE events (
    id      TEXT PRIMARY KEY,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX events_expires ON events (expires);

CREATE TABLE series (
    provider     TEXT    NOT NULL,
    customer     TEXT    NOT NULL,
    dimension    TEXT    NOT NULL,
    sealed_until INTEGER NOT NULL,
    carry        INTEGER NOT NULL,
    PRIMARY KEY (provider, customer, dimension)
) WITHOUT ROWID;

CREATE TABLE buckets (
    id            INTEGER PRIMARY KEY,
    provider      TEXT    NOT NULL,
    customer      TEXT    NOT NULL,
    dimension     TEXT    NOT NULL,
    hour          INTEGER NOT NULL,
    quantity      INTEGER NOT NULL DEFAULT 0,
    late          INTEGER NOT NULL DEFAULT 0,
    state         TEXT    NOT NULL DEFAULT 'open',
    units         INTEGER NOT NULL DEFAULT 0,
    report_id     TEXT    NOT NULL DEFAULT '',
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  INTEGER NOT NULL DEFAULT 0,
    maybe_applied INTEGER NOT NULL DEFAULT 0,
    lease_owner   TEXT    NOT NULL DEFAULT '',
    lease_until   INTEGER NOT NULL DEFAULT 0,
    record_id     TEXT    NOT NULL DEFAULT '',
    reason        TEXT    NOT NULL DEFAULT '',
    sealed_at     INTEGER NOT NULL DEFAULT 0,
    done_at       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (provider, customer, dimension, hour)
);
CREATE INDEX buckets_open ON buckets (hour) WHERE state = 'open';
CREATE INDEX buckets_sealed ON buckets (provider, hour) WHERE state = 'sealed';

-- Subscriptions, entitlements and notification dedupe.
CREATE TABLE subscriptions (
    provider      TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    customer      TEXT    NOT NULL,
    product       TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    plan          TEXT    NOT NULL,
    quantity      INTEGER NOT NULL,
    account_id    TEXT    NOT NULL,
    entitlements  TEXT    NOT NULL,
    attributes    TEXT    NOT NULL,
    expires_at    INTEGER NOT NULL,
    cloud_updated INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    updated       INTEGER NOT NULL,
    PRIMARY KEY (provider, id)
) WITHOUT ROWID;
CREATE INDEX subscriptions_customer ON subscriptions (provider, customer, updated);

CREATE TABLE entitlements (
    provider   TEXT    NOT NULL,
    customer   TEXT    NOT NULL,
    feature    TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    updated    INTEGER NOT NULL,
    PRIMARY KEY (provider, customer, feature)
) WITHOUT ROWID;

CREATE TABLE notifications (
    provider TEXT    NOT NULL,
    id       TEXT    NOT NULL,
    expires  INTEGER NOT NULL,
    PRIMARY KEY (provider, id)
) WITHOUT ROWID;
CREATE INDEX notifications_expires ON notifications (expires);
