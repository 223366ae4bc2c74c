-- One webhook with its status fields (the operator page's webhook view).
SELECT s.webhook_id, s.organization_id, s.url, s.label, s.status, s.created_at,
       w.revoked_at, s.last_success_at, s.last_failure_at, s.last_failure_reason,
       s.pending_deliveries, s.failed_deliveries
FROM outbox.webhook_status s
JOIN outbox.webhooks w ON w.id = s.webhook_id
WHERE s.webhook_id = $1
