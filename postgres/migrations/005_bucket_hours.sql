-- The dashboard reads bounded slices of the buckets rather than all of them
-- (retention keeps hundreds of thousands): the last 24 hours of one cloud
-- (buckets_hour) and the newest buckets of one cloud in one state, e.g. the
-- rejected ones (buckets_by_state, whose order is ORDER BY hour DESC, id DESC
-- read backwards). Built in the migration's transaction, which holds writes
-- to buckets for as long as the build takes (seconds for a million rows).
CREATE INDEX buckets_hour ON buckets (provider, hour);
CREATE INDEX buckets_by_state ON buckets (provider, state, hour, id);
