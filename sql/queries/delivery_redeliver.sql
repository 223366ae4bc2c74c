-- A finished delivery gets one more full round of attempts. FOR KEY SHARE on
-- the webhook conflicts with revoke's FOR UPDATE, so a concurrent revoke is
-- waited for and then seen: a revoked webhook's delivery is never requeued.
UPDATE outbox.deliveries d
SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_token = NULL
WHERE d.id = $1
  AND d.status IN ('failed', 'delivered')
  AND EXISTS (
      SELECT 1 FROM outbox.webhooks w
      WHERE w.id = d.webhook_id AND w.status = 'active'
      FOR KEY SHARE
  )
RETURNING d.id
