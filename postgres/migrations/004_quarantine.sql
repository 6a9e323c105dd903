-- Rows the store could not read, moved aside so that they halt nothing else
-- (marketplace.QuarantineStore): an append-log entry that Fold or Seal could
-- not decode (source 'usage_log', data its bytes, ref 'seq N'), or an inbox
-- notification that ClaimNotifications could not read (source 'inbox', data
-- the JSON of its marketplace.InboxRow, ref 'provider/id'). The row is
-- inserted here and deleted from where it was in one transaction, and
-- RestoreQuarantined does the reverse, so a row is in exactly one place.
-- reason is the error that moved it; at is when, in unix milliseconds.
CREATE TABLE quarantine (
    id     BIGINT           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source TEXT COLLATE "C" NOT NULL,
    ref    TEXT COLLATE "C" NOT NULL,
    data   BYTEA            NOT NULL,
    reason TEXT COLLATE "C" NOT NULL,
    at     BIGINT           NOT NULL
);
