-- The dashboard's per-webhook fields, folded from a whole batch: one row update
-- per webhook per batch, not per delivery. Rows are locked in id order so two
-- replicas folding overlapping batches cannot deadlock.
WITH summary AS (
    SELECT *
    FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::text[])
        AS s(webhook_id, last_success_at, last_failure_at, last_failure_reason)
),
locked AS MATERIALIZED (
    SELECT w.id
    FROM outbox.webhooks w
    WHERE w.id IN (SELECT webhook_id FROM summary)
    ORDER BY w.id
    FOR NO KEY UPDATE
)
UPDATE outbox.webhooks w
SET last_success_at = greatest(w.last_success_at, s.last_success_at),
    last_failure_at = greatest(w.last_failure_at, s.last_failure_at),
    last_failure_reason = CASE
        WHEN s.last_failure_at IS NOT NULL
             AND (w.last_failure_at IS NULL OR s.last_failure_at >= w.last_failure_at)
        THEN s.last_failure_reason
        ELSE w.last_failure_reason END
FROM summary s, locked l
WHERE w.id = s.webhook_id
  AND l.id = w.id
