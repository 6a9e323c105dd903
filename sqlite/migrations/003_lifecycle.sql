-- Indexed lookups of subscriptions by a cloud's identifiers (account, license, ...):
-- one row per attribute, kept by PutSubscription.
CREATE TABLE subscription_attrs (
    provider TEXT NOT NULL,
    name     TEXT NOT NULL,
    value    TEXT NOT NULL,
    id       TEXT NOT NULL,
    PRIMARY KEY (provider, name, value, id)
) WITHOUT ROWID;
INSERT INTO subscription_attrs (provider, name, value, id)
    SELECT s.provider, j.key, j.value, s.id FROM subscriptions s, json_each(s.attributes) j WHERE j.value <> '';

-- The durable notification inbox of the lifecycle engine.
CREATE TABLE inbox (
    provider     TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    event_time   INTEGER NOT NULL,
    payload      BLOB    NOT NULL,
    state        TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    next_attempt INTEGER NOT NULL,
    progress     TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    received     INTEGER NOT NULL,
    expires      INTEGER NOT NULL,
    lease_owner  TEXT    NOT NULL,
    lease_until  INTEGER NOT NULL,
    PRIMARY KEY (provider, id)
);
CREATE INDEX inbox_due ON inbox (next_attempt) WHERE state = 'pending';
CREATE INDEX inbox_done ON inbox (expires) WHERE state = 'done';
