SELECT d.status, w.status AS webhook_status
FROM outbox.deliveries d
JOIN outbox.webhooks w ON w.id = d.webhook_id
WHERE d.id = $1
