-- Turns producers' NOTIFY on or off (takes effect at once, outside any
-- transaction) and returns the fence: every transaction that could have read
-- the old value has an id below it.
SELECT setval('outbox.wakeup_notify', CASE WHEN $1 THEN 1 ELSE 0 END)
