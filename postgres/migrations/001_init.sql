-- The usage ledger. Times are integers as in the SQLite store: hours in unix
-- seconds, instants in unix milliseconds, 0 for none. Text is COLLATE "C":
-- keys compare as bytes (as in Go and SQLite, and much faster than a
-- language's collation), whatever the database's default.

-- The append log: one row per group commit, its deltas encoded by the ledger
-- (ledger.EncodeDeltas). Fold deletes the rows it reads.
CREATE TABLE usage_log (
    seq  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data BYTEA  NOT NULL
);

-- Event ids seen within the ledger's window; PurgeEvents deletes expired ones.
-- Rows arrive in roughly increasing expiry, so a BRIN index serves the purge
-- at almost no cost per insert, where a B-tree would be a second index to
-- update for every id.
CREATE TABLE events (
    id      TEXT COLLATE "C" PRIMARY KEY,
    expires BIGINT           NOT NULL
);
CREATE INDEX events_expires ON events USING brin (expires);

CREATE TABLE series (
    provider     TEXT COLLATE "C" NOT NULL,
    customer     TEXT COLLATE "C" NOT NULL,
    dimension    TEXT COLLATE "C" NOT NULL,
    sealed_until BIGINT           NOT NULL,
    carry        BIGINT           NOT NULL,
    PRIMARY KEY (provider, customer, dimension)
);

CREATE TABLE buckets (
    id            BIGINT           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider      TEXT COLLATE "C" NOT NULL,
    customer      TEXT COLLATE "C" NOT NULL,
    dimension     TEXT COLLATE "C" NOT NULL,
    hour          BIGINT           NOT NULL,
    quantity      BIGINT           NOT NULL DEFAULT 0,
    late          BIGINT           NOT NULL DEFAULT 0,
    state         TEXT COLLATE "C" NOT NULL DEFAULT 'open',
    units         BIGINT           NOT NULL DEFAULT 0,
    report_id     TEXT COLLATE "C" NOT NULL DEFAULT '',
    attempts      INTEGER          NOT NULL DEFAULT 0,
    next_attempt  BIGINT           NOT NULL DEFAULT 0,
    maybe_applied BOOLEAN          NOT NULL DEFAULT false,
    lease_owner   TEXT COLLATE "C" NOT NULL DEFAULT '',
    lease_until   BIGINT           NOT NULL DEFAULT 0,
    record_id     TEXT COLLATE "C" NOT NULL DEFAULT '',
    reason        TEXT COLLATE "C" NOT NULL DEFAULT '',
    sealed_at     BIGINT           NOT NULL DEFAULT 0,
    done_at       BIGINT           NOT NULL DEFAULT 0,
    UNIQUE (provider, customer, dimension, hour)
);
CREATE INDEX buckets_open ON buckets (hour) WHERE state = 'open';
CREATE INDEX buckets_sealed ON buckets (provider, hour, id) WHERE state = 'sealed';
CREATE INDEX buckets_done ON buckets (done_at) WHERE state NOT IN ('open', 'sealed');

-- Subscriptions, entitlements, notification dedupe and the notification inbox.
CREATE TABLE subscriptions (
    provider      TEXT COLLATE "C" NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    customer      TEXT COLLATE "C" NOT NULL,
    product       TEXT COLLATE "C" NOT NULL,
    status        TEXT COLLATE "C" NOT NULL,
    plan          TEXT COLLATE "C" NOT NULL,
    quantity      BIGINT           NOT NULL,
    account_id    TEXT COLLATE "C" NOT NULL,
    entitlements  JSONB            NOT NULL,
    attributes    JSONB            NOT NULL,
    expires_at    BIGINT           NOT NULL,
    cloud_updated BIGINT           NOT NULL,
    version       BIGINT           NOT NULL,
    updated       BIGINT           NOT NULL,
    PRIMARY KEY (provider, id)
);
CREATE INDEX subscriptions_customer ON subscriptions (provider, customer, updated);
-- FindSubscriptionsByAttribute: attributes @> {"name": "value"}.
CREATE INDEX subscriptions_attributes ON subscriptions USING gin (attributes jsonb_path_ops);

CREATE TABLE entitlements (
    provider   TEXT COLLATE "C" NOT NULL,
    customer   TEXT COLLATE "C" NOT NULL,
    feature    TEXT COLLATE "C" NOT NULL,
    value      TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT           NOT NULL,
    version    BIGINT           NOT NULL,
    updated    BIGINT           NOT NULL,
    PRIMARY KEY (provider, customer, feature)
);

CREATE TABLE notifications (
    provider TEXT COLLATE "C" NOT NULL,
    id       TEXT COLLATE "C" NOT NULL,
    expires  BIGINT           NOT NULL,
    PRIMARY KEY (provider, id)
);
CREATE INDEX notifications_expires ON notifications (expires);

CREATE TABLE inbox (
    provider     TEXT COLLATE "C" NOT NULL,
    id           TEXT COLLATE "C" NOT NULL,
    kind         TEXT COLLATE "C" NOT NULL,
    subject      TEXT COLLATE "C" NOT NULL,
    event_time   BIGINT           NOT NULL,
    payload      BYTEA            NOT NULL,
    state        TEXT COLLATE "C" NOT NULL,
    attempts     INTEGER          NOT NULL,
    next_attempt BIGINT           NOT NULL,
    progress     TEXT COLLATE "C" NOT NULL,
    reason       TEXT COLLATE "C" NOT NULL,
    received     BIGINT           NOT NULL,
    expires      BIGINT           NOT NULL,
    lease_owner  TEXT COLLATE "C" NOT NULL DEFAULT '',
    lease_until  BIGINT           NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, id)
);
CREATE INDEX inbox_due ON inbox (event_time, received) WHERE state = 'pending';
CREATE INDEX inbox_done ON inbox (expires) WHERE state = 'done';
