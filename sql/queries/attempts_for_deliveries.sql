SELECT delivery_id, attempt, started_at, duration_ms, outcome, status_code, reason, response_excerpt,
       retry_after_seconds
FROM outbox.delivery_attempts
WHERE delivery_id = ANY ($1::uuid[])
ORDER BY delivery_id, id
