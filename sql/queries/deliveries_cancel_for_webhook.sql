-- Revoking stops a webhook at once: nothing pending is sent any more. Rows in
-- flight are pending too; their write-back then finds them cancelled and is dropped.
UPDATE outbox.deliveries
SET status = 'cancelled', next_attempt_at = NULL, lease_token = NULL
WHERE webhook_id = $1 AND status = 'pending'
