-- Every failed delivery of an active webhook created in [since, until) gets a
-- new round of attempts; no until ($3 NULL): up to now. They fall due a
-- microsecond apart in the order they were created (and, within one fan-out,
-- of their events), so a webhook taking one request at a time gets its
-- backlog in that order. FOR KEY SHARE waits for a concurrent revoke.
WITH backlog AS (
    SELECT d.id, row_number() OVER (ORDER BY d.created_at, e.seq, d.id) AS place
    FROM outbox.deliveries d
    JOIN outbox.events e ON e.id = d.event_id
    WHERE d.webhook_id = $1
      AND d.status = 'failed'
      AND d.created_at >= $2
      AND ($3::timestamptz IS NULL OR d.created_at < $3)
)
UPDATE outbox.deliveries d
SET status = 'pending', attempts = 0, lease_token = NULL,
    next_attempt_at = now() + b.place * interval '1 microsecond'
FROM backlog b
WHERE d.id = b.id
  AND d.status = 'failed'
  AND EXISTS (
      SELECT 1 FROM outbox.webhooks w
      WHERE w.id = d.webhook_id AND w.status = 'active'
      FOR KEY SHARE
  )
