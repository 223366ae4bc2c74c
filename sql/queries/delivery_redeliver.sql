-- A finished delivery gets one more full round of attempts.
UPDATE outbox.deliveries d
SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_token = NULL
FROM outbox.webhooks w
WHERE d.id = $1
  AND w.id = d.webhook_id
  AND w.status = 'active'
  AND d.status IN ('failed', 'delivered')
RETURNING d.id
