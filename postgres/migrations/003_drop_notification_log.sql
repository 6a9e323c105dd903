-- The notification log (ids of applied notifications) is replaced by the
-- inbox, which keeps applied notifications for dedupe until they expire.
DROP TABLE notifications;
