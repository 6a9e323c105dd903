-- Frozen payload attributes of a bucket (ledger.Freezer), as a JSON object;
-- NULL until frozen. Once set they never change.
ALTER TABLE buckets ADD COLUMN attributes JSONB;
