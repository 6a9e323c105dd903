-- Retention: PurgeBuckets deletes final buckets by the time they became final.
CREATE INDEX buckets_done ON buckets (done_at) WHERE state NOT IN ('open', 'sealed');
