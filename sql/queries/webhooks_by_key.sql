-- How many active webhooks each key sealed: readiness, /metrics and
-- `webhooks create` compare it with the configured keys. Webhooks are few
-- (thousands), so counting them all is cheap enough for every probe.
SELECT secret_key_id, count(*) AS webhooks
FROM outbox.webhooks
WHERE status = 'active'
GROUP BY secret_key_id
