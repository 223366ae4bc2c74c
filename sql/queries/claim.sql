-- Claim: lease due deliveries, fairly across webhooks and within each
-- webhook's free in-flight slots, and return what sending them needs.
-- $1 limit, $2 scan window, $3 webhooks with no free slot,
-- $4/$5 webhooks with some in flight and their free slots, $6 per-webhook cap,
-- $7 lease in ms, $8 lease token.
-- The lease is the due time itself: a crashed replica's rows become due again
-- when the lease runs out, found by the same index and predicate.
WITH due AS MATERIALIZED (
    SELECT w.id, w.webhook_id, w.next_attempt_at,
           row_number() OVER (PARTITION BY w.webhook_id ORDER BY w.next_attempt_at, w.id) AS rank
    FROM (
        SELECT id, webhook_id, next_attempt_at
        FROM outbox.deliveries
        WHERE status = 'pending'
          AND next_attempt_at <= now()
          AND webhook_id <> ALL ($3::uuid[])
        ORDER BY next_attempt_at, id
        LIMIT $2
    ) w
),
-- Round-robin across webhooks (rank first), each within its free slots.
eligible AS MATERIALIZED (
    SELECT due.id
    FROM due
    LEFT JOIN unnest($4::uuid[], $5::int[]) AS room(webhook_id, free)
           ON room.webhook_id = due.webhook_id
    WHERE due.rank <= coalesce(room.free, $6::int)
    ORDER BY due.rank, due.next_attempt_at, due.id
    LIMIT $1
),
-- Lock by primary key: an array lookup, whatever the planner believes about
-- the CTE's size (a join here once became a quadratic nested loop on a table
-- without statistics). Rows another replica holds are skipped.
picked AS MATERIALIZED (
    SELECT d.id
    FROM outbox.deliveries d
    WHERE d.id = ANY (ARRAY(SELECT id FROM eligible))
      AND d.status = 'pending'
      AND d.next_attempt_at <= now()
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE outbox.deliveries d
SET next_attempt_at = now() + $7::bigint * interval '1 millisecond',
    lease_token = $8,
    attempts = d.attempts + 1,
    last_attempt_at = now()
FROM outbox.events e, outbox.webhooks w
WHERE d.id = ANY (ARRAY(SELECT id FROM picked))
  AND e.id = d.event_id
  AND w.id = d.webhook_id
RETURNING d.id, d.webhook_id, d.event_id, d.attempts,
          e.event, e.organization_id, e.occurred_at, e.data::text AS data,
          w.url
