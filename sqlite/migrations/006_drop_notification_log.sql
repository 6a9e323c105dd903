-- The notification log (ids of applied notifications) is replaced by the
-- inbox (003), which keeps applied notifications for dedupe until they expire.
DROP TABLE notifications;
