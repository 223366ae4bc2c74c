-- Wakes the daemons after a change they cannot see through the events trigger.
SELECT pg_notify('outbox_wakeup', $1)
