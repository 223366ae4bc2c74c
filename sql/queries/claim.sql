-- Claim: lease due deliveries, fairly across webhooks and within each
-- webhook's free in-flight slots, and return what sending them needs.
-- $1 limit, $2 scan window, $3 look webhook by webhook (see below),
-- $4/$5 webhooks with some in flight and their free slots (0 = at its cap),
-- $6 per-webhook cap, $7 lease in ms, $8 lease token.
-- The lease is the due time itself: a crashed replica's rows become due again
-- when the lease runs out, found by the same index and predicate.
WITH room AS MATERIALIZED (
    SELECT * FROM unnest($4::uuid[], $5::int[]) AS r(webhook_id, free)
),
-- Usually: the oldest due rows, a bounded window of the due index, ranked
-- per webhook so a claim takes round-robin across webhooks.
due AS MATERIALIZED (
    SELECT w.id, w.webhook_id, w.next_attempt_at,
           row_number() OVER (PARTITION BY w.webhook_id ORDER BY w.next_attempt_at, w.id) AS rank
    FROM (
        SELECT id, webhook_id, next_attempt_at
        FROM outbox.deliveries
        WHERE NOT $3::bool
          AND status = 'pending'
          AND next_attempt_at <= now()
        ORDER BY next_attempt_at, id
        LIMIT $2
    ) w
),
-- When that window is taken up by webhooks at their cap (one that hangs,
-- with a backlog), look webhook by webhook instead: each active webhook with
-- free slots contributes its oldest due rows. This costs one index probe per
-- active webhook, never a scan of the stuck webhook's backlog.
by_webhook AS MATERIALIZED (
    SELECT c.id, c.next_attempt_at
    FROM outbox.webhooks h
    LEFT JOIN room ON room.webhook_id = h.id
    CROSS JOIN LATERAL (
        SELECT d.id, d.next_attempt_at
        FROM outbox.deliveries d
        WHERE d.webhook_id = h.id
          AND d.status = 'pending'
          AND d.next_attempt_at <= now()
        ORDER BY d.created_at
        LIMIT coalesce(room.free, $6::int)
    ) c
    WHERE $3::bool
      AND h.status = 'active'
      AND coalesce(room.free, $6::int) > 0
),
eligible AS MATERIALIZED (
    (SELECT due.id
     FROM due
     LEFT JOIN room ON room.webhook_id = due.webhook_id
     WHERE due.rank <= coalesce(room.free, $6::int)
     ORDER BY due.rank, due.next_attempt_at, due.id
     LIMIT $1)
    UNION ALL
    (SELECT id FROM by_webhook ORDER BY next_attempt_at, id LIMIT $1)
),
-- Lock by primary key, and only by it: with `status = 'pending'` here the
-- planner may prefer a full scan of the due index, which it believes small
-- (seen: 15 ms instead of 0.1 ms; a join here once became a quadratic nested
-- loop). Rows another replica holds are skipped.
picked AS MATERIALIZED (
    SELECT d.id
    FROM outbox.deliveries d
    WHERE d.id = ANY (ARRAY(SELECT id FROM eligible))
    FOR NO KEY UPDATE SKIP LOCKED
)
-- The rows are locked now, so this re-check sees their latest version: one
-- claimed and committed by another replica meanwhile is no longer due. The
-- conditions are written so they cannot match the due index's predicate.
UPDATE outbox.deliveries d
SET next_attempt_at = now() + $7::bigint * interval '1 millisecond',
    lease_token = $8,
    attempts = d.attempts + 1,
    last_attempt_at = now()
FROM outbox.events e, outbox.webhooks w
WHERE d.id = ANY (ARRAY(SELECT id FROM picked))
  AND coalesce(d.status, '') = 'pending'
  AND d.next_attempt_at + interval '0' <= now()
  AND e.id = d.event_id
  AND w.id = d.webhook_id
RETURNING d.id, d.webhook_id, d.event_id, d.attempts,
          e.event, e.organization_id, e.occurred_at, e.data::text AS data,
          w.url, (SELECT count(*) FROM due) AS window_rows
