-- A webhook's deliveries, newest first, optionally of one status and before a
-- creation time (the cursor of the next page).
-- One branch per status, each an ordered range of deliveries_by_webhook
-- (webhook_id, status, created_at), merged: index-backed at any table size,
-- where a plain ORDER BY created_at would sort all of the webhook's rows.
WITH page AS (
    SELECT * FROM (
        (SELECT * FROM outbox.deliveries
         WHERE webhook_id = $1 AND status = 'pending' AND coalesce($2::text, 'pending') = 'pending'
           AND ($3::timestamptz IS NULL OR created_at < $3)
         ORDER BY created_at DESC LIMIT $4)
        UNION ALL
        (SELECT * FROM outbox.deliveries
         WHERE webhook_id = $1 AND status = 'delivered' AND coalesce($2::text, 'delivered') = 'delivered'
           AND ($3::timestamptz IS NULL OR created_at < $3)
         ORDER BY created_at DESC LIMIT $4)
        UNION ALL
        (SELECT * FROM outbox.deliveries
         WHERE webhook_id = $1 AND status = 'failed' AND coalesce($2::text, 'failed') = 'failed'
           AND ($3::timestamptz IS NULL OR created_at < $3)
         ORDER BY created_at DESC LIMIT $4)
        UNION ALL
        (SELECT * FROM outbox.deliveries
         WHERE webhook_id = $1 AND status = 'cancelled' AND coalesce($2::text, 'cancelled') = 'cancelled'
           AND ($3::timestamptz IS NULL OR created_at < $3)
         ORDER BY created_at DESC LIMIT $4)
    ) d
    ORDER BY created_at DESC, id DESC
    LIMIT $4
)
SELECT d.id, d.event_id, e.event, d.status, d.attempts, d.next_attempt_at, d.last_attempt_at,
       d.last_status_code, d.last_error, d.delivered_at, d.created_at
FROM page d
JOIN outbox.events e ON e.id = d.event_id
ORDER BY d.created_at DESC, d.id DESC
