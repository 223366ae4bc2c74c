-- A webhook's deliveries, newest first, optionally of one status and before a
-- creation time (the cursor of the next page).
SELECT d.id, d.event_id, e.event, d.status, d.attempts, d.next_attempt_at, d.last_attempt_at,
       d.last_status_code, d.last_error, d.delivered_at, d.created_at
FROM outbox.deliveries d
JOIN outbox.events e ON e.id = d.event_id
WHERE d.webhook_id = $1
  AND ($2::text IS NULL OR d.status = $2)
  AND ($3::timestamptz IS NULL OR d.created_at < $3)
ORDER BY d.created_at DESC, d.id DESC
LIMIT $4
