-- A webhook's deliveries, newest first, optionally of one status and before a
-- cursor: a creation time, and the id of the last delivery of the page before
-- (deliveries created by one fan-out statement share their creation time).
-- One ordered range of deliveries_by_webhook (webhook_id, status,
-- created_at) per status, merged: index-backed at any table size, where a
-- plain ORDER BY created_at would sort all of the webhook's rows.
WITH page AS (
    SELECT d.*
    FROM unnest(ARRAY['pending', 'delivered', 'failed', 'cancelled']) AS s(status)
    CROSS JOIN LATERAL (
        SELECT *
        FROM outbox.deliveries
        WHERE webhook_id = $1 AND status = s.status
          AND ($3::timestamptz IS NULL OR created_at < $3
               OR (created_at = $3 AND id < $5::uuid))
        ORDER BY created_at DESC
        LIMIT $4
    ) d
    WHERE $2::text IS NULL OR s.status = $2::text
    ORDER BY d.created_at DESC, d.id DESC
    LIMIT $4
)
SELECT d.id, d.event_id, e.event, d.status, d.attempts, d.next_attempt_at, d.last_attempt_at,
       d.last_status_code, d.last_error, d.delivered_at, d.created_at
FROM page d
JOIN outbox.events e ON e.id = d.event_id
ORDER BY d.created_at DESC, d.id DESC
