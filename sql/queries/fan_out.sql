-- Fan-out: one delivery per active webhook of each claimed event, and the
-- events marked fanned out, in one statement so each event fans out once.
-- $1: batch size.
-- FOR KEY SHARE on the webhooks conflicts with revoke's FOR UPDATE but not with
-- the completer's status updates: a webhook revoked concurrently is re-checked
-- after the revoke commits and gets no rows.
WITH batch AS MATERIALIZED (
    SELECT id, organization_id
    FROM outbox.events
    WHERE fanned_out_at IS NULL
    ORDER BY seq
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
targets AS MATERIALIZED (
    SELECT w.id, w.organization_id
    FROM outbox.webhooks w
    WHERE w.status = 'active'
      AND w.organization_id IN (SELECT organization_id FROM batch)
    FOR KEY SHARE
),
created AS (
    INSERT INTO outbox.deliveries (event_id, webhook_id, organization_id)
    SELECT b.id, t.id, b.organization_id
    FROM batch b
    JOIN targets t USING (organization_id)
    ON CONFLICT (event_id, webhook_id) DO NOTHING
    RETURNING 1
),
marked AS (
    UPDATE outbox.events e
    SET fanned_out_at = now()
    FROM batch b
    WHERE e.id = b.id
    RETURNING 1
)
SELECT (SELECT count(*) FROM marked) AS events,
       (SELECT count(*) FROM created) AS deliveries
