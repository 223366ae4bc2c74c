-- A disabled webhook becomes active again, its run of failures forgotten
-- (so --disable-after counts from its next failure). Other states: no row.
UPDATE outbox.webhooks
SET status = 'active', disabled_at = NULL, disabled_reason = NULL, failing_since = NULL
WHERE id = $1 AND status = 'disabled'
RETURNING id
