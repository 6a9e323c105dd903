-- Frozen payload attributes of a bucket (ledger.Freezer), as a JSON object;
-- '' until frozen. Once set they never change.
ALTER TABLE buckets ADD COLUMN attributes TEXT NOT NULL DEFAULT '';
