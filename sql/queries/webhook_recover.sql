-- Every failed delivery of an active webhook created in [since, until) gets a
-- new round of attempts. FOR KEY SHARE waits for a concurrent revoke.
UPDATE outbox.deliveries d
SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_token = NULL
WHERE d.webhook_id = $1
  AND d.status = 'failed'
  AND d.created_at >= $2
  AND d.created_at < $3
  AND EXISTS (
      SELECT 1 FROM outbox.webhooks w
      WHERE w.id = d.webhook_id AND w.status = 'active'
      FOR KEY SHARE
  )
