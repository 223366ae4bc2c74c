-- The newest failed deliveries across all webhooks, at most $1: a backward
-- scan of the partial index deliveries_failed, which holds failed rows only.
SELECT d.id, d.webhook_id, d.organization_id, w.label, w.url, e.event, d.attempts,
       d.last_attempt_at, d.last_status_code, d.last_error, d.created_at
FROM (
    SELECT * FROM outbox.deliveries
    WHERE status = 'failed'
    ORDER BY created_at DESC
    LIMIT $1
) d
JOIN outbox.webhooks w ON w.id = d.webhook_id
JOIN outbox.events e ON e.id = d.event_id
ORDER BY d.created_at DESC, d.id DESC
