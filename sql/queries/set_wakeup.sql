-- Turns the producers' NOTIFY on or off; writes only on a change.
UPDATE outbox.wakeup SET notify = $1, changed_at = now() WHERE notify IS DISTINCT FROM $1
