-- Disables active webhooks, each with its reason; the caller holds their
-- rows FOR UPDATE (webhook_lock.sql, webhooks_failing.sql) so that a
-- concurrent fan-out waits and then sees them disabled.
UPDATE outbox.webhooks w
SET status = 'disabled', disabled_at = now(), disabled_reason = r.reason
FROM unnest($1::uuid[], $2::text[]) AS r(id, reason)
WHERE w.id = r.id
  AND w.status = 'active'
RETURNING w.id, w.organization_id, w.disabled_reason
