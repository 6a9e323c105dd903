-- The dashboard reads bounded slices of the buckets rather than all of them
-- (retention keeps hundreds of thousands): the last 24 hours of one cloud
-- (buckets_hour) and the newest buckets of one cloud in one state, e.g. the
-- rejected ones (buckets_by_state; its entries end in the rowid, so
-- ORDER BY hour DESC, id DESC needs no sort).
CREATE INDEX buckets_hour ON buckets (provider, hour);
CREATE INDEX buckets_by_state ON buckets (provider, state, hour);
