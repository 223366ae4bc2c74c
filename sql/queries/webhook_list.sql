-- Webhooks with their outbox.webhook_status fields: an organization's ($1),
-- one webhook ($2), or with both null every webhook (the operator page), at
-- most $3 (null: no limit), by organization and oldest first. The counts are
-- two ranges of deliveries_by_webhook per webhook.
SELECT s.webhook_id, s.organization_id, s.url, s.label, s.status, s.created_at,
       w.revoked_at, s.last_success_at, s.last_failure_at, s.last_failure_reason,
       s.pending_deliveries, s.failed_deliveries, s.disabled_at, s.disabled_reason,
       s.signature_scheme
FROM outbox.webhook_status s
JOIN outbox.webhooks w ON w.id = s.webhook_id
WHERE ($1::uuid IS NULL OR s.organization_id = $1)
  AND ($2::uuid IS NULL OR s.webhook_id = $2)
ORDER BY s.organization_id, s.created_at, s.webhook_id
LIMIT $3
