-- Every organization's webhooks with their status fields, for the operator
-- page's overview: by organization, oldest first, at most $1 rows. The
-- counts of outbox.webhook_status are two ranges of deliveries_by_webhook
-- per webhook.
SELECT s.webhook_id, s.organization_id, s.url, s.label, s.status, s.created_at,
       w.revoked_at, s.last_success_at, s.last_failure_at, s.last_failure_reason,
       s.pending_deliveries, s.failed_deliveries
FROM outbox.webhook_status s
JOIN outbox.webhooks w ON w.id = s.webhook_id
ORDER BY s.organization_id, s.created_at, s.webhook_id
LIMIT $1
