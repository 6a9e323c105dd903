-- The usage ledger. Times are integers as in the SQLite store: hours in unix
-- seconds, instants in unix milliseconds, 0 for none.

-- The append log: one row per group commit, its deltas encoded by the ledger
-- (ledger.EncodeDeltas). Fold deletes the rows it reads.
CREATE TABLE usage_log (
    seq  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data BYTEA NOT NULL
);

-- Event ids seen within the ledger's window; PurgeEvents deletes expired ones.
CREATE TABLE events (
    id      TEXT   PRIMARY KEY,
    expires BIGINT NOT NULL
);
CREATE INDEX events_expires ON events (expires);

CREATE TABLE series (
    provider     TEXT   NOT NULL,
    customer     TEXT   NOT NULL,
    dimension    TEXT   NOT NULL,
    sealed_until BIGINT NOT NULL,
    carry        BIGINT NOT NULL,
    PRIMARY KEY (provider, customer, dimension)
);

CREATE TABLE buckets (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider      TEXT    NOT NULL,
    customer      TEXT    NOT NULL,
    dimension     TEXT    NOT NULL,
    hour          BIGINT  NOT NULL,
    quantity      BIGINT  NOT NULL DEFAULT 0,
    late          BIGINT  NOT NULL DEFAULT 0,
    state         TEXT    NOT NULL DEFAULT 'open',
    units         BIGINT  NOT NULL DEFAULT 0,
    report_id     TEXT    NOT NULL DEFAULT '',
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  BIGINT  NOT NULL DEFAULT 0,
    maybe_applied BOOLEAN NOT NULL DEFAULT false,
    lease_owner   TEXT    NOT NULL DEFAULT '',
    lease_until   BIGINT  NOT NULL DEFAULT 0,
    record_id     TEXT    NOT NULL DEFAULT '',
    reason        TEXT    NOT NULL DEFAULT '',
    sealed_at     BIGINT  NOT NULL DEFAULT 0,
    done_at       BIGINT  NOT NULL DEFAULT 0,
    UNIQUE (provider, customer, dimension, hour)
);
CREATE INDEX buckets_open ON buckets (hour) WHERE state = 'open';
CREATE INDEX buckets_sealed ON buckets (provider, hour, id) WHERE state = 'sealed';
CREATE INDEX buckets_done ON buckets (done_at) WHERE state NOT IN ('open', 'sealed');

-- Subscriptions, entitlements, notification dedupe and the notification inbox.
CREATE TABLE subscriptions (
    provider      TEXT   NOT NULL,
    id            TEXT   NOT NULL,
    customer      TEXT   NOT NULL,
    product       TEXT   NOT NULL,
    status        TEXT   NOT NULL,
    plan          TEXT   NOT NULL,
    quantity      BIGINT NOT NULL,
    account_id    TEXT   NOT NULL,
    entitlements  JSONB  NOT NULL,
    attributes    JSONB  NOT NULL,
    expires_at    BIGINT NOT NULL,
    cloud_updated BIGINT NOT NULL,
    version       BIGINT NOT NULL,
    updated       BIGINT NOT NULL,
    PRIMARY KEY (provider, id)
);
CREATE INDEX subscriptions_customer ON subscriptions (provider, customer, updated);
-- FindSubscriptionsByAttribute: attributes @> {"name": "value"}.
CREATE INDEX subscriptions_attributes ON subscriptions USING gin (attributes jsonb_path_ops);

CREATE TABLE entitlements (
    provider   TEXT   NOT NULL,
    customer   TEXT   NOT NULL,
    feature    TEXT   NOT NULL,
    value      TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    updated    BIGINT NOT NULL,
    PRIMARY KEY (provider, customer, feature)
);

CREATE TABLE notifications (
    provider TEXT   NOT NULL,
    id       TEXT   NOT NULL,
    expires  BIGINT NOT NULL,
    PRIMARY KEY (provider, id)
);
CREATE INDEX notifications_expires ON notifications (expires);

CREATE TABLE inbox (
    provider     TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    event_time   BIGINT  NOT NULL,
    payload      BYTEA   NOT NULL,
    state        TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    next_attempt BIGINT  NOT NULL,
    progress     TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    received     BIGINT  NOT NULL,
    expires      BIGINT  NOT NULL,
    lease_owner  TEXT    NOT NULL DEFAULT '',
    lease_until  BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, id)
);
CREATE INDEX inbox_due ON inbox (event_time, received) WHERE state = 'pending';
CREATE INDEX inbox_done ON inbox (expires) WHERE state = 'done';
